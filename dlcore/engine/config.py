"""The one run configuration: a model spec and a training config, frozen, validated, JSON-able.

It flows from the widgets to the engine to the store and back to the widgets; nothing else
re-describes it. Each field carries its one description (`metadata=describe(...)`, see
dlcore.engine.setting): label, widget, options or range, when a run uses it. `settings()` lists
them, and validation, the Train page's widgets and links (dlcore.views.form), CLI flags
(dlcore.cli.main) and the lessons' run tables (dlcore.views.lessons) are derived from that list.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from dlcore.engine.setting import ConfigError, Layers, Setting, describe, used_if

__all__ = ["ConfigError", "ModelSpec", "RunConfig", "Setting", "TrainConfig", "setting",
           "setting_label", "settings"]

MODEL_KINDS = ("mlp", "cnn")
ACTIVATIONS = ("relu", "gelu", "tanh", "sigmoid", "leaky_relu")
NORMS = ("none", "batch", "layer")
OPTIMIZERS = ("sgd", "adam", "adamw")
DEVICES = ("auto", "cpu", "cuda", "mps")
DATASET_NAMES = ("mnist", "fashion-mnist", "kmnist", "cifar10", "digits", "mnist-sample")
# A choice slider's stops (any value in the field's range is allowed; a link's odd one is shown).
WIDTHS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 384, 512, 768, 1024, 2048, 4096)
CHANNELS = (4, 8, 16, 32, 64, 128, 256)
LEARNING_RATES = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0)
BATCH_SIZES = (8, 16, 32, 64, 128, 256, 512, 1024)
WEIGHT_DECAYS = (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 0.1)
SUBSETS = (0, 100, 300, 1000, 3000, 10000, 30000)

MLP_ONLY = used_if("model.kind", "mlp")
CNN_ONLY = used_if("model.kind", "cnn")
NO_HIDDEN_LAYER = ("No hidden layer: nothing for it to act on. The network is one linear layer "
                   "from the pixels to the classes.")


def _has_hidden_layer(values: Mapping[str, Any]) -> bool:
    """A CNN always has its dense head; an MLP without hidden layers is one linear layer, with no
    activation, dropout or normalisation (an unknown kind or list counts as used)."""
    if not MLP_ONLY(values):
        return True
    hidden = values.get("model.hidden")
    return not isinstance(hidden, (tuple, list)) or len(hidden) > 0


class _Described:
    """A config section whose validation is derived from its fields' descriptions."""

    SECTION: ClassVar[str] = ""

    def validate(self) -> None:
        """Raise ConfigError naming the first field (in field order) whose value is not allowed."""
        known = settings()
        for f in fields(self):  # type: ignore[arg-type]
            found = known.get(f"{self.SECTION}.{f.name}") or describe_field(self.SECTION, f)
            found.check(getattr(self, f.name))


