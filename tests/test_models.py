"""Models from a spec: layer tables and parameter counts, and a hand-built oracle for forward and grads."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlcore.engine.config import ConfigError, ModelSpec
from dlcore.engine.models import (
    build_model,
    count_params,
    describe_layers,
    first_weight_layer,
    layer_activations,
    layer_table,
)

MNIST = (1, 28, 28)
CIFAR = (3, 32, 32)
DIGITS = (1, 8, 8)
SEED = ModelSpec()  # the lesson's network: 784-512-256-10, ReLU, dropout 0.2


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def _table(spec: ModelSpec, shape=MNIST, classes: int = 10) -> list[tuple[str, tuple, int]]:
    model = build_model(spec, shape, classes)
    rows = layer_table(model, shape)
    assert sum(r.params for r in rows) == count_params(model)
    return [(r.kind, r.output_shape, r.params) for r in rows]


def test_the_lessons_network_has_535818_parameters_and_its_table() -> None:
    model = build_model(SEED, MNIST, 10)
    assert count_params(model) == 535_818
    assert _table(SEED) == [
        ("Flatten", (784,), 0),
        ("Linear", (512,), 784 * 512 + 512),
        ("ReLU", (512,), 0),
        ("Dropout", (512,), 0),
        ("Linear", (256,), 512 * 256 + 256),
        ("ReLU", (256,), 0),
        ("Dropout", (256,), 0),
        ("Linear", (10,), 256 * 10 + 10),
    ]
    rows = layer_table(model, MNIST)
    assert [r.name for r in rows][:2] == ["0: Flatten", "1: Linear"]


def test_no_hidden_layers_is_logistic_regression_with_7850_parameters() -> None:
    spec = ModelSpec(hidden=())
    assert count_params(build_model(spec, MNIST, 10)) == 7_850
    assert _table(spec) == [("Flatten", (784,), 0), ("Linear", (10,), 7_850)]


def test_no_dropout_layers_when_dropout_is_zero() -> None:
    kinds = [k for k, _, _ in _table(ModelSpec(hidden=(64,), dropout=0.0))]
    assert kinds == ["Flatten", "Linear", "ReLU", "Linear"]


@pytest.mark.parametrize("norm,kind", [("batch", "BatchNorm1d"), ("layer", "LayerNorm")])
def test_mlp_norm_layers_sit_between_linear_and_activation(norm: str, kind: str) -> None:
    spec = ModelSpec(hidden=(64, 32), norm=norm, activation="tanh")
    assert _table(spec) == [
        ("Flatten", (784,), 0),
        ("Linear", (64,), 784 * 64 + 64), (kind, (64,), 2 * 64), ("Tanh", (64,), 0),
        ("Dropout", (64,), 0),
        ("Linear", (32,), 64 * 32 + 32), (kind, (32,), 2 * 32), ("Tanh", (32,), 0),
        ("Dropout", (32,), 0),
        ("Linear", (10,), 32 * 10 + 10),
    ]
    assert count_params(build_model(spec, MNIST, 10)) == 50_240 + 128 + 2_080 + 64 + 330


@pytest.mark.parametrize("activation,kind", [("relu", "ReLU"), ("gelu", "GELU"), ("tanh", "Tanh"),
                                             ("sigmoid", "Sigmoid"), ("leaky_relu", "LeakyReLU")])
def test_each_activation_builds_its_layer(activation: str, kind: str) -> None:
    kinds = [k for k, _, _ in _table(ModelSpec(hidden=(16,), activation=activation), DIGITS, 3)]
    assert kinds == ["Flatten", "Linear", kind, "Dropout", "Linear"]


CNN = ModelSpec(kind="cnn", conv_channels=(32, 64), kernel_size=3, dense=128, dropout=0.25)


def test_cnn_on_mnist_shapes_and_parameters() -> None:
    assert _table(CNN, MNIST) == [
        ("Conv2d", (32, 28, 28), 32 * 9 + 32),
        ("ReLU", (32, 28, 28), 0),
        ("MaxPool2d", (32, 14, 14), 0),
        ("Conv2d", (64, 14, 14), 64 * 32 * 9 + 64),
        ("ReLU", (64, 14, 14), 0),
        ("MaxPool2d", (64, 7, 7), 0),
        ("Flatten", (3136,), 0),
        ("Linear", (128,), 3136 * 128 + 128),
        ("ReLU", (128,), 0),
        ("Dropout", (128,), 0),
        ("Linear", (10,), 1290),
    ]
    assert count_params(build_model(CNN, MNIST, 10)) == 421_642


def test_cnn_on_cifar_shapes_and_parameters() -> None:
    table = _table(CNN, CIFAR)
    assert table[0] == ("Conv2d", (32, 32, 32), 32 * 3 * 9 + 32)
    assert [shape for _, shape, _ in table] == [
        (32, 32, 32), (32, 32, 32), (32, 16, 16), (64, 16, 16), (64, 16, 16), (64, 8, 8),
        (4096,), (128,), (128,), (128,), (10,)]
    assert count_params(build_model(CNN, CIFAR, 10)) == 896 + 18_496 + 524_416 + 1_290
    out = build_model(CNN, CIFAR, 10).eval()(torch.zeros(5, *CIFAR))
    assert out.shape == (5, 10)


def test_cnn_kernel_5_keeps_the_size_and_no_pool_keeps_all_pixels() -> None:
    spec = ModelSpec(kind="cnn", conv_channels=(4,), kernel_size=5, pool=False, dense=8, dropout=0.0)
    assert _table(spec, MNIST) == [
        ("Conv2d", (4, 28, 28), 4 * 25 + 4), ("ReLU", (4, 28, 28), 0), ("Flatten", (3136,), 0),
        ("Linear", (8,), 3136 * 8 + 8), ("ReLU", (8,), 0), ("Linear", (10,), 90)]


@pytest.mark.parametrize("norm,kind", [("batch", "BatchNorm2d"), ("layer", "GroupNorm")])
def test_cnn_norm_layers(norm: str, kind: str) -> None:
    table = _table(ModelSpec(kind="cnn", conv_channels=(8, 16), norm=norm, dense=16), MNIST)
    assert [k for k, _, _ in table][:4] == ["Conv2d", kind, "ReLU", "MaxPool2d"]
    assert table[1] == (kind, (8, 28, 28), 16)


def test_cnn_pooling_stops_at_one_pixel_on_small_images() -> None:
    spec = ModelSpec(kind="cnn", conv_channels=(4, 4, 4, 4), dense=8)
    table = _table(spec, DIGITS)
    pooled = [shape for kind, shape, _ in table if kind == "MaxPool2d"]
    assert pooled == [(4, 4, 4), (4, 2, 2), (4, 1, 1)]  # 8 -> 4 -> 2 -> 1, the fourth block keeps 1x1
    assert table[-1][1] == (10,)


DESCRIBED = [SEED, ModelSpec(hidden=()), ModelSpec(hidden=(64, 32), norm="batch"),
             ModelSpec(hidden=(64,), norm="layer", activation="gelu"), CNN,
             ModelSpec(kind="cnn", conv_channels=(8, 16, 32), kernel_size=5, norm="batch", dense=32),
             ModelSpec(kind="cnn", conv_channels=(8,), norm="layer", pool=False)]


@pytest.mark.parametrize("spec", DESCRIBED)
@pytest.mark.parametrize("shape", [MNIST, CIFAR, DIGITS])
def test_describe_layers_equals_the_table_of_a_real_model(spec: ModelSpec, shape) -> None:
    assert describe_layers(spec, shape, 7) == layer_table(build_model(spec, shape, 7), shape)


def test_describe_layers_does_not_allocate_a_huge_model() -> None:
    spec = ModelSpec(hidden=(4096,) * 8)
    rows = describe_layers(spec, CIFAR, 10)
    assert sum(r.params for r in rows) == (3072 * 4096 + 4096) + 7 * (4096 * 4096 + 4096) + 40_970
    assert rows[-1].output_shape == (10,)


def test_build_model_validates_the_spec() -> None:
    with pytest.raises(ConfigError, match="model.dropout"):
        build_model(ModelSpec(dropout=0.95), MNIST, 10)


def test_layer_table_and_activations_keep_the_training_mode() -> None:
    model = build_model(ModelSpec(hidden=(16,), norm="batch"), DIGITS, 10)
    model.train()
    layer_table(model, DIGITS)
    assert model.training
    outputs = layer_activations(model, torch.rand(*DIGITS))
    assert model.training
    assert [name for name, _ in outputs] == [r.name for r in layer_table(model, DIGITS)]
    assert outputs[-1][1].shape == (10,)
    model.eval()
    layer_table(model, DIGITS)
    assert not model.training


def test_first_weight_layer_is_the_first_linear_or_conv() -> None:
    mlp = build_model(SEED, MNIST, 10)
    assert first_weight_layer(mlp) is mlp[1]
    cnn = build_model(CNN, MNIST, 10)
    assert first_weight_layer(cnn) is cnn[0]
    assert first_weight_layer(nn.Sequential(nn.ReLU())) is None


# ------------------------------------------------------------------------- the oracle

ACT = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
       "leaky_relu": nn.LeakyReLU}


def _hand_mlp(widths: list[int], activation: str, dropout: float, norm: str) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(widths[:-2], widths[1:-1], strict=True):
        layers.append(nn.Linear(a, b))
        if norm == "batch":
            layers.append(nn.BatchNorm1d(b))
        if norm == "layer":
            layers.append(nn.LayerNorm(b))
        layers.append(ACT[activation]())
        if dropout:
            layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(widths[-2], widths[-1]))
    return nn.Sequential(*layers)


def _copy_weights(source: nn.Module, target: nn.Module) -> list[tuple[nn.Parameter, nn.Parameter]]:
    """Copy every parameter and buffer in order (the oracle is built independently, not by keys)."""
    src_params, dst_params = list(source.parameters()), list(target.parameters())
    assert [p.shape for p in src_params] == [p.shape for p in dst_params]
    with torch.no_grad():
        for s, d in zip(src_params, dst_params, strict=True):
            d.copy_(s)
        for s, d in zip(source.buffers(), target.buffers(), strict=True):
            d.copy_(s)
    return list(zip(src_params, dst_params, strict=True))


def _assert_same_forward_and_grads(model: nn.Module, oracle: nn.Module, x: torch.Tensor,
                                   y: torch.Tensor) -> None:
    pairs = _copy_weights(model, oracle)
    out, expected = model(x), oracle(x)
    torch.testing.assert_close(out, expected)
    F.cross_entropy(out, y).backward()
    F.cross_entropy(expected, y).backward()
    for ours, theirs in pairs:
        assert ours.grad is not None and ours.grad.abs().sum() > 0
        torch.testing.assert_close(ours.grad, theirs.grad)


@pytest.mark.parametrize("activation", list(ACT))
@pytest.mark.parametrize("norm", ["none", "layer"])
def test_mlp_forward_and_gradients_equal_a_hand_built_sequential(activation: str, norm: str) -> None:
    torch.manual_seed(0)
    spec = ModelSpec(hidden=(512, 256), activation=activation, dropout=0.2, norm=norm)
    model = build_model(spec, MNIST, 10).eval()  # eval: dropout off in both
    oracle = _hand_mlp([784, 512, 256, 10], activation, 0.2, norm).eval()
    x, y = torch.randn(16, *MNIST), torch.randint(0, 10, (16,))
    _assert_same_forward_and_grads(model, oracle, x, y)


def test_mlp_with_batchnorm_in_training_mode_equals_the_oracle() -> None:
    torch.manual_seed(1)
    model = build_model(ModelSpec(hidden=(32, 16), norm="batch", dropout=0.0), DIGITS, 10).train()
    oracle = _hand_mlp([64, 32, 16, 10], "relu", 0.0, "batch").train()
    x, y = torch.randn(24, *DIGITS), torch.randint(0, 10, (24,))
    _assert_same_forward_and_grads(model, oracle, x, y)
    torch.testing.assert_close(model[2].running_mean, oracle[2].running_mean)


def test_the_seed_mlp_equals_plain_tensor_arithmetic() -> None:
    """micrograd-style: the same net written as matrix products, grads by autograd on raw tensors."""
    torch.manual_seed(2)
    model = build_model(SEED, MNIST, 10).eval()
    linears = [m for m in model if isinstance(m, nn.Linear)]
    weights = [(lin.weight.detach().clone().requires_grad_(), lin.bias.detach().clone().requires_grad_())
               for lin in linears]
    x, y = torch.randn(8, *MNIST), torch.randint(0, 10, (8,))
    h = x.reshape(8, -1)
    for i, (w, b) in enumerate(weights):
        h = h @ w.T + b
        if i < len(weights) - 1:
            h = torch.clamp(h, min=0)
    out = model(x)
    torch.testing.assert_close(out, h)
    F.cross_entropy(out, y).backward()
    F.cross_entropy(h, y).backward()
    for lin, (w, b) in zip(linears, weights, strict=True):
        torch.testing.assert_close(lin.weight.grad, w.grad)
        torch.testing.assert_close(lin.bias.grad, b.grad)


@pytest.mark.parametrize("shape", [MNIST, CIFAR])
def test_cnn_forward_and_gradients_equal_a_hand_built_sequential(shape) -> None:
    torch.manual_seed(3)
    c, h, w = shape
    model = build_model(ModelSpec(kind="cnn", conv_channels=(8, 16), kernel_size=3, dense=32,
                                  dropout=0.25), shape, 10).eval()
    oracle = nn.Sequential(
        nn.Conv2d(c, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * (h // 4) * (w // 4), 32), nn.ReLU(), nn.Dropout(0.25),
        nn.Linear(32, 10)).eval()
    x, y = torch.randn(6, *shape), torch.randint(0, 10, (6,))
    _assert_same_forward_and_grads(model, oracle, x, y)


def test_cnn_with_norms_and_kernel_5_equals_a_hand_built_sequential() -> None:
    torch.manual_seed(4)
    model = build_model(ModelSpec(kind="cnn", conv_channels=(4, 8), kernel_size=5, norm="layer",
                                  activation="gelu", dense=16, dropout=0.0), MNIST, 10)
    oracle = nn.Sequential(
        nn.Conv2d(1, 4, 5, padding=2), nn.GroupNorm(1, 4), nn.GELU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 5, padding=2), nn.GroupNorm(1, 8), nn.GELU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(8 * 7 * 7, 16), nn.GELU(), nn.Linear(16, 10))
    x, y = torch.randn(4, *MNIST), torch.randint(0, 10, (4,))
    _assert_same_forward_and_grads(model, oracle, x, y)
