"""The network against the random forest: same split, same test set, side by side.

Pure functions for the Random Forest baseline page: the comparison table, per-class accuracy of
both, the difference of their confusion matrices, feature importances next to the network's
first-layer weights, and the learning curve (both models on the same growing subsets), with the
class's rules for the networks it trains (in the server's process, not through the job queue),
applied as `JobManager.submit` applies them to a run.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from dlcore import numbers
from dlcore.engine.baselines import BaselineResult, ForestParams, feature_names, fit_forest
from dlcore.engine.config import RunConfig, setting_label
from dlcore.engine.dataset import Dataset, split_sizes
from dlcore.engine.duration import check_duration, estimate_run_seconds
from dlcore.engine.memory import check_memory, estimate_memory
from dlcore.engine.metrics import confusion, per_class_accuracy
from dlcore.engine.models import first_weight_layer
from dlcore.engine.train import BatchProgress, EpochEnd, evaluate, input_normaliser, train
from dlcore.runs.policy import ClassPolicy
from dlcore.runs.run_view import RunView
from dlcore.views.shared import model_summary

NETWORK, FOREST = "network", "random forest"
CURVE_SIZES = (100, 300, 1000, 3000, 10000)
MAX_FEATURES_CHOICES = ("sqrt", "log2", 0.1, 0.3)

# ---------------------------------------------------------------- which split the forest fits on


@dataclass(frozen=True)
class ForestSplit:
    """What `fit_forest` needs to fit on exactly a network's training split."""

    train_subset: int = 0
    val_fraction: float = 0.0
    seed: int = 42

    def kwargs(self) -> dict:
        return {"train_subset": self.train_subset, "val_fraction": self.val_fraction,
                "seed": self.seed}


def forest_split(config: RunConfig) -> ForestSplit:
    """The network's split: its subset and seed, and its validation part only with early stopping."""
    cfg = config.train
    return ForestSplit(int(cfg.train_subset), float(cfg.held_out), int(cfg.seed))


def fit_key(dataset: Dataset, split: ForestSplit) -> tuple:
    """Identifies the data a forest was fitted on, to tell whether it still matches the run shown."""
    return (dataset.name, len(dataset.train_y), len(dataset.test_y), dataset.shape, split)


def forest_params(trees: int, max_depth: int, max_features: str | float, random_state: int,
                  features: str) -> ForestParams:
    """The page's widget values as validated ForestParams (`max_depth` 0 means no limit).

    Raises ValueError naming the field for a value out of range.
    """
    params = ForestParams(n_estimators=int(trees), max_depth=int(max_depth) or None,
                          max_features=max_features, random_state=int(random_state),
                          features=features)
    params.validate()
    return params


# ---------------------------------------------------------------- the network's side


def view_token(view: RunView) -> str:
    """Changes when another run is shown (the view object itself is rebuilt on every rerun)."""
    digest = hashlib.sha1()
    digest.update(repr((view.run_id, view.dataset.name, len(view.test_pred))).encode())
    digest.update(np.ascontiguousarray(view.test_pred).tobytes())
    return digest.hexdigest()[:16]


def network_train_seconds(history: Sequence[dict]) -> float:
    """The sum of the epochs' seconds (NaN when the history holds none)."""
    seconds = [float(h["seconds"]) for h in history
               if h.get("seconds") is not None and math.isfinite(float(h["seconds"]))]
    return float(sum(seconds)) if seconds else float("nan")


def network_predict_seconds(view: RunView, repeats: int = 1) -> float:
    """Wall time of one forward pass over the whole test set on the CPU (the best of `repeats`)."""
    scale, shift = input_normaliser(view.dataset, view.config.train.normalize)
    best = math.inf
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        evaluate(view.model, view.dataset.test_x, view.dataset.test_y, scale, shift)
        best = min(best, time.perf_counter() - t0)
    return best


def network_train_size(view: RunView) -> int:
    """How many images the network trained on (its split's training part)."""
    cfg = view.config.train
    return split_sizes(len(view.dataset.train_y), cfg.train_subset, cfg.held_out)[0]


# ---------------------------------------------------------------- tables


# How each row of the comparison table is written for the page: its measure without the unit
# where the cells carry it, and the one rule of dlcore.numbers for its cells.
TEXT_ROWS: dict[str, tuple[str, Callable[[float], str]]] = {
    "test accuracy": ("test accuracy", numbers.percent),
    "training images": ("training images", numbers.count),
    "fit / training time (s)": ("fit / training time", numbers.seconds),
    "prediction time, whole test set (s)": ("prediction time, whole test set", numbers.seconds),
    "size: parameters / tree nodes": ("size: parameters / tree nodes", numbers.count),
}


