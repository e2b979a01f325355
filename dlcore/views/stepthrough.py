"""The training loop one step at a time, on one small batch, for a learner to watch.

Each step is the step `dlcore.engine.train` runs on every batch, called here:
`dlcore.engine.train.training_step` builds it as `train` does (the same optimiser, input scaling,
augmentation and label smoothing) on a model built and seeded as `train` builds its own. Around that
step this module reads what a learner sees: the loss on the batch before and after the update (same
batch, same augmentation and dropout mask), how large each layer's gradient was and how far its
weights moved. It runs on the CPU (one batch), where the step is the eager one. `step_table` and
`settings_text` write a report and its settings for a page, numbers by the one rule of
`dlcore.numbers` and settings by their labels.
"""

import math
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from dlcore import numbers
from dlcore.engine.config import RunConfig, setting_label
from dlcore.engine.dataset import Dataset
from dlcore.engine.models import build_model
from dlcore.engine.train import DIVERGE_FACTOR, training_step

CPU = torch.device("cpu")


@dataclass(frozen=True)
class LayerStep:
    """One layer with weights: the norms of its weights, of their gradient and of the update."""

    name: str
    shape: str
    weight_norm: float  # before the update
    grad_norm: float
    update_norm: float  # how far the weights moved: the norm of (after - before)

    @property
    def relative_update(self) -> float:
        return self.update_norm / self.weight_norm if self.weight_norm else math.inf


@dataclass(frozen=True)
class StepReport:
    step: int  # 1 for the first step
    batch_size: int
    optimizer: str
    lr: float
    loss_before: float
    loss_after: float
    acc_before: float
    acc_after: float
    layers: tuple[LayerStep, ...]
    # The loss above which dlcore.engine.train stops a run as diverged: DIVERGE_FACTOR times the first
    # step's loss (or ln(classes), if larger). Infinite when the first loss was not finite.
    loss_limit: float = math.inf

    @property
    def finite(self) -> bool:
        return math.isfinite(self.loss_before) and math.isfinite(self.loss_after)

    @property
    def diverged(self) -> bool:
        """Whether training would stop here: a loss not finite, or above `loss_limit`."""
        return not self.finite or max(self.loss_before, self.loss_after) > self.loss_limit


def _norm(tensors: list[torch.Tensor]) -> float:
    return math.sqrt(sum(float(t.detach().double().pow(2).sum()) for t in tensors))


def _shape(layer: nn.Module) -> str:
    if isinstance(layer, nn.Linear):
        return f"{layer.in_features} → {layer.out_features}"
    if isinstance(layer, nn.Conv2d):
        k = layer.kernel_size
        return f"{layer.in_channels} → {layer.out_channels} channels, {k[0]}×{k[1]} kernel"
    return " × ".join(str(n) for n in next(layer.parameters()).shape)


class Stepper:
    """A fresh model, `dlcore.engine.train`'s step for it and one fixed batch; `step()` trains on that batch
    once more."""

    def __init__(self, config: RunConfig, dataset: Dataset, batch_size: int = 32,
                 seed: int | None = None) -> None:
        config.validate()
        self.config = config
        self.dataset_name = dataset.name
        self.seed = config.train.seed if seed is None else seed
        torch.manual_seed(config.train.seed)  # the same initial weights as dlcore.engine.train's run
        self.model = build_model(config.model, dataset.shape, dataset.num_classes)
        self.model.train()
        self.step_fn = training_step(self.model, config.train, dataset, dataset.train_x,
                                     dataset.train_y, CPU, sync_every=1, use_cuda_graph=False)
        n = len(dataset.train_y)
        batch = max(2, min(batch_size, n))  # BatchNorm needs two images to train on
        self.batch_index = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))[:batch]
        self.steps = 0
        self.num_classes = dataset.num_classes
        self.loss_limit = math.inf  # set by the first step, as dlcore.engine.train sets its own
        self.layers = [(f"{i}: {type(m).__name__}", m) for i, m in enumerate(self.model)
                       if any(True for _ in m.parameters())]
        self._grads: dict[str, list[torch.Tensor]] = {}
        # The gradients as the update receives them: read between the backward pass and the update.
        self.step_fn.optimizer.register_step_pre_hook(self._keep_gradients)

    def matches(self, config: RunConfig, dataset_name: str) -> bool:
        return config == self.config and dataset_name == self.dataset_name

    def _keep_gradients(self, *_) -> None:
        self._grads = {name: [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
                              for p in m.parameters()] for name, m in self.layers}

    def step(self) -> StepReport:
        """One step of `dlcore.engine.train` on the batch, and what it did."""
        self.steps += 1
        before = {name: [p.detach().clone() for p in m.parameters()] for name, m in self.layers}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + self.steps)  # this step's augmentation and dropout mask
            self.step_fn.start_epoch()  # the totals count this step alone
            self.step_fn(self.batch_index)  # forward pass, loss, backward pass, update
        loss_before = float(self.step_fn.read_losses()[0])
        acc_before = self.step_fn.epoch_totals()[1]
        buffers = {k: v.clone() for k, v in self.model.named_buffers()}
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(self.seed + self.steps)  # the same batch and mask: only weights changed
            x, y = self.step_fn.inputs(self.batch_index)
            logits = self.model(x)
            loss_after = float(self.step_fn.loss(logits, y))
            acc_after = float((logits.argmax(1) == y).float().mean())
        for key, value in self.model.named_buffers():  # BatchNorm's statistics: count one pass
            value.copy_(buffers[key])
        if self.steps == 1 and math.isfinite(loss_before):
            self.loss_limit = DIVERGE_FACTOR * max(loss_before, math.log(self.num_classes))
        rows = []
        for name, module in self.layers:
            after = [p.detach() for p in module.parameters()]
            rows.append(LayerStep(
                name=name, shape=_shape(module), weight_norm=_norm(before[name]),
                grad_norm=_norm(self._grads[name]),
                update_norm=_norm([a - b for a, b in zip(after, before[name], strict=True)])))
        return StepReport(self.steps, len(self.batch_index), self.config.train.optimizer,
                          self.config.train.lr, loss_before, loss_after,
                          acc_before, acc_after, tuple(rows), self.loss_limit)


def step_table(report: StepReport) -> pd.DataFrame:
    """Each layer's norms as text a learner can read at any size ("0.0123", "306 million",
    "infinite"): weights before the update, their gradient, the update, and update / weights."""
    write = numbers.number
    return pd.DataFrame({
        "layer": [r.name for r in report.layers],
        "shape": [r.shape for r in report.layers],
        "weights (norm)": [write(r.weight_norm) for r in report.layers],
        "gradient (norm)": [write(r.grad_norm) for r in report.layers],
        "moved by (norm)": [write(r.update_norm) for r in report.layers],
        "moved / weights": [write(r.relative_update) for r in report.layers],
    })


def settings_text(config: RunConfig) -> str:
    """The settings a step uses, each named by its label: "Model kind: MLP, Optimiser: adam, ..."."""
    c = config.train
    values = {"model.kind": config.model.kind.upper(), "train.optimizer": c.optimizer,
              "train.lr": f"{c.lr:g}", "train.normalize": "yes" if c.normalize else "no (raw 0-255)"}
    return ", ".join(f"{setting_label(key)}: {value}" for key, value in values.items())
