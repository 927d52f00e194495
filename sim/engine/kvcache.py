"""Paged KV-cache capacity and block accounting for one instance.

Capacity follows vLLM: of each GPU's memory, ``gpu_memory_utilization`` is usable; weights (sharded
by TP) and an activation reserve are subtracted; the rest holds KV blocks of ``block_size`` tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

from goodput.sim.catalog import GPUSpec, ModelSpec


class CapacityError(ValueError):
    """The model does not fit on the configured GPUs at all."""


@dataclass(frozen=True)
class KVCapacity:
    total_blocks: int
    block_size: int
    bytes_per_token: float  # per GPU of the TP group

    @property
    def total_tokens(self) -> int:
        return self.total_blocks * self.block_size

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)


def kv_capacity(model: ModelSpec, gpu: GPUSpec, tp: int, block_size: int,
                gpu_memory_utilization: float, activation_reserve_gb: float,
                num_blocks_override: int | None = None, extra_weight_bytes: float = 0.0,
                extra_kv_bytes_per_token: float = 0.0, pp: int = 1) -> KVCapacity:
    """KV blocks that fit next to the weights (``num_blocks_override`` fixes the count). The
    extras are what speculation adds per GPU (a draft model's weights, its KV per token, which
    every block then holds beside the target's). With ``pp`` stages each GPU holds 1/pp of the
    weights and of every token's KV; the pipeline's blocks are shared by its pp virtual engines,
    so one engine gets 1/pp of them (what this returns)."""
    if num_blocks_override is not None:
        if num_blocks_override < 1 or block_size < 1:
            raise CapacityError(f"scheduler.num_gpu_blocks={num_blocks_override} must be >= 1 "
                                "(and scheduler.block_size >= 1)")
        return KVCapacity(total_blocks=int(num_blocks_override), block_size=block_size,
                          bytes_per_token=model.kv_bytes_per_token(tp) + extra_kv_bytes_per_token)
    if not 0 < gpu_memory_utilization <= 1:
        raise CapacityError("scheduler.gpu_memory_utilization must be in (0, 1]")
    if block_size < 1:
        raise CapacityError("scheduler.block_size must be >= 1")
    usable = gpu.memory_bytes * gpu_memory_utilization
    weights = model.weight_bytes(tp) / pp + extra_weight_bytes
    free = usable - weights - activation_reserve_gb * 1e9
    per_token = model.kv_bytes_per_token(tp) / pp + extra_kv_bytes_per_token
    blocks = int(free // (per_token * block_size)) // pp if free > 0 else 0
    if blocks < 1:
        raise CapacityError(
            f"model '{model.name}' does not fit on {gpu.name} x tp={tp}" + (f" x pp={pp}" if pp > 1 else "")
            + ": weights need "
            f"{weights / 1e9:.1f} GB per GPU of {usable / 1e9:.1f} GB usable "
            f"(gpu_memory_utilization={gpu_memory_utilization}, activation reserve "
            f"{activation_reserve_gb} GB); raise tp (or pp) or choose a larger GPU")
    return KVCapacity(total_blocks=blocks, block_size=block_size, bytes_per_token=per_token)


class DecodeBlockPhases:
    """Counts, per token phase (mod block_size), how many decoding sequences need a new block.

    Positions are counted in the decode set's token counter (``DecodeSet.tokens``), which advances
    by the tokens every member adds per iteration (1 for a decode, q for a multi-token step). A
    member with ``kv`` stored tokens needs a fresh block exactly when it writes a position with
    ``kv % bs == 0``; since all members advance together, that happens every ``bs`` tokens at a
    fixed phase. A histogram of phases lets the engine compute, in O(block_size), how many blocks
    the next n tokens consume and the first token at which the free pool would run dry, without
    touching sequences.
    """

    def __init__(self, block_size: int):
        self.bs = block_size
        self.count = [0] * block_size
        self.size = 0

    def add(self, phase: int) -> None:
        self.count[phase] += 1
        self.size += 1

    def remove(self, phase: int) -> None:
        self.count[phase] -= 1
        self.size -= 1

    def blocks_needed(self, start_step: int, k: int) -> int:
        """Blocks consumed by set-token positions start_step .. start_step + k - 1."""
        bs = self.bs
        rest = k % bs
        total = k // bs * self.size
        if rest:
            p0 = start_step % bs
            end = p0 + rest
            cnt = self.count
            # positions p0 .. end-1, wrapping past the block end (by index: no slices to build)
            for i in range(p0, end if end <= bs else bs):
                total += cnt[i]
            for i in range(end - bs):
                total += cnt[i]
        return total

    def steps_until_shortage(self, start_step: int, free_blocks: int) -> int:
        """Number of set-token positions from ``start_step`` that fit before one lacks a block.

        Returns a large number when the set is empty.
        """
        if self.size == 0:
            return 1 << 60
        bs = self.bs
        full = free_blocks // self.size
        left = free_blocks - full * self.size
        steps = full * bs
        p0 = start_step % bs
        cnt = self.count
        for i in range(bs):
            need = cnt[(p0 + i) % bs]
            if need > left:
                return steps + i
            left -= need
        return steps + bs  # unreachable: a full cycle needs exactly `size` blocks > left
