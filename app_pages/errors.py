"""Errors: the confusion matrix of the shown run, the pairs it mixes up most, the images behind any
cell, and per-class precision, recall and F1."""

from __future__ import annotations

from functools import partial

import streamlit as st

from app_pages import common
from dlcore.engine.metrics import confusion, most_confused, per_class_scores
from dlcore.figures import confusion_click_figure
from dlcore.views.errors import cell_from_selection, cell_gallery, default_cell, pair_from_row
from dlcore.views.shared import choice_or, view_token

S = st.session_state
KEEP = dict(persist_state="session")
NORMALIZE = {"counts": "counts", "rows": "row-normalised (share of each true class)"}
GALLERY_LIMIT = 60
IMAGE_SIZE = 112  # pixels; a 28x28 digit is drawn 4x


def choose(classes: tuple[str, ...], cell: tuple[int, int] | None) -> None:
    """Point the two cell selectboxes at `cell` (runs in a callback, before the widgets exist)."""
    if cell is not None:
        S["errors.true"], S["errors.pred"] = classes[cell[0]], classes[cell[1]]


def on_heatmap_click(classes: tuple[str, ...]) -> None:
    state = S.get("errors.confusion")
    choose(classes, cell_from_selection(state.get("selection") if state else None, classes))


def on_pair_row(classes: tuple[str, ...], pairs: list[tuple[int, int]]) -> None:
    state = S.get("errors.pairs")
    choose(classes, pair_from_row(state.get("selection") if state else None, pairs))


def init_cell(view, classes: tuple[str, ...]) -> None:
    """A new run starts on its most-confused pair; a stale class name falls back to it too."""
    t, p = default_cell(view.dataset.test_y.numpy(), view.test_pred, len(classes))
    token = view_token(view)
    if S.get("errors._token") != token:
        S["errors._token"] = token
        S["errors.true"], S["errors.pred"] = classes[t], classes[p]
    S["errors.true"] = choice_or(S.get("errors.true"), classes, classes[t])
    S["errors.pred"] = choice_or(S.get("errors.pred"), classes, classes[p])
    S["errors.normalize"] = choice_or(S.get("errors.normalize"), list(NORMALIZE), "counts")


def gallery_section(view, classes: tuple[str, ...]) -> None:
    st.subheader("The images behind one cell")
    c1, c2 = st.columns(2)
    c1.selectbox("True class", classes, key="errors.true", **KEEP)
    c2.selectbox("Predicted class", classes, key="errors.pred", **KEEP)
    t, p = classes.index(S["errors.true"]), classes.index(S["errors.pred"])
    gallery = cell_gallery(view.dataset.test_x, view.dataset.test_y.numpy(), view.test_pred,
                           view.test_prob, classes, t, p, limit=GALLERY_LIMIT, size=IMAGE_SIZE)
    S["errors.gallery_indices"] = gallery.indices
    if gallery.total == 0:
        st.caption(gallery.headline(classes))
        st.info(f"No test image of class {classes[t]} was predicted as {classes[p]}: this cell is empty.")
        return
    st.caption(gallery.headline(classes) + ". Under each image: its test index and the classes "
               "the network found most likely.")
    st.image(gallery.images, caption=gallery.captions, width=IMAGE_SIZE)


st.title("Where the network goes wrong")
view = common.view_or_stop()

classes = tuple(view.dataset.classes)
y_true, y_pred = view.dataset.test_y.numpy(), view.test_pred
init_cell(view, classes)

errors = int((y_true != y_pred).sum())
m1, m2, m3 = st.columns(3)
m1.metric("Test accuracy", f"{view.test_acc:.2%}")
m2.metric("Misclassified test images", f"{errors:,}")
m3.metric("Test images", f"{len(y_true):,}")

left, right = st.columns([3, 2])
with left:
    st.radio("Confusion matrix", list(NORMALIZE), key="errors.normalize", format_func=NORMALIZE.get,
             horizontal=True, **KEEP)
    rows = S["errors.normalize"] == "rows"
    matrix = confusion(y_true, y_pred, len(classes), normalize=rows)
    cell = (classes.index(S["errors.true"]), classes.index(S["errors.pred"]))
    figure = confusion_click_figure(
        matrix, classes, "Confusion matrix: rows true class, columns predicted",
        text_format=".0%" if rows else "d", highlight=cell)
    st.plotly_chart(figure, key="errors.confusion", on_select=partial(on_heatmap_click, classes),
                    selection_mode="points")
    st.caption("Click a cell to see its images below (the orange frame marks the chosen cell).")
with right:
    st.subheader("Most confused pairs")
    pairs = most_confused(y_true, y_pred, classes, top=10)
    if pairs.empty:
        st.success("No test image is misclassified.")
    else:
        pair_list = list(zip(pairs["true_index"].tolist(), pairs["pred_index"].tolist(), strict=True))
        st.dataframe(pairs[["true", "predicted", "count"]], hide_index=True, key="errors.pairs",
                     on_select=partial(on_pair_row, classes, pair_list), selection_mode="single-row")
        st.caption("Select a row to see its images below.")
    st.subheader("Per-class scores")
    st.dataframe(per_class_scores(y_true, y_pred, classes), hide_index=True, key="errors.scores",
                 column_config={c: st.column_config.NumberColumn(format="%.3f")
                                for c in ("precision", "recall", "f1")})

gallery_section(view, classes)
