"""The run config: every bad value refused with the field named, round trips, presets, devices."""

from __future__ import annotations

import dataclasses
import json
import math
import threading

import pytest
import torch

from dlcore.engine.config import (
    DATASET_NAMES,
    PRESETS,
    ConfigError,
    ModelSpec,
    RunConfig,
    TrainConfig,
)
from dlcore.engine.devices import available_devices, describe_device, resolve_device

# Every field of ModelSpec and TrainConfig, with values it must refuse: wrong type, out of range,
# unknown choice. `test_every_field_has_bad_values` keeps this table complete.
BAD_VALUES: dict[str, list] = {
    "model.kind": ["rnn", "", None, 1],
    "model.hidden": [(64,) * 9, (0,), (5000,), (-1,), (64.5,), ("64",), (True,), [512, 256],
                     "512,256", None, 512],
    "model.activation": ["swish", "ReLU", None],
    "model.dropout": [0.95, 1.0, -0.1, "0.2", None, math.nan, True],
    "model.norm": ["group", "batchnorm", None],
    "model.conv_channels": [(), (32,) * 5, (0,), (513,), (32.0,), [32, 64], None],
    "model.kernel_size": [4, 1, 7, 3.0, "3", True, None],
    "model.pool": ["yes", 1, None],
    "model.dense": [0, 5000, 12.5, "128", None],
    "train.dataset": ["imagenet", "MNIST", "", None],
    "train.optimizer": ["rmsprop", "Adam", None],
    "train.lr": [0, 0.0, 1000, -1, 1e-9, "0.001", math.inf, math.nan, None, True],
    "train.momentum": [1.0, -0.1, "0.9", None],
    "train.batch_size": [0, -1, 10_000, 64.0, "64", None, True],
    "train.epochs": [0, -1, 501, 1.5, "10", None],
    "train.weight_decay": [-0.1, 2.0, "0", None],
    "train.label_smoothing": [0.6, -0.1, None],
    "train.train_subset": [5, -1, 1.5, 0.0, False, "1000", None],
    "train.normalize": ["yes", 1, None],
    "train.augment": ["no", 0, None],
    "train.early_stopping": ["true", 1, None],
    "train.patience": [0, 101, 2.5, None],
    "train.val_fraction": [0, 0.6, -0.1, "0.1", None],
    "train.seed": [-1, 2**31, 4.2, "42", None],
    "train.device": ["tpu", "gpu", "CUDA", None],
}
BAD_CASES = [(name, value) for name, values in BAD_VALUES.items() for value in values]
RANGE_WORDS = ("allowed", "one of", "between", "true or false")


def _all_fields() -> set[str]:
    return ({f"model.{f.name}" for f in dataclasses.fields(ModelSpec)}
            | {f"train.{f.name}" for f in dataclasses.fields(TrainConfig)})


def test_every_field_has_bad_values() -> None:
    assert set(BAD_VALUES) == _all_fields()


@pytest.mark.parametrize("name,value", BAD_CASES, ids=[f"{n}={v!r}" for n, v in BAD_CASES])
def test_every_bad_value_is_refused_naming_the_field_and_the_range(name: str, value) -> None:
    config = RunConfig().replace(**{name: value})
    with pytest.raises(ConfigError) as caught:
        config.validate()
    message = str(caught.value)
    assert caught.value.field.startswith(name), message
    assert message.startswith(name), message
    assert any(word in message for word in RANGE_WORDS), message
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("name,value", BAD_CASES, ids=[f"{n}={v!r}" for n, v in BAD_CASES])
def test_from_dict_refuses_the_same_bad_values(name: str, value) -> None:
    if isinstance(value, list):
        pytest.skip("in JSON a list is how a tuple is written")
    section, key = name.split(".")
    data = RunConfig().to_dict()
    data[section][key] = value
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_dict(data)
    assert name in str(caught.value)


@pytest.mark.parametrize("name,value", [("model.dropout", 0.95), ("train.lr", 0.0),
                                        ("train.device", "tpu"), ("model.kernel_size", 4)])
def test_train_refuses_before_anything_starts(name: str, value) -> None:
    from dlcore.engine.data import load_dataset
    from dlcore.engine.train import train

    events = []
    config = RunConfig().replace(**{"train.dataset": "digits", name: value})
    with pytest.raises(ConfigError, match=name.replace(".", r"\.")):
        train(config, load_dataset("digits"), on_event=events.append, stop=threading.Event())
    assert events == []


@pytest.mark.parametrize("name,value", [
    ("model.hidden", ()), ("model.hidden", (4096,) * 8), ("model.hidden", (1,)),
    ("model.dropout", 0.0), ("model.dropout", 0.9), ("model.kernel_size", 5),
    ("model.conv_channels", (512,) * 4), ("model.dense", 4096),
    ("train.lr", 1e-7), ("train.lr", 100.0), ("train.lr", 10), ("train.batch_size", 8192),
    ("train.epochs", 500), ("train.train_subset", 0), ("train.train_subset", 10),
    ("train.momentum", 0.0), ("train.seed", 0), ("train.seed", 2**31 - 1),
    ("train.val_fraction", 0.5), ("train.label_smoothing", 0.5),
    *[("train.dataset", name) for name in DATASET_NAMES],
])
def test_edge_values_inside_the_range_are_accepted(name: str, value) -> None:
    RunConfig().replace(**{name: value}).validate()