@dataclass(frozen=True)
class ModelSpec(_Described):
    """What network to build. MLP fields and CNN fields live side by side; `kind` picks."""

    SECTION: ClassVar[str] = "model"

    kind: str = field(default="mlp", metadata=describe(
        "Model kind", widget="radio", options=MODEL_KINDS,
        labels={"mlp": "MLP (dense layers)", "cnn": "CNN (conv blocks)"}))
    hidden: tuple[int, ...] = field(default=(512, 256), metadata=describe(
        "Hidden layer widths", widget="choice_slider", stops=WIDTHS, used=MLP_ONLY,
        layers=Layers("model.n_hidden", "Hidden layers", "model.width_{i}",
                      "Width of hidden layer {n}", (0, 8), (1, 4096), "hidden layer widths", 128,
                      each_label="Width of a hidden layer")))
    activation: str = field(default="relu", metadata=describe(
        "Activation", widget="selectbox", options=ACTIVATIONS, used=_has_hidden_layer,
        idle_help=NO_HIDDEN_LAYER, place=10))
    dropout: float = field(default=0.2, metadata=describe(
        "Dropout", widget="slider", range=(0.0, 0.9), step=0.05, used=_has_hidden_layer,
        idle_help=NO_HIDDEN_LAYER, place=11))
    norm: str = field(default="none", metadata=describe(
        "Normalisation layers", widget="selectbox", options=NORMS, used=_has_hidden_layer,
        idle_help=NO_HIDDEN_LAYER, place=12))
    conv_channels: tuple[int, ...] = field(default=(32, 64), metadata=describe(
        "Conv block channels", widget="choice_slider", stops=CHANNELS, used=CNN_ONLY,
        layers=Layers("model.n_blocks", "Conv blocks", "model.channels_{i}",
                      "Channels of block {n}", (1, 4), (1, 512), "conv block channel counts",
                      each_label="Channels of a conv block")))
    kernel_size: int = field(default=3, metadata=describe(
        "Kernel size", widget="radio", options=(3, 5), used=CNN_ONLY))
    pool: bool = field(default=True, metadata=describe(
        "Max-pool after each block", widget="checkbox", used=CNN_ONLY))
    dense: int = field(default=128, metadata=describe(
        "Dense head width", widget="choice_slider", range=(1, 4096), stops=WIDTHS, used=CNN_ONLY))


@dataclass(frozen=True)
class TrainConfig(_Described):
    """How to train it. `train_subset` 0 means the whole training set."""

    SECTION: ClassVar[str] = "train"

    dataset: str = field(default="mnist", metadata=describe(
        "Dataset", widget="sidebar", options=DATASET_NAMES))
    optimizer: str = field(default="adam", metadata=describe(
        "Optimiser", widget="selectbox", options=OPTIMIZERS))
    lr: float = field(default=1e-3, metadata=describe(
        "Learning rate", widget="choice_slider", widget_label="Learning rate (log scale)",
        range=(1e-7, 100.0), stops=LEARNING_RATES, fmt="g"))
    momentum: float = field(default=0.9, metadata=describe(
        "Momentum", widget="slider", range=(0.0, 0.999), slider=(0.0, 0.99), step=0.01,
        used=used_if("train.optimizer", "sgd")))
    batch_size: int = field(default=64, metadata=describe(
        "Batch size", widget="choice_slider", range=(1, 8192), stops=BATCH_SIZES))
    epochs: int = field(default=10, metadata=describe(
        "Epochs", widget="slider", range=(1, 500), slider=(1, 50)))
    weight_decay: float = field(default=0.0, metadata=describe(
        "Weight decay", widget="choice_slider", range=(0.0, 1.0), stops=WEIGHT_DECAYS, fmt="g"))
    label_smoothing: float = field(default=0.0, metadata=describe(
        "Label smoothing", widget="slider", range=(0.0, 0.5), slider=(0.0, 0.3), step=0.05))
    train_subset: int = field(default=0, metadata=describe(
        "Training images", widget="choice_slider", range=(10, 10_000_000),
        zero="the whole training set", stops=SUBSETS, fmt=",", sized_by_dataset=True))
    normalize: bool = field(default=True, metadata=describe(
        "Normalise inputs", widget="toggle",
        widget_label="Normalise inputs (off: raw pixel values 0-255)"))
    augment: bool = field(default=False, metadata=describe(
        "Augment", widget="toggle", widget_label="Augment (small random shifts and rotations)"))
    early_stopping: bool = field(default=False, metadata=describe(
        "Early stopping", widget="toggle", widget_label="Early stopping (on a validation split)"))
    patience: int = field(default=3, metadata=describe(
        "Patience (epochs)", widget="slider", range=(1, 100), slider=(1, 10),
        used=used_if("train.early_stopping", True)))
    val_fraction: float = field(default=0.1, metadata=describe(
        "Validation fraction", range=(0.01, 0.5), used=used_if("train.early_stopping", True)))
    seed: int = field(default=42, metadata=describe(
        "Seed", widget="number", range=(0, 2**31 - 1)))
    device: str = field(default="auto", metadata=describe(
        "Device", widget="sidebar", options=DEVICES))

    @property
    def held_out(self) -> float:
        """The share of the kept training images held out for validation: `val_fraction` with
        early stopping, none without (the one place that rule is written)."""
        return self.val_fraction if self.early_stopping else 0.0


