"""The lessons as data: each one's settings to run (one RunConfig, or a bad/good pair for a mistake),
what it teaches, what to look for in the result, and which recorded runs belong to it.

The Lessons page draws these; a load button per run puts its RunConfig on the Train page. Nothing
here knows about Streamlit.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from dlcore.engine.config import PRESETS, RunConfig, settings
from dlcore.engine.setting import missing

SEED = PRESETS["seed"]
CNN = PRESETS["cnn"]

# Fields a run may differ in and still count as a run of a lesson: where it trained, its seed, and
# how many epochs (a learner short of time trains fewer; the table shows how many it trained).
IGNORED_FIELDS = ("train.dataset", "train.device", "train.seed", "train.epochs")


@dataclass(frozen=True)
class LessonRun:
    """One run of a lesson: `role` is "" for a lesson's only run, else e.g. "bad"/"good"."""

    role: str
    label: str
    config: RunConfig
    look_for: str


@dataclass(frozen=True)
class Lesson:
    id: str
    title: str
    kind: str  # network | exercise | mistake
    text: str
    runs: tuple[LessonRun, ...]
    look_for: str
    compare_with_seed: bool = False  # exercises: compare against the lesson's network

    def button_key(self, run: LessonRun) -> str:
        return f"lessons.load.{self.id}" + (f".{run.role}" if run.role else "")

    def compared(self) -> tuple[LessonRun, ...]:
        """The runs whose records the lesson's comparison table shows."""
        if self.compare_with_seed:
            return (*self.runs, LessonRun("seed", "the lesson's network (784-512-256-10)", SEED, ""))
        return self.runs


def _mlp(*hidden: int) -> RunConfig:
    return SEED.replace(**{"model.hidden": tuple(hidden)})


_SGD = {"train.optimizer": "sgd", "train.lr": 0.01, "train.momentum": 0.9, "train.epochs": 5}
_LONG = {"train.train_subset": 1000, "train.epochs": 30}

LESSONS: tuple[Lesson, ...] = (
    Lesson(
        "seed", "The lesson's network", "network",
        "A multi-layer perceptron: each 28×28 image is flattened to 784 numbers, then two hidden "
        "layers of 512 and 256 units with ReLU and dropout 0.2, and 10 outputs, one per digit. "
        "Adam with learning rate 0.001, batches of 64, 10 epochs.",
        (LessonRun("", "Load the lesson's network", SEED,
                   "Test accuracy near 98% on the full MNIST; the training loss falls fast in the "
                   "first epoch, then slowly."),),
        "How fast the loss falls in epoch 1, and how close the test accuracy gets to 98%."),
    Lesson(
        "cnn", "The small CNN", "network",
        "Two convolution blocks (32 and 64 channels, 3×3 kernels, max-pooling) look at small patches "
        "of the image and keep its 2-D layout; a dense layer of 128 and the 10 outputs follow. "
        "Five epochs.",
        (LessonRun("", "Load the small CNN", CNN,
                   "About 99% test accuracy, above the MLP, with a similar number of parameters "
                   "(most of them in the dense layer; see the layer table), at more time per "
                   "epoch."),),
        "Compare its parameter count and test accuracy with the lesson's network."),
    Lesson(
        "ex1", "Exercise 1: no hidden layers", "exercise",
        "Take the hidden layers away: the 784 pixels go straight to the 10 outputs. This is "
        "logistic regression, a linear model.",
        (LessonRun("", "Load: no hidden layers (784-10)", _mlp(),
                   "Test accuracy stops near 92%: a straight line per digit cannot do better."),),
        "Train it and the lesson's network, then compare: how much do the hidden layers add?",
        compare_with_seed=True),
    Lesson(
        "ex2", "Exercise 2: one more layer", "exercise",
        "Add a third hidden layer: 784-512-256-128-10.",
        (LessonRun("", "Load: 512-256-128", _mlp(512, 256, 128),
                   "About the same accuracy as two layers: on MNIST depth beyond two layers adds "
                   "little, and each epoch takes a bit longer."),),
        "Is the extra layer worth its parameters and time? Compare with the lesson's network.",
        compare_with_seed=True),
    Lesson(
        "ex3", "Exercise 3: other widths", "exercise",
        "Change how wide the two hidden layers are: narrower (128-64) and wider (1024-512).",
        (LessonRun("narrow", "Load: 128-64", _mlp(128, 64),
                   "A few tenths of a percent below 512-256 with a fifth of the parameters."),
         LessonRun("wide", "Load: 1024-512", _mlp(1024, 512),
                   "Little better than 512-256, with two and a half times the parameters.")),
        "Accuracy against parameters: where does making the layers wider stop paying?",
        compare_with_seed=True),
    Lesson(
        "normalize", "Mistake: inputs not normalised", "mistake",
        "The network should see pixels scaled to mean 0 and standard deviation 1. Fed raw values "
        "0-255, its first layer's outputs and gradients are hundreds of times larger, so a learning "
        "rate that is fine for normalised inputs (SGD, 0.01, momentum 0.9) throws the weights away.",
        (LessonRun("bad", "Load: raw pixels 0-255", _mlp(512, 256).replace(
                       **_SGD, **{"train.normalize": False}),
                   "The loss explodes within a few steps and the run stops as diverged."),
         LessonRun("good", "Load: normalised inputs", _mlp(512, 256).replace(**_SGD),
                   "The same settings train smoothly once the inputs are normalised.")),
        "Same network, same optimiser, same learning rate: only the input scaling differs."),
    Lesson(
        "lr", "Mistake: a learning rate too high", "mistake",
        "The learning rate is the size of each step down the loss. Far too big a step jumps over "
        "the valley and lands somewhere worse, again and again, until the numbers overflow.",
        (LessonRun("bad", "Load: learning rate 10", SEED.replace(
                       **{"train.lr": 10.0, "train.epochs": 3}),
                   "The run stops within a few steps as diverged: the loss became huge or not a "
                   "number. The Train page says so, and suggests a smaller learning rate."),
         LessonRun("good", "Load: learning rate 0.001", SEED.replace(**{"train.epochs": 3}),
                   "The loss falls steadily.")),
        "A learning rate 10,000 times too big: what happens to the loss in the first steps?"),
    Lesson(
        "data", "Mistake: too little data", "mistake",
        "With only 300 training images the network can learn each of them by heart, and that does "
        "not carry over to images it has not seen.",
        (LessonRun("bad", "Load: 300 training images", SEED.replace(
                       **{"train.train_subset": 300}),
                   "Training accuracy near 100% while test accuracy stays far below: overfitting."),
         LessonRun("good", "Load: all training images", SEED,
                   "Training and test accuracy stay close together.")),
        "The gap between training and test accuracy."),
    Lesson(
        "early", "Mistake: training too long without early stopping", "mistake",
        "On 1,000 images for 30 epochs the training loss keeps falling towards zero, but after a "
        "few epochs the test loss starts to rise: the network is memorising. Early stopping watches "
        "a validation split and stops when its loss has not improved for 3 epochs, keeping the "
        "best weights.",
        (LessonRun("bad", "Load: without early stopping", SEED.replace(**_LONG),
                   "The test loss bottoms out after a few epochs and climbs while the training "
                   "loss goes on falling."),
         LessonRun("good", "Load: with early stopping", SEED.replace(
                       **_LONG, **{"train.early_stopping": True, "train.patience": 3}),
                   "Training stops after a handful of epochs and keeps the best epoch's weights, "
                   "in a fraction of the time.")),
        "The test loss curve: where is its lowest point, and where did each run stop?"),
)

