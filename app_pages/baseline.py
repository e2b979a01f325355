"""Random Forest baseline: the lesson's forest on exactly the network's split, side by side with the
network, and a learning curve that measures where the network overtakes it."""

from __future__ import annotations

import streamlit as st

from app_pages import common
from dlcore import numbers
from dlcore.engine.baselines import fit_forest
from dlcore.engine.config import ConfigError
from dlcore.engine.memory import MemoryLimitError, memory_limit
from dlcore.figures import (
    grouped_bar_figure,
    heatmap_figure,
    image_heatmap,
    log_x_lines_figure,
    ranked_bar_figure,
)
from dlcore.views import baseline as cmp
from dlcore.views.baseline import MAX_CURVE_EPOCHS, check_curve, curve_epochs_limit

S = st.session_state
KEEP = dict(persist_state="session")


def clamp(key: str, low: int, high: int, default: int) -> None:
    """Put a stale or missing widget value back in range before the widget is drawn."""
    value = S.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        S[key] = default


def forest_controls() -> None:
    clamp("baseline.trees", 10, 300, 100)
    clamp("baseline.max_depth", 0, 1000, 0)
    clamp("baseline.random_state", 0, 2**32 - 1, 42)
    if S.get("baseline.max_features") not in cmp.MAX_FEATURES_CHOICES:
        S["baseline.max_features"] = "sqrt"
    if S.get("baseline.features") not in ("pixels", "handmade"):
        S["baseline.features"] = "pixels"
    c1, c2, c3 = st.columns(3)
    c1.slider("Trees", 10, 300, step=10, key="baseline.trees", **KEEP)
    c1.number_input("Max depth (0 = no limit)", 0, 1000, step=1, key="baseline.max_depth", **KEEP)
    c2.selectbox("Features tried per split", cmp.MAX_FEATURES_CHOICES, key="baseline.max_features",
                 format_func=lambda v: v if isinstance(v, str) else f"{v:.0%} of them", **KEEP)
    c2.radio("Features", ["pixels", "handmade"], key="baseline.features", horizontal=True, **KEEP,
             format_func={"pixels": "raw pixels",
                          "handmade": "hand-made (brightness, edges, histogram, ink)"}.get)
    c3.number_input("Random state", 0, 2**32 - 1, step=1, key="baseline.random_state", **KEEP)


def current_params():
    return cmp.forest_params(S["baseline.trees"], S["baseline.max_depth"],
                             S["baseline.max_features"], S["baseline.random_state"],
                             S["baseline.features"])


def fit(dataset, split) -> None:
    try:
        params = current_params()
    except ValueError as exc:
        st.error(f"Cannot fit: {common.for_this_person(exc)}")
        return
    bar = st.progress(0.0, text=f"Growing {params.n_estimators} trees…")
    try:
        result = fit_forest(dataset, params, **split.kwargs(),
                            progress=lambda f: bar.progress(min(max(f, 0.0), 1.0),
                                                            text=f"Growing trees: {f:.0%}"))
    except (ValueError, MemoryError, OSError) as exc:
        bar.empty()
        st.error(f"The forest could not be fitted: {common.for_this_person(exc)}")
        return
    bar.empty()
    S["baseline.result"] = result
    S["baseline.fitted_on"] = cmp.fit_key(dataset, split)


def forest_summary(forest) -> None:
    cache = " (from the cache: fitted before with these settings)" if forest.from_cache else ""
    st.success(f"Forest of {numbers.count(forest.params.n_estimators)} trees on "
               f"{forest.params.features}: test accuracy **{numbers.percent(forest.accuracy)}**, "
               f"{numbers.count(forest.train_size)} training images, fit in "
               f"{numbers.seconds(forest.fit_seconds)}{cache}.")


def network_predict_seconds(view) -> float:
    """Timed once per run shown, then kept for the session."""
    token = cmp.view_token(view)
    kept = S.get("baseline._predict")
    if not kept or kept[0] != token:
        kept = (token, cmp.network_predict_seconds(view))
        S["baseline._predict"] = kept
    return kept[1]


