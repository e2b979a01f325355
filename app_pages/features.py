"""Learned features: the first layer's weights as images, epoch by epoch, and one test image's way
through every layer of the network (feature maps, activations, class probabilities)."""

from __future__ import annotations

import streamlit as st

from app_pages import common
from dlcore.engine.models import layer_activations
from dlcore.figures import activation_figure, image_grid_figure, probability_bars
from dlcore.views.features import (
    activation_summary,
    first_block_output,
    shown_activations,
    units_slider_max,
    weight_panel,
)
from dlcore.views.shared import choice_or, clamp_int, display_image, view_token

S = st.session_state
KEEP = dict(persist_state="session")
SORTS = {"norm": "largest weight norm first", "index": "by unit index"}


def weights_section(view) -> None:
    snapshots = len(view.first_layer)
    last = max(snapshots - 1, 0)
    token = view_token(view)
    if S.get("features._token") != token:  # another run: start on its trained weights
        S["features._token"] = token
        S["features.epoch"] = last
    S["features.epoch"] = clamp_int(S.get("features.epoch"), 0, last, last)
    most = units_slider_max(view)
    S["features.units"] = clamp_int(S.get("features.units", 32), 16, most, 32) // 16 * 16
    S["features.sort"] = choice_or(S.get("features.sort"), list(SORTS), "norm")

    conv = view.config.model.kind == "cnn"
    st.header("First conv layer's kernels" if conv else "First-layer weights")
    c1, c2, c3 = st.columns([2, 2, 3])
    if most > 16:
        c1.slider("Units to show" if not conv else "Kernels to show", 16, most, step=16,
                  key="features.units", **KEEP)
    c2.radio("Order", list(SORTS), key="features.sort", format_func=SORTS.get, **KEEP)
    if snapshots > 1:
        c3.slider("Epoch (0 = before training)", 0, last, key="features.epoch", **KEEP,
                  help="Move it to watch the weights form, epoch by epoch.")
        epoch = S["features.epoch"]
    else:
        c3.caption("This run was reopened from the history, which keeps only its final weights, "
                   "so there is no epoch-by-epoch view.")
        epoch = last

    panel = weight_panel(view, epoch, S["features.units"], S["features.sort"])
    if panel is None:
        st.info("This run kept no first-layer weights to draw.")
        return
    st.caption(panel.note)
    if panel.total_units < S["features.units"]:
        st.caption(f"This layer has only {panel.total_units} "
                   f"{'kernels' if conv else 'units'}; all of them are shown.")
    st.plotly_chart(panel.figure, key="features.kernels" if conv else "features.grid")


def image_section(view) -> None:
    st.header("One test image through the network")
    dataset = view.dataset
    count = len(dataset.test_y)
    S["features.image"] = clamp_int(S.get("features.image", 0), 0, count - 1, 0)
    st.number_input(f"Test image (0 to {count - 1:,})", 0, count - 1, step=1, key="features.image",
                    **KEEP)
    i = int(S["features.image"])
    classes = dataset.classes
    true, pred = int(dataset.test_y[i]), int(view.test_pred[i])
    activations = layer_activations(view.model, view.model_input(dataset.test_x[i:i + 1])[0])

    left, right = st.columns([1, 3])
    left.image(display_image(dataset.test_x[i], 168),
               caption=f"#{i}: true {classes[true]}")
    verdict = "right" if true == pred else "wrong"
    right.plotly_chart(probability_bars(view.test_prob[i], classes,
                                        f"Predicted {classes[pred]} ({verdict}): class probabilities"),
                       key="features.probs")

    block = first_block_output(view.model, activations)
    if block is not None:
        name, maps = block
        shown = min(32, len(maps))
        st.plotly_chart(image_grid_figure(
            maps[:shown].numpy(), labels=[str(k) for k in range(shown)],
            title=f"Feature maps after the first conv block ({name}): {shown} of {len(maps)}, "
                  f"{maps.shape[1]}×{maps.shape[2]}"), key="features.maps")

    st.subheader("Activations, layer by layer")
    shown_layers = shown_activations(activations)
    st.caption("What each layer passes on for this image (Flatten and Dropout, which change "
               "nothing at test time, are left out). 'zeros' is the share of units that are off.")
    st.dataframe(activation_summary(shown_layers), hide_index=True, key="features.act_table")
    columns = st.columns(2)
    for j, (name, output) in enumerate(shown_layers):
        columns[j % 2].plotly_chart(activation_figure(name, output), key=f"features.act.{j}")


st.title("What the network learned")
view = common.view_or_stop()
weights_section(view)
image_section(view)
