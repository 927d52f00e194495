"""Pipeline parallelism: one of an instance's ``pp`` virtual engines, priced from the TP cost model.

vLLM runs a PP instance as ``pp`` virtual engines, each with its own scheduler and batches; while
engine 0's batch is in stage 2, engine 1's is in stage 1, so every stage GPU stays busy and the
instance carries ``pp`` batches at once. One engine's iteration passes through every stage in turn:
the stages together compute the whole model (``inner``: the model on ``tp`` GPUs; a stage runs
``layers / pp`` of its layers), plus ``pp - 1`` hand-offs of the batch's hidden states to the next
stage (send/recv: ``latency + tokens x hidden x 2 bytes / tp / bandwidth``, each TP rank sending
its slice). The simulator therefore models a PP instance as ``pp`` instances with this cost model,
each holding ``1 / pp`` of the pipeline's KV blocks (``goodput.sim.engine.kvcache.kv_capacity``).

Both hand-off terms are linear in the iteration's tokens, so the decode linearity contract holds
(``a`` grows by ``(pp - 1) (latency + B x bytes / bandwidth)``, ``b`` is unchanged) and
fast-forward stays exact. The link is NVLink when the ``tp x pp`` GPUs fit one node, else the
inter-node network; latency and bandwidth are catalog estimates until measured send/recv tables
exist (``goodput profile collectives --graph``).
"""
from __future__ import annotations

from goodput.sim.catalog import GPUSpec, ModelSpec
from goodput.sim.costmodel.base import Batch, CostModel

GPUS_PER_NODE = 8
NVLINK_SEND_LATENCY_S = 10e-6  # NCCL point-to-point within a node (estimate)
NETWORK_SEND_LATENCY_S = 20e-6  # across nodes (estimate)
NETWORK_GBS = 25.0  # InfiniBand NDR per GPU, unidirectional


class PipelinedCostModel(CostModel):
    def __init__(self, inner: CostModel, model: ModelSpec, gpu: GPUSpec, tp: int, pp: int):
        if pp < 2:
            raise ValueError("PipelinedCostModel: pp must be >= 2 (pp = 1 is the inner model)")
        self.inner, self.pp = inner, pp
        in_node = tp * pp <= GPUS_PER_NODE and gpu.nvlink_gbs > 0
        self.latency_s = NVLINK_SEND_LATENCY_S if in_node else NETWORK_SEND_LATENCY_S
        self.bandwidth_gbs = gpu.nvlink_gbs if in_node else NETWORK_GBS
        self.link = "nvlink" if in_node else "network"
        self._per_token_s = model.hidden_size * 2 / tp / (self.bandwidth_gbs * 1e9)
        self._hops = pp - 1
        self.source = f"{inner.source}+pp{pp}"

    def handoff_s(self, tokens: int) -> float:
        """Send/recv time of one iteration's hidden states through the pipeline."""
        return self._hops * (self.latency_s + tokens * self._per_token_s)

    def batch_time(self, batch: Batch) -> float:
        return self.inner.batch_time(batch) + self.handoff_s(batch.total_new_tokens)

    def decode_coefficients(self, batch_size: int) -> tuple[float, float]:
        a, b = self.inner.decode_coefficients(batch_size)
        return a + self.handoff_s(batch_size), b

    def iteration_time(self, new_tokens, context_tokens, decodes=0, decode_tokens=1, decode_ctx_sum=0,
                       decode_ctx_max=0, decode_contexts=None) -> float:
        t = self.inner.iteration_time(new_tokens, context_tokens, decodes, decode_tokens, decode_ctx_sum,
                                      decode_ctx_max, decode_contexts)
        return t + self.handoff_s(sum(new_tokens) + decodes * decode_tokens)

    def verify_time(self, decodes, q, ctx_sum, ctx_max, contexts=None) -> float:
        return self.inner.verify_time(decodes, q, ctx_sum, ctx_max, contexts) + self.handoff_s(decodes * q)

    def verify_coefficients(self, decodes: int, q: int) -> tuple[float, float] | None:
        line = getattr(self.inner, "verify_coefficients", lambda d, q: None)(decodes, q)
        return None if line is None else (line[0] + self.handoff_s(decodes * q), line[1])

    def describe(self) -> dict:
        return {**self.inner.describe(), "pp": self.pp, "pp_link": self.link,
                "pp_send_latency_s": self.latency_s, "pp_link_gbs": self.bandwidth_gbs,
                "pp_send": "estimated (catalog link; no measured send/recv table)"}
