"""The CPU thread governor: fewer threads while other processes keep the cores busy, back after."""

from __future__ import annotations

import pytest
import torch

from dlcore.engine import cpu_threads
from dlcore.engine.config import RunConfig
from dlcore.engine.cpu_threads import CpuThreads


class FakeMachine:
    """A clock and CPU counters that a test moves by hand: `others` cores busy elsewhere, and this
    process busy `own` cores, for `seconds`."""

    def __init__(self) -> None:
        self.now = self.busy = self.own = 0.0

    def tick(self, seconds: float, others: float, own: float = 1.0) -> None:
        self.now += seconds
        self.busy += seconds * (others + own)
        self.own += seconds * own

    def governor(self, most: int = 2, cores: int = 2) -> CpuThreads:
        return CpuThreads(most, cores=cores, clock=lambda: self.now, busy=lambda: self.busy,
                          own=lambda: self.own, window=0.5)


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_other_load_drops_to_one_thread_and_a_quiet_machine_brings_the_second_back(two_threads):
    machine = FakeMachine()
    governor = machine.governor()
    machine.tick(0.6, others=0.1)
    assert governor.adjust() == 2 and torch.get_num_threads() == 2
    machine.tick(0.6, others=0.9)  # a browser takes most of a core
    assert governor.adjust() == 1 and torch.get_num_threads() == 1
    for _ in range(cpu_threads.UP_AFTER_WINDOWS - 1):  # quiet windows, not yet enough to go up
        machine.tick(0.6, others=0.1)
        assert governor.adjust() == 1
    machine.tick(0.6, others=0.1)
    assert governor.adjust() == 2 and torch.get_num_threads() == 2


def test_a_page_redrawing_between_quiet_windows_keeps_one_thread(two_threads):
    machine = FakeMachine()
    governor = machine.governor()
    machine.tick(0.6, others=0.9)
    assert governor.adjust() == 1
    for _ in range(10):  # a redraw burst, then three quiet windows, over and over
        machine.tick(0.6, others=0.9)
        assert governor.adjust() == 1
        for _ in range(3):
            machine.tick(0.6, others=0.05)
            assert governor.adjust() == 1


def test_readings_inside_a_window_change_nothing(two_threads):
    machine = FakeMachine()
    governor = machine.governor()
    machine.tick(0.2, others=2.0)
    assert governor.adjust() == 2  # 0.2 s is less than a window: not read yet
    machine.tick(0.4, others=2.0)
    assert governor.adjust() == 1


def test_this_process_own_work_does_not_count_as_load(two_threads):
    machine = FakeMachine()
    governor = machine.governor()
    machine.tick(1.0, others=0.0, own=2.0)  # both cores busy, all of it ours
    assert governor.adjust() == 2


def test_never_more_than_given_and_restore_puts_the_count_back(two_threads):
    machine = FakeMachine()
    governor = machine.governor(most=2, cores=8)
    for _ in range(3):
        machine.tick(0.6, others=0.0)
        assert governor.adjust() == 2
    machine.tick(0.6, others=7.5)
    assert governor.adjust() == 1
    governor.restore()
    assert torch.get_num_threads() == 2


def test_train_asks_the_governor_and_restores_the_thread_count(monkeypatch, two_threads):
    from dlcore.engine import train as train_module
    from dlcore.engine.data import load_dataset

    digits = load_dataset("digits")

    made: list[CpuThreads] = []
    calls = []

    class Spy(CpuThreads):
        def __init__(self) -> None:
            super().__init__()
            made.append(self)

        def adjust(self) -> int:
            calls.append(1)
            self._set(1)  # as under load
            return 1

    monkeypatch.setattr(train_module, "CpuThreads", Spy)
    config = RunConfig().replace(**{"train.epochs": 1, "train.device": "cpu",
                                    "train.dataset": "digits", "model.hidden": (16,)})
    result = train_module.train(config, digits)
    assert result.status == "finished"
    assert len(made) == 1 and len(calls) >= 1
    assert torch.get_num_threads() == 2  # put back after the run


def test_the_machine_reading_moves(two_threads):
    before = cpu_threads.machine_busy_seconds()
    sum(i * i for i in range(200_000))
    assert cpu_threads.machine_busy_seconds() >= before
    assert cpu_threads.usable_cores() >= 1


def test_without_a_machine_reading_the_count_is_left_alone(two_threads):
    machine = FakeMachine()
    governor = CpuThreads(2, cores=2, clock=lambda: machine.now, busy=lambda: None,
                          own=lambda: machine.own, window=0.5)
    machine.tick(1.0, others=2.0)
    assert governor.adjust() == 2 and torch.get_num_threads() == 2