def test_defaults_and_presets_are_valid_and_the_seed_is_the_lesson() -> None:
    for preset in PRESETS.values():
        preset.validate()
    seed = PRESETS["seed"]
    assert seed == RunConfig()
    assert (seed.model.kind, seed.model.hidden, seed.model.activation, seed.model.dropout) == (
        "mlp", (512, 256), "relu", 0.2)
    assert (seed.train.optimizer, seed.train.lr, seed.train.batch_size, seed.train.epochs) == (
        "adam", 1e-3, 64, 10)
    assert PRESETS["cnn"].model.kind == "cnn"


CONFIGS = [
    RunConfig(),
    PRESETS["cnn"],
    RunConfig(ModelSpec(hidden=(), activation="gelu", dropout=0.0, norm="layer"),
              TrainConfig(dataset="digits", optimizer="sgd", lr=0.05, momentum=0.5, batch_size=16,
                          epochs=3, weight_decay=1e-4, label_smoothing=0.1, train_subset=500,
                          normalize=False, augment=True, early_stopping=True, patience=2,
                          val_fraction=0.2, seed=7, device="cpu")),
    RunConfig(ModelSpec(kind="cnn", conv_channels=(8, 16, 32, 64), kernel_size=5, pool=False,
                        dense=1, norm="batch", activation="leaky_relu"),
              TrainConfig(dataset="cifar10", optimizer="adamw")),
]


@pytest.mark.parametrize("config", CONFIGS)
def test_to_dict_from_dict_round_trips_through_json(config: RunConfig) -> None:
    data = json.loads(json.dumps(config.to_dict()))
    assert RunConfig.from_dict(data) == config
    assert RunConfig.from_dict(data).to_dict() == config.to_dict()
    assert isinstance(data["model"]["hidden"], list)
    assert set(config.flat()) == _all_fields()
    assert config.flat()["model.hidden"] == config.model.hidden


def test_from_dict_fills_missing_sections_and_fields_with_defaults() -> None:
    assert RunConfig.from_dict({}) == RunConfig()
    assert RunConfig.from_dict({"train": {"lr": 0.01}}) == RunConfig().replace(**{"train.lr": 0.01})


@pytest.mark.parametrize("data,field", [
    ({"model": {"layers": 3}}, "model.layers"),
    ({"train": {"learning_rate": 0.1}}, "train.learning_rate"),
    ({"model": {}, "train": {}, "optimizer": "adam"}, "optimizer"),
    ({"model": [], "train": {}}, "model"),
    ({"model": {}, "train": "fast"}, "train"),
    (["model", "train"], "config"),
    (None, "config"),
])
def test_from_dict_refuses_unknown_keys_and_bad_shapes(data, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        RunConfig.from_dict(data)
    assert str(caught.value).startswith(field)


def test_replace_changes_dotted_fields_and_refuses_unknown_ones() -> None:
    config = RunConfig().replace(**{"train.lr": 0.01, "model.hidden": (64,)})
    assert (config.train.lr, config.model.hidden) == (0.01, (64,))
    assert RunConfig().train.lr == 1e-3  # the original is untouched
    for bad in ("model.layers", "lr", "optim.lr"):
        with pytest.raises(ConfigError, match=bad.split(".")[-1]):
            RunConfig().replace(**{bad: 1})


def test_configs_are_frozen_and_hashable() -> None:
    config = RunConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.train.lr = 0.1  # type: ignore[misc]
    assert hash(config) == hash(RunConfig())
    assert config.validate() is config


def test_devices_auto_is_the_best_present_and_an_absent_one_is_refused() -> None:
    present = available_devices()
    assert present[-1] == "cpu"
    assert resolve_device("auto") == torch.device(present[0])
    assert resolve_device("cpu") == torch.device("cpu")
    assert describe_device("cpu").startswith("CPU (")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert describe_device("cpu") == "CPU (1 thread)"
        torch.set_num_threads(2)
        assert describe_device("cpu") == "CPU (up to 2 threads)"
    finally:
        torch.set_num_threads(before)
    for name in ("cuda", "mps"):
        if name not in present:
            with pytest.raises(ConfigError, match="train.device") as caught:
                resolve_device(name)
            assert "available: " in str(caught.value)


def test_all_training_images_is_the_subset_sliders_right_end() -> None:
    from dlcore.views.form import subset_options, with_value
    assert subset_options(10_000) == (100, 300, 1000, 3000, 0)
    assert subset_options(60_000)[-2:] == (30_000, 0)
    assert with_value(subset_options(10_000), 500) == [100, 300, 500, 1000, 3000, 0]
    assert with_value((0, 1e-4, 1e-3), 5e-4) == [0, 1e-4, 5e-4, 1e-3]  # a leading 0 stays first
