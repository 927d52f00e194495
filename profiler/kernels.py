"""Fused element-wise kernels of a decoder layer (Triton on GPU, torch reference elsewhere).

Why fused: serving engines (vLLM, SGLang) run norm+residual, rotary+KV-cache write and the gated
activation as single custom kernels. Timing the same layer built from a dozen separate torch
element-wise launches would overstate small-batch decode latency, which is launch- and
memory-bound. Each op here has a Triton kernel (used for CUDA tensors, or on the CPU through
Triton's interpreter when ``TRITON_INTERPRET=1``) and a torch reference with identical semantics
(used by the CPU profiling mode and as the ground truth in tests).
"""
from __future__ import annotations

import os

import torch

try:  # Triton is optional: the CPU mode and CI run without it.
    import triton
    import triton.language as tl

    HAVE_TRITON = True
except ImportError:  # pragma: no cover - depends on the environment
    triton = tl = None
    HAVE_TRITON = False


def use_triton(t: torch.Tensor) -> bool:
    """Triton path for CUDA tensors, or for CPU tensors under Triton's interpreter (tests)."""
    if not HAVE_TRITON:
        return False
    return t.is_cuda or os.environ.get("TRITON_INTERPRET") == "1"


def _pow2(n: int) -> int:
    return 1 << (max(1, n) - 1).bit_length()


# --------------------------------------------------------------------------- references
def add_rmsnorm_ref(x, residual, weight, eps):
    """new_residual = x + residual; return (rmsnorm(new_residual) * weight, new_residual).

    Out of place (same bytes moved as vLLM's in-place op) so that replaying a captured graph on
    fixed inputs never accumulates into its inputs.
    """
    new_res = x + residual
    return _rmsnorm_f32(new_res, weight, eps).to(x.dtype), new_res


def _rmsnorm_f32(r, weight, eps):
    """RMSNorm in float32 (the references' shared arithmetic)."""
    r = r.float()
    return r * torch.rsqrt(r.pow(2).mean(-1, keepdim=True) + eps) * weight.float()


def rope_cache_ref(qkv, positions, cos_sin, k_cache, v_cache, slots, q_heads, kv_heads, head_dim):
    """Neox-style rotary on q and k; k and v written into the paged cache at ``slots``.

    qkv: [T, (Hq + 2 Hkv) * D]; cos_sin: [max_pos, D] (cos in the first half, sin in the second);
    caches: [blocks, page, Hkv, D]. Returns the rotated queries [T, Hq, D].
    """
    t = qkv.shape[0]
    x = qkv.view(t, q_heads + 2 * kv_heads, head_dim)
    half = head_dim // 2
    cs = cos_sin[positions].float()
    cos, sin = cs[:, None, :half], cs[:, None, half:]

    def rot(h):
        h = h.float()
        h1, h2 = h[..., :half], h[..., half:]
        return torch.cat([h1 * cos - h2 * sin, h2 * cos + h1 * sin], -1).to(qkv.dtype)

    q = rot(x[:, :q_heads])
    k = rot(x[:, q_heads:q_heads + kv_heads])
    v = x[:, q_heads + kv_heads:]
    flat_k = k_cache.view(-1, kv_heads, head_dim)
    flat_v = v_cache.view(-1, kv_heads, head_dim)
    flat_k[slots] = k.to(flat_k.dtype)  # an FP8 cache stores e4m3 (scale 1, vLLM's default)
    flat_v[slots] = v.to(flat_v.dtype)
    return q.contiguous()


def silu_mul_ref(gate_up):
    return _silu_mul_f32(gate_up).to(gate_up.dtype)


def _silu_mul_f32(gate_up):
    f = gate_up.shape[-1] // 2
    g, u = gate_up[..., :f].float(), gate_up[..., f:].float()
    return torch.nn.functional.silu(g) * u


