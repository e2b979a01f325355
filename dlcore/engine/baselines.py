"""The classical baseline: a random forest on the same training split the network used.

The lesson's line is `RandomForestClassifier(n_estimators=100, random_state=42)` on raw MNIST
pixels, about 0.970 test accuracy. `fit_forest` grows that forest ten trees at a time (so a
progress bar moves and a stop button works), tests it on the whole test set, and caches finished
results on disk as an `.npz` (no pickle) keyed by the data, the split and the parameters.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sklearn
import torch
from sklearn.ensemble import RandomForestClassifier

from dlcore.engine.dataset import Dataset, split_train
from dlcore.engine.paths import home_dir

FEATURE_KINDS = ("pixels", "handmade")
MAX_FEATURES_NAMES = ("sqrt", "log2")
TREES_PER_STEP = 10
EDGE_THRESHOLD = 64  # a jump of a quarter of the 0..255 range between neighbours counts as an edge
HIST_BINS = 16
_CACHE_FORMAT = 1


@dataclass(frozen=True)
class ForestParams:
    """The forest's knobs; the defaults are the lesson's forest."""

    n_estimators: int = 100
    max_depth: int | None = None
    max_features: str | float | int = "sqrt"
    random_state: int = 42
    features: str = "pixels"

    def validate(self) -> None:
        """Raise ValueError naming the field and its allowed range."""
        _int_in("n_estimators", self.n_estimators, 1, 2000)
        if self.max_depth is not None:
            _int_in("max_depth", self.max_depth, 1, 1000, "or None for unlimited")
        mf = self.max_features
        if isinstance(mf, str):
            if mf not in MAX_FEATURES_NAMES:
                raise ValueError(f"max_features: {mf!r} is not allowed; use 'sqrt', 'log2', "
                                 "a fraction in (0, 1] or a whole number >= 1")
        elif isinstance(mf, float):
            if not (math.isfinite(mf) and 0.0 < mf <= 1.0):
                raise ValueError(f"max_features: fraction {mf!r} is out of range; allowed (0, 1]")
        else:
            _int_in("max_features", mf, 1, 10_000_000, "or 'sqrt', 'log2', a fraction in (0, 1]")
        _int_in("random_state", self.random_state, 0, 2**32 - 1)
        if self.features not in FEATURE_KINDS:
            raise ValueError(f"features: {self.features!r} is not one of {', '.join(FEATURE_KINDS)}")


def _int_in(name: str, value: object, low: int, high: int, extra: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not low <= value <= high:
        raise ValueError(f"{name}: {value!r} is out of range; allowed whole numbers {low} to {high}"
                         + (f" {extra}" if extra else ""))


@dataclass
class BaselineResult:
    """A fitted (or stopped) forest's test results; the forest itself is not kept."""

    params: ForestParams
    dataset: str
    train_size: int
    accuracy: float
    per_class_accuracy: list[float]  # NaN for a class with no test images
    predictions: np.ndarray  # int64 (N_test,), test order
    probabilities: np.ndarray | None  # float32 (N_test, num_classes)
    fit_seconds: float  # time in RandomForestClassifier.fit, all steps (of the original fit)
    predict_seconds: float  # test features + predict_proba
    feature_importances: np.ndarray  # float32 (num_features,); pixels reshape to (C, H, W)
    tree_nodes: int
    status: str  # "finished" | "stopped"
    from_cache: bool


def default_cache_dir() -> Path:
    return home_dir() / "baselines"


# ---------------------------------------------------------------- features

