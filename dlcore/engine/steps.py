"""One training step on device-resident data: eager, or captured once as a CUDA graph.

A step object gathers its batch from the uint8 images by index, normalises (and augments) it on the
device, runs forward, backward and update, and keeps the loss and the correct count in device
tensors, so nothing goes back to the host until `read_losses` or `epoch_totals` asks.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def augment_batch(x: torch.Tensor, max_degrees: float = 10.0, max_shift: float = 2.0) -> torch.Tensor:
    """Random small rotations and shifts, one per image, done on the images' device."""
    n, _, h, w = x.shape
    angle = (torch.rand(n, device=x.device) * 2 - 1) * math.radians(max_degrees)
    shift = (torch.rand(n, 2, device=x.device) * 2 - 1) * max_shift
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([
        torch.stack([cos, -sin, shift[:, 0] * 2 / w], 1),
        torch.stack([sin, cos, shift[:, 1] * 2 / h], 1),
    ], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="border")


class EagerStep:
    """The step run op by op; works on every device."""

    uses_graph = False

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, train_x: torch.Tensor,
                 train_y: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, cfg,
                 device: torch.device) -> None:
        self.model, self.optimizer = model, optimizer
        self.train_x, self.train_y = train_x, train_y
        self.scale, self.shift = scale, shift
        self.augment = cfg.augment
        self.label_smoothing = cfg.label_smoothing
        n = len(train_y)
        self.batch = min(cfg.batch_size, n)
        # A last batch of one image breaks BatchNorm's training statistics: drop it then.
        self.steps_per_epoch = n // self.batch if n % self.batch == 1 else math.ceil(n / self.batch)
        self.loss_sum = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.count = torch.zeros((), device=device, dtype=torch.long)
        self.pending: list[torch.Tensor] = []

    def start_epoch(self) -> None:
        self.model.train()
        self.loss_sum.zero_()
        self.correct.zero_()
        self.count.zero_()

    def inputs(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The images at `idx` as the network sees them (normalised, and augmented when the config
        says so: this draws random numbers) and their labels."""
        x = self.train_x.index_select(0, idx).float() * self.scale - self.shift
        if self.augment:
            x = augment_batch(x)
        return x, self.train_y.index_select(0, idx)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The mean loss the step minimises: cross-entropy, with the config's label smoothing."""
        return F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)

    def _body(self, idx: torch.Tensor) -> torch.Tensor:
        x, y = self.inputs(idx)
        logits = self.model(x)
        loss = self.loss(logits, y)
        loss.backward()
        self.optimizer.step()
        loss = loss.detach()
        self.loss_sum.add_(loss * y.numel())
        self.correct.add_((logits.detach().argmax(1) == y).sum())
        self.count.add_(y.numel())
        return loss

    def __call__(self, idx: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.pending.append(self._body(idx))

    def read_losses(self) -> np.ndarray:
        """The losses of the steps since the last read, in order (one read-back)."""
        losses = torch.stack(self.pending).float().cpu().numpy() if self.pending else np.zeros(0)
        self.pending = []
        return losses

    def epoch_totals(self) -> tuple[float, float]:
        count = max(int(self.count.item()), 1)
        return self.loss_sum.item() / count, self.correct.item() / count


class CudaGraphStep(EagerStep):
    """The same step, replayed from one CUDA graph: one launch per step instead of hundreds.

    The first three steps run eagerly on a side stream (capture needs warmed-up state), then the
    step is captured with static index and loss buffers. Only full batches are used.
    """

    def __init__(self, *args, sync_every: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.steps_per_epoch = len(self.train_y) // self.batch
        device = self.train_y.device
        self.static_idx = torch.zeros(self.batch, dtype=torch.long, device=device)
        self.loss_buffer = torch.zeros(sync_every, device=device)
        self.slot = torch.zeros((), dtype=torch.long, device=device)
        self.since_read = 0
        self.warmup_left = 3
        self.graph: torch.cuda.CUDAGraph | None = None
        self.uses_graph = True

    def _record(self, loss: torch.Tensor) -> None:
        self.loss_buffer.index_copy_(0, self.slot.view(1), loss.view(1))
        self.slot.add_(1)

    def __call__(self, idx: torch.Tensor) -> None:
        self.static_idx.copy_(idx)
        if self.graph is not None:
            self.graph.replay()
        elif self.warmup_left > 0:
            self.warmup_left -= 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self.optimizer.zero_grad(set_to_none=True)
                self._record(self._body(self.static_idx))
            torch.cuda.current_stream().wait_stream(side)
        elif self.uses_graph:
            self.optimizer.zero_grad(set_to_none=True)
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph):
                    self._record(self._body(self.static_idx))
            except RuntimeError:  # capture not possible here: carry on eagerly
                self.uses_graph = False
                torch.cuda.synchronize()
                self.optimizer.zero_grad(set_to_none=True)
                self._record(self._body(self.static_idx))
            else:
                self.graph = graph
                self.graph.replay()
        else:
            self.optimizer.zero_grad(set_to_none=True)
            self._record(self._body(self.static_idx))
        self.since_read += 1

    def read_losses(self) -> np.ndarray:
        losses = self.loss_buffer[:self.since_read].cpu().numpy()
        self.slot.zero_()
        self.since_read = 0
        return losses


def make_step(model: nn.Module, optimizer: torch.optim.Optimizer, train_x: torch.Tensor,
              train_y: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, cfg,
              device: torch.device, *, sync_every: int, use_cuda_graph: bool) -> EagerStep:
    """The fastest step this device allows: a CUDA graph where capture works, else eager."""
    args = (model, optimizer, train_x, train_y, scale, shift, cfg, device)
    if device.type == "cuda" and use_cuda_graph and len(train_y) >= cfg.batch_size:
        return CudaGraphStep(*args, sync_every=sync_every)  # falls back to eager if capture fails
    return EagerStep(*args)
