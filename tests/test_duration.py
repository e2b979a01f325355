"""The time estimate of a run (dlcore.engine.duration): FLOP counts against a hand count and torch's
own counter, how the estimate scales, the guard, the limit's parsing, the wording, and the measured
speed being paid once. Nothing here asserts a wall-clock time."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dlcore.engine import duration
from dlcore.engine.config import ModelSpec, RunConfig
from dlcore.engine.dataset import split_train
from dlcore.engine.duration import (
    DurationLimitError,
    check_duration,
    estimate_seconds,
    flops_per_sample,
    format_duration,
    format_limit,
    measure_speed,
    run_shape,
    train_flops_per_sample,
    work_per_sample,
)
from dlcore.engine.models import build_model
from dlcore.engine.steps import make_step

RATE = 1e10  # FLOP/s: any positive number will do where only proportions are checked


def cfg(**changes) -> RunConfig:
    return RunConfig().replace(**{"train.device": "cpu", **changes}).validate()


def torch_flops(config: RunConfig, shape: tuple[int, int, int], num_classes: int = 10, *,
                backward: bool = False) -> int:
    """torch's own count for one image: forward only, or forward and backward."""
    torch.manual_seed(0)
    model = build_model(config.model, shape, num_classes)
    model.eval()  # BatchNorm and Dropout as in evaluation; neither counts FLOPs either way
    counter = FlopCounterMode(display=False)
    with counter:
        out = model(torch.zeros(1, *shape))
        if backward:
            out.sum().backward()
    return counter.get_total_flops()


# --- FLOPs -----------------------------------------------------------------------------------------

def test_mlp_flops_by_hand():
    # 2x2 image -> 5 -> 3 -> 10: 4*5 + 5*3 + 3*10 = 65 multiply-adds.
    config = cfg(**{"model.hidden": (5, 3)})
    assert flops_per_sample(config, (1, 2, 2), 10) == 2 * 65


def test_cnn_flops_by_hand():
    # 1x4x4 -> conv 2 (3x3, same padding) -> pool -> conv 3 -> pool -> dense 4 -> 10.
    config = cfg(**{"model.kind": "cnn", "model.conv_channels": (2, 3), "model.dense": 4})
    conv1 = 4 * 4 * 2 * 1 * 9  # out_h * out_w * out_c * in_c * k * k
    conv2 = 2 * 2 * 3 * 2 * 9  # after the first pool: 2x2
    dense = 3 * 1 * 1 * 4  # after the second pool: 3x1x1 flattened
    head = 4 * 10
    assert flops_per_sample(config, (1, 4, 4), 10) == 2 * (conv1 + conv2 + dense + head)


@pytest.mark.parametrize("changes, shape", [
    ({}, (1, 28, 28)),
    ({"model.hidden": (), "model.dropout": 0.0}, (1, 8, 8)),
    ({"model.hidden": (64, 32, 16), "model.norm": "batch"}, (1, 8, 8)),
    ({"model.kind": "cnn"}, (1, 28, 28)),
    ({"model.kind": "cnn", "model.pool": False, "model.kernel_size": 5, "model.norm": "layer"},
     (3, 12, 12)),
    ({"model.kind": "cnn", "model.conv_channels": (4, 8, 8, 16), "model.norm": "batch"}, (1, 28, 28)),
])
def test_flops_match_torchs_counter(changes, shape):
    config = cfg(**changes)
    assert flops_per_sample(config, shape, 10) == torch_flops(config, shape)
    # Training: 3x each layer's forward, but no input gradient for the first layer (so 2x there).
    assert train_flops_per_sample(config, shape, 10) == torch_flops(config, shape, backward=True)


