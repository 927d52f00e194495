"""One rank's share of a decoder-only transformer, with random bf16 weights (no downloads).

What is built: Llama-style decoder layers (RMSNorm, fused QKV, neox rotary, paged GQA attention,
O projection, gated SiLU or plain GELU MLP; a top-k MoE MLP for Mixtral-like models), the token
embedding and the LM head with sampling, all at the per-GPU shard shapes of ``ShardShapes``.
Costs depend on shapes, not on trained values, so random weights time the same kernels as the
real model. Biases, OPT's LayerNorm and learned position table are not modelled: they are
element-wise work a few microseconds per layer at most.

A ``LayerStack`` holds several distinct layers, each with its own weights and its own KV cache,
so timing the stack and dividing by its depth measures a layer whose weights and KV stream from
HBM as they do inside a full-depth model (a single layer repeated would sit partly in L2).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from goodput.profiler.batches import AttnMeta
from goodput.profiler.fp8 import FP8, Fp8Weight, fp8_linear, scaled_mm, static_scale
from goodput.profiler.kernels import add_rmsnorm, add_rmsnorm_quant, rope_cache, silu_mul, silu_mul_quant
from goodput.profiler.paged_attention import paged_attention
from goodput.profiler.shapes import PAGE_SIZE, ShardShapes

DTYPE = torch.bfloat16
ROPE_THETA = 10000.0


def _rand(gen, shape, std, device):
    return (torch.randn(shape, generator=gen, device=device, dtype=torch.float32) * std).to(DTYPE)


def rope_table(max_pos: int, head_dim: int, device) -> torch.Tensor:
    """[max_pos, head_dim] float32: cos in the first half, sin in the second."""
    half = head_dim // 2
    inv = 1.0 / (ROPE_THETA ** (torch.arange(0, half, dtype=torch.float64) / half))
    ang = torch.arange(max_pos, dtype=torch.float64)[:, None] * inv[None, :]
    return torch.cat([ang.cos(), ang.sin()], -1).float().to(device)


class DecoderLayer:
    """One layer on one rank; ``forward`` returns the new (hidden, residual)."""

    def __init__(self, s: ShardShapes, pool_blocks: int, device, gen: torch.Generator,
                 random_cache: bool = True):
        self.s = s
        h, d = s.hidden, s.head_dim
        self.qkv_w = _rand(gen, (s.qkv_out, h), 1 / math.sqrt(h), device)
        self.o_w = _rand(gen, (h, s.q_heads * d), 1 / math.sqrt(s.q_heads * d), device)
        self.norm1 = torch.ones(h, dtype=DTYPE, device=device)
        self.norm2 = torch.ones(h, dtype=DTYPE, device=device)
        up = 2 * s.ffn if s.gated else s.ffn
        if s.experts > 1:
            self.router_w = _rand(gen, (s.experts, h), 1 / math.sqrt(h), device)
            self.gu_w = _rand(gen, (s.experts, up, h), 1 / math.sqrt(h), device)
            self.down_w = _rand(gen, (s.experts, h, s.ffn), 1 / math.sqrt(s.ffn), device)
        else:
            self.gu_w = _rand(gen, (up, h), 1 / math.sqrt(h), device)
            self.down_w = _rand(gen, (h, s.ffn), 1 / math.sqrt(s.ffn), device)
        #: FP8 weights (ShardShapes.weight_fp8): the dense matrices in e4m3, one scale per tensor
        self.fp8: dict[str, Fp8Weight] = {}
        if s.weight_fp8:
            if s.experts > 1:
                raise ValueError("FP8 weights: the MoE expert loop has bf16 kernels only")
            for name in ("qkv_w", "o_w", "gu_w", "down_w"):
                self.fp8[name] = Fp8Weight.from_bf16(getattr(self, name))
                setattr(self, name, None)  # the bf16 copy would double the weight bytes held
        #: the static activation scale of the FP8 GEMM inputs (goodput.profiler.fp8)
        self.act_scale = static_scale(device)
        cache_shape = (pool_blocks, PAGE_SIZE, s.kv_heads, d)
        cache_dtype = FP8 if s.kv_fp8 else DTYPE
        # Random, not zeros: kernels can run faster on zeros than on real data. (A serving
        # engine writes every entry before reading it: random_cache=False skips the fill.)
        if random_cache:
            self.k_cache = _rand(gen, cache_shape, 1.0, device).to(cache_dtype)
            self.v_cache = _rand(gen, cache_shape, 1.0, device).to(cache_dtype)
        else:
            self.k_cache = torch.empty(cache_shape, dtype=cache_dtype, device=device)
            self.v_cache = torch.empty(cache_shape, dtype=cache_dtype, device=device)
        self.scale = 1.0 / math.sqrt(d)

    def _normed_linear(self, h, res, norm, name: str):
        """RMSNorm(h + res) @ W^T and the new residual; FP8 fuses the cast into the norm."""
        w8 = self.fp8.get(name)
        if w8 is None:
            x, res = add_rmsnorm(h, res, norm)
            return F.linear(x, getattr(self, name)), res
        xq, res = add_rmsnorm_quant(h, res, norm, self.act_scale)
        return scaled_mm(xq, self.act_scale, w8), res

    def _act(self, t):
        return silu_mul(t) if self.s.gated else F.gelu(t, approximate="tanh")

    def _down(self, gu):
        """Activation, then the down projection (FP8: the cast fused into a gated activation)."""
        w8 = self.fp8.get("down_w")
        if w8 is None:
            return F.linear(self._act(gu), self.down_w)
        if self.s.gated:
            return scaled_mm(silu_mul_quant(gu, self.act_scale), self.act_scale, w8)
        return fp8_linear(self._act(gu), self.act_scale, w8)

    def _moe(self, x):
        act = self._act
        # Top-k MoE, experts looped (data-dependent shapes: not graph-capturable).
        probs = torch.softmax(F.linear(x, self.router_w).float(), -1)
        w, idx = probs.topk(self.s.top_k, dim=-1)
        w = (w / w.sum(-1, keepdim=True)).to(x.dtype)
        out = torch.zeros_like(x)
        for e in range(self.s.experts):
            tok, slot = (idx == e).nonzero(as_tuple=True)
            if tok.numel() == 0:
                continue
            y = F.linear(act(F.linear(x[tok], self.gu_w[e])), self.down_w[e])
            out.index_add_(0, tok, y * w[tok, slot, None])
        return out

    def pre_attention(self, h, res, positions, slots, cos_sin):
        """Norm, QKV projection, rotary and KV-cache write: returns (queries, residual)."""
        s = self.s
        qkv, res = self._normed_linear(h, res, self.norm1, "qkv_w")
        q = rope_cache(qkv, positions, cos_sin, self.k_cache, self.v_cache, slots,
                       s.q_heads, s.kv_heads, s.head_dim)
        return q, res

    def post_attention(self, a, res):
        """O projection, norm and MLP on the attention output: returns (hidden, residual)."""
        a = a.view(a.shape[0], -1)
        w8 = self.fp8.get("o_w")
        h = F.linear(a, self.o_w) if w8 is None else fp8_linear(a, self.act_scale, w8)
        # (TP > 1: an all-reduce of h goes here; estimated separately, see goodput.profiler.collectives)
        if self.s.experts > 1:
            x, res = add_rmsnorm(h, res, self.norm2)
            return self._moe(x), res
        gu, res = self._normed_linear(h, res, self.norm2, "gu_w")
        return self._down(gu), res

    def forward(self, h, res, meta: AttnMeta, cos_sin, attention: bool = True, attn_fn=None):
        q, res = self.pre_attention(h, res, meta.positions, meta.slots, cos_sin)
        # attention=False times everything but the attention kernel (the "linear" sweep);
        # attn_fn(q, layer, meta) replaces the Triton kernel (goodput.profiler.attention_backends).
        if not attention:
            a = q
        elif attn_fn is not None:
            a = attn_fn(q, self, meta)
        else:
            a = paged_attention(q, self.k_cache, self.v_cache, meta, self.scale)
        return self.post_attention(a, res)


class LayerStack:
    """``depth`` distinct layers run back to back (see module docstring)."""

    def __init__(self, s: ShardShapes, depth: int, pool_blocks: int, max_pos: int, device,
                 seed: int = 0):
        gen = torch.Generator(device=device)
        gen.manual_seed(seed)
        self.s, self.depth, self.pool_blocks = s, depth, pool_blocks
        self.layers = [DecoderLayer(s, pool_blocks, device, gen) for _ in range(depth)]
        self.cos_sin = rope_table(max_pos, s.head_dim, device)
        #: CUDA graphs need static shapes; the MoE expert loop has data-dependent ones.
        self.capturable = s.experts == 1

    def forward(self, h, res, meta: AttnMeta, attention: bool = True, attn_fn=None):
        for layer in self.layers:
            h, res = layer.forward(h, res, meta, self.cos_sin, attention, attn_fn)
        return h


class Embedding:
    """Vocabulary-parallel token embedding (this rank's vocab shard)."""

    def __init__(self, s: ShardShapes, device, gen: torch.Generator):
        self.w = _rand(gen, (s.vocab, s.hidden), 1.0, device)

    def forward(self, token_ids):
        return F.embedding(token_ids, self.w)


class LMHead:
    """Final norm, vocab projection of the rows that sample, and Gumbel-max sampling."""

    def __init__(self, s: ShardShapes, device, gen: torch.Generator):
        self.norm = torch.ones(s.hidden, dtype=DTYPE, device=device)
        self.w = _rand(gen, (s.vocab, s.hidden), 1 / math.sqrt(s.hidden), device)

    def forward(self, h, res, temperature: float = 0.8):
        x, _ = add_rmsnorm(h, res, self.norm)
        logits = F.linear(x, self.w).float()
        probs = torch.softmax(logits / temperature, -1)
        # probs / Exp(1) argmax == sampling from probs (the trick vLLM's sampler uses).
        return probs.div_(torch.empty_like(probs).exponential_()).argmax(-1)
