"""A full-depth random-weight model on one device, executing one serving iteration at a time.

What runs: every decoder layer of the catalog model (distinct random bf16 weights, the profiler's
kernels: fused norms, rotary + paged KV write, the paged attention kernel, cuBLAS GEMMs), the
token embedding, the final norm, and greedy sampling (argmax over the logits of each sampling
row). Costs depend on shapes, not on trained weights, so this times what a real engine would.

Why piecewise CUDA graphs: a decode iteration of a 32-layer model launches ~300 kernels; launched
one by one from Python that host work is as long as the GPU work, and the engine would measure
its launcher, not its GPU. vLLM V1 captures everything *but* attention into CUDA graphs per
padded token count and runs attention eagerly between the pieces (attention's launch plan depends
on the batch's context lengths, so it cannot be a static graph). We do the same: for a batch of
T <= ``graph_max_tokens`` tokens, piece i (embedding or layer i-1's O-projection + MLP, then layer
i's norm + QKV + rotary + KV write) is one graph replay, attention i is one or two Triton
launches. Padding rows write their K/V into a scratch page that no sequence owns. Larger batches
(long prompt prefills) run eagerly; their GPU time dwarfs the launch time.

On the CPU (tests, the tiny model) everything runs eagerly with the torch reference kernels.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from goodput.profiler.batches import build_meta_from_table, page_table
from goodput.profiler.kernels import add_rmsnorm
from goodput.profiler.layers import DecoderLayer, Embedding, LMHead, rope_table
from goodput.profiler.paged_attention import paged_attention
from goodput.profiler.serve.attention import (
    ATTENTION_BACKENDS,
    FastAttention,
    IterationAttention,
    build_cudnn_plans,
    cudnn_chosen,
)
from goodput.profiler.shapes import PAGE_SIZE, ShardShapes


def graph_sizes(max_tokens: int) -> list[int]:
    """Captured token counts: 1, 2, 4, 8, then every multiple of 16 up to ``max_tokens``.

    Steps of 16 keep padding to at most 15 rows: under ~3% extra GEMM work where GEMMs are
    compute-bound (hundreds of rows) and none where they are memory-bound (few rows).
    """
    if max_tokens < 1:
        return []
    sizes = [s for s in (1, 2, 4, 8) if s <= max_tokens]
    sizes += list(range(16, max_tokens + 1, 16))
    return sizes


class _GraphSet:
    """Static buffers and the L + 1 captured pieces for one padded token count."""

    def __init__(self, size: int, s: ShardShapes, device):
        self.size = size
        self.ids = torch.zeros(size, dtype=torch.int64, device=device)
        self.pos = torch.zeros(size, dtype=torch.int64, device=device)
        self.slots = torch.zeros(size, dtype=torch.int64, device=device)
        self.res0 = torch.zeros(size, s.hidden, dtype=torch.bfloat16, device=device)
        self.attn = torch.zeros(size, s.q_heads, s.head_dim, dtype=torch.bfloat16, device=device)
        self.graphs: list = []
        self.q: list = []  # queries each piece leaves for the next attention
        self.res: list = []  # residual each piece leaves for the next piece
        self.final: torch.Tensor | None = None  # final-normed hidden states (set by capture)


class ModelRunner:
    """Holds the model and KV pool; ``step`` runs one iteration and returns the sampled tokens."""

    def __init__(self, spec, num_blocks: int, device: torch.device | str, *, seed: int = 0,
                 graph_max_tokens: int = 512, max_position: int | None = None,
                 attention: str = "triton"):
        if attention not in ATTENTION_BACKENDS:
            raise ValueError(f"attention={attention!r}: choose one of {list(ATTENTION_BACKENDS)}")
        #: "triton": the paged kernel for every row; "flash": FlashAttention for the prompt
        #: chunks of an iteration (goodput.profiler.serve.attention)
        self.attention = attention
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.spec = spec
        self.s = ShardShapes.from_spec(spec, 1)
        if num_blocks < 1:
            raise ValueError(f"ModelRunner: num_blocks={num_blocks}; need at least one KV block")
        #: one extra page at the end: graph padding rows write their K/V there
        self.pool_blocks = num_blocks + 1
        self.scratch_slot = num_blocks * PAGE_SIZE
        gen = torch.Generator(device=self.device)
        gen.manual_seed(seed)
        self.layers = [DecoderLayer(self.s, self.pool_blocks, self.device, gen,
                                    random_cache=False) for _ in range(spec.layers)]
        self.cos_sin = rope_table((max_position or spec.max_context) + 1, self.s.head_dim,
                                  self.device)
        self.embed = Embedding(self.s, self.device, gen)
        self.head = LMHead(self.s, self.device, gen)
        self.sm_count = (torch.cuda.get_device_properties(self.device).multi_processor_count
                         if self.cuda else 8)
        # MoE layers have data-dependent shapes: no graphs for them
        self.sizes = graph_sizes(graph_max_tokens) if self.cuda and self.s.experts == 1 else []
        self._sets: dict[int, _GraphSet] = {}
        self.capture_s = 0.0

    # ------------------------------------------------------------------ graphs
    def _piece(self, i: int, h_ids, res_prev, attn, pos, slots):
        """Piece i of the forward (see module docstring); returns (q or final, residual)."""
        if i == 0:
            h, res = self.embed.forward(h_ids), res_prev
        else:
            h, res = self.layers[i - 1].post_attention(attn, res_prev)
        if i < len(self.layers):
            return self.layers[i].pre_attention(h, res, pos, slots, self.cos_sin)
        x, _ = add_rmsnorm(h, res, self.head.norm)
        return x, None

    def capture(self) -> float:
        """Capture every graph size (largest first, one shared memory pool); returns seconds."""
        if not self.sizes:
            return 0.0
        import time

        t0 = time.perf_counter()
        pool = torch.cuda.graph_pool_handle()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        n = len(self.layers)
        with torch.cuda.stream(side):
            for size in sorted(self.sizes, reverse=True):
                gs = _GraphSet(size, self.s, self.device)
                res = gs.res0
                for i in range(n + 1):  # warm-up: compiles kernels, sets up cuBLAS workspaces
                    out, res = self._piece(i, gs.ids, res if i else gs.res0, gs.attn, gs.pos,
                                           gs.slots)
                res = gs.res0
                for i in range(n + 1):
                    g = torch.cuda.CUDAGraph()
                    g.capture_begin(pool=pool)
                    try:
                        out, res = self._piece(i, gs.ids, res, gs.attn, gs.pos, gs.slots)
                    finally:
                        g.capture_end()
                    gs.graphs.append(g)
                    if i < n:
                        gs.q.append(out)
                        gs.res.append(res)
                    else:
                        gs.final = out
                self._sets[size] = gs
        torch.cuda.current_stream(self.device).wait_stream(side)
        torch.cuda.synchronize(self.device)
        self.capture_s = time.perf_counter() - t0
        return self.capture_s

    def warm_up(self, long_context: int = 4096) -> int:
        """Compile every kernel variant before serving; returns the batches run.

        Triton compiles a kernel per tile height and per split/no-split on first use (about a
        second each); a variant first met mid-run stalls that iteration. Each tile class runs
        once with a short context (no split) and once after a long one (split), alone and next
        to decodes, on the graph path and (one long prompt) the eager path.
        """
        g = self.s.group
        max_pos = self.cos_sin.shape[0] - 1  # batches must stay within the rotary table
        if self.attention == "fast" and self.cuda:
            build_cudnn_plans(self.s, max_pos, self.device)
        long_context = max(0, min(long_context, max_pos - 256))
        q_of_class = {16: 1, 64: max(2, 64 // g), 128: 128 // g + 1}
        batches = []
        for q in q_of_class.values():
            for ctx in (0, long_context):
                batches.append(([q], [ctx]))
                batches.append(([q] + [1] * 8, [ctx] + [100] * 8))
        batches.append(([1] * 64, [100] * 64))
        batches.append(([min(max(self.sizes or [0]) + 64, max_pos)], [0]))
        for q_lens, ctx_lens in batches:
            if max(q + c for q, c in zip(q_lens, ctx_lens, strict=True)) > max_pos:
                continue
            need = [-(-(q + c) // PAGE_SIZE) for q, c in zip(q_lens, ctx_lens, strict=True)]
            if sum(need) > self.pool_blocks - 1:
                continue
            table = page_table(need, np.arange(sum(need)))
            ids = np.zeros(sum(q_lens), dtype=np.int64)
            n_prompts = sum(1 for q in q_lens if q > 1)
            self.step(ids, q_lens, ctx_lens, table, np.cumsum(q_lens) - 1, n_prompts).cpu()
        return len(batches)

    def _bucket(self, tokens: int) -> int:
        for size in self.sizes:
            if size >= tokens:
                return size if size in self._sets else 0
        return 0

    # ------------------------------------------------------------------ one iteration
    def step(self, token_ids: np.ndarray, q_lens, ctx_lens, table: np.ndarray,
             sample_rows: np.ndarray, n_prompts: int = 0) -> torch.Tensor:
        """Enqueue one iteration; returns the device tensor of sampled tokens (one per row).

        ``token_ids``: the T input tokens, sequence after sequence; ``table``: one block-table
        row per sequence; ``sample_rows``: indices (into the T tokens) whose logits are sampled;
        ``n_prompts``: the first sequences are prompt chunks (FlashAttention under
        ``attention="flash"``).
        """
        t = int(token_ids.size)
        size = self._bucket(t)
        ids = token_ids if not size else np.concatenate(
            [token_ids, np.zeros(size - t, dtype=np.int64)])
        meta = build_meta_from_table(q_lens, ctx_lens, table, self.s.group, self.s.kv_heads,
                                     self.s.head_dim, self.device, self.sm_count, pad_to=size,
                                     pad_slot=self.scratch_slot,
                                     extra={"ids": ids, "rows": sample_rows})
        fa: IterationAttention | FastAttention | None = None
        if self.attention == "flash" and n_prompts:
            fa = IterationAttention(q_lens, ctx_lens, table, n_prompts, self.s, self.device,
                                    self.sm_count)
        elif self.attention == "fast" and n_prompts:
            chosen = cudnn_chosen(q_lens, ctx_lens, n_prompts)
            if chosen:
                fa = FastAttention(q_lens, ctx_lens, table, chosen, self.s, self.device,
                                   self.sm_count)
        if size:
            gs = self._sets[size]
            gs.ids.copy_(meta.extra["ids"])
            gs.pos.copy_(meta.positions)
            gs.slots.copy_(meta.slots)
            for i, layer in enumerate(self.layers):
                gs.graphs[i].replay()
                if fa is not None:
                    fa(gs.q[i][:t], layer, out=gs.attn[:t])
                else:
                    paged_attention(gs.q[i][:t], layer.k_cache, layer.v_cache, meta,
                                    layer.scale, out=gs.attn[:t])
            gs.graphs[-1].replay()
            x = gs.final
            assert x is not None, "a captured graph set always has its final piece's output"
        else:
            h = self.embed.forward(meta.extra["ids"])
            res = torch.zeros_like(h)
            for layer in self.layers:
                q, res = layer.pre_attention(h, res, meta.positions, meta.slots, self.cos_sin)
                a = (fa(q, layer) if fa is not None else
                     paged_attention(q, layer.k_cache, layer.v_cache, meta, layer.scale))
                h, res = layer.post_attention(a, res)
            x, _ = add_rmsnorm(h, res, self.head.norm)
        logits = F.linear(x.index_select(0, meta.extra["rows"]), self.head.w)
        return logits.argmax(-1)
