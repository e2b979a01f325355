"""How much memory a training run will need, worked out before it starts, and the guard that uses it.

The estimate follows what `dlcore.engine.train.train` and `dlcore.engine.steps` keep alive: the
parameters, their gradients, the optimiser's state, what one batch leaves for the backward pass (and
the transient buffers of the worst layer's backward), the dataset on the device, and a fixed allowance
for the framework itself. Layer shapes come from `dlcore.engine.models.describe_layers` (the meta
device), so a network of any size is estimated without allocating it.

Sizes are decimal throughout: 1 kB = 1000 bytes, 1 MB = 10**6, 1 GB = 10**9. `parse_bytes` also takes
binary units spelt with an i (KiB, MiB, GiB, TiB).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from dlcore.engine.config import RunConfig
from dlcore.engine.dataset import split_sizes
from dlcore.engine.models import LayerRow, describe_layers

FLOAT_BYTES = 4  # float32 parameters, gradients, optimiser state and activations
INDEX_BYTES = 8  # int64 labels, batch order and MaxPool2d's saved argmax indices
MASK_BYTES = 1  # Dropout saves a bool mask beside its output
EVAL_CHUNK = 2000  # dlcore.engine.train.evaluate's chunk of test (and validation) images

# The process itself: the peak resident memory of `import torch, dlcore.engine.train` plus training a
# one-unit MLP for a few steps on 100 images (so everything above is next to nothing). Measured
# with ru_maxrss on the 2-core Linux machine, torch 2.14.1 (the CUDA wheel run on the CPU):
# 533 MB after the import, 715-732 MB at the peak (MLP or CNN, Adam or SGD, augmentation or not;
# the first step maps in oneDNN/MKL kernels and starts the thread pools). A CPU-only wheel is
# smaller, so this errs on the generous side there.
CPU_OVERHEAD = 730_000_000
# A CUDA device: the context, cuBLAS/cuDNN workspaces and the caching allocator's rounding. NOT
# measured here (no GPU was lent when this was written); torch 2.x with lazy module loading
# typically holds 0.5-1 GB of device memory for the context alone.
CUDA_OVERHEAD = 1_000_000_000

# The share of the machine one job may use when DLLAB_MAX_JOB_MEMORY does not say: most of a GPU
# (the job is alone on it but for the context), half of the RAM (the server, the browser of a
# one-machine class and the OS live there too).
CUDA_FRACTION = 0.9
RAM_FRACTION = 0.5

# Layers whose output is a view of their input (no memory of its own).
_VIEW_LAYERS = {"Flatten"}


class MemoryLimitError(Exception):
    """A run whose estimated memory is above the limit; the message says both and what to shrink."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a run needs at its peak, part by part (see the module docstring for the units)."""

    params: int  # parameter count
    weights: int  # the parameters, plus the copies train() keeps (best epoch; the result on CPU)
    gradients: int
    optimizer: int  # Adam/AdamW: 2 floats per parameter; SGD with momentum: 1; plain SGD: 0
    activations: int  # one training batch's saved outputs and backward buffers, or an eval chunk's
    dataset: int  # the images (uint8) and labels (int64) held where training happens
    overhead: int  # the framework and the process

    @property
    def total(self) -> int:
        return (self.weights + self.gradients + self.optimizer + self.activations + self.dataset
                + self.overhead)

    def parts(self) -> dict[str, int]:
        return {"weights": self.weights, "gradients": self.gradients, "optimiser": self.optimizer,
                "activations": self.activations, "dataset": self.dataset,
                "framework": self.overhead}

    def describe(self) -> str:
        """'about 1.2 GB (weights 2.1 MB, gradients 2.1 MB, optimiser 4.3 MB, ...)'."""
        inside = ", ".join(f"{name} {format_bytes(size)}" for name, size in self.parts().items())
        return f"about {format_bytes(self.total)} ({inside})"


