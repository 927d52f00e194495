"""A batching policy in one file: shortest-prompt-first admission with an ageing bound.

vLLM admits queued requests FCFS; under a mix of long and short prompts, a short request behind a
long one waits for the long prefill. This policy admits the shortest waiting prompts first (fewer
requests waiting behind a long prefill, lower mean TTFT), but a request that has waited longer
than ``max_wait_s`` goes first, so a long prompt is never starved. Everything else is vLLM's:
prefill-prioritised iterations, paged KV, preemption by recompute or swap: the class overrides
only vLLM's admission step.

Use it with ``plugins: [examples/plugins/shortest_prompt_first.py]`` and
``scheduler: {policy: shortest_prompt_first, shortest_prompt_first: {max_wait_s: 2.0}}`` in a
config (docs/simulator.md, "Adding a batching policy").
"""
from __future__ import annotations

from dataclasses import dataclass

from goodput.sim.config import ConfigError
from goodput.sim.engine.policies import register_policy
from goodput.sim.engine.policies.vllm import VLLMPolicy
from goodput.sim.engine.view import SchedulerView


@dataclass
class ShortestPromptFirstOptions:
    max_wait_s: float = 5.0  # a request queued this long is admitted before shorter ones


@register_policy
class ShortestPromptFirstPolicy(VLLMPolicy):
    name = "shortest_prompt_first"
    Options = ShortestPromptFirstOptions

    def __init__(self, cfg, capacity, max_context=0):
        super().__init__(cfg, capacity, max_context)
        if not self.options.max_wait_s > 0:
            raise ConfigError("scheduler.shortest_prompt_first.max_wait_s must be > 0")

    def arrival_may_change_plan(self, view, seq) -> bool:
        return True  # a short arrival may jump the queue: re-plan at the next boundary

    def admit_prompts(self, view: SchedulerView, now: float, seqs: int) -> list:
        """vLLM's admission step (the rest of vLLM's iteration is inherited), in another order:
        aged requests first (by priority, then FCFS), then the rest by priority, shortest first."""
        max_wait = self.options.max_wait_s
        order = sorted(view.waiting, key=lambda s: (0, -s.priority, 0, s.arrival)
                       if now - s.arrival >= max_wait else
                       (1, -s.priority, s.prefill_target - s.prefilled, s.arrival))
        budget, free = self.max_batched_tokens, view.free_blocks - self.watermark_blocks
        admitted = []
        for seq in order:
            done, held = view.prefix_start(seq)  # with prefix caching: less what the cache holds
            n = seq.prefill_target - done
            need = self.capacity.blocks_for(seq.prefill_target) - held
            if n > budget or seqs >= self.cfg.max_batch_size or need > free:
                break  # no skipping ahead of a blocked candidate: keeps the order honest
            admitted.append((view.admit_waiting(seq, n, now), n))
            budget, free, seqs = budget - n, free - need, seqs + 1
        return admitted
