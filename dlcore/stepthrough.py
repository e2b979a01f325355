"""The training loop one step at a time, on one small batch, for a learner to watch.

Each step is what `dlcore.train` does to every batch: forward pass, loss, backward pass, update, with
the same model (`build_model`, seeded the same way), the same optimiser and the same input scaling.
The report says the loss on the batch before and after the update (same batch, same dropout mask),
how large each layer's gradient was and how far its weights moved. It runs on the CPU: one batch.
`step_table` and `settings_text` write a report and its settings for a page, numbers by the one rule
of `dlcore.numbers` and settings by their labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from dlcore import numbers
from dlcore.config import RunConfig, setting_label
from dlcore.dataset import Dataset
from dlcore.models import build_model
from dlcore.train import DIVERGE_FACTOR, _optimizer, input_normaliser


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
    # The loss above which dlcore.train stops a run as diverged: DIVERGE_FACTOR times the first
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
    """A fresh model, its optimiser and one fixed batch; `step()` trains on that batch once more."""

    def __init__(self, config: RunConfig, dataset: Dataset, batch_size: int = 32,
                 seed: int | None = None) -> None:
        config.validate()
        self.config = config
        self.dataset_name = dataset.name
        self.seed = config.train.seed if seed is None else seed
        torch.manual_seed(config.train.seed)  # the same initial weights as dlcore.train's run
        self.model = build_model(config.model, dataset.shape, dataset.num_classes)
        self.model.train()
        self.optimizer = _optimizer(self.model, config.train, capturable=False)
        scale, shift = input_normaliser(dataset, config.train.normalize)
        n = len(dataset.train_y)
        batch = max(2, min(batch_size, n))  # BatchNorm needs two images to train on
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))[:batch]
        self.x = dataset.train_x[order].float() * scale - shift
        self.y = dataset.train_y[order]
        self.steps = 0
        self.num_classes = dataset.num_classes
        self.loss_limit = math.inf  # set by the first step, as dlcore.train sets its own
        self.layers = [(f"{i}: {type(m).__name__}", m) for i, m in enumerate(self.model)
                       if any(True for _ in m.parameters())]

    def matches(self, config: RunConfig, dataset_name: str) -> bool:
        return config == self.config and dataset_name == self.dataset_name

    def _forward(self) -> tuple[torch.Tensor, float]:
        logits = self.model(self.x)
        loss = F.cross_entropy(logits, self.y, label_smoothing=self.config.train.label_smoothing)
        acc = float((logits.detach().argmax(1) == self.y).float().mean())
        return loss, acc

    def step(self) -> StepReport:
        self.steps += 1
        before = {name: [p.detach().clone() for p in m.parameters()] for name, m in self.layers}
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed + self.steps)  # this step's dropout mask
            self.optimizer.zero_grad(set_to_none=True)
            loss, acc_before = self._forward()  # forward pass and loss
            loss.backward()  # backward pass: every parameter's gradient
            grads = {name: [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
                            for p in m.parameters()] for name, m in self.layers}
            self.optimizer.step()  # the update
        buffers = {k: v.clone() for k, v in self.model.named_buffers()}
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(self.seed + self.steps)  # the same mask: only the weights changed
            loss_after, acc_after = self._forward()
        for key, value in self.model.named_buffers():  # BatchNorm's statistics: count one pass
            value.copy_(buffers[key])
        loss_before = float(loss.detach())
        if self.steps == 1 and math.isfinite(loss_before):
            self.loss_limit = DIVERGE_FACTOR * max(loss_before, math.log(self.num_classes))
        rows = []
        for name, module in self.layers:
            after = [p.detach() for p in module.parameters()]
            rows.append(LayerStep(
                name=name, shape=_shape(module), weight_norm=_norm(before[name]),
                grad_norm=_norm(grads[name]),
                update_norm=_norm([a - b for a, b in zip(after, before[name], strict=True)])))
        return StepReport(self.steps, len(self.y), self.config.train.optimizer,
                          self.config.train.lr, loss_before, float(loss_after),
                          acc_before, acc_after, tuple(rows), self.loss_limit)


def one_step(config: RunConfig, dataset: Dataset, batch_size: int = 32,
             seed: int | None = None) -> StepReport:
    """The first training step of `config` on one batch of `batch_size` images drawn with `seed`."""
    return Stepper(config, dataset, batch_size, seed).step()


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