def estimate_memory(config: RunConfig, input_shape: tuple[int, int, int], num_classes: int,
                    num_train: int, num_test: int, *, device: str | None = None) -> MemoryEstimate:
    """The memory the run `config` needs on a dataset of `num_train` + `num_test` images.

    `num_train` is the whole training set; `train.train_subset` and the early-stopping validation
    split are applied here as `train` applies them. `device` (default: the config's, `auto`
    meaning the best one present) decides where the dataset lives and the framework's allowance:
    on the CPU (and MPS, which shares the RAM) the caller's dataset and the training copy are both
    counted; on CUDA only what is copied to the GPU. Not modelled (unmeasured, no GPU lent): on
    CUDA the graph-captured step has its own memory pool beside the blocks the caching allocator
    keeps from the eager warm-up steps, so the activations may be held twice there.
    """
    model, cfg = config.model, config.train
    kind = _device_type(device or cfg.device)
    shared_ram = kind != "cuda"
    rows = describe_layers(model, input_shape, num_classes)
    params = sum(row.params for row in rows)
    features = math.prod(input_shape)

    num_fit, num_val = split_sizes(num_train, cfg.train_subset, cfg.held_out)
    kept = num_fit + num_val
    batch = max(1, min(cfg.batch_size, num_fit))

    param_bytes = params * FLOAT_BYTES
    copies = int(cfg.early_stopping) + int(shared_ram)  # best epoch's state; the result's CPU copy
    if cfg.optimizer in ("adam", "adamw"):
        optimizer = 2 * param_bytes
    elif cfg.momentum > 0:
        optimizer = param_bytes
    else:
        optimizer = 0

    train_act = batch * _train_bytes_per_image(rows, input_shape, num_classes, cfg.augment)
    eval_images = max(min(EVAL_CHUNK, num_test), min(EVAL_CHUNK, num_val))
    eval_act = eval_images * _eval_bytes_per_image(rows, features)

    per_image = features + INDEX_BYTES  # uint8 pixels, int64 label
    dataset = kept * per_image + num_test * per_image + num_fit * INDEX_BYTES  # + the epoch's order
    if shared_ram:  # the caller's full dataset stays in the same memory as the training copy
        dataset += num_train * per_image  # (the test set is used in place: not copied)

    return MemoryEstimate(
        params=params,
        weights=param_bytes * (1 + copies),
        gradients=param_bytes,
        optimizer=optimizer,
        activations=max(train_act, eval_act),
        dataset=dataset,
        overhead=CUDA_OVERHEAD if kind == "cuda" else CPU_OVERHEAD,
    )


def _train_bytes_per_image(rows: list[LayerRow], input_shape: tuple[int, int, int],
                           num_classes: int, augment: bool) -> int:
    """What one image of a training batch costs at the start of the backward pass.

    Every layer's output is counted (an upper bound: a ReLU after a conv saves only its own output),
    plus what that layer saves beside it, plus the worst layer's backward buffers: its output's
    gradient, its input's gradient and, for a convolution, oneDNN's reordered copies (measured on
    the CPU: about twice the larger of input and output, beyond the two gradients).
    """
    c, h, w = input_shape
    features = c * h * w
    saved = features * FLOAT_BYTES  # the normalised float batch the first layer saves
    if augment:  # the augmented copy and its sampling grid (x, y per pixel)
        saved += features * FLOAT_BYTES + h * w * 2 * FLOAT_BYTES
    saved += 2 * num_classes * FLOAT_BYTES  # the logits' log-softmax inside cross_entropy
    worst = 0
    previous = features
    for row in rows:
        out = math.prod(row.output_shape)
        if row.kind not in _VIEW_LAYERS:
            saved += out * FLOAT_BYTES
            if row.kind == "Dropout":
                saved += out * MASK_BYTES
            elif row.kind == "MaxPool2d":
                saved += out * INDEX_BYTES
        backward = (previous + out) * FLOAT_BYTES
        if row.kind == "Conv2d":
            backward += 2 * max(previous, out) * FLOAT_BYTES
        worst = max(worst, backward)
        previous = out
    return saved + worst


def _eval_bytes_per_image(rows: list[LayerRow], features: int) -> int:
    """One image of an evaluation chunk under no_grad: only a layer's input and output are alive
    (a convolution's forward also holds one reordered copy of its output)."""
    worst = 2 * features * FLOAT_BYTES  # the float conversion and the normalised copy
    previous = features
    for row in rows:
        out = 0 if row.kind in _VIEW_LAYERS else math.prod(row.output_shape)
        extra = out if row.kind == "Conv2d" else 0
        worst = max(worst, (previous + out + extra) * FLOAT_BYTES)
        previous = out or previous
    return worst


