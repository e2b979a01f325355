"""The step-through's step is the engine's: one step of `Stepper` leaves the same weights as one step
of `dlcore.engine.train`'s step, and as the same step written out in plain PyTorch, on the same batch with
the same seed (augmentation, label smoothing, weight decay and each optimiser included)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dlcore.engine.train as train_module
from dlcore.engine.config import PRESETS, RunConfig
from dlcore.engine.data import load_with_fallback
from dlcore.engine.dataset import Dataset
from dlcore.engine.models import build_model
from dlcore.engine.steps import augment_batch
from dlcore.views.stepthrough import Stepper

SEED = PRESETS["seed"]
CPU = torch.device("cpu")
BATCH_SEED = 4  # draws the step-through's batch; its first step's random numbers use BATCH_SEED + 1

CONFIGS = {
    "the lesson's network (adam, dropout)": SEED,
    "augment": SEED.replace(**{"train.augment": True}),
    "label smoothing": SEED.replace(**{"train.label_smoothing": 0.1}),
    "sgd, momentum, weight decay, augment": SEED.replace(**{
        "train.optimizer": "sgd", "train.lr": 0.05, "train.momentum": 0.9,
        "train.weight_decay": 1e-3, "train.augment": True, "train.label_smoothing": 0.2}),
    "adamw, batch norm, raw pixels": SEED.replace(**{
        "train.optimizer": "adamw", "train.weight_decay": 0.1, "model.norm": "batch",
        "train.normalize": False}),
    "cnn, augment": PRESETS["cnn"].replace(**{"train.augment": True, "train.label_smoothing": 0.1}),
}


@pytest.fixture(scope="module")
def sample() -> Dataset:
    dataset, _ = load_with_fallback("mnist-sample")
    return dataset


def fresh_model(config: RunConfig, dataset: Dataset) -> nn.Module:
    torch.manual_seed(config.train.seed)  # as dlcore.engine.train seeds its model
    return build_model(config.model, dataset.shape, dataset.num_classes).train()


def engine_step(config: RunConfig, dataset: Dataset, idx: torch.Tensor) -> nn.Module:
    """One step of the step `dlcore.engine.train` builds, on the images at `idx`."""
    model = fresh_model(config, dataset)
    step = train_module.training_step(model, config.train, dataset, dataset.train_x,
                                      dataset.train_y, CPU, sync_every=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(BATCH_SEED + 1)
        step.start_epoch()
        step(idx)
    return model


def pytorch_step(config: RunConfig, dataset: Dataset, idx: torch.Tensor) -> nn.Module:
    """The oracle: the same step written out in plain PyTorch."""
    model = fresh_model(config, dataset)
    c = config.train
    if c.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=c.lr, momentum=c.momentum,
                                    weight_decay=c.weight_decay)
    else:
        klass = torch.optim.Adam if c.optimizer == "adam" else torch.optim.AdamW
        optimizer = klass(model.parameters(), lr=c.lr, weight_decay=c.weight_decay, fused=True)
    x = dataset.train_x[idx].float()
    if c.normalize:
        mean = torch.tensor(dataset.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(dataset.std, dtype=torch.float32).view(1, -1, 1, 1)
        x = x * (1.0 / (255.0 * std)) - mean / std
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(BATCH_SEED + 1)
        if c.augment:
            x = augment_batch(x)
        loss = F.cross_entropy(model(x), dataset.train_y[idx], label_smoothing=c.label_smoothing)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


@pytest.mark.parametrize("name", CONFIGS)
def test_one_step_through_is_one_engine_step_and_the_pytorch_step(sample, name):
    config = CONFIGS[name]
    stepper = Stepper(config, sample, batch_size=32, seed=BATCH_SEED)
    idx = torch.randperm(len(sample.train_y), generator=torch.Generator().manual_seed(BATCH_SEED))[:32]
    assert torch.equal(stepper.batch_index, idx)
    start = {k: v.clone() for k, v in stepper.model.state_dict().items()}
    stepper.step()
    assert any(not torch.equal(v, start[k]) for k, v in stepper.model.state_dict().items())
    assert_same_weights(stepper.model, engine_step(config, sample, idx))
    assert_same_weights(stepper.model, pytorch_step(config, sample, idx))


def test_the_step_through_calls_the_step_dlcore_train_makes(sample, monkeypatch):
    made = []
    real = train_module.make_step

    def make_step(*args, **kwargs):
        made.append(real(*args, **kwargs))
        return made[-1]
    monkeypatch.setattr(train_module, "make_step", make_step)
    stepper = Stepper(SEED, sample)
    assert made == [stepper.step_fn] and not stepper.step_fn.uses_graph  # eager on the CPU


def test_the_loss_after_is_read_on_the_same_augmented_batch(sample):
    """With augmentation on, "loss after (same batch)" sees the images the step trained on: with a
    tiny step it is the loss before, to float precision, not that of other random shifts."""
    config = SEED.replace(**{"train.augment": True, "train.optimizer": "sgd", "train.lr": 1e-7,
                             "train.momentum": 0.0})
    stepper = Stepper(config, sample, seed=BATCH_SEED)
    for _ in range(3):
        report = stepper.step()
        assert report.loss_after == pytest.approx(report.loss_before, rel=1e-6)
        assert report.acc_after == report.acc_before


def test_the_reported_loss_and_gradients_are_the_steps(sample):
    """The loss before is the engine step's loss (label smoothing included), and each layer's
    gradient norm is that of the gradient the update received."""
    config = SEED.replace(**{"train.label_smoothing": 0.3, "model.dropout": 0.0,
                             "train.weight_decay": 0.01})
    stepper = Stepper(config, sample, batch_size=16, seed=BATCH_SEED)
    model = fresh_model(config, sample)
    idx = stepper.batch_index
    x = sample.train_x[idx].float() * stepper.step_fn.scale - stepper.step_fn.shift
    loss = F.cross_entropy(model(x), sample.train_y[idx], label_smoothing=0.3)
    loss.backward()
    report = stepper.step()
    assert report.loss_before == pytest.approx(float(loss.detach()), rel=1e-6)
    modules = [m for m in model if any(True for _ in m.parameters())]
    for row, module in zip(report.layers, modules, strict=True):
        norm = sum(float(p.grad.double().pow(2).sum()) for p in module.parameters()) ** 0.5
        assert row.grad_norm == pytest.approx(norm, rel=1e-5)
