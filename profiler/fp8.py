"""FP8 (e4m3) GEMMs for the profiler: what vLLM runs for an FP8 W8A8 checkpoint on Hopper.

Why this scheme: the FP8 checkpoints vLLM serves most (RedHatAI's / Neural Magic's
``*-FP8``, ``quantization_config`` with ``activation_scheme: static``) carry one scale per
weight tensor and one static scale per GEMM input, so quantising an activation is a multiply and
a cast that fuses into the kernel producing it: here into the residual-add RMSNorm (QKV and
gate/up inputs, ``kernels.add_rmsnorm_quant``) and the gated activation (down-projection input,
``kernels.silu_mul_quant``); the attention output gets one standalone cast kernel before the
O projection. The GEMMs run on the FP8 tensor cores through cuBLASLt with per-tensor scales
(``torch._scaled_mm``). Measured on the H200 (``python -m goodput.profiler.fp8_check --bench``),
per-tensor scaling runs 1.7-2.2x faster than row-wise (per-token x per-channel, CUTLASS in torch)
at 1-32 rows, where decode lives, and the same from 512 rows up; row-wise dynamic scales would
also need an amax pass per input. The scale values do not change the time; the profiler uses
static scales of 1 for activations (random activations stay far inside e4m3's range) and the
absolute maximum / 448 for weights. The embedding and the LM head stay bf16, as in vLLM.

Each op has a Triton kernel for CUDA tensors and a torch reference (the CPU mode, and the ground
truth of ``goodput.profiler.fp8_check`` on the device).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from goodput.profiler.kernels import HAVE_TRITON, cast_fp8, use_triton

FP8 = torch.float8_e4m3fn
#: largest finite e4m3 value: a weight tensor's absolute maximum is scaled onto it
FP8_MAX = 448.0
#: floor of a scale, so an all-zero tensor quantises to zeros instead of dividing by zero
MIN_SCALE = 1e-12

if HAVE_TRITON:
    import triton
    import triton.language as tl


@dataclass(frozen=True)
class Fp8Weight:
    """A [N, K] weight in e4m3 with one float32 scale (a 0-d tensor) for the whole tensor.

    ``t`` is W^T as a column-major [K, N] view, the layout ``torch._scaled_mm`` wants."""

    q: torch.Tensor
    scale: torch.Tensor

    @property
    def t(self) -> torch.Tensor:
        return self.q.t()

    @classmethod
    def from_bf16(cls, w: torch.Tensor) -> Fp8Weight:
        wf = w.float()
        scale = wf.abs().amax().clamp(min=MIN_SCALE) / FP8_MAX
        return cls((wf / scale).to(FP8).contiguous(), scale)


def static_scale(device) -> torch.Tensor:
    """A GEMM input's static activation scale (a 0-d float32 tensor; see module docstring)."""
    return torch.ones((), dtype=torch.float32, device=device)


def quantize_ref(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x / scale in e4m3 (saturating at the e4m3 range, as vLLM's static quantisation does)."""
    return cast_fp8(x.float(), scale)


if HAVE_TRITON:

    @triton.jit
    def _quantize_kernel(x_ptr, out_ptr, scale_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32) / tl.load(scale_ptr)
        x = tl.minimum(tl.maximum(x, -448.0), 448.0)
        tl.store(out_ptr + offs, x.to(out_ptr.dtype.element_ty), mask=mask)


def quantize(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Static per-tensor quantisation of a contiguous activation (one launch on the GPU)."""
    if not use_triton(x):
        return quantize_ref(x, scale)
    x = x.contiguous()  # (a no-op for the attention output of the Triton kernel)
    out = torch.empty(x.shape, dtype=FP8, device=x.device)
    n = x.numel()
    block = 2048
    _quantize_kernel[(triton.cdiv(n, block),)](x, out, scale, n, BLOCK=block, num_warps=4)
    return out


def scaled_mm(xq: torch.Tensor, x_scale: torch.Tensor, w: Fp8Weight) -> torch.Tensor:
    """bf16 [T, N] = (xq * x_scale) @ (W * w.scale)^T on the FP8 tensor cores."""
    return torch._scaled_mm(xq, w.t, scale_a=x_scale, scale_b=w.scale, out_dtype=torch.bfloat16)


def fp8_linear(x: torch.Tensor, x_scale: torch.Tensor, w: Fp8Weight) -> torch.Tensor:
    """A bf16 activation through an FP8 weight: the static cast, then the scaled GEMM."""
    return scaled_mm(quantize(x, x_scale), x_scale, w)