def _device_type(name: str) -> str:
    """'cpu', 'cuda' or 'mps' for a config's device name; `auto` is the best device present."""
    if name != "auto":
        return name
    from dlcore.engine.devices import available_devices

    return available_devices()[0]


def memory_limit(device: str = "auto", max_jobs: int | None = None,
                 environ: Mapping[str, str] = os.environ) -> int:
    """The bytes one job may use: DLLAB_MAX_JOB_MEMORY if set, else a share of the device.

    The share is CUDA_FRACTION of the GPU's memory, or RAM_FRACTION of the machine's RAM on the CPU
    and MPS, divided among `max_jobs` jobs (default: DLLAB_MAX_JOBS as the runners read it).
    """
    raw = environ.get("DLLAB_MAX_JOB_MEMORY", "").strip()
    if raw:
        try:
            limit = parse_bytes(raw)
        except ValueError as exc:
            raise ValueError(f"DLLAB_MAX_JOB_MEMORY: {exc}") from None
        if limit <= 0:
            raise ValueError(f"DLLAB_MAX_JOB_MEMORY: {raw!r} must be more than 0 bytes")
        return limit
    if max_jobs is None:  # the one rule for DLLAB_MAX_JOBS, its default included
        from dlcore.runs.runners import max_jobs_from_env

        max_jobs = max_jobs_from_env(environ)
    if max_jobs < 1:
        raise ValueError(f"max_jobs (DLLAB_MAX_JOBS) must be at least 1, not {max_jobs}")
    from dlcore.engine.devices import resolve_device

    resolved = resolve_device(device)
    if resolved.type == "cuda":
        import torch

        total, fraction = torch.cuda.get_device_properties(resolved).total_memory, CUDA_FRACTION
    else:
        total, fraction = total_ram(), RAM_FRACTION
    return int(total * fraction / max_jobs)


def total_ram() -> int:
    """The machine's physical memory in bytes."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        import psutil  # macOS and Windows lack one of the sysconf names

        return int(psutil.virtual_memory().total)


def check_memory(estimate: MemoryEstimate, limit: int) -> None:
    """Refuse (MemoryLimitError) a run whose estimate is above `limit` bytes."""
    if estimate.total <= limit:
        return
    parts = sorted(estimate.parts().items(), key=lambda item: -item[1])
    biggest = ", ".join(f"{name} {format_bytes(size)}" for name, size in parts[:3])
    raise MemoryLimitError(
        f"This run would need about {format_bytes(estimate.total)} of memory (mostly {biggest}), "
        f"more than the {format_bytes(limit)} one run may use here (DLLAB_MAX_JOB_MEMORY). "
        "Make it smaller: a smaller batch size, narrower layers or fewer channels, a smaller dense "
        "layer, or pooling after the convolutions.")


_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")


def format_bytes(n: int) -> str:
    """Decimal units, two significant figures below 10: '512 MB', '1.2 GB', '20 GB', '900 B'."""
    value, unit = float(n), 0
    while abs(value) >= 999.5 and unit < len(_UNITS) - 1:
        value /= 1000
        unit += 1
    if unit and abs(value) < 9.95:
        return f"{value:.1f} {_UNITS[unit]}"
    return f"{value:.0f} {_UNITS[unit]}"


_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}
_AMOUNT = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgtp]?)(i?)(b?)\s*$", re.IGNORECASE)


def parse_bytes(text: str) -> int:
    """'8G', '8GB', '512M', '1.5g', '1073741824' -> bytes; decimal (G = 10**9), GiB/Gi binary."""
    match = _AMOUNT.match(str(text))
    if not match or (match.group(3) and not match.group(2)):
        raise ValueError(f"{text!r} is not an amount of memory; write it like 8GB, 512M or "
                         "1073741824 (decimal units: 1 GB = 10**9 bytes; GiB for 2**30)")
    number, prefix, binary, _ = match.groups()
    base = 1024 if binary else 1000
    return int(round(float(number) * base ** _POWERS[prefix.lower()]))
