"""The one run configuration: a model spec and a training config, frozen, validated, JSON-able.

It flows from the widgets to the engine to the store and back to the widgets; nothing else
re-describes it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any

MODEL_KINDS = ("mlp", "cnn")
ACTIVATIONS = ("relu", "gelu", "tanh", "sigmoid", "leaky_relu")
NORMS = ("none", "batch", "layer")
OPTIMIZERS = ("sgd", "adam", "adamw")
DEVICES = ("auto", "cpu", "cuda", "mps")
DATASET_NAMES = ("mnist", "fashion-mnist", "kmnist", "cifar10", "digits", "mnist-sample")


def _label(text: str) -> dict[str, str]:
    """A field's label: how the app names the setting to a learner."""
    return {"label": text}


class ConfigError(ValueError):
    """A config value outside its allowed range; the message names the field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass(frozen=True)
class ModelSpec:
    """What network to build. MLP fields and CNN fields live side by side; `kind` picks."""

    kind: str = field(default="mlp", metadata=_label("Model kind"))
    hidden: tuple[int, ...] = field(default=(512, 256), metadata=_label("Hidden layer widths"))
    activation: str = field(default="relu", metadata=_label("Activation"))
    dropout: float = field(default=0.2, metadata=_label("Dropout"))
    norm: str = field(default="none", metadata=_label("Normalisation layers"))
    conv_channels: tuple[int, ...] = field(default=(32, 64), metadata=_label("Conv block channels"))
    kernel_size: int = field(default=3, metadata=_label("Kernel size"))
    pool: bool = field(default=True, metadata=_label("Max-pool after each block"))
    dense: int = field(default=128, metadata=_label("Dense head width"))

    def validate(self) -> None:
        _choice("model.kind", self.kind, MODEL_KINDS)
        _choice("model.activation", self.activation, ACTIVATIONS)
        _choice("model.norm", self.norm, NORMS)
        _number("model.dropout", self.dropout, 0.0, 0.9)
        if not isinstance(self.hidden, tuple) or len(self.hidden) > 8:
            raise ConfigError("model.hidden", "a tuple of between 0 and 8 hidden layer widths")
        for i, width in enumerate(self.hidden):
            _integer(f"model.hidden[{i}]", width, 1, 4096)
        if not isinstance(self.conv_channels, tuple) or not 1 <= len(self.conv_channels) <= 4:
            raise ConfigError("model.conv_channels", "between 1 and 4 conv blocks")
        for i, channels in enumerate(self.conv_channels):
            _integer(f"model.conv_channels[{i}]", channels, 1, 512)
        _choice("model.kernel_size", self.kernel_size, (3, 5))
        _boolean("model.pool", self.pool)
        _integer("model.dense", self.dense, 1, 4096)


@dataclass(frozen=True)
class TrainConfig:
    """How to train it. `train_subset` 0 means the whole training set."""

    dataset: str = field(default="mnist", metadata=_label("Dataset"))
    optimizer: str = field(default="adam", metadata=_label("Optimiser"))
    lr: float = field(default=1e-3, metadata=_label("Learning rate"))
    momentum: float = field(default=0.9, metadata=_label("Momentum"))
    batch_size: int = field(default=64, metadata=_label("Batch size"))
    epochs: int = field(default=10, metadata=_label("Epochs"))
    weight_decay: float = field(default=0.0, metadata=_label("Weight decay"))
    label_smoothing: float = field(default=0.0, metadata=_label("Label smoothing"))
    train_subset: int = field(default=0, metadata=_label("Training images"))
    normalize: bool = field(default=True, metadata=_label("Normalise inputs"))
    augment: bool = field(default=False, metadata=_label("Augment"))
    early_stopping: bool = field(default=False, metadata=_label("Early stopping"))
    patience: int = field(default=3, metadata=_label("Patience (epochs)"))
    val_fraction: float = field(default=0.1, metadata=_label("Validation fraction"))
    seed: int = field(default=42, metadata=_label("Seed"))
    device: str = field(default="auto", metadata=_label("Device"))

    def validate(self) -> None:
        _choice("train.dataset", self.dataset, DATASET_NAMES)
        _choice("train.optimizer", self.optimizer, OPTIMIZERS)
        _number("train.lr", self.lr, 1e-7, 100.0)
        _number("train.momentum", self.momentum, 0.0, 0.999)
        _integer("train.batch_size", self.batch_size, 1, 8192)
        _integer("train.epochs", self.epochs, 1, 500)
        _number("train.weight_decay", self.weight_decay, 0.0, 1.0)
        _number("train.label_smoothing", self.label_smoothing, 0.0, 0.5)
        _integer("train.train_subset", self.train_subset, 0, 10_000_000)
        if 0 < self.train_subset < 10:
            raise ConfigError("train.train_subset", f"{self.train_subset} is out of range; allowed 0 "
                                                    "(the whole training set) or 10 to 10000000")
        _boolean("train.normalize", self.normalize)
        _boolean("train.augment", self.augment)
        _boolean("train.early_stopping", self.early_stopping)
        _integer("train.patience", self.patience, 1, 100)
        _number("train.val_fraction", self.val_fraction, 0.01, 0.5)
        _integer("train.seed", self.seed, 0, 2**31 - 1)
        _choice("train.device", self.device, DEVICES)


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run."""

    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> RunConfig:
        self.model.validate()
        self.train.validate()
        return self

    def replace(self, **changes: Any) -> RunConfig:
        """Copy with dotted-field changes, e.g. replace(**{"train.lr": 0.01, "model.hidden": (64,)})."""
        model = {k.split(".", 1)[1]: v for k, v in changes.items() if k.startswith("model.")}
        train = {k.split(".", 1)[1]: v for k, v in changes.items() if k.startswith("train.")}
        unknown = [k for k in changes if not k.startswith(("model.", "train."))]
        if unknown:
            raise ConfigError(unknown[0], "unknown field")
        try:
            return RunConfig(
                dataclasses.replace(self.model, **model), dataclasses.replace(self.train, **train)
            )
        except TypeError as exc:
            raise ConfigError(",".join(changes), f"unknown field ({exc})") from None

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {
            "model": {k: list(v) if isinstance(v, tuple) else v
                      for k, v in dataclasses.asdict(self.model).items()},
            "train": dataclasses.asdict(self.train),
        }

    def flat(self) -> dict[str, Any]:
        """{"model.hidden": (512, 256), "train.lr": 0.001, ...}: one row of a comparison table."""
        out: dict[str, Any] = {}
        for section in ("model", "train"):
            for f in fields(getattr(self, section)):
                out[f"{section}.{f.name}"] = getattr(getattr(self, section), f.name)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Build and validate from `to_dict` output; unknown keys and bad types raise ConfigError."""
        if not isinstance(data, dict):
            raise ConfigError("config", "must be an object with 'model' and 'train'")
        for key in data:
            if key not in ("model", "train"):
                raise ConfigError(str(key), "unknown field; a config has only 'model' and 'train'")
        parts = {}
        for section, klass in (("model", ModelSpec), ("train", TrainConfig)):
            raw = data.get(section, {})
            if not isinstance(raw, dict):
                raise ConfigError(section, "must be an object")
            known = {f.name: f for f in fields(klass)}
            kwargs = {}
            for key, value in raw.items():
                if key not in known:
                    raise ConfigError(f"{section}.{key}", "unknown field")
                if isinstance(value, list):
                    value = tuple(value)
                kwargs[key] = value
            parts[section] = klass(**kwargs)
        return cls(parts["model"], parts["train"]).validate()


def _choice(name: str, value: Any, allowed: tuple) -> None:
    # 3.0 == 3 and True == 1: a value of another type is refused even where it compares equal.
    if isinstance(value, bool) or not isinstance(value, type(allowed[0])) or value not in allowed:
        raise ConfigError(name, f"{value!r} is not one of {', '.join(map(str, allowed))}")


def _number(name: str, value: Any, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(name, f"{value!r} is not a number; allowed {low:g} to {high:g}")
    if not low <= value <= high:
        raise ConfigError(name, f"{value:g} is out of range; allowed {low:g} to {high:g}")


def _integer(name: str, value: Any, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, f"{value!r} is not a whole number; allowed {low} to {high}")
    if not low <= value <= high:
        raise ConfigError(name, f"{value} is out of range; allowed {low} to {high}")


def _boolean(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(name, f"{value!r} is not true or false")


def setting_label(key: str) -> str:
    """The learner's name of a setting, from its flat key ("train.lr" -> "Learning rate")."""
    section, _, name = key.partition(".")
    klass = {"model": ModelSpec, "train": TrainConfig}.get(section)
    for f in fields(klass) if klass is not None else ():
        if f.name == name:
            return f.metadata.get("label", key)
    return key


PRESETS: dict[str, RunConfig] = {
    "seed": RunConfig(),
    "cnn": RunConfig(
        model=ModelSpec(kind="cnn", conv_channels=(32, 64), kernel_size=3, dense=128, dropout=0.25),
        train=TrainConfig(epochs=5),
    ),
}
