"""The live loss curve, kept to a few hundred points however long the run.

Points are kept by arrival: every `stride`-th one, the stride doubling whenever the curve would grow
past `max_points`, plus always the latest. The same points fed in the same order give the same curve,
so the curve drawn while a run trains is the curve drawn from its result afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable

MAX_POINTS = 400


class LossCurve:
    def __init__(self, points: Iterable[tuple[int, float]] = (), max_points: int = MAX_POINTS) -> None:
        self.max_points = max(2, max_points)
        self.stride = 1
        self.count = 0
        self._kept: list[tuple[int, float]] = []
        self._last: tuple[int, float] | None = None
        self.extend(points)

    def extend(self, points: Iterable[tuple[int, float]]) -> None:
        for step, loss in points:
            point = (int(step), float(loss))
            if self.count % self.stride == 0:
                self._kept.append(point)
                if len(self._kept) > self.max_points:
                    self._kept = self._kept[::2]
                    self.stride *= 2
            self._last = point
            self.count += 1

    def points(self) -> tuple[tuple[int, float], ...]:
        if self._last is None or (self._kept and self._kept[-1] == self._last):
            return tuple(self._kept)
        return (*self._kept, self._last)
