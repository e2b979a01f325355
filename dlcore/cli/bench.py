"""The lesson's own training loop, timed beside the engine on the same data and device.

The lesson's loop is torchvision's `datasets.MNIST` with `ToTensor` + `Normalize` and a
`DataLoader(batch_size=64, shuffle=True)`. To give it exactly the images the engine sees, the
loaded dataset is written out as IDX files in torchvision's `<root>/MNIST/raw` layout first.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dlcore.engine.config import PRESETS
from dlcore.engine.dataset import Dataset
from dlcore.engine.devices import describe_device, resolve_device
from dlcore.engine.train import EpochEnd, train


def write_idx(path: Path, array: np.ndarray) -> None:
    """An uncompressed IDX file of uint8 data (images N×28×28 or labels N)."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def seed_loop(root: Path, device: torch.device, epochs: int, seed: int = 42) -> list[tuple[float, float]]:
    """The lesson's program; returns (seconds, test accuracy) per epoch, train and test pass."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    torch.manual_seed(seed)
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    train_set = datasets.MNIST(str(root), train=True, download=False, transform=transform)
    test_set = datasets.MNIST(str(root), train=False, download=False, transform=transform)
    train_loader = DataLoader(train_set, batch_size=64, shuffle=True)
    test_loader = DataLoader(test_set, batch_size=1000)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Dropout(0.2),
                          nn.Linear(512, 256), nn.ReLU(), nn.Dropout(0.2), nn.Linear(256, 10)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    out = []
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        for images, labels in train_loader:
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad()
            loss = criterion(model(images), labels)
            loss.backward()
            optimizer.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for images, labels in test_loader:
                images, labels = images.to(device), labels.to(device)
                correct += (model(images).argmax(1) == labels).sum().item()
        out.append((time.perf_counter() - start, correct / len(test_set)))
    return out


def lesson_loop(dataset: Dataset, device: torch.device, epochs: int) -> list[tuple[float, float]]:
    """The lesson's program on exactly `dataset`'s images, via IDX files in torchvision's layout."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "MNIST" / "raw"
        raw.mkdir(parents=True)
        write_idx(raw / "train-images-idx3-ubyte", dataset.train_x[:, 0].numpy())
        write_idx(raw / "train-labels-idx1-ubyte", dataset.train_y.numpy())
        write_idx(raw / "t10k-images-idx3-ubyte", dataset.test_x[:, 0].numpy())
        write_idx(raw / "t10k-labels-idx1-ubyte", dataset.test_y.numpy())
        return seed_loop(Path(tmp), device, epochs)


def run_bench(dataset: Dataset, *, device: str = "auto", epochs: int = 1,
              include_seed_loop: bool = True) -> dict[str, float]:
    """Print per-epoch seconds and accuracy for both loops and the speed-up; return the medians."""
    torch_device = resolve_device(device)
    print(f"Dataset: {dataset.name} ({len(dataset.train_y):,} train / {len(dataset.test_y):,} test); "
          f"device: {describe_device(device)}; seed MLP 784-512-256-10, batch 64")
    figures: dict[str, float] = {}
    if include_seed_loop:
        lesson = lesson_loop(dataset, torch_device, epochs)
        for i, (seconds, acc) in enumerate(lesson, 1):
            print(f"seed loop  epoch {i}: {seconds:7.3f} s  test acc {acc:.2%}", flush=True)
        figures["seed_s"] = statistics.median(s for s, _ in lesson)
        figures["seed_acc"] = lesson[-1][1]

    config = PRESETS["seed"].replace(**{"train.epochs": epochs, "train.device": device,
                                        "train.dataset": dataset.name})

    def show(event) -> None:
        if isinstance(event, EpochEnd):
            m = event.metrics
            print(f"engine     epoch {m.epoch}: {m.seconds:7.3f} s  test acc {m.test_acc:.2%}",
                  flush=True)

    result = train(config, dataset, on_event=show)
    figures["engine_s"] = statistics.median(m.seconds for m in result.history)
    figures["engine_acc"] = result.history[-1].test_acc
    if result.cuda_graph:
        print("engine step: captured as one CUDA graph")
    if include_seed_loop:
        figures["speedup"] = figures["seed_s"] / figures["engine_s"]
        print(f"accuracy difference: {100 * (figures['engine_acc'] - figures['seed_acc']):+.2f} points")
        print(f"speedup vs seed loop: {figures['speedup']:.2f}x")
    return figures