def comparison_section(view, forest) -> None:
    st.header("Side by side")
    table = cmp.comparison_text(cmp.comparison_table(view, forest, network_predict_seconds(view)))
    st.dataframe(table, hide_index=True, key="baseline.table", column_config={
        cmp.NETWORK: st.column_config.TextColumn(alignment="right"),
        cmp.FOREST: st.column_config.TextColumn(alignment="right")})
    st.caption("Both were tested on the same test set after training on the same images. The "
               "network's prediction time is one pass over the test set on the CPU, measured here; "
               "the network may have trained on a GPU.")

    classes = view.dataset.classes
    per_class = cmp.per_class_table(view, forest)
    st.plotly_chart(grouped_bar_figure(classes, {cmp.NETWORK: per_class[cmp.NETWORK],
                                                 cmp.FOREST: per_class[cmp.FOREST]},
                                       "Per-class test accuracy", "test accuracy", (0, 1),
                                       xaxis_title="class"),
                    key="baseline.per_class")

    diff = cmp.confusion_difference(view.dataset.test_y.numpy(), view.test_pred,
                                    forest.predictions, view.dataset.num_classes)
    st.plotly_chart(heatmap_figure(diff, classes, "Confusion matrix: forest minus network",
                                   colorscale="RdBu", zmid=0, text_format="+d"),
                    key="baseline.confusion_diff")
    st.caption("Counts of test images, forest minus network. On the diagonal, blue (positive) means "
               "the forest gets more of that class right; off the diagonal, blue means the forest "
               "makes that mistake more often and red means the network does.")


def importance_section(view, forest, dataset) -> None:
    st.header("What each model looks at")
    left, right = st.columns(2)
    with left:
        if forest.params.features == "pixels":
            st.plotly_chart(image_heatmap(cmp.importance_image(forest.feature_importances,
                                                               dataset.shape),
                                          "Forest: feature importance per pixel", "Viridis",
                                          height=360),
                            key="baseline.importances")
            st.caption("How much each pixel reduces impurity over all splits of all trees.")
        else:
            top = cmp.top_features(forest.feature_importances, dataset.shape, "handmade")
            st.plotly_chart(ranked_bar_figure(top["feature"], top["importance"],
                                              "Forest: the 20 most important hand-made features",
                                              "importance"), key="baseline.importances")
    with right:
        if view is None:
            st.info("The network's first-layer weights appear here once a network is trained.")
            return
        weights = cmp.first_layer_pixel_weights(view.model, view.dataset.shape)
        if weights is None:
            st.info("This network has no dense or conv first layer to draw.")
            return
        image, note = weights
        st.plotly_chart(image_heatmap(image, "Network: first-layer weights", "Viridis", height=360),
                        key="baseline.weights")
        st.caption(note[0].upper() + note[1:] + ".")


def curve_config():
    """The network Run learning curve trains now: the Train page's settings, this section's epochs."""
    return cmp.curve_config(common.current_config(), S["baseline.curve_epochs"])


def curve_section(dataset, view) -> None:
    st.header("Learning curve: who wins at which size?")
    most = curve_epochs_limit(common.classroom().policy, common.person().teacher)
    clamp("baseline.curve_epochs", 1, most, min(3, most))
    st.caption("Both models trained on the same growing subsets of the training set, each tested on "
               "the whole test set — the lesson's 'small dataset: traditional ML' rule, measured. "
               "**Run learning curve** trains the Train page's current network with the epochs set "
               f"here ({cmp.network_words(curve_config())}); the forest uses the settings above.")
    num_train = len(dataset.train_y)
    options = cmp.size_options(num_train)
    if not isinstance(S.get("baseline.sizes"), list) or not set(S["baseline.sizes"]) <= set(options):
        S["baseline.sizes"] = cmp.default_sizes(num_train)
    c1, c2 = st.columns([3, 1])
    c1.multiselect("Training-set sizes", options, key="baseline.sizes", **KEEP,
                   format_func=lambda v: f"all ({numbers.count(num_train)})" if v == 0
                   else numbers.count(v))
    c2.number_input("Network epochs", 1, most, step=1, key="baseline.curve_epochs", **KEEP,
                    help=None if most == MAX_CURVE_EPOCHS else "Capped by your teacher for the class.")
    if st.button("Run learning curve", key="baseline.curve", disabled=not S["baseline.sizes"]):
        run_curve(dataset)
    kept = S.get("baseline.curve_result")
    if not isinstance(kept, cmp.MeasuredCurve):
        return
    if not kept.same_dataset(dataset):
        st.info("The last learning curve was measured on another dataset; run it again for this one.")
        return
    curve = kept.curve
    if curve.empty:
        st.warning("No size finished.")
        return
    note = cmp.curve_network_note(kept.config, curve_config())
    if note is not None:
        st.warning(note)
    st.plotly_chart(log_x_lines_figure(curve["size"], {cmp.NETWORK: curve["network_acc"],
                                                       cmp.FOREST: curve["forest_acc"]},
                                       "Test accuracy against training-set size",
                                       "training images (log scale)", "test accuracy"),
                    key="baseline.curve_chart")
    st.caption(f"The network in this curve: {cmp.network_words(kept.config)}.")
    st.markdown(cmp.crossover_sentence(curve))
    text = cmp.curve_text(curve)
    st.dataframe(text, hide_index=True, key="baseline.curve_table", column_config={
        c: st.column_config.TextColumn(alignment="right") for c in text.columns
        if c != cmp.CURVE_TEXT_COLUMNS["network_status"]})