def _row_matches(row: pd.Series, config: RunConfig, ignore: tuple[str, ...]) -> bool:
    """Whether a recorded run (a `list_runs` row) has `config`'s settings, `ignore` aside. A
    setting the row lacks (recorded before its field existed) counts as the field's default: the
    run trained with what the code then did, which the default keeps doing."""
    described = settings()
    for key, value in config.flat().items():
        if key in ignore:
            continue
        got = row.get(key)
        if missing(got) and key in described:
            got = described[key].default
        if isinstance(value, tuple):
            if not isinstance(got, (tuple, list)) or tuple(got) != value:
                return False
        elif missing(got) or got != value:
            return False
    return True


RUN_TABLE_COLUMNS = ("run", "which", "status", "dataset", "epochs", "train accuracy",
                     "test accuracy", "seconds")


def lesson_run_table(runs: pd.DataFrame, lesson: Lesson, run_ids: set[int] | None = None,
                     ignore: tuple[str, ...] = IGNORED_FIELDS) -> pd.DataFrame:
    """The recorded runs (RunStore.list_runs() rows) of `lesson`'s compared configs, newest first.

    `run_ids` keeps only those runs (this session's); None keeps all.
    """
    rows = []
    for _, row in runs.iterrows():
        if run_ids is not None and int(row["id"]) not in run_ids:
            continue
        for run in lesson.compared():
            if _row_matches(row, run.config, ignore):
                rows.append({"run": int(row["id"]), "which": run.label, "status": row["status"],
                             "dataset": row.get("dataset"), "epochs": row.get("epochs"),
                             "train accuracy": row.get("train_acc"),
                             "test accuracy": row.get("test_acc"),
                             "seconds": row.get("duration_s")})
                break
    return pd.DataFrame(rows, columns=list(RUN_TABLE_COLUMNS))


def epochs_note(table: pd.DataFrame) -> str | None:
    """A warning when `lesson_run_table`'s runs of different settings trained different numbers of
    epochs: a 10-epoch run beside a 3-epoch one says more about the epochs than the settings."""
    if table.empty or table["which"].nunique() < 2:
        return None
    epochs = sorted({int(e) for e in table["epochs"].dropna()})
    if len(epochs) < 2:
        return None
    listed = ", ".join(str(e) for e in epochs[:-1]) + f" and {epochs[-1]}"
    return (f"These runs trained different numbers of epochs ({listed}), so their accuracies do "
            "not compare settings alone. Train them for the same number of epochs (the Epochs "
            "slider on the Train page) before drawing a conclusion.")
