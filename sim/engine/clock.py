"""The clock seam: the only place the engine touches SimPy.

Instances, migrations, the arrival feed and cluster events ask a ``Clock`` for the time and for a
callback after a delay. The simulator's clock is SimPy's environment; the real-GPU serving loop
(goodput.profiler.serve) drives instances step by step with a wall or virtual clock that only has to tell
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


class ScheduledCall:
    """The least a SimPy environment needs to process an event: its callbacks and that it
    succeeded. An engine iteration's end is one of these rather than a ``simpy.Timeout`` (which
    also carries a value, a delay and the environment for processes to wait on): the engine's
    events are only ever called back, never yielded from, and there are several per request."""

    __slots__ = ("_ok", "callbacks")

    def __init__(self, callback: Callback) -> None:
        self.callbacks: list[Callback] | None = [callback]
        self._ok = True


class SimClock(simpy.Environment):
    """Discrete-event time: a SimPy environment with the seam's one scheduling call (a subclass
    rather than a wrapper, so reading ``now`` on the hot path costs no extra indirection).
    Scheduled calls go through SimPy's own ``schedule`` and are processed by its ``step`` like
    any event, so SimPy processes and timeouts can share the clock."""

    def __init__(self, initial_time: float = 0) -> None:
        super().__init__(initial_time)
        self._schedule = self.schedule  # bound once: each ``self.schedule`` builds a bound method

    def call_later(self, delay: float, callback: Callback) -> object:
        if delay < 0:
            raise ValueError(f"call_later: negative delay {delay}")
        ev = ScheduledCall(callback)
        self._schedule(ev, simpy.core.NORMAL, delay)  # type: ignore[arg-type]
        return ev


class SteppedClock:
    """Base for clocks of loops that drive an instance one iteration at a time (no callbacks);
    subclasses provide ``now``."""

    def call_later(self, delay: float, callback: Callback) -> object:
        raise RuntimeError("this instance is driven step by step (next_plan / finish_iteration); "
                           "it cannot schedule its own events")
