"""An instance's request queues and its load account.

``waiting`` is ordered by priority (higher first), FCFS within a priority; ``swapped`` holds
swap-preempted requests, resumed before new admissions; ``prefilling`` holds admitted requests
whose prompt (or recompute) is not finished. ``outstanding_tokens`` is the work left here in
tokens (prefill + decode) as of the last iteration boundary, which load-aware routers read; it is
changed only through ``add_work`` / ``remove_work`` so every path that moves a request keeps it
exact.
"""
from __future__ import annotations

from collections import deque

from goodput.sim.engine.sequence import Sequence


def work_left(seq: Sequence) -> int:
    """Tokens ``seq`` still has to compute: the rest of its (re)prefill plus its decode tokens."""
    return seq.prefill_target - seq.prefilled + seq.output - seq.generated


class RequestQueues:
    def __init__(self) -> None:
        self.waiting: deque[Sequence] = deque()
        self.swapped: deque[Sequence] = deque()
        self.prefilling: list[Sequence] = []
        self._outstanding = 0

    @property
    def outstanding_tokens(self) -> int:
        return self._outstanding

    def add_work(self, tokens: int) -> None:
        self._outstanding += tokens

    def remove_work(self, tokens: int) -> None:
        self._outstanding -= tokens

    def enqueue(self, seq: Sequence) -> None:
        """Queue by priority (higher first), FCFS within a priority."""
        w = self.waiting
        if not w or seq.priority <= w[-1].priority:
            w.append(seq)
            return
        i = len(w)
        while i > 0 and w[i - 1].priority < seq.priority:
            i -= 1
        w.insert(i, seq)

    def requeue_front(self, seq: Sequence) -> None:
        """A preempted request goes back to the head of its queue (vLLM's recompute order)."""
        self.waiting.appendleft(seq)

    def hosted(self) -> int:
        return len(self.waiting) + len(self.swapped) + len(self.prefilling)
