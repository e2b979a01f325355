"""The training loop: a config, a dataset and a device in; events while it runs; a result out.

The dataset lives on the training device as uint8 and is normalised per batch; batches are drawn
with `randperm` and indexing. The host reads values back only every `sync_every` steps (every step
on the CPU, where reading is free), so the GPU never waits on Python. On CUDA the whole step is
captured once as a CUDA graph, with the eager step as the fallback.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dlcore.engine.config import RunConfig, TrainConfig
from dlcore.engine.cpu_threads import CpuThreads
from dlcore.engine.dataset import Dataset, split_train
from dlcore.engine.devices import resolve_device
from dlcore.engine.models import build_model, count_params, first_weight_layer
from dlcore.engine.steps import EagerStep, make_step


@dataclass(frozen=True)
class EpochMetrics:
    epoch: int
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    seconds: float
    val_loss: float | None = None
    val_acc: float | None = None

    def as_dict(self) -> dict[str, float | int | None]:
        return asdict(self)


@dataclass(frozen=True)
class BatchProgress:
    """A live reading during an epoch; `loss` is smoothed over recent steps, and `points` holds
    every (step, smoothed loss) reading since the previous event, so a live curve can be the same
    curve as the finished run's `batch_losses`. The last event of a run that blew up carries
    `diverged`: (the step, its raw loss, which may be inf or nan), as its result does."""

    epoch: int
    epochs: int
    step: int
    epoch_step: int
    steps_per_epoch: int
    loss: float
    samples_per_s: float
    eta_s: float
    points: tuple[tuple[int, float], ...] = ()
    diverged: tuple[int, float] | None = None

    @property
    def fraction_done(self) -> float:
        """How much of the run's steps are done, 0 to 1."""
        done = (self.epoch - 1) * self.steps_per_epoch + self.epoch_step
        return min(1.0, done / max(1, self.epochs * self.steps_per_epoch))


@dataclass(frozen=True)
class EpochEnd:
    metrics: EpochMetrics
    first_layer: np.ndarray | None


Event = BatchProgress | EpochEnd


@dataclass
class TrainResult:
    status: str  # finished | stopped | diverged | failed
    config: RunConfig
    dataset: str
    device: str
    params: int
    history: list[EpochMetrics] = field(default_factory=list)
    batch_losses: list[tuple[int, float]] = field(default_factory=list)
    first_layer: list[np.ndarray] = field(default_factory=list)  # index 0: before training
    state_dict: dict[str, torch.Tensor] = field(default_factory=dict)
    test_pred: np.ndarray | None = None
    test_prob: np.ndarray | None = None
    diverged_step: int | None = None
    diverged_loss: float | None = None  # the raw loss at `diverged_step` (inf, nan or huge)
    best_epoch: int | None = None
    message: str = ""
    seconds: float = 0.0
    cuda_graph: bool = False

    @property
    def divergence(self) -> tuple[int, float] | None:
        """(step, raw loss) where the run blew up; None when it did not. `batch_losses` ends at
        the step before: its smoothed curve cannot hold a loss of inf or nan."""
        if self.diverged_step is None or self.diverged_loss is None:
            return None
        return self.diverged_step, self.diverged_loss

    @property
    def final(self) -> EpochMetrics | None:
        if not self.history:
            return None
        if self.best_epoch is not None:
            return self.history[self.best_epoch - 1]
        return self.history[-1]

    def final_metrics(self) -> dict[str, float | None]:
        final = self.final
        keys = ("train_loss", "train_acc", "test_loss", "test_acc")
        return {k: (getattr(final, k) if final else None) for k in keys}


# A loss this many times its starting value (or not finite at all) means training has blown up.
DIVERGE_FACTOR = 50.0
DIVERGED_MESSAGE = (
    "The loss became {value:.3g} at step {step}: the weights blew up. This usually means the "
    "learning rate is too high for this optimiser; try one ten times smaller."
)


def train(
    config: RunConfig,
    dataset: Dataset,
    *,
    on_event: Callable[[Event], None] | None = None,
    stop: threading.Event | None = None,
    sync_every: int | None = None,
    use_cuda_graph: bool = True,
) -> TrainResult:
    """Train the network `config` describes on `dataset` and return what happened."""
    config.validate()
    cfg = config.train
    device = resolve_device(cfg.device)
    emit = on_event or (lambda event: None)
    stop = stop or threading.Event()
    sync_every = sync_every or (1 if device.type == "cpu" else 50)
    cpu_threads = CpuThreads() if device.type == "cpu" else None
    try:
        return _train(config, dataset, device, emit, stop, sync_every, use_cuda_graph, cpu_threads)
    finally:
        if cpu_threads is not None:
            cpu_threads.restore()