# The config's sections and the dataclass of each: everything derived from the descriptions reads
# the fields from here, so a test can put an extended dataclass in (monkeypatch.setitem).
SECTIONS: dict[str, type] = {"model": ModelSpec, "train": TrainConfig}


def describe_field(section: str, f: dataclasses.Field) -> Setting:
    """The description of field `f` of `section`, with its key and default filled in."""
    base = f.metadata.get("setting") or Setting(f.name)
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    return dataclasses.replace(base, key=f"{section}.{f.name}", default=default)


_REGISTRY: dict[tuple[type, ...], dict[str, Setting]] = {}


def settings() -> dict[str, Setting]:
    """Every setting's description by flat key ("model.kind", ..., "train.device"), in field order:
    the one registry that validation, widgets, links, flags and lesson tables are derived from."""
    key = tuple(SECTIONS.values())
    if key not in _REGISTRY:
        _REGISTRY[key] = {f"{section}.{f.name}": describe_field(section, f)
                          for section, klass in SECTIONS.items() for f in fields(klass)}
    return _REGISTRY[key]


def setting(key: str) -> Setting:
    """One setting's description by its flat key; KeyError when there is none."""
    return settings()[key]


def list_widgets() -> dict[str, tuple[str, ...]]:
    """A list field's widget keys by the field's key (its hide group): a count and one per layer.
    The Train page's widget keys are written in the descriptions (a list field's `layers`); these
    three read them, for the form (dlcore.views.form) and the class's rules (dlcore.runs.policy)."""
    return {key: s.layers.keys() for key, s in settings().items() if s.layers is not None}


def owner(widget_key: str) -> tuple[Setting, str, int | None] | None:
    """The setting a widget key belongs to and its role there: ("value", None), ("count", None)
    or ("item", layer index); None for a key that is no widget's."""
    for s in settings().values():
        if s.layers is None:
            if s.key == widget_key:
                return s, "value", None
        elif s.layers.count_key == widget_key:
            return s, "count", None
        elif s.layers.index(widget_key) is not None:
            return s, "item", s.layers.index(widget_key)
    return None


def layer_field(widget_key: str) -> str | None:
    """The list field whose layer widget `widget_key` is ("model.width_2" -> "model.hidden")."""
    found = owner(widget_key)
    return found[0].key if found is not None and found[1] == "item" else None


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run."""

    model: ModelSpec = field(default_factory=lambda: SECTIONS["model"]())
    train: TrainConfig = field(default_factory=lambda: SECTIONS["train"]())

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
            return RunConfig(dataclasses.replace(_current("model", self.model), **model),
                             dataclasses.replace(_current("train", self.train), **train))
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
        for section in SECTIONS:
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
        for section, klass in SECTIONS.items():
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


def _current(section: str, part: Any) -> Any:
    """`part` as an instance of the section's dataclass now: a config made before SECTIONS gained
    a field (a test's extended dataclass) gets that field's default."""
    klass = SECTIONS[section]
    if type(part) is klass or not issubclass(klass, type(part)):
        return part
    return klass(**{f.name: getattr(part, f.name) for f in fields(part)})


def setting_label(key: str) -> str:
    """The learner's name of a setting, from its flat key ("train.lr" -> "Learning rate")."""
    found = settings().get(key)
    return found.label if found is not None else key


PRESETS: dict[str, RunConfig] = {
    "seed": RunConfig(),
    "cnn": RunConfig(
        model=ModelSpec(kind="cnn", conv_channels=(32, 64), kernel_size=3, dense=128, dropout=0.25),
        train=TrainConfig(epochs=5),
    ),
}