def test_work_adds_the_element_wise_work_on_each_output(monkeypatch):
    config = cfg(**{"model.kind": "cnn", "model.conv_channels": (2, 3), "model.dense": 4})
    outputs = 2 * 4 * 4 + 3 * 2 * 2 + 4 + 10  # what the convolutions and the two Linear put out
    monkeypatch.setattr(duration, "ELEMENT_FLOPS", 100.0)
    forward = flops_per_sample(config, (1, 4, 4), 10)
    assert work_per_sample(config, (1, 4, 4), 10, training=False) == forward + 100 * outputs
    assert (work_per_sample(config, (1, 4, 4), 10, training=True)
            == train_flops_per_sample(config, (1, 4, 4), 10) + 3 * 100 * outputs)
    monkeypatch.setattr(duration, "ELEMENT_FLOPS", 0.0)
    assert work_per_sample(config, (1, 4, 4), 10, training=False) == forward


# --- the run's shape and the estimate -------------------------------------------------------------

@pytest.mark.parametrize("num_train, subset, early, batch", [
    (1000, 0, False, 64), (1000, 300, True, 64), (1000, 5000, False, 64), (129, 0, False, 64),
    (100, 0, True, 32), (50, 0, False, 64), (11, 10, True, 9),
])
def test_run_shape_is_what_train_uses(num_train, subset, early, batch):
    config = cfg(**{"train.train_subset": subset, "train.early_stopping": early,
                    "train.batch_size": batch})
    run = run_shape(config, num_train)
    split = split_train(num_train, subset, config.train.val_fraction if early else 0.0)
    assert (run.fit, run.val) == (len(split.train), len(split.val))
    model = build_model(ModelSpec(hidden=()), (1, 2, 2), 10)
    x = torch.zeros(run.fit, 1, 2, 2, dtype=torch.uint8)
    step = make_step(model, torch.optim.SGD(model.parameters(), lr=0.1), x,
                     torch.zeros(run.fit, dtype=torch.long), torch.ones(()), torch.zeros(()),
                     config.train, torch.device("cpu"), sync_every=1, use_cuda_graph=False)
    assert run.steps == step.steps_per_epoch


def estimate(config: RunConfig, num_train: int = 10_000, num_test: int = 2000) -> float:
    return estimate_seconds(config, (1, 28, 28), 10, num_train, num_test, RATE)


@pytest.mark.parametrize("model", [{}, {"model.kind": "cnn"}])
def test_estimate_grows_linearly_with_epochs(model):
    one, two, five = (estimate(cfg(**model, **{"train.epochs": e})) for e in (1, 2, 5))
    per_epoch = two - one
    assert per_epoch > 0
    assert five == pytest.approx(one + 4 * per_epoch)
    assert one > per_epoch  # plus the run's own fixed cost and the last pass over the test set


def test_estimate_grows_linearly_with_the_training_subset():
    # Whole batches (batch 64), so steps and images both scale; the evaluation stays the same.
    a, b, c = (estimate(cfg(**{"train.train_subset": n})) for n in (640, 1280, 2560))
    assert b - a > 0
    assert c - b == pytest.approx(2 * (b - a))
    assert estimate(cfg(**{"train.train_subset": 10**6})) == estimate(cfg())  # capped by the data
    assert estimate(cfg(**{"train.train_subset": 10_000})) == estimate(cfg())


def test_estimate_counts_training_and_evaluation_work():
    config = cfg(**{"train.epochs": 3, "train.train_subset": 6400, "train.early_stopping": True})
    forward = work_per_sample(config, (1, 28, 28), 10, training=False)
    train_work = work_per_sample(config, (1, 28, 28), 10, training=True)
    assert train_work > 2 * forward
    # 640 validation images, 5760 trained on in 90 steps, 2000 test images each epoch and once more.
    expected = (3 * (90 * 0.001 + 5760 * train_work / RATE + (640 + 2000) * forward / RATE
                     + duration.EPOCH_OVERHEAD_S)
                + 2000 * forward / RATE + duration.RUN_OVERHEAD_S)
    got = estimate_seconds(config, (1, 28, 28), 10, 10_000, 2000, RATE, step_s=0.001)
    assert got == pytest.approx(expected)


