"""How many CPU threads a run trains with: all it was given while the cores are free, fewer while
other processes keep them busy.

torch's intra-op threads meet at every operation, so when one of them is descheduled the others
wait. Measured on the 2-core machine while other processes kept it busy (a test suite, a class's
browsers): an epoch of the seed MLP on the bundled sample took 0.8 s with one thread and 5.5 s with
two. The training loop asks `CpuThreads.adjust` at every read-back; it measures what the rest of
the machine used over the last quarter second and sets torch's thread count to what is left.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable

import torch

WINDOW_SECONDS = 0.25  # how often the machine's load is read
SPARE = 0.3  # a core counts as free when others leave at least this much of it (idle noise)
# Windows in a row with room before a thread is added back. A page redrawing a live run every 0.9 s
# leaves a few quiet windows between its bursts: after 2 the count flapped between one and two at
# each redraw, and one learner's epoch took 0.82 to 0.86 s; after 8 (2 s) it stays at one while
# the page redraws: 0.66 s (bench/app_vs_headless.py, the two alternated, headless 0.39 s).
UP_AFTER_WINDOWS = 8


def machine_busy_seconds() -> float | None:
    """CPU seconds all processes have spent busy since boot, summed over cores; None without psutil
    (requirements.txt has it; a bare machine, such as a lent GPU's, may not)."""
    try:
        import psutil
    except ImportError:
        return None
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


def usable_cores() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity
        return os.cpu_count() or 1


class CpuThreads:
    """Keeps torch's thread count at what the other processes leave free, between one and `most`.

    Down at once when others take a core; up only after `UP_AFTER_WINDOWS` windows in a row leave
    room, so bursts elsewhere (a page's redraws) do not make the count flap. `restore()` puts
    back the count found at the start. The clock and the readings are arguments so a test can
    drive it."""

    def __init__(self, most: int | None = None, *, cores: int | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 busy: Callable[[], float | None] = machine_busy_seconds,
                 own: Callable[[], float] = time.process_time,
                 window: float = WINDOW_SECONDS) -> None:
        self.initial = torch.get_num_threads()
        self.most = max(1, most or self.initial)
        self.cores = cores or usable_cores()
        self.clock, self.busy, self.own, self.window = clock, busy, own, window
        self.threads = self.initial
        self._mark = (clock(), busy(), own())
        self._room_windows = 0
        self.measuring = self._mark[1] is not None  # without a reading, the count is left alone

    def others(self) -> float | None:
        """Cores the rest of the machine kept busy since the last reading; None before a window
        has passed (the reading is then left for later)."""
        now = self.clock()
        elapsed = now - self._mark[0]
        if elapsed < self.window:
            return None
        busy, own = self.busy(), self.own()
        used = (busy - self._mark[1]) - (own - self._mark[2])
        self._mark = (now, busy, own)
        return max(0.0, used / elapsed)

    def adjust(self) -> int:
        """The thread count now, changed when a window has passed and the machine's load asks."""
        others = self.others() if self.measuring else None
        if others is None:
            return self.threads
        fits = max(1, min(self.most, math.floor(self.cores - others + SPARE)))
        if fits < self.threads:
            self._set(fits)
        elif fits > self.threads:
            self._room_windows += 1
            if self._room_windows >= UP_AFTER_WINDOWS:
                self._set(fits)
        else:
            self._room_windows = 0
        return self.threads

    def _set(self, threads: int) -> None:
        self.threads, self._room_windows = threads, 0
        torch.set_num_threads(threads)

    def restore(self) -> None:
        if torch.get_num_threads() != self.initial:
            torch.set_num_threads(self.initial)