def _train(config: RunConfig, dataset: Dataset, device: torch.device, emit: Callable[[Event], None],
           stop: threading.Event, sync_every: int, use_cuda_graph: bool,
           cpu_threads: CpuThreads | None) -> TrainResult:
    cfg = config.train
    started = time.perf_counter()

    torch.manual_seed(cfg.seed)
    model = build_model(config.model, dataset.shape, dataset.num_classes).to(device)
    result = TrainResult("finished", config, dataset.name, _device_name(device), count_params(model))
    result.first_layer.append(_first_layer_snapshot(model))

    split = split_train(len(dataset.train_y), cfg.train_subset, cfg.held_out, cfg.seed)
    train_x = dataset.train_x[split.train].to(device)
    train_y = dataset.train_y[split.train].to(device)
    val_x = dataset.train_x[split.val].to(device)
    val_y = dataset.train_y[split.val].to(device)
    test_x, test_y = dataset.test_x.to(device), dataset.test_y.to(device)
    step_fn = training_step(model, cfg, dataset, train_x, train_y, device,
                            sync_every=sync_every, use_cuda_graph=use_cuda_graph)
    scale, shift = step_fn.scale, step_fn.shift
    result.cuda_graph = step_fn.uses_graph

    batch = min(cfg.batch_size, len(train_y))
    steps_per_epoch = step_fn.steps_per_epoch
    generator = torch.Generator().manual_seed(cfg.seed)
    smoothed: float | None = None
    loss_limit: float | None = None
    best_val, best_state, since_best = math.inf, None, 0
    global_step = 0
    last_emit = 0.0
    emitted = 0  # how many of result.batch_losses the events have carried so far

    for epoch in range(1, cfg.epochs + 1):
        epoch_start = time.perf_counter()
        order = torch.randperm(len(train_y), generator=generator).to(device)
        step_fn.start_epoch()
        for i in range(steps_per_epoch):
            if stop.is_set():
                result.status = "stopped"
                break
            step_fn(order[i * batch:(i + 1) * batch])
            global_step += 1
            if global_step % sync_every and i != steps_per_epoch - 1:
                continue
            losses = step_fn.read_losses()
            if cpu_threads is not None:
                cpu_threads.adjust()
            if loss_limit is None and len(losses):
                loss_limit = DIVERGE_FACTOR * max(float(losses[0]), math.log(dataset.num_classes))
            bad = np.flatnonzero(~np.isfinite(losses) | (losses > (loss_limit or math.inf)))
            good = losses[:bad[0]] if bad.size else losses
            for loss in good:
                smoothed = float(loss) if smoothed is None else 0.95 * smoothed + 0.05 * float(loss)
            last_good = global_step - len(losses) + len(good)
            if len(good):
                result.batch_losses.append((last_good, smoothed))
            if bad.size:
                _mark_diverged(result, last_good + 1, float(losses[bad[0]]))
            now = time.perf_counter()
            if bad.size or now - last_emit >= 0.2 or i == steps_per_epoch - 1:
                last_emit = now
                elapsed = now - epoch_start
                done = (i + 1) * batch
                rate = done / elapsed if elapsed > 0 else 0.0
                left = (steps_per_epoch - i - 1 + (cfg.epochs - epoch) * steps_per_epoch) * batch
                points = tuple(result.batch_losses[emitted:])
                emitted = len(result.batch_losses)
                reading = smoothed if smoothed is not None else result.diverged_loss
                eta = left / rate if rate else 0.0
                emit(BatchProgress(epoch, cfg.epochs, global_step, i + 1, steps_per_epoch,
                                   math.nan if reading is None else reading, rate, eta, points,
                                   result.divergence))
            if bad.size:
                break
        if result.status != "finished":
            break

        train_loss, train_acc = step_fn.epoch_totals()
        val_loss = val_acc = None
        if len(val_y):
            val_loss, val_acc, _ = evaluate(model, val_x, val_y, scale, shift)
        test_loss, test_acc, _ = evaluate(model, test_x, test_y, scale, shift)
        metrics = EpochMetrics(epoch, train_loss, train_acc, test_loss, test_acc,
                               time.perf_counter() - epoch_start, val_loss, val_acc)
        result.history.append(metrics)
        snapshot = _first_layer_snapshot(model)
        result.first_layer.append(snapshot)
        emit(EpochEnd(metrics, snapshot))

        if cfg.early_stopping and val_loss is not None:
            if val_loss < best_val:
                best_val, since_best, result.best_epoch = val_loss, 0, epoch
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                since_best += 1
                if since_best >= cfg.patience:
                    result.message = (f"Early stopping: validation loss did not improve for "
                                      f"{cfg.patience} epochs; keeping the weights of epoch "
                                      f"{result.best_epoch}.")
                    break

    if best_state is not None:
        model.load_state_dict(best_state)
    if result.status != "diverged" and result.history:
        _, _, probs = evaluate(model, test_x, test_y, scale, shift, with_probs=True)
        result.test_prob = probs.numpy()
        result.test_pred = result.test_prob.argmax(1)
    result.state_dict = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    result.seconds = time.perf_counter() - started
    return result