def test_a_bigger_network_or_slower_device_takes_longer():
    assert estimate(cfg(**{"model.hidden": (1024, 1024)})) > estimate(cfg())
    assert estimate(cfg(**{"model.kind": "cnn"})) > estimate(cfg())
    slow = estimate_seconds(cfg(), (1, 28, 28), 10, 10_000, 2000, RATE / 10)
    assert slow > 5 * estimate(cfg())


@pytest.mark.parametrize("rate", [0.0, -1.0, math.nan, math.inf])
def test_estimate_needs_a_positive_rate(rate):
    with pytest.raises(ValueError, match="flops_per_s"):
        estimate_seconds(cfg(), (1, 28, 28), 10, 100, 10, rate)


# --- the guard and the limit ----------------------------------------------------------------------

def test_check_duration_refuses_above_the_limit_with_the_estimate():
    with pytest.raises(DurationLimitError) as info:
        check_duration(14 * 60, 300)
    message = str(info.value)
    assert "about 14 min" in message and "at most 5 min" in message
    assert "Fewer epochs" in message and "\n" not in message
    assert isinstance(info.value, ValueError)


def test_check_duration_passes_at_or_below_the_limit_and_without_one():
    check_duration(299.0, 300)
    check_duration(300.0, 300)
    check_duration(1e9, None)


def test_check_duration_near_the_limit_says_seconds():
    # Rounded, 310 s and 300 s could both read "about 5 min": both are said in seconds then.
    with pytest.raises(DurationLimitError, match=r"about 310 s .* at most 300 s"):
        check_duration(310, 300)


@pytest.mark.parametrize("seconds, text", [
    (0.2, "under 1 s"), (0.97, "about 1 s"), (4.54, "about 4.5 s"), (40, "about 40 s"),
    (59.7, "about 1 min"), (95, "about 1.6 min"), (12 * 60 + 10, "about 12 min"),
    (3.2 * 3600, "about 3.2 h"), (50_000, "about 14 h"), (500_000, "about 140 h"),
    (10**7, "about 2,800 h"), (math.inf, "an unknown time"),
])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds, text", [
    (5, "5 s"), (90, "90 s"), (100, "100 s"), (300, "5 min"), (5400, "90 min"), (7200, "2 h"),
    (4000, "4,000 s"), (2.5, "2.5 s"),
])
def test_format_limit(seconds, text):
    assert format_limit(seconds) == text


# --- the measured speed ---------------------------------------------------------------------------

def test_the_measured_speed_is_positive_and_measured_once(monkeypatch):
    monkeypatch.setattr(duration, "_SPEEDS", {})
    monkeypatch.setattr(duration, "PROBE_SECONDS", (0.01, 0.01))  # the minimum: 3 chunks each
    calls = []
    real = duration._step_timer

    def counted(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(duration, "_step_timer", counted)
    rate = measure_speed("cpu").flops_per_s
    assert math.isfinite(rate) and rate > 0
    assert len(calls) == 2  # the seed step and the tiny one
    assert measure_speed("cpu").flops_per_s == rate
    speed = measure_speed("cpu")
    assert speed.flops_per_s == rate and math.isfinite(speed.step_s) and speed.step_s > 0
    assert len(calls) == 2  # cached: not timed again
    threads = torch.get_num_threads()
    measure_speed("cpu", threads=threads)  # the same thread count: the same entry
    assert len(calls) == 2
    measure_speed("cpu", threads=1 if threads > 1 else 2)  # another thread count: timed
    assert len(calls) == 4
    assert torch.get_num_threads() == threads  # and the process's setting is put back


def test_estimate_run_seconds_uses_the_measured_speed(monkeypatch):
    speed = duration.DeviceSpeed(flops_per_s=RATE, step_s=0.002)
    monkeypatch.setattr(duration, "_SPEEDS", {("cpu", torch.get_num_threads()): speed})
    config = cfg()
    got = duration.estimate_run_seconds(config, (1, 28, 28), 10, 10_000, 2000)
    assert got == estimate_seconds(config, (1, 28, 28), 10, 10_000, 2000, RATE, step_s=0.002)
