"""The training loop on tiny data: accuracy, stop, divergence, determinism, early stopping, results."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch

import dlcore.engine.train as train_module
from dlcore.engine.config import PRESETS, RunConfig
from dlcore.engine.data import load_dataset
from dlcore.engine.dataset import Dataset, split_train
from dlcore.engine.models import build_model
from dlcore.engine.steps import augment_batch
from dlcore.engine.train import BatchProgress, EpochEnd, input_normaliser, train

SMALL = {"train.dataset": "digits", "model.hidden": (32,), "train.batch_size": 32,
         "train.epochs": 2, "train.device": "cpu"}


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


@pytest.fixture(scope="module")
def sample() -> Dataset:
    return load_dataset("mnist-sample")


def small(**changes) -> RunConfig:
    return RunConfig().replace(**{**SMALL, **changes})


class CountingStep:
    """Wraps a step object and counts the training steps actually run."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, 0

    def __call__(self, idx: torch.Tensor) -> None:
        self.calls += 1
        self.inner(idx)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[CountingStep]:
    made: list[CountingStep] = []
    real = train_module.make_step

    def make_step(*args, **kwargs):
        made.append(CountingStep(real(*args, **kwargs)))
        return made[-1]
    monkeypatch.setattr(train_module, "make_step", make_step)
    return made


def _curves(result) -> tuple:
    return (result.batch_losses,
            [(m.train_loss, m.train_acc, m.test_loss, m.test_acc, m.val_loss) for m in result.history])


# ------------------------------------------------------------------------- accuracy

def test_one_epoch_of_the_seed_preset_on_mnist_sample_beats_90_percent(sample: Dataset) -> None:
    config = PRESETS["seed"].replace(**{"train.epochs": 1, "train.dataset": "mnist-sample",
                                        "train.device": "cpu"})
    result = train(config, sample)
    assert result.status == "finished", result.message
    assert result.params == 535_818
    assert len(result.history) == 1
    assert result.history[0].test_acc > 0.90
    assert result.final is result.history[0]


def test_the_result_holds_predictions_probabilities_and_loadable_weights(digits: Dataset) -> None:
    events: list = []
    config = small()
    result = train(config, digits, on_event=events.append)
    assert result.status == "finished" and result.device == "cpu" and not result.cuda_graph
    n, k = len(digits.test_y), digits.num_classes
    assert result.test_prob.shape == (n, k)
    np.testing.assert_allclose(result.test_prob.sum(1), 1.0, atol=1e-5)
    assert (result.test_prob >= 0).all()
    np.testing.assert_array_equal(result.test_pred, result.test_prob.argmax(1))
    accuracy = (result.test_pred == digits.test_y.numpy()).mean()
    assert accuracy == pytest.approx(result.history[-1].test_acc, abs=1.5 / n)
    assert result.history[-1].test_acc > 0.5

    fresh = build_model(config.model, digits.shape, k)
    fresh.load_state_dict(result.state_dict)  # strict: every key and shape matches
    scale, shift = input_normaliser(digits, True)
    with torch.no_grad():
        logits = fresh.eval()(digits.test_x.float() * scale - shift)
    np.testing.assert_allclose(torch.softmax(logits, 1).numpy(), result.test_prob, atol=1e-5)

    steps_per_epoch = math.ceil(len(digits.train_y) / 32)
    assert len(result.batch_losses) == 2 * steps_per_epoch  # CPU: one reading per step
    assert [s for s, _ in result.batch_losses] == list(range(1, 2 * steps_per_epoch + 1))
    assert [e.metrics.epoch for e in events if isinstance(e, EpochEnd)] == [1, 2]
    progress = [e for e in events if isinstance(e, BatchProgress)]
    assert progress and all(p.steps_per_epoch == steps_per_epoch and p.epochs == 2 for p in progress)
    assert progress[-1].epoch_step == steps_per_epoch and progress[-1].eta_s == 0
    assert all(1 <= p.epoch_step <= steps_per_epoch and p.eta_s >= 0 for p in progress)
    assert len(result.first_layer) == 3 and result.first_layer[0].shape == (32, 64)
    assert not np.array_equal(result.first_layer[0], result.first_layer[-1])
    assert all(m.seconds > 0 and m.val_loss is None for m in result.history)
    assert result.final_metrics()["test_acc"] == result.history[-1].test_acc


