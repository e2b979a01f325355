"""Which devices this machine has, and which one a config's `device` field means."""

from __future__ import annotations

import torch

from dlcore.engine.config import ConfigError


def available_devices() -> list[str]:
    """The devices present, best first: cuda, mps, cpu."""
    found = []
    if torch.cuda.is_available():
        found.append("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        found.append("mps")
    return [*found, "cpu"]


def resolve_device(name: str) -> torch.device:
    """`auto` is the best device present; a named device that is absent is refused clearly."""
    present = available_devices()
    if name == "auto":
        return torch.device(present[0])
    if name not in present:
        raise ConfigError("train.device", f"{name} is not available on this machine; "
                                          f"available: {', '.join(present)}")
    return torch.device(name)


def describe_device(name: str) -> str:
    """A short label for people: 'CUDA (NVIDIA H200)', 'Apple MPS', 'CPU (up to 2 threads)' (a run
    trains with fewer while other processes keep the cores busy: dlcore.engine.cpu_threads)."""
    device = resolve_device(name)
    if device.type == "cuda":
        return f"CUDA ({torch.cuda.get_device_name(device)})"
    if device.type == "mps":
        return "Apple MPS"
    threads = torch.get_num_threads()
    return "CPU (1 thread)" if threads == 1 else f"CPU (up to {threads} threads)"