def comparison_table(view: RunView, forest: BaselineResult,
                     network_predict_s: float | None = None) -> pd.DataFrame:
    """One row per measure, one column per model, numbers as numbers and a note to read them by.

    Rows: test accuracy, training images, fit/training time (s), prediction time for the whole
    test set (s; NaN for the network when `network_predict_s` is not given), and size (the
    network's parameters against the forest's tree nodes). `comparison_text` writes it for a page.
    """
    predict = float("nan") if network_predict_s is None else float(network_predict_s)
    rows = [
        ("test accuracy", view.test_acc, forest.accuracy, "fraction of the test set right"),
        ("training images", network_train_size(view), forest.train_size, "the same split for both"),
        ("fit / training time (s)", network_train_seconds(view.history), forest.fit_seconds,
         "network: sum of its epochs (each includes a test pass); forest: fit only"),
        ("prediction time, whole test set (s)", predict, forest.predict_seconds,
         "network: one forward pass on the CPU; forest: features + predict_proba"),
        ("size: parameters / tree nodes", view.params, forest.tree_nodes,
         "network: learned weights; forest: nodes in all its trees"),
    ]
    return pd.DataFrame({
        "measure": [r[0] for r in rows],
        NETWORK: np.array([r[1] for r in rows], dtype=np.float64),
        FOREST: np.array([r[2] for r in rows], dtype=np.float64),
        "note": [r[3] for r in rows],
    })


def comparison_text(table: pd.DataFrame) -> pd.DataFrame:
    """`comparison_table` as the page shows it: every cell text, each row in its own unit
    (accuracy "95.75%", images and sizes "535,818", times "12.3 s"; "—" where not measured)."""
    rows = []
    for _, row in table.iterrows():
        label, write = TEXT_ROWS.get(row["measure"], (row["measure"], numbers.number))
        rows.append({"measure": label, NETWORK: write(row[NETWORK]), FOREST: write(row[FOREST]),
                     "note": row["note"]})
    return pd.DataFrame(rows, columns=["measure", NETWORK, FOREST, "note"])


def per_class_table(view: RunView, forest: BaselineResult) -> pd.DataFrame:
    """Accuracy (recall) of each class for both models, and forest minus network."""
    y = view.dataset.test_y.numpy()
    net = per_class_accuracy(y, view.test_pred, view.dataset.num_classes)
    counts = np.bincount(y, minlength=view.dataset.num_classes)
    net = np.where(counts > 0, net, np.nan)
    trees = np.asarray(forest.per_class_accuracy, dtype=np.float64)
    return pd.DataFrame({"class": list(view.dataset.classes), NETWORK: net, FOREST: trees,
                         "forest − network": trees - net, "test images": counts})


def confusion_difference(y_true: np.ndarray, network_pred: np.ndarray, forest_pred: np.ndarray,
                         num_classes: int) -> np.ndarray:
    """Forest's confusion matrix minus the network's (counts; rows true, columns predicted).

    Positive on the diagonal: the forest gets more of that class right. Positive off the
    diagonal: the forest makes that mistake more often. Every row (and the whole) sums to 0.
    """
    return (confusion(y_true, forest_pred, num_classes).astype(np.int64)
            - confusion(y_true, network_pred, num_classes).astype(np.int64))


# ---------------------------------------------------------------- what each model looks at