# --------------------------------------------------------------------------- Triton kernels
if HAVE_TRITON:

    @triton.jit
    def _add_rmsnorm_kernel(x_ptr, res_ptr, res_out_ptr, w_ptr, out_ptr, scale_ptr, n_cols, eps,
                            stride, BLOCK: tl.constexpr, QUANT: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        mask = cols < n_cols
        x = tl.load(x_ptr + row * stride + cols, mask=mask, other=0.0)
        r = tl.load(res_ptr + row * stride + cols, mask=mask, other=0.0)
        r = x + r  # bf16 add, rounded like the torch reference
        tl.store(res_out_ptr + row * n_cols + cols, r, mask=mask)
        r = r.to(tl.float32)
        var = tl.sum(r * r, axis=0) / n_cols
        w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
        y = r * tl.rsqrt(var + eps) * w
        if QUANT:  # static per-tensor FP8 scale (goodput.profiler.fp8), saturating
            y = tl.minimum(tl.maximum(y / tl.load(scale_ptr), -448.0), 448.0)
        tl.store(out_ptr + row * n_cols + cols, y.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def _rope_cache_kernel(qkv_ptr, pos_ptr, cs_ptr, q_out_ptr, k_cache_ptr, v_cache_ptr,
                           slot_ptr, Q_HEADS, KV_HEADS, stride_qkv, stride_cs,
                           HALF: tl.constexpr):
        tok = tl.program_id(0).to(tl.int64)
        head = tl.program_id(1)
        d = tl.arange(0, HALF)
        pos = tl.load(pos_ptr + tok).to(tl.int64)
        D = 2 * HALF
        base = qkv_ptr + tok * stride_qkv + head * D
        if head < Q_HEADS + KV_HEADS:
            cos = tl.load(cs_ptr + pos * stride_cs + d)
            sin = tl.load(cs_ptr + pos * stride_cs + HALF + d)
            x1 = tl.load(base + d).to(tl.float32)
            x2 = tl.load(base + HALF + d).to(tl.float32)
            o1 = (x1 * cos - x2 * sin).to(q_out_ptr.dtype.element_ty)
            o2 = (x2 * cos + x1 * sin).to(q_out_ptr.dtype.element_ty)
            if head < Q_HEADS:
                q_dst = q_out_ptr + (tok * Q_HEADS + head) * D
                tl.store(q_dst + d, o1)
                tl.store(q_dst + HALF + d, o2)
            else:  # (one name per pointer type: an FP8 cache's pointers are not bf16 ones)
                slot = tl.load(slot_ptr + tok).to(tl.int64)
                k_dst = k_cache_ptr + (slot * KV_HEADS + (head - Q_HEADS)) * D
                tl.store(k_dst + d, o1.to(k_cache_ptr.dtype.element_ty))
                tl.store(k_dst + HALF + d, o2.to(k_cache_ptr.dtype.element_ty))
        else:
            slot = tl.load(slot_ptr + tok).to(tl.int64)
            v_dst = v_cache_ptr + (slot * KV_HEADS + (head - Q_HEADS - KV_HEADS)) * D
            tl.store(v_dst + d, tl.load(base + d).to(v_cache_ptr.dtype.element_ty))
            tl.store(v_dst + HALF + d, tl.load(base + HALF + d).to(v_cache_ptr.dtype.element_ty))

    @triton.jit
    def _silu_mul_kernel(gu_ptr, out_ptr, scale_ptr, F, stride_in, BLOCK: tl.constexpr,
                         QUANT: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = cols < F
        g = tl.load(gu_ptr + row * stride_in + cols, mask=mask, other=0.0).to(tl.float32)
        u = tl.load(gu_ptr + row * stride_in + F + cols, mask=mask, other=0.0).to(tl.float32)
        y = g / (1.0 + tl.exp(-g)) * u
        if QUANT:  # static per-tensor FP8 scale (goodput.profiler.fp8), saturating
            y = tl.minimum(tl.maximum(y / tl.load(scale_ptr), -448.0), 448.0)
        tl.store(out_ptr + row * F + cols, y.to(out_ptr.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------- dispatch
def add_rmsnorm(x, residual, weight, eps=1e-5):
    if not use_triton(x):
        return add_rmsnorm_ref(x, residual, weight, eps)
    if x.stride() != residual.stride():
        raise ValueError("add_rmsnorm: x and residual must have the same layout")
    n = x.shape[-1]
    out = torch.empty(x.shape[0], n, dtype=x.dtype, device=x.device)
    new_res = torch.empty_like(out)
    block = _pow2(n)
    _add_rmsnorm_kernel[(x.shape[0],)](x, residual, new_res, weight, out, out, n, eps,
                                       x.stride(0), BLOCK=block, QUANT=False,
                                       num_warps=min(16, max(1, block // 256)))
    return out, new_res


def add_rmsnorm_quant_ref(x, residual, weight, eps, scale):
    """``add_rmsnorm`` with its output quantised to e4m3 at the static ``scale``: (fp8 rows,
    new residual). The norm stays float32 before the cast (one rounding, to e4m3)."""
    new_res = x + residual
    return cast_fp8(_rmsnorm_f32(new_res, weight, eps), scale), new_res


def cast_fp8(y, scale):
    """y / scale in e4m3, saturating (what goodput.profiler.fp8.quantize_ref does)."""
    return (y / scale).clamp(-448.0, 448.0).to(torch.float8_e4m3fn)


def add_rmsnorm_quant(x, residual, weight, scale, eps=1e-5):
    """Residual add, RMSNorm and the static FP8 cast in one launch (vLLM's fused op)."""
    if not use_triton(x):
        return add_rmsnorm_quant_ref(x, residual, weight, eps, scale)
    if x.stride() != residual.stride():
        raise ValueError("add_rmsnorm_quant: x and residual must have the same layout")
    t, n = x.shape[0], x.shape[-1]
    out = torch.empty(t, n, dtype=torch.float8_e4m3fn, device=x.device)
    new_res = torch.empty(t, n, dtype=x.dtype, device=x.device)
    block = _pow2(n)
    _add_rmsnorm_kernel[(t,)](x, residual, new_res, weight, out, scale, n, eps, x.stride(0),
                              BLOCK=block, QUANT=True, num_warps=min(16, max(1, block // 256)))
    return out, new_res


def rope_cache(qkv, positions, cos_sin, k_cache, v_cache, slots, q_heads, kv_heads, head_dim):
    if not use_triton(qkv):
        return rope_cache_ref(qkv, positions, cos_sin, k_cache, v_cache, slots,
                              q_heads, kv_heads, head_dim)
    t = qkv.shape[0]
    q = torch.empty(t, q_heads, head_dim, dtype=qkv.dtype, device=qkv.device)
    grid = (t, q_heads + 2 * kv_heads)
    _rope_cache_kernel[grid](qkv, positions, cos_sin, q, k_cache, v_cache, slots,
                             q_heads, kv_heads, qkv.stride(0), cos_sin.stride(0),
                             HALF=head_dim // 2, num_warps=1)
    return q


def silu_mul(gate_up):
    if not use_triton(gate_up):
        return silu_mul_ref(gate_up)
    return _silu_mul_launch(gate_up, None)


def silu_mul_quant_ref(gate_up, scale):
    return cast_fp8(_silu_mul_f32(gate_up), scale)


def silu_mul_quant(gate_up, scale):
    """The gated activation with the static FP8 cast of the down projection's input fused."""
    if not use_triton(gate_up):
        return silu_mul_quant_ref(gate_up, scale)
    return _silu_mul_launch(gate_up, scale)


def _silu_mul_launch(gate_up, scale):
    t, f2 = gate_up.shape
    f = f2 // 2
    dtype = gate_up.dtype if scale is None else torch.float8_e4m3fn
    out = torch.empty(t, f, dtype=dtype, device=gate_up.device)
    block = 1024
    _silu_mul_kernel[(t, triton.cdiv(f, block))](gate_up, out, out if scale is None else scale, f,
                                                  gate_up.stride(0), BLOCK=block,
                                                  QUANT=scale is not None, num_warps=4)
    return out
