"""Tests for the random-forest baseline (dlcore.engine.baselines) and its CLI (dlcore.cli.baseline).

Fast tests use sklearn's 8x8 digits built into a Dataset here. The real-MNIST check is marked
`slow`: it runs where ../shared/data/mnist exists (100 trees on 60,000 images take a minute or
two on a small machine); `-m "not slow"` leaves it out.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import threading
import time
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from dlcore.engine import baselines
from dlcore.engine.baselines import ForestParams, feature_names, fit_forest, handmade_features
from dlcore.engine.dataset import Dataset, DatasetError, split_train

MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def make_digits(name: str = "digits", num_train: int = 1400) -> Dataset:
    x, y = load_digits(return_X_y=True)
    images = torch.from_numpy(np.clip(x * 16, 0, 255).astype(np.uint8).reshape(-1, 1, 8, 8))
    labels = torch.from_numpy(y.astype(np.int64))
    train = images[:num_train].float() / 255
    return Dataset(name, images[:num_train], labels[:num_train], images[num_train:],
                   labels[num_train:], tuple(str(i) for i in range(10)),
                   (float(train.mean()),), (float(train.std()),), "sklearn load_digits")


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return make_digits()


SMALL = ForestParams(n_estimators=25, random_state=0)


def test_params_validate_names_field() -> None:
    ForestParams().validate()
    ForestParams(max_features=0.5, max_depth=3).validate()
    for bad, field in [({"n_estimators": 0}, "n_estimators"), ({"max_depth": 0}, "max_depth"),
                       ({"max_features": "all"}, "max_features"),
                       ({"max_features": 1.5}, "max_features"),
                       ({"random_state": -1}, "random_state"), ({"features": "hog"}, "features")]:
        with pytest.raises(ValueError, match=field):
            ForestParams(**bad).validate()


def test_same_split_as_network(digits: Dataset, tmp_path: Path, monkeypatch) -> None:
    seen = {}

    class Spy(baselines.RandomForestClassifier):
        def fit(self, x, y, sample_weight=None):
            seen["x"], seen["y"] = x, y
            return super().fit(x, y, sample_weight)

    monkeypatch.setattr(baselines, "RandomForestClassifier", Spy)
    result = fit_forest(digits, SMALL, train_subset=500, seed=3, cache_dir=tmp_path)
    expected = split_train(len(digits.train_y), 500, 0.0, 3).train
    assert result.train_size == 500
    assert np.array_equal(baselines.training_indices(len(digits.train_y), 500, 0.0, 3),
                          expected.numpy())
    assert np.array_equal(seen["x"], digits.train_x[expected].reshape(500, -1).numpy())
    assert np.array_equal(seen["y"], digits.train_y[expected].numpy())
    # with early stopping the network trains on split.train only; so does the forest
    result = fit_forest(digits, SMALL, train_subset=500, val_fraction=0.2, seed=3,
                        cache_dir=tmp_path)
    assert result.train_size == len(split_train(len(digits.train_y), 500, 0.2, 3).train) == 400


def test_result_shapes_and_fields(digits: Dataset, tmp_path: Path) -> None:
    r = fit_forest(digits, SMALL, cache_dir=tmp_path)
    n = len(digits.test_y)
    assert r.status == "finished" and not r.from_cache and r.dataset == "digits"
    assert r.predictions.dtype == np.int64 and r.predictions.shape == (n,)
    assert r.probabilities is not None and r.probabilities.dtype == np.float32
    assert r.probabilities.shape == (n, 10)
    assert np.allclose(r.probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert r.accuracy == pytest.approx(float((r.predictions == digits.test_y.numpy()).mean()))
    assert len(r.per_class_accuracy) == 10 and all(0 <= v <= 1 for v in r.per_class_accuracy)
    assert r.feature_importances.reshape(digits.shape).shape == (1, 8, 8)
    assert r.feature_importances.sum() == pytest.approx(1.0, abs=1e-4)
    assert r.tree_nodes > 25 and r.fit_seconds > 0 and r.predict_seconds > 0
    assert r.accuracy > 0.85


def test_progress_monotonic_to_one(digits: Dataset, tmp_path: Path) -> None:
    calls: list[float] = []
    fit_forest(digits, ForestParams(n_estimators=23), progress=calls.append, use_cache=False)
    assert len(calls) == 3 and calls[-1] == 1.0
    assert all(a < b for a, b in itertools.pairwise(calls))
    calls.clear()
    fit_forest(digits, ForestParams(n_estimators=7), progress=calls.append, cache_dir=tmp_path)
    assert calls == [1.0]


def test_stop_after_first_step(digits: Dataset, tmp_path: Path) -> None:
    stop = threading.Event()
    calls: list[float] = []

    def progress(fraction: float) -> None:
        calls.append(fraction)
        stop.set()

    r = fit_forest(digits, ForestParams(n_estimators=50), progress=progress, stop=stop,
                   cache_dir=tmp_path)
    assert r.status == "stopped" and calls == [0.2]
    assert r.predictions.shape == (len(digits.test_y),) and 0.5 < r.accuracy <= 1.0
    assert not any(tmp_path.iterdir())
    assert not fit_forest(digits, ForestParams(n_estimators=50), cache_dir=tmp_path).from_cache


def test_cache_miss_then_hit(digits: Dataset, tmp_path: Path) -> None:
    first = fit_forest(digits, SMALL, train_subset=800, seed=5, cache_dir=tmp_path)
    assert not first.from_cache and len(list(tmp_path.glob("*.npz"))) == 1
    t0 = time.perf_counter()
    second = fit_forest(digits, SMALL, train_subset=800, seed=5, cache_dir=tmp_path)
    assert time.perf_counter() - t0 < 0.5
    assert second.from_cache and second.accuracy == first.accuracy
    assert np.array_equal(second.predictions, first.predictions)
    assert np.array_equal(second.probabilities, first.probabilities)
    assert np.array_equal(second.feature_importances, first.feature_importances)
    assert second.params == first.params and second.tree_nodes == first.tree_nodes
    assert second.per_class_accuracy == first.per_class_accuracy
    # a different split, other params or other data are different entries
    assert not fit_forest(digits, SMALL, train_subset=800, seed=6, cache_dir=tmp_path).from_cache
    assert not fit_forest(digits, ForestParams(n_estimators=25, random_state=1), train_subset=800,
                          seed=5, cache_dir=tmp_path).from_cache
    other = make_digits(num_train=1300)
    assert not fit_forest(other, SMALL, train_subset=800, seed=5, cache_dir=tmp_path).from_cache


def test_cache_dir_defaults_to_dllab_home(digits: Dataset, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DLLAB_HOME", str(tmp_path))
    fit_forest(digits, ForestParams(n_estimators=5))
    assert len(list((tmp_path / "baselines").glob("*.npz"))) == 1


def test_fingerprint_large_and_sensitive() -> None:
    # more pixels than float32 counts exactly (2**24): sampled positions must stay in bounds
    x = torch.zeros(30_000, 1, 28, 28, dtype=torch.uint8)
    y = torch.zeros(30_000, dtype=torch.int64)
    big = Dataset("big", x, y, x[:10], y[:10], ("a", "b"), (0.0,), (1.0,), "zeros")
    before = baselines._fingerprint(big)
    x[-1, 0, 27, 27] = 1  # the last pixel is always sampled
    assert baselines._fingerprint(big) != before


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_shape", "empty"])
def test_corrupt_cache_is_rebuilt(digits: Dataset, tmp_path: Path, damage: str) -> None:
    first = fit_forest(digits, SMALL, cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.npz")
    data = path.read_bytes()
    if damage == "garbage":
        path.write_bytes(os.urandom(len(data)))
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["predictions"] = arrays["predictions"][:-3]
        with open(path, "wb") as f:
            np.savez(f, **arrays)
    rebuilt = fit_forest(digits, SMALL, cache_dir=tmp_path)
    assert not rebuilt.from_cache
    assert np.array_equal(rebuilt.predictions, first.predictions)
    assert fit_forest(digits, SMALL, cache_dir=tmp_path).from_cache


def test_handmade_features(digits: Dataset, tmp_path: Path) -> None:
    feats = handmade_features(digits.train_x)
    assert feats.dtype == np.float32 and feats.shape == (len(digits.train_x), 3 + 16 + 8 + 8)
    assert len(feature_names(digits.shape, "handmade")) == feats.shape[1]
    assert len(feature_names(digits.shape, "pixels")) == digits.num_features
    x = digits.train_x.numpy().astype(np.float32)
    assert np.allclose(feats[:, 0], x.reshape(len(x), -1).mean(axis=1), atol=1e-3)
    assert np.allclose(feats[:, 3:19].sum(axis=1), 1.0)
    assert np.allclose(feats[:, 19:27], x[:, 0].sum(axis=2) / 255, atol=1e-4)
    assert np.array_equal(handmade_features(digits.train_x[:, 0].numpy()), feats)  # (N, H, W)
    params = ForestParams(n_estimators=40, features="handmade")
    hand = fit_forest(digits, params, cache_dir=tmp_path)
    assert hand.feature_importances.shape == (feats.shape[1],)
    assert hand.accuracy > 0.5
    pixels = fit_forest(digits, ForestParams(n_estimators=40), cache_dir=tmp_path)
    assert pixels.accuracy > hand.accuracy


# ---------------------------------------------------------------- CLI

@pytest.fixture
def cli(monkeypatch, tmp_path: Path, digits: Dataset):
    """Parse and run `baseline ...` against a stand-in dlcore.engine.data that serves the digits."""
    from dlcore.cli import baseline as cli_baseline

    def load_dataset(name, data_dir=None):
        if name != "digits":
            raise DatasetError(f"no dataset {name!r} in {data_dir}")
        return digits

    fake = types.ModuleType("dlcore.engine.data")
    fake.load_dataset = load_dataset
    fake.load_with_fallback = lambda name, data_dir=None: (load_dataset(name, data_dir), None)
    fake.CLI_FALLBACK_HINT = "To use the full dataset, pass --data-dir."
    monkeypatch.setitem(__import__("sys").modules, "dlcore.engine.data", fake)
    monkeypatch.setenv("DLLAB_HOME", str(tmp_path))
    parser = argparse.ArgumentParser(prog="dllab")
    cli_baseline.register(parser.add_subparsers(dest="command"))

    def run(*argv: str) -> int:
        args = parser.parse_args(["baseline", *argv])
        return args.func(args)

    return run


def test_cli_prints_lesson_line(cli, capsys) -> None:
    assert cli("--dataset", "digits", "--trees", "20") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Random Forest Accuracy: ")
    value = out[0].removeprefix("Random Forest Accuracy: ")
    assert len(value.split(".")[1]) == 4 and 0.8 < float(value) <= 1.0
    assert "fit" in out[1] and "tree nodes" in out[1]


def test_cli_json(cli, capsys) -> None:
    assert cli("--dataset", "digits", "--trees", "15", "--features", "handmade",
               "--train-subset", "600", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["train_size"] == 600 and data["params"]["features"] == "handmade"
    assert data["params"]["n_estimators"] == 15 and len(data["per_class_accuracy"]) == 10
    assert {"accuracy", "fit_seconds", "predict_seconds", "tree_nodes", "from_cache"} <= set(data)
    assert cli("--dataset", "digits", "--trees", "15", "--features", "handmade",
               "--train-subset", "600", "--json") == 0
    assert json.loads(capsys.readouterr().out)["from_cache"] is True


@pytest.mark.parametrize("argv", [["--trees", "0"], ["--features", "hog"],
                                  ["--max-features", "lots"], ["--dataset", "nope"],
                                  ["--max-depth", "0"]])
def test_cli_bad_values_exit_2(cli, capsys, argv: list[str]) -> None:
    assert cli("--dataset", "digits", *argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("python -m dlcore: error: ")


def test_cli_with_real_loaders(monkeypatch, tmp_path: Path, capsys) -> None:
    pytest.importorskip("dlcore.engine.data")
    from dlcore.cli import baseline as cli_baseline

    monkeypatch.setenv("DLLAB_HOME", str(tmp_path))
    parser = argparse.ArgumentParser(prog="dllab")
    cli_baseline.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["baseline", "--dataset", "digits", "--trees", "10", "--no-cache"])
    assert args.func(args) == 0
    assert capsys.readouterr().out.startswith("Random Forest Accuracy: ")
    assert not (tmp_path / "baselines").exists()


# ---------------------------------------------------------------- real MNIST

def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _load_mnist() -> Dataset:
    try:
        from dlcore.engine.data import load_dataset
    except ImportError:
        pass
    else:
        return load_dataset("mnist", MNIST_DIR)
    arrays = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = _read_idx(MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz")
        labels = _read_idx(MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz")
        arrays[split] = (torch.from_numpy(images.copy()).unsqueeze(1),
                         torch.from_numpy(labels.astype(np.int64)))
    return Dataset("mnist", *arrays["train"], *arrays["test"], tuple(map(str, range(10))),
                   (0.1307,), (0.3081,), str(MNIST_DIR))


@pytest.mark.slow
def test_real_mnist_lesson_accuracy(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if not MNIST_DIR.is_dir():
        pytest.skip(f"{MNIST_DIR} is absent")
    dataset = _load_mnist()
    assert len(dataset.train_y) == 60_000 and len(dataset.test_y) == 10_000
    result = fit_forest(dataset, ForestParams(), cache_dir=tmp_path)
    print(f"\nMNIST pixels: accuracy {result.accuracy:.4f}, fit {result.fit_seconds:.1f} s, "
          f"predict {result.predict_seconds:.2f} s, {result.tree_nodes} nodes")
    assert 0.967 <= result.accuracy <= 0.973
    t0 = time.perf_counter()
    again = fit_forest(dataset, ForestParams(), cache_dir=tmp_path)
    hit = time.perf_counter() - t0
    print(f"MNIST cache hit: {hit * 1000:.1f} ms")
    assert again.from_cache and again.accuracy == result.accuracy and hit < 0.5
