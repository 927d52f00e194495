"""The clock seam: the only place the engine touches SimPy.

Instances, migrations, the arrival feed and cluster events ask a ``Clock`` for the time and for a
callback after a delay. The simulator's clock is SimPy's environment; the real-GPU serving loop
(goodput.profiler.serve) drives instances step by step with a wall or virtual clock that only has to tell
the time. Keeping SimPy behind this seam is what lets one engine run both, and gives one place to
observe every scheduled event.
"""
from __future__ import annotations

import heapq
from collections.abc import Callable
from itertools import count
from typing import Any, Final, Protocol

import simpy
from simpy.core import NORMAL, URGENT, StopSimulation

from goodput.sim.engine.compiled import mypyc_attr

#: SimPy's priority of a plain event, as a literal a compiled build inlines (checked at import)
_NORMAL: Final = 1
assert _NORMAL == NORMAL
#: the heap operations and ``next`` as module constants: a compiled build reads a constant
#: where a name imported from a module costs a dictionary lookup per call
_heappush: Final = heapq.heappush
_heappop: Final = heapq.heappop
_next: Final = next

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
    rather than a wrapper, so reading ``now`` on the hot path costs no extra indirection).
    Scheduled calls go on SimPy's own event heap and are processed like any event (``run``
    inlines ``step``), so SimPy processes and timeouts can share the clock.

    Compiled in the optional build (``make compiled``): a native class may derive from a plain
    Python one, and the three fields SimPy's own code reads and writes -- the time, the event
    heap and the event counter -- are declared here, so they become native slots that SimPy's
    methods (``schedule``, ``peek``, its events) reach through their descriptors while the
    loop below and ``call_later`` read them directly. Interpreted, the declarations are only
    annotations."""

    _now: float
    _queue: list[Any]
    _eid: count[int]

    def __init__(self, initial_time: float = 0) -> None:
        super().__init__(float(initial_time))  # a float either way (the slot's type)
        self._heap: list[Any] = self._queue  # SimPy's event heap (created once, never rebound)

    @property
    def now(self) -> float:
        """The current simulation time (SimPy's property, read from the slot)."""
        return self._now

    def events_scheduled(self) -> int:
        """How many events have been scheduled so far (SimPy numbers each from one counter;
        reading it takes one number, so call it when the run is over)."""
        return next(self._eid)

    def call_later(self, delay: float, callback: Callback) -> object:
        if delay < 0:
            raise ValueError(f"call_later: negative delay {delay}")
        # A scheduled call sits on SimPy's heap as a one-element list holding the callback rather
        # than as a ``simpy.Timeout`` (which carries a value, a delay and the environment for
        # processes to wait on, and costs an ``__init__`` to build): the engine's events are
        # only ever called back, never yielded from, and there are several per request. ``run``
        # recognises the type; the list's identity is what a caller compares to recognise a
        # superseded call. What ``schedule(ev, NORMAL, delay)`` does, without its call.
        ev = [callback]
        _heappush(self._heap, (self._now + delay, _NORMAL, _next(self._eid), ev))
        return ev

    def step(self) -> None:
        """Process the next event (SimPy's ``step``, knowing a scheduled call)."""
        heap = self._heap
        if heap and type(heap[0][3]) is list:
            self._now, _, _, event = _heappop(heap)
            event[0](event)
            return
        super().step()

    def run(self, until: Any = None) -> Any:
        """SimPy's ``run``, with its ``step`` inlined: the loop pops and calls back exactly as
        ``step`` does (same order, same failure handling), without a method call per event --
        a few microseconds each, on the order of a tenth of a simulation's time."""
        if until is not None:
            if not isinstance(until, simpy.Event):
                at = until if isinstance(until, int) else float(until)
                if at <= self._now:
                    raise ValueError(f"until ({at}) must be greater than the current simulation time")
                until = simpy.Event(self)
                until._ok = True
                until._value = None
                self.schedule(until, URGENT, at - self._now)
            stop: Any = until
            if stop.callbacks is None:  # already processed
                return stop.value
            stop.callbacks.append(StopSimulation.callback)
        heap = self._heap
        event: Any
        try:
            while heap:
                self._now, _, _, event = _heappop(heap)
                if type(event) is list:  # a scheduled call: one callback, and it always succeeds
                    event[0](event)
                    continue
                callbacks, event.callbacks = event.callbacks, None
                try:
                    for callback in callbacks:
                        callback(event)
                except StopSimulation:
                    event.callbacks = callbacks[callbacks.index(callback) + 1:]
                    self.schedule(event, simpy.core.EventPriority(-1))
                    raise
                if not event._ok and not hasattr(event, "_defused"):
                    exc = type(event._value)(*event._value.args)
                    exc.__cause__ = event._value
                    raise exc
        except StopSimulation as exc:
            return exc.args[0]
        if until is not None:
            assert not until.triggered
            raise RuntimeError(f'No scheduled events left but "until" event was not triggered: {until}')
        return None


@mypyc_attr(allow_interpreted_subclasses=True)
class SteppedClock:
    """Base for clocks of loops that drive an instance one iteration at a time (no callbacks);
    subclasses (goodput.profiler.serve's wall and virtual clocks) provide ``now``."""

    def call_later(self, delay: float, callback: Callback) -> object:
        raise RuntimeError("this instance is driven step by step (next_plan / finish_iteration); "
                           "it cannot schedule its own events")