def importance_image(importances: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Pixel-feature importances as an H×W image (summed over colour channels)."""
    c, h, w = shape
    return np.asarray(importances, dtype=np.float32).reshape(c, h, w).sum(axis=0)


def top_features(importances: np.ndarray, shape: tuple[int, int, int], features: str,
                 top: int = 20) -> pd.DataFrame:
    """The `top` most important features by name, most important first."""
    names = feature_names(shape, features)
    values = np.asarray(importances, dtype=np.float64)
    if len(values) != len(names):
        raise ValueError(f"{len(values)} importances for {len(names)} {features} features")
    order = np.argsort(-values, kind="stable")[:top]
    return pd.DataFrame({"feature": [names[i] for i in order], "importance": values[order]})


def first_layer_pixel_weights(model: nn.Module, shape: tuple[int, int, int]
                              ) -> tuple[np.ndarray, str] | None:
    """What the network's first layer weighs at each input position, and a note saying what it is.

    A dense first layer: the mean absolute weight per input pixel (averaged over units and colour
    channels), H×W. A conv first layer has no weight per pixel (the same kernels slide over every
    pixel), so its mean absolute kernel (k×k) is returned instead. None without such a layer.
    """
    layer = first_weight_layer(model)
    if layer is None:
        return None
    weight = layer.weight.detach().float().abs().cpu().numpy()
    c, h, w = shape
    if isinstance(layer, nn.Linear) and weight.shape[1] == c * h * w:
        return (weight.mean(axis=0).reshape(c, h, w).mean(axis=0),
                "mean |weight| of the first dense layer at each input pixel")
    if weight.ndim == 4:
        return (weight.mean(axis=(0, 1)),
                f"a conv layer uses the same {weight.shape[2]}×{weight.shape[3]} kernels at every "
                "pixel, so it has no weight per pixel; shown: its mean |weight| per kernel position")
    return None


# ---------------------------------------------------------------- learning curve


def size_options(num_train: int, candidates: Sequence[int] = (*CURVE_SIZES, 30000)) -> list[int]:
    """Training-set sizes offered for the curve, below the training set's size; 0 means all."""
    return [s for s in candidates if s < num_train] + [0]


def default_sizes(num_train: int) -> list[int]:
    return [s for s in CURVE_SIZES if s < num_train] + [0]


def _resolve_sizes(sizes: Sequence[int | str], num_train: int) -> list[tuple[int, int]]:
    """(subset argument, images it keeps) for each usable size, smallest first, duplicates dropped."""
    out: dict[int, int] = {}
    for size in sizes:
        if isinstance(size, str):
            if size.strip().lower() != "all":
                raise ValueError(f"sizes: {size!r} is not a number of images or 'all'")
            size = 0
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 0:
            raise ValueError(f"sizes: {size!r} is not a whole number of images >= 0")
        size = int(size)
        if 0 < size < 10:
            raise ValueError(f"sizes: {size} is too small; use 10 or more images (0 = all)")
        if size > num_train:
            continue  # more than the training set holds
        keep = num_train if size in (0, num_train) else size
        out.setdefault(keep, 0 if keep == num_train else size)
    return [(out[k], k) for k in sorted(out)]


def learning_curve(dataset: Dataset, config: RunConfig, sizes: Sequence[int | str],
                   forest_params: ForestParams, progress: Callable[[float], None] | None = None,
                   stop: threading.Event | None = None, cache_dir=None) -> pd.DataFrame:
    """Train the network and fit the forest on the same subset for each size; test both.

    Sizes larger than the training set are skipped; 0 or "all" is the whole set. The network is
    `config` with `train.train_subset` set to the size (epochs, device, model as given); the forest
    fits on the same split (its validation part too, when the config uses early stopping).
    `progress(fraction)` rises to exactly 1.0; with `stop` set the rows finished so far come back.
    Columns: size (images trained on), requested (0 = all), network_acc, forest_acc,
    network_seconds (sum of epoch seconds), forest_seconds (fit), network_status.
    """
    forest_params.validate()
    config.validate()
    plan = _resolve_sizes(sizes, len(dataset.train_y))
    stop = stop or threading.Event()
    total = float(sum(keep for _, keep in plan)) or 1.0
    done = 0.0
    last = [0.0]

    def report(fraction: float) -> None:
        """Pass on a rise of at least half a percent (and the final 1.0), never a fall."""
        fraction = min(max(fraction, last[0]), 1.0)
        rose = fraction - last[0] >= 0.005 or (fraction == 1.0 and last[0] < 1.0)
        if progress is not None and rose:
            last[0] = fraction
            progress(fraction)

    rows = []
    for subset, keep in plan:
        if stop.is_set():
            break
        weight = keep / total
        base = done

        def on_event(event, base=base, weight=weight) -> None:
            if isinstance(event, BatchProgress):
                part = event.fraction_done
            elif isinstance(event, EpochEnd):
                part = event.metrics.epoch / max(config.train.epochs, 1)
            else:
                return
            report(base + weight * 0.5 * min(part, 1.0))

        net = train(config.replace(**{"train.train_subset": subset}), dataset, on_event=on_event,
                    stop=stop)
        if net.status == "stopped":
            break
        split = forest_split(config.replace(**{"train.train_subset": subset}))
        forest = fit_forest(dataset, forest_params, **split.kwargs(), stop=stop, cache_dir=cache_dir,
                            progress=lambda f, base=base, weight=weight:
                            report(base + weight * (0.5 + 0.5 * f)))
        if forest.status == "stopped":
            break
        final = net.final
        rows.append({"size": forest.train_size, "requested": subset,
                     "network_acc": final.test_acc if final else float("nan"),
                     "forest_acc": forest.accuracy,
                     "network_seconds": network_train_seconds([m.as_dict() for m in net.history]),
                     "forest_seconds": forest.fit_seconds, "network_status": net.status})
        done += weight
        report(min(done, 0.999))
    if not stop.is_set():
        report(1.0)
    columns = ["size", "requested", "network_acc", "forest_acc", "network_seconds",
               "forest_seconds", "network_status"]
    return pd.DataFrame(rows, columns=columns)


# ---------------------------------------------------------------- which network a curve measured

# Settings that do not change the network a curve measures: it sets the subset itself, runs on the
# page's dataset whatever the config names, and the device only changes how fast it goes.
CURVE_IGNORES = ("train.train_subset", "train.dataset", "train.device")
# Each kind's model settings that the other kind does not use.
KIND_ONLY = {"mlp": ("model.hidden",),
             "cnn": ("model.conv_channels", "model.kernel_size", "model.pool", "model.dense")}


@dataclass(frozen=True, eq=False)
class MeasuredCurve:
    """A learning curve with what it was measured on: the dataset (its name and training-set
    size) and the network's config (the Train page's settings with the curve's epochs)."""

    dataset: str
    num_train: int
    config: RunConfig
    curve: pd.DataFrame

    def same_dataset(self, dataset: Dataset) -> bool:
        return self.dataset == dataset.name and self.num_train == len(dataset.train_y)


def curve_config(config: RunConfig, epochs: int) -> RunConfig:
    """The network a learning curve trains: the Train page's `config` for `epochs` epochs."""
    return config.replace(**{"train.epochs": int(epochs)})


def curve_runs(config: RunConfig, sizes: Sequence[int | str], num_train: int) -> list[RunConfig]:
    """The networks `learning_curve` trains for these sizes, smallest first: `config` on each
    subset."""
    return [config.replace(**{"train.train_subset": subset})
            for subset, _ in _resolve_sizes(sizes, num_train)]


def network_words(config: RunConfig) -> str:
    """The network and how it trains, in a few words: "MLP 512-256, adam lr 0.001, batch 64,
    3 epochs" (the model as the Class page writes it)."""
    t = config.train
    epochs = f"{numbers.count(t.epochs)} epoch{'' if t.epochs == 1 else 's'}"
    return (f"{model_summary(config)}, {t.optimizer} lr {t.lr:g}, "
            f"batch {numbers.count(t.batch_size)}, {epochs}")


def _setting_words(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ", ".join(_setting_words(v) for v in value) or "none"
    if isinstance(value, float):
        return f"{value:g}"
    return numbers.count(value) if isinstance(value, int) else str(value)


def curve_network_changes(measured: RunConfig, current: RunConfig) -> list[str]:
    """What differs between the network a curve was measured with and the one it would measure
    now, each as "Label: old → new"; empty when it is the same network. The subset, dataset and
    device do not count (see CURVE_IGNORES), nor settings neither model kind uses."""
    both = {measured.model.kind} & {current.model.kind}  # the kind both use, if the same
    ignored = {*CURVE_IGNORES, *(key for kind, keys in KIND_ONLY.items() if kind not in both
                                 for key in keys)}
    before, after = measured.flat(), current.flat()
    return [f"{setting_label(key)}: {_setting_words(before[key])} → {_setting_words(after[key])}"
            for key in before if key not in ignored and before[key] != after[key]]


def curve_network_note(measured: RunConfig, current: RunConfig) -> str | None:
    """None when a curve measured with `measured` is of the network `current` would train now;
    else a sentence naming both and what changed, and saying how to measure the current one."""
    changes = curve_network_changes(measured, current)
    if not changes:
        return None
    return (f"This learning curve was measured with a different network: "
            f"**{network_words(measured)}**. Pressing **Run learning curve** measures the current "
            f"one: **{network_words(current)}** (changed: {'; '.join(changes)}).")


CURVE_TEXT_COLUMNS = {"size": "training images", "network_acc": f"{NETWORK}: test accuracy",
                      "forest_acc": f"{FOREST}: test accuracy",
                      "network_seconds": f"{NETWORK}: training time",
                      "forest_seconds": f"{FOREST}: fit time", "network_status": f"{NETWORK}: run"}


def curve_text(curve: pd.DataFrame) -> pd.DataFrame:
    """`learning_curve`'s frame as the page shows it: columns in words, cells written by the one
    rule (images "1,000", accuracies "95.75%", times "12.3 s"); `requested` is left out (the size
    column says how many images each point trained on)."""
    text = numbers.as_text(curve, {"size": numbers.count, "network_acc": numbers.percent,
                                   "forest_acc": numbers.percent,
                                   "network_seconds": numbers.seconds,
                                   "forest_seconds": numbers.seconds})
    return text[list(CURVE_TEXT_COLUMNS)].rename(columns=CURVE_TEXT_COLUMNS)


def _sizes_words(sizes: Sequence[float]) -> str:
    """"300 images", "100 and 300 images", "100, 300 and 1,000 images"."""
    words = [numbers.count(s) for s in sizes]
    listed = words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"
    return f"{listed} images"


def crossover_sentence(curve: pd.DataFrame) -> str:
    """Where the network overtakes the forest on this curve, in one sentence.

    Equal accuracies are a tie, said as "level": only a strict lead counts as being ahead, and a
    crossover is a strict lead of the forest followed by strict leads of the network.
    """
    frame = curve.dropna(subset=["network_acc", "forest_acc"]).sort_values("size")
    if frame.empty:
        return "No sizes finished, so there is nothing to compare."
    sizes = frame["size"].to_numpy()
    lead = np.sign(frame["network_acc"].to_numpy(dtype=np.float64)
                   - frame["forest_acc"].to_numpy(dtype=np.float64))  # +1 network, -1 forest, 0 level
    span = f"{numbers.count(sizes[0])} to {numbers.count(sizes[-1])} images"
    ties = f"level at {_sizes_words(sizes[lead == 0])}" if (lead == 0).any() else ""
    level = f" ({ties})" if ties else ""
    if (lead == 0).all():
        return (f"The two are level at every size tried ({span}): neither is ahead in this range, "
                "so there is no crossover to see.")
    if (lead > 0).all():
        return (f"The network is ahead at every size tried ({span}): in this range it never needs "
                "the forest's help.")
    if (lead >= 0).all():
        return (f"The network is ahead or level at every size tried ({span}; {ties}): the forest "
                "never leads in this range.")
    if (lead < 0).all():
        return (f"The forest is ahead at every size tried ({span}): the network does not overtake "
                "it in this range — small data is traditional ML's ground.")
    if (lead <= 0).all():
        return (f"The forest is ahead or level at every size tried ({span}; {ties}): the network "
                "does not overtake it in this range — small data is traditional ML's ground.")
    last_forest = int(np.flatnonzero(lead < 0)[-1])
    after = np.flatnonzero(lead[last_forest:] > 0)
    if not after.size:  # the forest has the last strict lead
        where = (f"is ahead at the largest size tried ({numbers.count(sizes[-1])} images)"
                 if lead[-1] < 0 else
                 f"has the last lead, at {numbers.count(sizes[last_forest])} images")
        return (f"The forest {where}{level}; the two trade places along the way, so the network "
                "does not overtake it for good in this range.")
    first = last_forest + int(after[0])  # the network's first strict lead after the forest's last
    stays = "stays ahead" if (lead[first:] > 0).all() else "is never behind again"
    return (f"The forest is ahead up to {numbers.count(sizes[last_forest])} images; from "
            f"{numbers.count(sizes[first])} images on, the network overtakes it and {stays}{level}.")


# ---------------------------------------------------------------- the class's rules for the curve

MAX_CURVE_EPOCHS = 20


def curve_epochs_limit(policy: ClassPolicy, teacher: bool) -> int:
    """The most network epochs this person's curve may take: MAX_CURVE_EPOCHS, or less where the
    class caps a student's epochs."""
    cap = None if teacher else policy.caps.get("train.epochs")
    return MAX_CURVE_EPOCHS if cap is None else max(1, min(MAX_CURVE_EPOCHS, int(cap)))


def check_curve(config: RunConfig, dataset: Dataset, sizes: Sequence[int | str], *,
                policy: ClassPolicy, teacher: bool, memory_limit: int) -> None:
    """Refuse a learning curve whose networks a run could not have: for a student, one that breaks
    the class's rules (PolicyError); for anyone, one whose largest network needs more memory than
    one run may use (MemoryLimitError) or whose networks together would take longer than the
    class's time cap (DurationLimitError)."""
    runs = curve_runs(config, sizes, len(dataset.train_y))
    if not runs:
        return
    if not teacher:
        for run in runs:
            policy.check(run)
    shape, classes, tests = dataset.shape, dataset.num_classes, len(dataset.test_y)
    check_memory(estimate_memory(runs[-1], shape, classes, len(dataset.train_y), tests),
                 memory_limit)
    if policy.max_job_seconds is not None:
        seconds = sum(estimate_run_seconds(run, shape, classes, len(dataset.train_y), tests)
                      for run in runs)
        check_duration(seconds, policy.max_job_seconds)
