"""Tests for dlcore.views.baseline: the network against the forest on the same split (sklearn digits)."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dlcore.engine.baselines import ForestParams, fit_forest, training_indices
from dlcore.engine.config import PRESETS
from dlcore.engine.data import load_dataset
from dlcore.engine.dataset import split_train
from dlcore.engine.train import train
from dlcore.runs.run_view import view_from_result
from dlcore.views import baseline as comparison
from dlcore.views.baseline import (
    FOREST,
    NETWORK,
    ForestSplit,
    comparison_table,
    comparison_text,
    confusion_difference,
    crossover_sentence,
    curve_text,
    first_layer_pixel_weights,
    forest_params,
    forest_split,
    importance_image,
    learning_curve,
    per_class_table,
    top_features,
)

TREES = ForestParams(n_estimators=20, random_state=0)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def config():
    return PRESETS["seed"].replace(**{"train.dataset": "digits", "train.device": "cpu",
                                      "train.epochs": 1, "model.hidden": (32,),
                                      "train.train_subset": 600, "train.seed": 5})


@pytest.fixture(scope="module")
def pair(digits, config, tmp_path_factory):
    view = view_from_result(train(config, digits), digits, run_id=7)
    forest = fit_forest(digits, TREES, **forest_split(config).kwargs(),
                        cache_dir=tmp_path_factory.mktemp("forest"))
    return view, forest


def test_forest_split_follows_early_stopping(config):
    assert forest_split(config) == ForestSplit(600, 0.0, 5)
    stopped = config.replace(**{"train.early_stopping": True, "train.val_fraction": 0.2})
    assert forest_split(stopped) == ForestSplit(600, 0.2, 5)


def test_forest_params_from_widgets():
    p = forest_params(20, 0, 0.3, 42, "handmade")
    assert p == ForestParams(20, None, 0.3, 42, "handmade")
    assert forest_params(10, 7, "log2", 1, "pixels").max_depth == 7
    with pytest.raises(ValueError, match="n_estimators"):
        forest_params(0, 0, "sqrt", 42, "pixels")


def test_comparison_table_numbers(pair, digits):
    view, forest = pair
    table = comparison_table(view, forest, network_predict_s=0.25).set_index("measure")
    assert list(table.columns) == [NETWORK, FOREST, "note"]
    assert table.loc["test accuracy", NETWORK] == pytest.approx(view.test_acc)
    assert table.loc["test accuracy", FOREST] == pytest.approx(forest.accuracy)
    assert table.loc["training images", NETWORK] == table.loc["training images", FOREST] == 600
    assert table.loc["fit / training time (s)", NETWORK] == pytest.approx(
        sum(h["seconds"] for h in view.history))
    assert table.loc["fit / training time (s)", FOREST] == pytest.approx(forest.fit_seconds)
    assert table.loc["prediction time, whole test set (s)", NETWORK] == 0.25
    assert table.loc["prediction time, whole test set (s)", FOREST] == pytest.approx(
        forest.predict_seconds)
    assert table.loc["size: parameters / tree nodes", NETWORK] == view.params == 64 * 32 + 32 + 330
    assert table.loc["size: parameters / tree nodes", FOREST] == forest.tree_nodes
    unmeasured = comparison_table(view, forest).set_index("measure")
    assert np.isnan(unmeasured.loc["prediction time, whole test set (s)", NETWORK])
    assert comparison.network_predict_seconds(view) > 0


def test_comparison_text_writes_each_row_in_its_unit(pair):
    view, forest = pair
    numeric = comparison_table(view, forest, network_predict_s=0.25)
    text = comparison_text(numeric).set_index("measure")
    assert list(text.columns) == [NETWORK, FOREST, "note"]
    assert text.loc["test accuracy", NETWORK] == f"{view.test_acc * 100:.2f}%"
    assert text.loc["training images", FOREST] == "600"
    assert text.loc["size: parameters / tree nodes", NETWORK] == "2,410"  # 64 * 32 + 32 + 330
    assert text.loc["size: parameters / tree nodes", FOREST] == f"{forest.tree_nodes:,}"
    assert text.loc["prediction time, whole test set", NETWORK] == "0.250 s"
    assert text.loc["fit / training time", FOREST].endswith(" s")
    assert list(text["note"]) == list(numeric["note"])
    unmeasured = comparison_text(comparison_table(view, forest)).set_index("measure")
    assert unmeasured.loc["prediction time, whole test set", NETWORK] == "—"


def test_comparison_text_large_values():
    numeric = pd.DataFrame({"measure": ["test accuracy", "training images",
                                        "size: parameters / tree nodes"],
                            NETWORK: [0.9575, 10000.0, 535818.0], FOREST: [0.9, 10000.0, 421642.0],
                            "note": ["", "", ""]})
    text = comparison_text(numeric).set_index("measure")
    assert text[NETWORK].tolist() == ["95.75%", "10,000", "535,818"]
    assert text[FOREST].tolist() == ["90.00%", "10,000", "421,642"]


def test_curve_text_in_words():
    curve = pd.DataFrame({"size": [100, 10000], "requested": [100, 0],
                          "network_acc": [0.5, 0.9575], "forest_acc": [0.7, 0.95],
                          "network_seconds": [1.5, 123.4], "forest_seconds": [0.05, 4.0],
                          "network_status": ["finished", "finished"]})
    text = curve_text(curve)
    assert list(text.columns) == ["training images", "network: test accuracy",
                                  "random forest: test accuracy", "network: training time",
                                  "random forest: fit time", "network: run"]
    assert text["training images"].tolist() == ["100", "10,000"]
    assert text["network: test accuracy"].tolist() == ["50.00%", "95.75%"]
    assert text["network: training time"].tolist() == ["1.50 s", "123 s"]
    assert text["random forest: fit time"].tolist() == ["0.050 s", "4.00 s"]
    assert text["network: run"].tolist() == ["finished", "finished"]


def test_per_class_table(pair, digits):
    view, forest = pair
    table = per_class_table(view, forest)
    y = digits.test_y.numpy()
    assert list(table["class"]) == list(digits.classes)
    for c in range(10):
        assert table[NETWORK][c] == pytest.approx((view.test_pred[y == c] == c).mean())
    assert np.allclose(table[FOREST], forest.per_class_accuracy)
    assert np.allclose(table["forest − network"], table[FOREST] - table[NETWORK])
    assert table["test images"].sum() == len(y)


def test_confusion_difference_sums_to_zero_with_the_forest_sign():
    y = np.array([0, 0, 1, 1, 2, 2])
    network = np.array([0, 1, 1, 1, 2, 0])  # wrong on #1 (0->1) and #5 (2->0)
    forest = np.array([0, 0, 1, 2, 2, 2])  # wrong on #3 (1->2)
    diff = confusion_difference(y, network, forest, 3)
    assert diff.sum() == 0 and np.all(diff.sum(axis=1) == 0)
    assert diff[0, 0] == 1 and diff[0, 1] == -1  # forest gets that 0 right, the network does not
    assert diff[1, 2] == 1 and diff[1, 1] == -1  # the forest's own mistake is positive
    assert diff[2, 0] == -1 and diff[2, 2] == 1


def test_confusion_difference_on_the_pair(pair, digits):
    view, forest = pair
    y = digits.test_y.numpy()
    diff = confusion_difference(y, view.test_pred, forest.predictions, 10)
    assert diff.sum() == 0
    assert np.trace(diff) == (forest.predictions == y).sum() - (view.test_pred == y).sum()


def test_importances_and_first_layer(pair, digits):
    view, forest = pair
    image = importance_image(forest.feature_importances, digits.shape)
    assert image.shape == (8, 8) and image.sum() == pytest.approx(1.0, abs=1e-4)
    assert importance_image(np.ones(3 * 4 * 5), (3, 4, 5)).tolist() == np.full((4, 5), 3.0).tolist()
    weights, note = first_layer_pixel_weights(view.model, digits.shape)
    first = view.model[1].weight.detach().abs().numpy()
    assert weights.shape == (8, 8) and np.allclose(weights.ravel(), first.mean(0))
    assert "pixel" in note
    cnn = view_from_result(train(PRESETS["cnn"].replace(**{
        "train.device": "cpu", "train.epochs": 1, "train.train_subset": 100,
        "model.conv_channels": (4,), "model.dense": 8}), digits), digits)
    weights, note = first_layer_pixel_weights(cnn.model, digits.shape)
    assert weights.shape == (3, 3) and "kernel" in note


def test_top_features_named(digits):
    values = np.zeros(3 + 16 + 8 + 8)
    values[2], values[20] = 0.7, 0.3
    top = top_features(values, digits.shape, "handmade", top=5)
    assert list(top["feature"][:2]) == ["edges", "row_ink[1]"] and len(top) == 5
    with pytest.raises(ValueError):
        top_features(values[:5], digits.shape, "handmade")


def test_sizes_options_and_resolution():
    assert comparison.size_options(1437) == [100, 300, 1000, 0]
    assert comparison.default_sizes(60000) == [100, 300, 1000, 3000, 10000, 0]
    assert comparison._resolve_sizes([300, "all", 100, 5000, 1437, 0], 1437) == [
        (100, 100), (300, 300), (0, 1437)]
    for bad in (5, -1, "many", 2.5):
        with pytest.raises(ValueError, match="sizes"):
            comparison._resolve_sizes([bad], 1000)


def test_learning_curve_same_subset(digits, config, tmp_path, monkeypatch):
    seen = {"net": [], "forest": []}
    real_train, real_fit = comparison.train, comparison.fit_forest

    def spy_train(cfg, dataset, **kw):
        seen["net"].append(cfg)
        return real_train(cfg, dataset, **kw)

    def spy_fit(dataset, params, **kw):
        seen["forest"].append({k: kw[k] for k in ("train_subset", "val_fraction", "seed")})
        return real_fit(dataset, params, **kw)

    monkeypatch.setattr(comparison, "train", spy_train)
    monkeypatch.setattr(comparison, "fit_forest", spy_fit)
    calls: list[float] = []
    cfg = config.replace(**{"train.early_stopping": True})
    curve = learning_curve(digits, cfg, [300, 100, 99999], TREES, progress=calls.append,
                           cache_dir=tmp_path)

    assert list(curve["size"]) == [len(split_train(1437, s, 0.1, 5).train) for s in (100, 300)]
    assert curve[["network_acc", "forest_acc"]].apply(lambda c: c.between(0, 1)).all().all()
    assert (curve["network_seconds"] > 0).all() and (curve["forest_seconds"] > 0).all()
    assert calls[-1] == 1.0 and all(a < b for a, b in itertools.pairwise(calls))
    assert all(0 < f <= 1 for f in calls)
    for net_cfg, kw in zip(seen["net"], seen["forest"], strict=True):
        t = net_cfg.train
        net_idx = split_train(len(digits.train_y), t.train_subset, t.val_fraction, t.seed).train
        assert np.array_equal(training_indices(len(digits.train_y), **kw), net_idx.numpy())
        assert t.epochs == 1
    assert [c.train.train_subset for c in seen["net"]] == [100, 300]


def test_learning_curve_plain_two_rows(digits, config, tmp_path):
    calls: list[float] = []
    curve = learning_curve(digits, config, [100, 300], TREES, progress=calls.append,
                           cache_dir=tmp_path)
    assert len(curve) == 2 and list(curve["size"]) == [100, 300]
    assert curve["network_acc"].between(0, 1).all() and curve["forest_acc"].between(0, 1).all()
    assert calls[-1] == 1.0 and all(a <= b for a, b in itertools.pairwise(calls))
    forest = fit_forest(digits, TREES, train_subset=300, seed=5, cache_dir=tmp_path)
    assert forest.from_cache and curve["forest_acc"].iloc[1] == forest.accuracy


def test_learning_curve_stop(digits, config, tmp_path):
    import threading

    stop = threading.Event()
    stop.set()
    curve = learning_curve(digits, config, [100], TREES, stop=stop, cache_dir=tmp_path)
    assert curve.empty and "network_acc" in curve.columns


def frame(sizes, net, forest):
    return pd.DataFrame({"size": sizes, "network_acc": net, "forest_acc": forest})


def test_crossover_sentence():
    assert "from 1,000 images on, the network overtakes" in crossover_sentence(
        frame([100, 300, 1000, 3000], [0.5, 0.6, 0.9, 0.95], [0.7, 0.8, 0.85, 0.9]))
    assert "does not overtake it in this range" in crossover_sentence(
        frame([100, 300], [0.5, 0.6], [0.7, 0.8]))
    assert "ahead at every size" in crossover_sentence(frame([100, 300], [0.9, 0.95], [0.7, 0.8]))
    assert "trade places" in crossover_sentence(frame([100, 300, 1000], [0.5, 0.9, 0.8],
                                                      [0.7, 0.8, 0.85]))
    assert "nothing to compare" in crossover_sentence(frame([], [], []))


def test_crossover_sentence_equal_accuracies_are_level_not_the_forest_ahead():
    """Issue 11: both at 95.75% everywhere read "the forest is ahead at every size tried"."""
    text = crossover_sentence(frame([100, 300, 1000], [0.9575] * 3, [0.9575] * 3))
    assert text.startswith("The two are level at every size tried (100 to 1,000 images)")
    assert "ahead at" not in text and "overtake" not in text


def test_crossover_sentence_ties_mixed_with_leads():
    net_or_level = crossover_sentence(frame([100, 300], [0.9, 0.8], [0.8, 0.8]))
    assert "network is ahead or level at every size tried" in net_or_level
    assert "level at 300 images" in net_or_level and "forest" in net_or_level
    forest_or_level = crossover_sentence(frame([100, 300, 1000], [0.8, 0.7, 0.8],
                                               [0.8, 0.8, 0.8]))
    assert "forest is ahead or level at every size tried" in forest_or_level
    assert "level at 100 and 1,000 images" in forest_or_level
    assert "does not overtake" in forest_or_level
    # a tie between the forest's last lead and the network's first does not count as either
    through_tie = crossover_sentence(frame([100, 300, 1000], [0.7, 0.8, 0.9], [0.8, 0.8, 0.8]))
    assert "ahead up to 100 images; from 1,000 images on, the network overtakes it and stays "\
        "ahead (level at 300 images)" in through_tie
    level_after = crossover_sentence(frame([100, 300, 1000], [0.7, 0.9, 0.8], [0.8, 0.8, 0.8]))
    assert "from 300 images on, the network overtakes it and is never behind again" in level_after
    assert "stays ahead" not in level_after
    level_last = crossover_sentence(frame([100, 300, 1000], [0.9, 0.7, 0.8], [0.8, 0.8, 0.8]))
    assert "forest has the last lead, at 300 images (level at 1,000 images)" in level_last
    assert "largest size" not in level_last and "trade places" in level_last


def test_curve_network_same_or_different():
    measured = comparison.curve_config(PRESETS["seed"], 3)
    assert measured.train.epochs == 3
    # what the curve sets itself, the data and the device, and the other kind's settings: same
    same = measured.replace(**{"train.train_subset": 1000, "train.dataset": "digits",
                               "train.device": "cpu", "model.conv_channels": (8,)})
    assert comparison.curve_network_changes(measured, same) == []
    assert comparison.curve_network_note(measured, same) is None
    cnn = measured.replace(**{"model.kind": "cnn"})
    assert comparison.curve_network_changes(measured, cnn) == ["Model kind: mlp → cnn"]
    note = comparison.curve_network_note(measured, cnn)
    assert note.startswith("This learning curve was measured with a different network: "
                           "**MLP 512-256, adam lr 0.001, batch 64, 3 epochs**.")
    assert "**Run learning curve** measures the current one: **CNN 32-64, k3, pool, " in note
    assert comparison.curve_network_changes(
        measured, measured.replace(**{"model.hidden": (64,), "train.lr": 0.01})) == [
        "Hidden layer widths: 512, 256 → 64", "Learning rate: 0.001 → 0.01"]
    assert comparison.curve_network_changes(measured, comparison.curve_config(measured, 1)) == [
        "Epochs: 3 → 1"]
    assert comparison.network_words(comparison.curve_config(measured, 1)).endswith(", 1 epoch")


def test_no_torch_grad_leak(pair):
    view, _ = pair
    with torch.no_grad():
        assert first_layer_pixel_weights(view.model, view.dataset.shape) is not None


def test_uses_given_cache_dir(digits, config, tmp_path: Path):
    learning_curve(digits, config, [100], TREES, cache_dir=tmp_path)
    assert any(tmp_path.glob("forest-digits-*.npz"))
