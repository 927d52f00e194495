"""The clock seam: the only place the engine touches SimPy.

Instances, migrations, the arrival feed and cluster events ask a ``Clock`` for the time and for a
callback after a delay. The simulator's clock is SimPy's environment; the real-GPU serving loop
(profiler.serve) drives instances step by step with a wall or virtual clock that only has to tell
the time. Keeping SimPy behind this seam is what lets one engine run both, and gives one place to
observe every scheduled event.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import simpy

#: a scheduled callback receives the event that fired (SimPy's convention, no wrapper per event)
Callback = Callable[[Any], None]


class Clock(Protocol):
    @property
    def now(self) -> float: ...

    def call_later(self, delay: float, callback: Callback) -> object:
        """Run ``callback(event)`` ``delay`` seconds from now; returns the event (its identity
        lets a caller recognise a superseded callback)."""
        ...


class SimClock(simpy.Environment):
    """Discrete-event time: a SimPy environment with the seam's one scheduling call (a subclass
    rather than a wrapper, so reading ``now`` on the hot path costs no extra indirection)."""

    def __init__(self, initial_time: float = 0) -> None:
        super().__init__(initial_time)
        self._timeout = self.timeout  # bound once: each ``self.timeout`` goes through a descriptor

    def call_later(self, delay: float, callback: Callback) -> object:
        ev = self._timeout(delay)
        ev.callbacks.append(callback)
        return ev


class SteppedClock:
    """Base for clocks of loops that drive an instance one iteration at a time (no callbacks);
    subclasses provide ``now``."""

    def call_later(self, delay: float, callback: Callback) -> object:
        raise RuntimeError("this instance is driven step by step (next_plan / finish_iteration); "
                           "it cannot schedule its own events")
