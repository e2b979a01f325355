"""A model spec turned into an nn.Sequential, and the layer table a learner reads before training."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dlcore.engine.config import ModelSpec

ACTIVATION_LAYERS = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
}


@dataclass(frozen=True)
class LayerRow:
    """One row of the layer table: what the layer is, what comes out of it, what it learns."""

    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int


def build_model(spec: ModelSpec, input_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    """The network for `spec` on images of `input_shape` (C, H, W) with `num_classes` outputs."""
    spec.validate()
    if spec.kind == "mlp":
        return _build_mlp(spec, input_shape, num_classes)
    return _build_cnn(spec, input_shape, num_classes)


def _build_mlp(spec: ModelSpec, input_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    c, h, w = input_shape
    layers: list[nn.Module] = [nn.Flatten()]
    width = c * h * w
    for hidden in spec.hidden:
        layers.append(nn.Linear(width, hidden))
        if spec.norm == "batch":
            layers.append(nn.BatchNorm1d(hidden))
        elif spec.norm == "layer":
            layers.append(nn.LayerNorm(hidden))
        layers.append(ACTIVATION_LAYERS[spec.activation]())
        if spec.dropout > 0:
            layers.append(nn.Dropout(spec.dropout))
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


def _build_cnn(spec: ModelSpec, input_shape: tuple[int, int, int], num_classes: int) -> nn.Sequential:
    channels, h, w = input_shape
    layers: list[nn.Module] = []
    for out_channels in spec.conv_channels:
        layers.append(nn.Conv2d(channels, out_channels, spec.kernel_size, padding=spec.kernel_size // 2))
        if spec.norm == "batch":
            layers.append(nn.BatchNorm2d(out_channels))
        elif spec.norm == "layer":
            layers.append(nn.GroupNorm(1, out_channels))  # LayerNorm over (C, H, W)
        layers.append(ACTIVATION_LAYERS[spec.activation]())
        if spec.pool and min(h, w) >= 2:
            layers.append(nn.MaxPool2d(2))
            h, w = h // 2, w // 2
        channels = out_channels
    layers += [nn.Flatten(), nn.Linear(channels * h * w, spec.dense), ACTIVATION_LAYERS[spec.activation]()]
    if spec.dropout > 0:
        layers.append(nn.Dropout(spec.dropout))
    layers.append(nn.Linear(spec.dense, num_classes))
    return nn.Sequential(*layers)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def layer_table(model: nn.Sequential, input_shape: tuple[int, int, int]) -> list[LayerRow]:
    """Each layer's name, output shape (without the batch) and parameter count, from a dry run."""
    rows: list[LayerRow] = []
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    x = torch.zeros((1, *input_shape), device=device)
    with torch.no_grad():
        for index, layer in enumerate(model):
            x = layer(x)
            rows.append(LayerRow(
                name=f"{index}: {type(layer).__name__}",
                kind=type(layer).__name__,
                output_shape=tuple(x.shape[1:]),
                params=sum(p.numel() for p in layer.parameters()),
            ))
    model.train(was_training)
    return rows


def first_weight_layer(model: nn.Module) -> nn.Linear | nn.Conv2d | None:
    """The first Linear or Conv2d: the layer whose weights are drawn as images."""
    for layer in model.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            return layer
    return None


def layer_activations(model: nn.Sequential, image: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """Every layer's output for one already-normalised image (C, H, W), in eval mode, on the CPU."""
    was_training = model.training
    model.eval()
    outputs = []
    x = image.unsqueeze(0).to(next(model.parameters()).device)
    with torch.no_grad():
        for index, layer in enumerate(model):
            x = layer(x)
            outputs.append((f"{index}: {type(layer).__name__}", x[0].detach().cpu()))
    model.train(was_training)
    return outputs


def describe_layers(spec: ModelSpec, input_shape: tuple[int, int, int], num_classes: int
                    ) -> list[LayerRow]:
    """The layer table without allocating weights (built on the meta device), for any size."""
    with torch.device("meta"):
        model = build_model(spec, input_shape, num_classes)
    return layer_table(model, input_shape)
