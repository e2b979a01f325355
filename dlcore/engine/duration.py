"""How long a training run will take, worked out before it starts, and the guard that uses it.

The estimate is arithmetic over the network `dlcore.engine.models` builds (its layer table on the meta
device, so a network of any size costs nothing to estimate): the work of one image, times the images
`dlcore.engine.train.train` trains on and evaluates in each epoch, divided by the rate this device reached
on a short run of the engine's own training step (`measure_speed`, timed once per process), plus a
fixed cost per step, per epoch and per run.

The work of one image is counted in FLOPs. Each Linear and Conv2d layer does 2 x its multiply-adds
forward (Linear: in * out; Conv2d: out_h * out_w * out_c * in_c * k * k), and 3x that in training
(the input's and the weights' gradients), 2x for the first layer (no gradient for the images). The
layers that do no multiply-adds (activation, normalisation, pooling, dropout, the bias) are not free
on a CPU, where they are limited by memory: ELEMENT_FLOPS charges each value a weight layer puts out,
in each pass, as that many FLOPs. Without it a CNN's time was mispredicted by up to 1.8x either way
(the convolutions' FLOPs run faster than the MLP's, their feature maps' element-wise work slower).

A server caps one job's time with DLLAB_MAX_JOB_SECONDS; `check_duration` refuses a run whose
estimate is above it, in words, the way `dlcore.engine.memory.check_memory` refuses one too big.

Measured on the 2-core CPU (an AMD EPYC VM; torch 2.14.1): twelve runs of `train`, each repeated,
with 1 and with 2 threads: the seed MLP for 1-2 epochs of the bundled sample (also with 3000 of its
images, at batch 512, with early stopping) and for 1 epoch of the real MNIST, MLPs 784-64-10 and
784-16-10, the CNN preset with pooling (Adam at batch 64, SGD at 256) and without (3000 images), and
an 8/16-channel CNN with batch norm and no pooling; 0.25 s to 10 s each. With the speed measured
just before each run, as a server does, estimate/actual was 0.84-1.38 with 1 thread and 0.88-1.41
with 2 on a quiet machine, except that in some stretches (seconds to a minute) the machine ran a
2-thread MLP step at half speed and a convolution at full speed: an estimate measured then put CNN
runs at up to 2.6x their time. With other work on the machine (another test suite): 0.63-1.8 with
1 thread, 0.63-2.7 with 2, both the probe and the runs swinging. A batch larger than the probe's 64
runs faster per image (batch 512: 1.1-1.3x).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from dlcore.engine.config import ModelSpec, RunConfig, TrainConfig
from dlcore.engine.dataset import split_sizes
from dlcore.engine.models import LayerRow, build_model, describe_layers

# Calibrated on the 2-core CPU (see the module docstring): the element-wise work per output value of
# a weight layer, in FLOPs per pass; and the share of the probe's fastest burst a whole run keeps.
ELEMENT_FLOPS = 150.0
SUSTAINED = 0.9
STEP_OVERHEAD_S = 5e-4  # one step's fixed cost when it is not measured (measured: 0.45-0.55 ms)
EPOCH_OVERHEAD_S = 0.005  # the epoch's randperm, events and first-layer snapshot (measured: 3-4 ms)
RUN_OVERHEAD_S = 0.02  # building the model, copying the data, the result (measured: about 8 ms)

# measure_speed's two steps, each the engine's own step (dlcore.engine.steps) at batch 64 with Adam: the
# seed MLP on MNIST-sized images (its time is mostly work), and the same layers 8 wide on 4x4
# images (its time is the fixed cost of a step). The difference gives the rate.
PROBE_SPEC = ModelSpec()
PROBE_SHAPE = (1, 28, 28)
TINY_SPEC = ModelSpec(hidden=(8, 8))
TINY_SHAPE = (1, 4, 4)
PROBE_BATCH = 64
PROBE_SECONDS = (0.25, 0.08)  # timing budget of the seed step, of the tiny step
PROBE_CHUNK = 5  # steps timed together; the fastest chunk is kept (see measure_speed)


class DurationLimitError(ValueError):
    """A run whose estimated time is above the limit; the message says both and what to shrink."""


@dataclass(frozen=True)
class WeightLayer:
    """One Linear or Conv2d layer: its forward FLOPs and the values it puts out, for one image."""

    kind: str
    flops: float
    outputs: int


def weight_layers(config: RunConfig, shape: tuple[int, ...], num_classes: int) -> list[WeightLayer]:
    """The Linear and Conv2d layers of the network `config` describes, in order."""
    rows: list[LayerRow] = describe_layers(config.model, shape, num_classes)
    out: list[WeightLayer] = []
    previous = tuple(shape)
    for row in rows:
        if row.kind == "Linear":
            flops = 2.0 * math.prod(previous) * row.output_shape[0]
            out.append(WeightLayer("Linear", flops, math.prod(row.output_shape)))
        elif row.kind == "Conv2d":
            out_c, out_h, out_w = row.output_shape
            k = config.model.kernel_size
            flops = 2.0 * out_h * out_w * out_c * previous[0] * k * k
            out.append(WeightLayer("Conv2d", flops, math.prod(row.output_shape)))
        previous = row.output_shape
    return out


def flops_per_sample(config: RunConfig, shape: tuple[int, ...], num_classes: int) -> float:
    """Forward FLOPs (2 x multiply-adds) of one image through the network `config` describes."""
    return sum(layer.flops for layer in weight_layers(config, shape, num_classes))


def train_flops_per_sample(config: RunConfig, shape: tuple[int, ...], num_classes: int) -> float:
    """FLOPs of one training image: 3x each layer's forward, 2x the first's (see the docstring)."""
    layers = weight_layers(config, shape, num_classes)
    return sum(layer.flops * (2.0 if index == 0 else 3.0) for index, layer in enumerate(layers))


def work_per_sample(config: RunConfig, shape: tuple[int, ...], num_classes: int, *,
                    training: bool) -> float:
    """What one image costs, in FLOPs: the weight layers' FLOPs plus ELEMENT_FLOPS for each value
    they put out, in each pass (3 in training: forward and two backward; 1 in evaluation)."""
    layers = weight_layers(config, shape, num_classes)
    outputs = sum(layer.outputs for layer in layers)
    if training:
        return train_flops_per_sample(config, shape, num_classes) + 3.0 * ELEMENT_FLOPS * outputs
    return sum(layer.flops for layer in layers) + ELEMENT_FLOPS * outputs


@dataclass(frozen=True)
class DeviceSpeed:
    """What a short training step measured on a device: the rate of work (FLOP/s, see
    `work_per_sample`) a whole run keeps up, and the fixed seconds of one step beyond its work."""

    flops_per_s: float
    step_s: float


_SPEEDS: dict[tuple[str, int], DeviceSpeed] = {}


def measure_speed(device: str = "cpu", threads: int | None = None) -> DeviceSpeed:
    """Time the engine's training step on `device` (with `threads` CPU threads; default: the
    process's), once per process for each (device, threads): about 0.4 s the first time (plus
    1-1.5 s if nothing in the process has built a model on the meta device yet: torch's first use
    of it, which `describe_layers` and so `estimate_memory` pay too). Pass the thread count the
    run will have (a worker's), not the caller's.

    Each step is timed PROBE_CHUNK steps at a time and the fastest chunk kept: on a machine shared
    with other work that is the speed this one has when it gets the cores, which a short wait finds
    more surely than a mean does; SUSTAINED scales it to what a whole run keeps up.
    """
    from dlcore.engine.devices import resolve_device

    resolved = resolve_device(device)
    key = (resolved.type, threads or torch.get_num_threads())
    if key not in _SPEEDS:
        previous = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)
        try:
            big, tiny = _fastest_steps(resolved)
        finally:
            torch.set_num_threads(previous)
        work = PROBE_BATCH * (_probe_work(PROBE_SPEC, PROBE_SHAPE) - _probe_work(TINY_SPEC, TINY_SHAPE))
        # On a noisy machine the difference can come out tiny or negative: then the whole step.
        compute_s = big - tiny if big - tiny > 0.2 * big else big
        _SPEEDS[key] = DeviceSpeed(flops_per_s=SUSTAINED * work / compute_s, step_s=tiny)
    return _SPEEDS[key]


def _probe_work(spec: ModelSpec, shape: tuple[int, int, int]) -> float:
    return work_per_sample(RunConfig(model=spec), shape, 10, training=True)


def _fastest_steps(device: torch.device) -> tuple[float, float]:
    """The fastest seconds per step of the seed step and of the tiny one, their chunks taken in
    turn (so both meet the same moments of a busy machine) until each has had its budget."""
    timers = [_step_timer(PROBE_SPEC, PROBE_SHAPE, device), _step_timer(TINY_SPEC, TINY_SHAPE, device)]
    best = [math.inf, math.inf]
    spent = [0.0, 0.0]
    rounds = 0
    while rounds < 3 or any(s < budget for s, budget in zip(spent, PROBE_SECONDS, strict=True)):
        for i, timer in enumerate(timers):
            if rounds < 3 or spent[i] < PROBE_SECONDS[i]:
                seconds = timer()
                best[i] = min(best[i], seconds)
                spent[i] += seconds * PROBE_CHUNK
        rounds += 1
    return best[0], best[1]


def _step_timer(spec: ModelSpec, shape: tuple[int, int, int], device: torch.device
                ) -> Callable[[], float]:
    """A function that runs PROBE_CHUNK steps of `dlcore.engine.steps.make_step` (as `train` runs it:
    a CUDA graph where it can, losses read back at train's cadence) on random images and returns
    the seconds per step; the warm-up (kernels chosen, thread pools started, the graph captured)
    is done before it is returned."""
    from dlcore.engine.steps import make_step

    generator = torch.Generator().manual_seed(0)
    count = 16 * PROBE_BATCH
    images = torch.randint(0, 256, (count, *shape), dtype=torch.uint8, generator=generator).to(device)
    labels = torch.randint(0, 10, (count,), generator=generator).to(device)
    order = torch.randperm(count, generator=generator).to(device)
    torch.manual_seed(0)
    model = build_model(spec, shape, 10).to(device)
    cuda = device.type == "cuda"
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=cuda,
                                 fused=(device.type == "cpu") or None)
    scale = torch.full((1, 1, 1, 1), 1 / 255, device=device)
    shift = torch.zeros((1, 1, 1, 1), device=device)
    sync_every = 1 if device.type == "cpu" else 50
    step = make_step(model, optimizer, images, labels, scale, shift,
                     TrainConfig(batch_size=PROBE_BATCH), device, sync_every=sync_every,
                     use_cuda_graph=True)
    step.start_epoch()
    done = 0

    def run(n: int) -> float:
        nonlocal done
        started = time.perf_counter()
        for _ in range(n):
            start = (done % step.steps_per_epoch) * PROBE_BATCH
            step(order[start:start + PROBE_BATCH])
            done += 1
            if done % sync_every == 0:
                step.read_losses()
        _synchronize(device)
        return (time.perf_counter() - started) / n

    run(5)
    return lambda: run(PROBE_CHUNK)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


@dataclass(frozen=True)
class RunShape:
    """How many images `dlcore.engine.train.train` trains on and evaluates, and how many steps it takes."""

    fit: int  # training images per epoch, after train_subset and the validation split
    val: int  # validation images (early stopping only), evaluated each epoch
    steps: int  # training steps per epoch
    batch: int


def run_shape(config: RunConfig, num_train: int) -> RunShape:
    """The split and step count `train` uses (dlcore.engine.dataset.split_train, dlcore.engine.steps)."""
    cfg = config.train
    fit, val = split_sizes(num_train, cfg.train_subset, cfg.held_out)
    batch = max(1, min(cfg.batch_size, fit))
    steps = fit // batch if fit % batch == 1 else math.ceil(fit / batch)
    return RunShape(fit=fit, val=val, steps=steps, batch=batch)


def estimate_seconds(config: RunConfig, shape: tuple[int, ...], num_classes: int, num_train: int,
                     num_test: int, flops_per_s: float, *, step_s: float = STEP_OVERHEAD_S) -> float:
    """Seconds `dlcore.engine.train.train` should take for `config` on a dataset of `num_train` training
    and `num_test` test images, on a device doing `flops_per_s` of work (see `work_per_sample`)
    and taking `step_s` per step beyond it (both from `measure_speed`).

    Every epoch trains on the images `train.train_subset` keeps (less the validation part when
    early stopping is on), then evaluates the validation and the test images (forward only); a last
    pass over the test images gives the result's predictions. All `epochs` are counted: early
    stopping can only end a run sooner.
    """
    if flops_per_s <= 0 or not math.isfinite(flops_per_s):
        raise ValueError(f"flops_per_s must be a positive number, not {flops_per_s!r}")
    run = run_shape(config, num_train)
    train_s = work_per_sample(config, shape, num_classes, training=True) / flops_per_s
    eval_s = work_per_sample(config, shape, num_classes, training=False) / flops_per_s
    trained = min(run.steps * run.batch, run.fit)
    epoch = (run.steps * step_s + trained * train_s + (run.val + num_test) * eval_s
             + EPOCH_OVERHEAD_S)
    return config.train.epochs * epoch + num_test * eval_s + RUN_OVERHEAD_S


def estimate_run_seconds(config: RunConfig, shape: tuple[int, ...], num_classes: int,
                         num_train: int, num_test: int, *, device: str | None = None,
                         threads: int | None = None) -> float:
    """`estimate_seconds` at the speed `measure_speed` finds on `device` (default: the config's)."""
    speed = measure_speed(device or config.train.device, threads)
    return estimate_seconds(config, shape, num_classes, num_train, num_test, speed.flops_per_s,
                            step_s=speed.step_s)


def check_duration(estimate_s: float, limit_s: float | None) -> None:
    """Refuse (DurationLimitError) a run whose estimated seconds are above `limit_s` (None: no cap)."""
    if limit_s is None or estimate_s <= limit_s:
        return
    estimate, limit = format_duration(estimate_s), format_limit(limit_s)
    if estimate_s < 1.1 * limit_s:  # rounded, the two could read the same: say both in seconds
        estimate, limit = f"about {estimate_s:,.0f} s", f"{limit_s:,.0f} s"
    raise DurationLimitError(
        f"This run would take {estimate} here (estimate), and a run may take at most {limit} on "
        "this server. Fewer epochs, fewer training images (the training subset) or a smaller "
        "network make it fit.")


def format_duration(seconds: float) -> str:
    """An estimate for a learner, to two significant figures: 'about 40 s', 'about 4.5 s',
    'about 12 min', 'about 3.2 h', 'about 140 h'; 'under 1 s' below a second."""
    if not math.isfinite(seconds):
        return "an unknown time"
    if seconds < 0.95:
        return "under 1 s"
    value, unit = _two_figures(seconds), "s"
    if value >= 60:  # 59.7 s rounds to 60 s: 1 min, not 0.99 min
        value, unit = _two_figures(seconds / 60), "min"
    if value >= 60:
        value, unit = _two_figures(seconds / 3600), "h"
    value = max(value, 1.0)
    return f"about {value:,.0f} {unit}" if value >= 10 else f"about {value:g} {unit}"


def format_limit(seconds: float) -> str:
    """A limit as it was set: '5 min', '2 h', '90 s', '4,000 s' (minutes and hours only when whole)."""
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:,.0f} h"
    if seconds >= 120 and seconds % 60 == 0:
        return f"{seconds / 60:,.0f} min"
    return f"{seconds:,.0f} s" if seconds >= 10 else f"{seconds:g} s"


def _two_figures(value: float) -> float:
    """`value` rounded to two significant figures (9.96 -> 10, 123 -> 120)."""
    if value <= 0:
        return 0.0
    digits = 1 - math.floor(math.log10(value))
    return round(value, digits)
