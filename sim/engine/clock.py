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


class SimClock:
    """Discrete-event time on a SimPy environment."""

    def __init__(self, env: simpy.Environment | None = None):
        self.env = env if env is not None else simpy.Environment()
        self._timeout = self.env.timeout

    @property
    def now(self) -> float:
        return self.env.now

    def call_later(self, delay: float, callback: Callback) -> object:
        ev = self._timeout(delay)
        ev.callbacks.append(callback)
        return ev

    def run(self, until: float | None = None) -> None:
        if until is None:
            self.env.run()
        else:
            self.env.run(until=until)


class SteppedClock:
    """Base for clocks of loops that drive an instance one iteration at a time (no callbacks);
    subclasses provide ``now``."""

    def call_later(self, delay: float, callback: Callback) -> object:
        raise RuntimeError("this instance is driven step by step (next_plan / finish_iteration); "
                           "it cannot schedule its own events")