def check_rules(config, dataset) -> None:
    """The class's rules and the memory guard, as for a run from the Train page (raises)."""
    manager = common.manager(say_why=False)
    limit = memory_limit(config.train.device, manager.max_jobs if manager else None)
    check_curve(config, dataset, S["baseline.sizes"], policy=common.classroom().policy,
                teacher=common.person().teacher, memory_limit=limit)


def run_curve(dataset) -> None:
    try:
        params = current_params()
        config = curve_config()
        config.validate()
        check_rules(config, dataset)
    except (ValueError, ConfigError, MemoryLimitError) as exc:
        st.error(f"Cannot run the learning curve: {common.for_this_person(exc)}")
        return
    bar = st.progress(0.0, text="Training and fitting on each size…")
    try:
        curve = cmp.learning_curve(dataset, config, S["baseline.sizes"], params,
                                   progress=lambda f: bar.progress(
                                       min(max(f, 0.0), 1.0), text=f"Learning curve: {f:.0%}"))
    except (ValueError, ConfigError, RuntimeError, MemoryError, OSError) as exc:
        bar.empty()
        st.error(f"The learning curve failed: {common.for_this_person(exc)}")
        return
    bar.empty()
    S["baseline.curve_result"] = cmp.MeasuredCurve(dataset.name, len(dataset.train_y), config, curve)


st.title("Random Forest baseline")
st.caption("The lesson's classical baseline, `RandomForestClassifier(n_estimators=100, "
           "random_state=42)`, fitted on exactly the images the network trained on and tested on "
           "the same test set.")
view = common.current_view()
if view is None:
    dataset, _ = common.current_dataset()
    split = cmp.forest_split(common.current_config())
    st.info("No trained network yet: the forest can be fitted on the sidebar's dataset, but the "
            "side-by-side comparison needs a trained network. Train one on the **Train** page, or "
            "open a past run on the **Experiments** page.")
else:
    dataset = view.dataset
    split = cmp.forest_split(view.config)
    run = f"run {view.run_id}" if view.run_id is not None else "this session's run"
    st.caption(f"Comparing with {run}: {view.dataset.name}, "
               f"{numbers.count(cmp.network_train_size(view))} training images (seed {split.seed}), "
               f"test accuracy {numbers.percent(view.test_acc)}.")

forest_controls()
if st.button("Fit forest", key="baseline.fit", type="primary"):
    fit(dataset, split)
st.caption("The fit runs while you wait (ten trees a step); there is no Stop button yet — "
           "clicking anything else on the page interrupts it. Refits with the same settings are "
           "instant (kept on disk).")

forest = S.get("baseline.result")
if forest is not None:
    if S.get("baseline.fitted_on") != cmp.fit_key(dataset, split):
        st.warning("The forest fitted earlier was trained on another dataset or split than the one "
                   "shown now. Press **Fit forest** to fit it on this split.")
    else:
        forest_summary(forest)
        if view is not None:
            comparison_section(view, forest)
        importance_section(view, forest, dataset)

curve_section(dataset, view)