def handmade_features(images_uint8: torch.Tensor | np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Per image: brightness, contrast, edge count, a 16-bin histogram, row and column ink.

    Input (N, C, H, W) or (N, H, W) uint8; colour is averaged to grey. Output float32
    (N, 3 + 16 + H + W). Brightness and contrast are the mean and std of the 0..255 pixels, the
    edge count is how many horizontal plus vertical neighbour pairs differ by more than
    EDGE_THRESHOLD, the histogram holds fractions of pixels, and ink is a row's or column's sum / 255.
    """
    x = images_uint8.numpy() if isinstance(images_uint8, torch.Tensor) else np.asarray(images_uint8)
    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ValueError(f"images: expected (N, C, H, W) or (N, H, W), got shape {x.shape}")
    n, _, h, w = x.shape
    out = np.empty((n, 3 + HIST_BINS + h + w), dtype=np.float32)
    for start in range(0, n, chunk):
        grey = x[start:start + chunk].astype(np.float32).mean(axis=1)  # (n, H, W)
        m = grey.shape[0]
        flat = grey.reshape(m, -1)
        out[start:start + m, 0] = flat.mean(axis=1)
        out[start:start + m, 1] = flat.std(axis=1)
        dx = np.abs(np.diff(grey, axis=2)) > EDGE_THRESHOLD
        dy = np.abs(np.diff(grey, axis=1)) > EDGE_THRESHOLD
        out[start:start + m, 2] = dx.sum(axis=(1, 2)) + dy.sum(axis=(1, 2))
        bins = np.minimum(flat, 255).astype(np.int64) * HIST_BINS // 256
        bins += (np.arange(m) * HIST_BINS)[:, None]
        hist = np.bincount(bins.ravel(), minlength=m * HIST_BINS).reshape(m, HIST_BINS)
        out[start:start + m, 3:3 + HIST_BINS] = hist / flat.shape[1]
        out[start:start + m, 3 + HIST_BINS:3 + HIST_BINS + h] = grey.sum(axis=2) / 255.0
        out[start:start + m, 3 + HIST_BINS + h:] = grey.sum(axis=1) / 255.0
    return out


def feature_names(shape: tuple[int, int, int], features: str) -> list[str]:
    """Names in feature order for images of `shape` (C, H, W): pixels are `px[c,y,x]`."""
    c, h, w = shape
    if features == "pixels":
        return [f"px[{ci},{y},{x}]" for ci in range(c) for y in range(h) for x in range(w)]
    if features == "handmade":
        step = 256 // HIST_BINS
        return (["brightness", "contrast", "edges"]
                + [f"hist[{b * step}-{b * step + step - 1}]" for b in range(HIST_BINS)]
                + [f"row_ink[{y}]" for y in range(h)] + [f"col_ink[{x}]" for x in range(w)])
    raise ValueError(f"features: {features!r} is not one of {', '.join(FEATURE_KINDS)}")


def _features(images: torch.Tensor, features: str) -> np.ndarray:
    if features == "handmade":
        return handmade_features(images)
    # float32 is what the trees use internally, so this is the only copy sklearn needs.
    return images.reshape(len(images), -1).numpy().astype(np.float32)


def training_indices(num_train: int, train_subset: int = 0, val_fraction: float = 0.0,
                     seed: int = 42) -> np.ndarray:
    """Indices into `train_x` the forest fits on: exactly the network's training split."""
    return split_train(num_train, train_subset, val_fraction, seed).train.numpy()


# ---------------------------------------------------------------- cache

def _fingerprint(dataset: Dataset) -> str:
    """A cheap hash of the data: 512 sampled pixels per split, the shapes and label sums."""
    h = hashlib.sha256()
    for x, y in ((dataset.train_x, dataset.train_y), (dataset.test_x, dataset.test_y)):
        flat = x.reshape(-1)
        if flat.numel():
            pos = torch.arange(512, dtype=torch.int64) * (flat.numel() - 1) // 511  # exact ints
            h.update(flat[pos].contiguous().numpy().tobytes())
        h.update(repr((tuple(x.shape), int(y.sum()), int((y * (torch.arange(len(y)) % 7)).sum())))
                 .encode())
    h.update(json.dumps(list(dataset.classes)).encode())
    return h.hexdigest()[:32]


def _cache_key(dataset: Dataset, params: ForestParams, train_subset: int, val_fraction: float,
               seed: int) -> dict:
    key = {"format": _CACHE_FORMAT, "sklearn": sklearn.__version__, "dataset": dataset.name,
            "num_train": len(dataset.train_y), "num_test": len(dataset.test_y),
            "fingerprint": _fingerprint(dataset), "train_subset": int(train_subset),
            "val_fraction": float(val_fraction), "seed": int(seed),
            "params": dataclasses.asdict(params)}
    # numpy scalars become plain numbers, so the key compares equal to its JSON round trip.
    return json.loads(json.dumps(key, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def _cache_path(cache_dir: Path, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in key["dataset"])[:40]
    return cache_dir / f"forest-{safe}-{digest}.npz"


def _load_cached(path: Path, key: dict, dataset: Dataset, num_features: int
                 ) -> BaselineResult | None:
    """The cached result, or None for a missing, unreadable or inconsistent file."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"][()]))
            predictions = np.asarray(z["predictions"])
            probabilities = np.asarray(z["probabilities"]) if "probabilities" in z.files else None
            importances = np.asarray(z["feature_importances"])
        n_test, k = len(dataset.test_y), dataset.num_classes
        per_class = [float(v) for v in meta["per_class_accuracy"]]
        ok = (meta.get("key") == key and meta.get("status") == "finished"
              and predictions.shape == (n_test,) and predictions.dtype == np.int64
              and importances.shape == (num_features,) and len(per_class) == k
              and (probabilities is None or probabilities.shape == (n_test, k))
              and bool(np.all((predictions >= 0) & (predictions < k))))
        if not ok:
            return None
        return BaselineResult(
            params=ForestParams(**meta["key"]["params"]), dataset=str(meta["dataset"]),
            train_size=int(meta["train_size"]), accuracy=float(meta["accuracy"]),
            per_class_accuracy=per_class, predictions=predictions,
            probabilities=None if probabilities is None else probabilities.astype(np.float32),
            fit_seconds=float(meta["fit_seconds"]), predict_seconds=float(meta["predict_seconds"]),
            feature_importances=importances.astype(np.float32), tree_nodes=int(meta["tree_nodes"]),
            status="finished", from_cache=True)
    except Exception:  # noqa: BLE001 - any damage means "not cached", never a crash
        return None


def _save_cached(path: Path, key: dict, result: BaselineResult) -> None:
    """Write atomically (temp file + os.replace); a cache that cannot be written is skipped."""
    meta = {"key": key, "dataset": result.dataset, "train_size": result.train_size,
            "accuracy": result.accuracy, "per_class_accuracy": result.per_class_accuracy,
            "fit_seconds": result.fit_seconds, "predict_seconds": result.predict_seconds,
            "tree_nodes": result.tree_nodes, "status": result.status}
    arrays = {"meta": np.array(json.dumps(meta)), "predictions": result.predictions,
              "feature_importances": result.feature_importances}
    if result.probabilities is not None:
        arrays["probabilities"] = result.probabilities
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npz")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError:
        pass
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


# ---------------------------------------------------------------- fitting

def fit_forest(dataset: Dataset, params: ForestParams, *, train_subset: int = 0,
               val_fraction: float = 0.0, seed: int = 42,
               progress: Callable[[float], None] | None = None,
               stop: threading.Event | None = None, cache_dir: Path | None = None,
               use_cache: bool = True) -> BaselineResult:
    """Fit a forest on the network's training split and test it on the whole test set.

    `train_subset`, `val_fraction` and `seed` are the network's (`val_fraction` only when it used
    early stopping, else 0.0). Trees are grown ten per step; `progress(fraction)` is called after
    each step, ending at exactly 1.0, and `stop` is checked between steps (a stopped fit returns
    status "stopped" with the trees grown so far, and is never cached).
    """
    params.validate()
    num_features = (dataset.num_features if params.features == "pixels"
                    else 3 + HIST_BINS + dataset.shape[1] + dataset.shape[2])
    if (isinstance(params.max_features, (int, np.integer))
            and not isinstance(params.max_features, bool) and params.max_features > num_features):
        raise ValueError(f"max_features: {params.max_features} is out of range; "
                         f"allowed 1 to {num_features} for these features")
    key = path = None
    if use_cache:
        key = _cache_key(dataset, params, train_subset, val_fraction, seed)
        path = _cache_path(Path(cache_dir) if cache_dir is not None else default_cache_dir(), key)
        cached = _load_cached(path, key, dataset, num_features)
        if cached is not None:
            if progress is not None:
                progress(1.0)
            return cached

    idx = training_indices(len(dataset.train_y), train_subset, val_fraction, seed)
    x_train = _features(dataset.train_x[torch.from_numpy(idx)], params.features)
    y_train = dataset.train_y[torch.from_numpy(idx)].numpy()
    forest = RandomForestClassifier(
        n_estimators=0, max_depth=params.max_depth, max_features=params.max_features,
        random_state=params.random_state, n_jobs=-1, warm_start=True)
    total, grown, fit_seconds, status = params.n_estimators, 0, 0.0, "finished"
    while grown < total:
        grown = min(grown + TREES_PER_STEP, total)
        forest.set_params(n_estimators=grown)
        t0 = time.perf_counter()
        forest.fit(x_train, y_train)
        fit_seconds += time.perf_counter() - t0
        if progress is not None:
            progress(grown / total)
        if grown < total and stop is not None and stop.is_set():
            status = "stopped"
            break
    del x_train

    t0 = time.perf_counter()
    proba = forest.predict_proba(_features(dataset.test_x, params.features))
    predict_seconds = time.perf_counter() - t0
    k = dataset.num_classes
    probabilities = np.zeros((len(dataset.test_y), k), dtype=np.float32)
    probabilities[:, forest.classes_.astype(np.int64)] = proba
    predictions = forest.classes_[proba.argmax(axis=1)].astype(np.int64)
    y_test = dataset.test_y.numpy()
    correct = predictions == y_test
    per_class = [float(correct[y_test == c].mean()) if np.any(y_test == c) else float("nan")
                 for c in range(k)]
    result = BaselineResult(
        params=params, dataset=dataset.name, train_size=len(idx),
        accuracy=float(correct.mean()) if len(correct) else float("nan"),
        per_class_accuracy=per_class, predictions=predictions, probabilities=probabilities,
        fit_seconds=fit_seconds, predict_seconds=predict_seconds,
        feature_importances=forest.feature_importances_.astype(np.float32),
        tree_nodes=int(sum(est.tree_.node_count for est in forest.estimators_)),
        status=status, from_cache=False)
    if status == "finished" and path is not None and key is not None:
        _save_cached(path, key, result)
    return result