def training_step(model: nn.Module, cfg: TrainConfig, dataset: Dataset, train_x: torch.Tensor,
                  train_y: torch.Tensor, device: torch.device, *, sync_every: int,
                  use_cuda_graph: bool = True) -> EagerStep:
    """The one training step `train` runs, built as it builds it: `cfg`'s optimiser (weight decay,
    momentum; fused on the CPU, capturable on CUDA) over `model`'s parameters, `dataset`'s input
    normalisation, augmentation and label smoothing, on the uint8 images `train_x` (on `device`).
    A CUDA graph where capture works, else eager. The step-through view calls this same step."""
    scale, shift = _normaliser(dataset, cfg.normalize, device)
    optimizer = _optimizer(model, cfg, capturable=device.type == "cuda", device_type=device.type)
    return make_step(model, optimizer, train_x, train_y, scale, shift, cfg, device,
                     sync_every=sync_every, use_cuda_graph=use_cuda_graph)


def _mark_diverged(result: TrainResult, step: int, loss: float) -> None:
    """Record that the loss blew up at `step` (the raw `loss`, which may be inf or nan)."""
    result.status = "diverged"
    result.diverged_step, result.diverged_loss = step, loss
    result.message = DIVERGED_MESSAGE.format(value=loss, step=step)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, scale: torch.Tensor,
             shift: torch.Tensor, *, with_probs: bool = False, chunk: int = 2000
             ) -> tuple[float, float, torch.Tensor | None]:
    """Mean loss and accuracy on uint8 images `x`; softmax probabilities on the CPU if asked."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    probs = []
    with torch.no_grad():
        for start in range(0, len(y), chunk):
            logits = model(x[start:start + chunk].float() * scale - shift)
            target = y[start:start + chunk]
            loss_sum += F.cross_entropy(logits, target, reduction="sum")
            correct += (logits.argmax(1) == target).sum()
            if with_probs:
                probs.append(torch.softmax(logits.float(), 1).cpu())
    model.train(was_training)
    n = max(len(y), 1)
    return (loss_sum.item() / n, correct.item() / n, torch.cat(probs) if with_probs else None)


def input_normaliser(dataset: Dataset, normalize: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) so that `uint8_images * scale - shift` is what the network sees."""
    return _normaliser(dataset, normalize, torch.device("cpu"))


def _normaliser(dataset: Dataset, normalize: bool, device: torch.device
                ) -> tuple[torch.Tensor, torch.Tensor]:
    channels = dataset.shape[0]
    if not normalize:  # the beginner's mistake: raw pixel values 0..255
        return (torch.ones(1, channels, 1, 1, device=device),
                torch.zeros(1, channels, 1, 1, device=device))
    mean = torch.tensor(dataset.mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std = torch.tensor(dataset.std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return 1.0 / (255.0 * std), mean / std


def _optimizer(model: nn.Module, cfg, capturable: bool, device_type: str = "cpu") -> torch.optim.Optimizer:
    params = model.parameters()
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    klass = torch.optim.Adam if cfg.optimizer == "adam" else torch.optim.AdamW
    # fused: one kernel for all parameters on the CPU, about twice as fast as the per-tensor loop
    fused = not capturable and device_type == "cpu"
    return klass(params, lr=cfg.lr, weight_decay=cfg.weight_decay, capturable=capturable,
                 fused=fused or None)


def _first_layer_snapshot(model: nn.Module) -> np.ndarray | None:
    layer = first_weight_layer(model)
    if layer is None:
        return None
    return layer.weight.detach().to("cpu", torch.float16).numpy()


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type