@pytest.mark.parametrize("changes", [
    {"train.optimizer": "sgd", "train.lr": 0.05},
    {"train.optimizer": "adamw", "train.weight_decay": 0.01, "train.label_smoothing": 0.1},
    {"model.norm": "batch", "model.activation": "gelu"},
    {"model.norm": "layer", "model.hidden": ()},
    {"model.kind": "cnn", "model.conv_channels": (8, 16), "model.dense": 32},
    {"train.augment": True, "model.kind": "cnn", "model.conv_channels": (8,), "model.norm": "batch"},
], ids=["sgd", "adamw", "batchnorm", "layernorm-logreg", "cnn", "cnn-augment"])
def test_variants_train_above_chance(digits: Dataset, changes: dict) -> None:
    result = train(small(**{"train.epochs": 3, **changes}), digits)
    assert result.status == "finished", result.message
    assert result.history[-1].test_acc > 0.5


def test_train_subset_and_a_last_batch_of_one_image(digits: Dataset, counted) -> None:
    # 65 images in batches of 32: the last batch would hold one image and break BatchNorm: dropped.
    result = train(small(**{"train.train_subset": 65, "model.norm": "batch", "train.epochs": 1}),
                   digits)
    assert result.status == "finished" and counted[0].calls == 2
    result = train(small(**{"train.train_subset": 100, "train.epochs": 1}), digits)
    assert counted[1].calls == 4


def test_raw_pixels_without_normalisation_still_run(digits: Dataset) -> None:
    result = train(small(**{"train.normalize": False, "train.lr": 1e-4}), digits)
    assert result.status in ("finished", "diverged")
    assert result.history or result.diverged_step


# ------------------------------------------------------------------------- stop

def test_stop_ends_within_one_step(digits: Dataset, counted) -> None:
    stop = threading.Event()
    seen: list[int] = []

    def on_event(event) -> None:
        if isinstance(event, BatchProgress) and not stop.is_set():
            seen.append(event.step)
            stop.set()
    result = train(small(**{"train.epochs": 5}), digits, on_event=on_event, stop=stop, sync_every=1)
    assert result.status == "stopped"
    assert counted[0].calls <= seen[0] + 1
    assert result.batch_losses[-1][0] <= seen[0] + 1
    assert result.history == []  # the epoch in progress is not reported as finished
    assert result.test_prob is None and result.state_dict


def test_stop_in_a_later_epoch_keeps_the_finished_epochs(digits: Dataset, counted) -> None:
    stop = threading.Event()
    seen: list[int] = []

    def on_event(event) -> None:
        if isinstance(event, BatchProgress) and event.epoch == 2 and not stop.is_set():
            seen.append(event.step)
            stop.set()
    result = train(small(**{"train.epochs": 5}), digits, on_event=on_event, stop=stop, sync_every=1)
    assert result.status == "stopped"
    assert counted[0].calls <= seen[0] + 1
    # epoch 1 is kept; so is epoch 2 when the stop came with its last step
    assert len(result.history) == (2 if seen[0] == 2 * counted[0].steps_per_epoch else 1)
    assert result.test_prob is not None  # predictions of the weights it stopped with


def test_stop_from_another_thread(digits: Dataset, counted) -> None:
    stop = threading.Event()
    first = threading.Event()

    def on_event(event) -> None:
        if isinstance(event, BatchProgress):
            first.set()
    stopper = threading.Thread(target=lambda: (first.wait(60), stop.set()))
    stopper.start()
    result = train(small(**{"train.epochs": 500}), digits, on_event=on_event, stop=stop)
    stopper.join()
    assert result.status == "stopped"
    assert len(result.history) < 500


def test_stop_before_start_runs_no_step(digits: Dataset, counted) -> None:
    stop = threading.Event()
    stop.set()
    events: list = []
    result = train(small(), digits, on_event=events.append, stop=stop)
    assert result.status == "stopped"
    assert counted[0].calls == 0
    assert events == [] and result.history == [] and result.batch_losses == []
    assert result.test_pred is None


# ------------------------------------------------------------------------- divergence

@pytest.mark.parametrize("optimizer", ["adam", "sgd", "adamw"])
def test_lr_10_is_reported_as_diverged(digits: Dataset, optimizer: str) -> None:
    events: list = []
    config = small(**{"train.optimizer": optimizer, "train.lr": 10.0, "train.epochs": 5,
                      "model.hidden": (512, 256)})
    result = train(config, digits, on_event=events.append)
    assert result.status == "diverged"
    assert isinstance(result.diverged_step, int) and 1 <= result.diverged_step <= 45
    assert "learning rate" in result.message and str(result.diverged_step) in result.message
    assert len(result.history) < 5
    assert all(math.isfinite(loss) for _, loss in result.batch_losses)
    assert result.test_pred is None


def test_an_lr_10_run_records_the_losses_up_to_its_blow_up_and_the_blow_up(digits: Dataset) -> None:
    events: list = []
    config = small(**{"train.lr": 10.0, "train.epochs": 5, "model.hidden": (512, 256)})
    result = train(config, digits, on_event=events.append)
    assert result.status == "diverged"
    step, loss = result.divergence
    assert (step, loss) == (result.diverged_step, result.diverged_loss)
    first = result.batch_losses[0][1]
    assert not math.isfinite(loss) or loss > train_module.DIVERGE_FACTOR * first
    # the curve: every step before the blow-up (the CPU reads each one), and not the blow-up itself
    assert [s for s, _ in result.batch_losses] == list(range(1, step))
    assert all(math.isfinite(v) for _, v in result.batch_losses)
    # the last live event says so too, carrying the points no earlier event carried
    last = [e for e in events if isinstance(e, BatchProgress)][-1]
    assert last.diverged == (step, loss)
    carried = [p for e in events if isinstance(e, BatchProgress) for p in e.points]
    assert carried == result.batch_losses


def test_reading_back_rarely_keeps_the_losses_before_the_blow_up(digits: Dataset) -> None:
    """On a GPU the losses come back 50 steps at a time: those before the blow-up are kept."""
    config = small(**{"train.lr": 10.0, "train.epochs": 5, "model.hidden": (512, 256)})
    every, rarely = train(config, digits, sync_every=1), train(config, digits, sync_every=10)
    assert rarely.status == "diverged" and rarely.divergence[0] == every.divergence[0]
    assert rarely.batch_losses and rarely.batch_losses[-1] == every.batch_losses[-1]


def test_the_events_carry_exactly_the_finished_runs_curve(digits: Dataset) -> None:
    """What a page draws live (the events' points) is the result's curve, point for point."""
    events: list = []
    result = train(small(), digits, on_event=events.append)
    carried = [p for e in events if isinstance(e, BatchProgress) for p in e.points]
    assert result.status == "finished" and carried == result.batch_losses


def test_a_sane_learning_rate_does_not_diverge(digits: Dataset) -> None:
    result = train(small(**{"train.optimizer": "sgd", "train.lr": 0.1, "train.epochs": 3}), digits)
    assert result.status == "finished" and result.diverged_step is None and result.message == ""


# ------------------------------------------------------------------------- determinism

def test_two_runs_with_one_seed_give_identical_curves(digits: Dataset) -> None:
    config = small(**{"train.epochs": 3, "model.dropout": 0.3})
    first, second = train(config, digits), train(config, digits)
    assert _curves(first) == _curves(second)
    np.testing.assert_array_equal(first.test_prob, second.test_prob)
    for key, value in first.state_dict.items():
        torch.testing.assert_close(value, second.state_dict[key], rtol=0, atol=0)

    other = train(config.replace(**{"train.seed": 43}), digits)
    assert other.batch_losses != first.batch_losses
    assert _curves(other)[1] != _curves(first)[1]


def test_augmented_runs_are_reproducible_too(digits: Dataset) -> None:
    config = small(**{"train.augment": True, "train.epochs": 1})
    assert _curves(train(config, digits)) == _curves(train(config, digits))


def test_reading_back_less_often_trains_the_same_network(digits: Dataset) -> None:
    config = small()
    every, rarely = train(config, digits, sync_every=1), train(config, digits, sync_every=10)
    assert _curves(every)[1] == _curves(rarely)[1]
    assert len(rarely.batch_losses) < len(every.batch_losses)
    readings = dict(every.batch_losses)
    for step, loss in rarely.batch_losses:  # the smoothed curve agrees wherever both read
        assert loss == pytest.approx(readings[step])


# ------------------------------------------------------------------------- early stopping

def _watch_evaluate(monkeypatch: pytest.MonkeyPatch, val_size: int, scripted: list[float] | None
                    ) -> list[tuple[int, torch.Tensor]]:
    """Record what `evaluate` is asked about; optionally replace the validation losses by a script."""
    calls: list[tuple[int, torch.Tensor]] = []
    real = train_module.evaluate
    script = iter(scripted or [])

    def evaluate(model, x, y, scale, shift, **kwargs):
        calls.append((len(y), y.clone()))
        loss, acc, probs = real(model, x, y, scale, shift, **kwargs)
        if scripted is not None and len(y) == val_size:
            loss = next(script)
        return loss, acc, probs
    monkeypatch.setattr(train_module, "evaluate", evaluate)
    return calls


def test_early_stopping_watches_a_validation_split_carved_from_training_data(
        digits: Dataset, counted, monkeypatch: pytest.MonkeyPatch) -> None:
    split = split_train(len(digits.train_y), 0, 0.2, 42)
    calls = _watch_evaluate(monkeypatch, len(split.val), None)
    config = small(**{"train.early_stopping": True, "train.val_fraction": 0.2, "train.epochs": 2})
    result = train(config, digits)
    assert len(split.val) == round(0.2 * len(digits.train_y))
    assert all(m.val_loss is not None and m.val_acc is not None for m in result.history)
    assert all(m.val_loss != m.test_loss for m in result.history)
    val_calls = [y for n, y in calls if n == len(split.val)]
    assert len(val_calls) == 2
    torch.testing.assert_close(val_calls[0], digits.train_y[split.val])  # never the test set
    assert counted[0].calls == 2 * math.ceil(len(split.train) / 32)  # trained on the rest only
    assert result.best_epoch in (1, 2)


def test_early_stopping_stops_after_patience_and_keeps_the_best_weights(
        digits: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    split = split_train(len(digits.train_y), 0, 0.1, 42)
    # validation loss improves to epoch 3, then fails to improve for `patience` = 3 epochs.
    _watch_evaluate(monkeypatch, len(split.val), [1.0, 0.8, 0.5, 0.6, 0.5, 0.9, 0.1, 0.1])
    config = small(**{"train.early_stopping": True, "train.patience": 3, "train.epochs": 20})
    result = train(config, digits)
    assert result.status == "finished"
    assert len(result.history) == 6
    assert result.best_epoch == 3
    assert result.final is result.history[2]
    assert "Early stopping" in result.message and "epoch 3" in result.message
    kept = result.state_dict["1.weight"].to(torch.float16).numpy()
    np.testing.assert_array_equal(kept, result.first_layer[3])  # the weights after epoch 3
    assert not np.array_equal(kept, result.first_layer[6])


def test_without_early_stopping_there_is_no_validation_split(digits: Dataset, counted) -> None:
    result = train(small(**{"train.epochs": 1, "train.val_fraction": 0.3}), digits)
    assert result.history[0].val_loss is None and result.best_epoch is None
    assert counted[0].calls == math.ceil(len(digits.train_y) / 32)


# ------------------------------------------------------------------------- augmentation

@pytest.mark.parametrize("shape", [(16, 1, 28, 28), (8, 3, 32, 32), (5, 1, 8, 8)])
def test_augment_batch_keeps_the_shape_and_changes_the_images(shape) -> None:
    torch.manual_seed(0)
    x = torch.rand(shape)
    out = augment_batch(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not torch.allclose(out, x, atol=1e-3)
    assert torch.isfinite(out).all()


def test_augment_batch_with_zero_angle_and_shift_is_the_identity() -> None:
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(augment_batch(x, max_degrees=0.0, max_shift=0.0), x,
                               atol=1e-5, rtol=1e-5)


def test_augment_batch_shifts_at_most_max_shift_pixels() -> None:
    torch.manual_seed(1)
    x = torch.zeros(64, 1, 28, 28)
    x[:, :, 12:16, 12:16] = 1.0
    out = augment_batch(x, max_degrees=0.0, max_shift=2.0)
    grid = torch.arange(28.0)

    def centre(images: torch.Tensor) -> torch.Tensor:
        mass = images.sum((1, 2, 3))
        return torch.stack([(images.sum((1, 3)) * grid).sum(1) / mass,
                            (images.sum((1, 2)) * grid).sum(1) / mass], 1)
    moved = (centre(out) - centre(x)).abs()
    assert moved.max() <= 2.0 + 1e-4
    assert moved.max() > 0.5  # it does move
    torch.testing.assert_close(out.sum((1, 2, 3)), x.sum((1, 2, 3)), atol=1e-3, rtol=1e-4)
