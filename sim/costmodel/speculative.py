"""Cost-model pieces of speculative decoding: a draft model's cost model next to a target's, and
a verify group (every sequence computing the same ``q`` tokens) priced from its totals.

A verify iteration of B sequences x (k + 1) tokens is what a profile measures as a ``verify``
batch (``profiler/grids.py``); pricing it from the group's context sum and longest context keeps a
speculative step O(1) in the batch, as ``CostModel.iteration_time`` does for one-token decodes.
"""
from __future__ import annotations

import json
from collections.abc import Callable

from goodput.sim.catalog import GPUSpec, ModelSpec
from goodput.sim.config import ConfigError
from goodput.sim.costmodel import profiled as P
from goodput.sim.costmodel.base import CostModel
from goodput.sim.costmodel.profile_store import profiles_root
from goodput.sim.costmodel.roofline import RooflineCostModel


def target_model_name(target: CostModel) -> str:
    """The catalog name of the model ``target`` prices."""
    if isinstance(target, RooflineCostModel):
        return target.model.name
    if isinstance(target, P.ProfiledCostModel):
        return str(target.fit["model"])
    raise ConfigError(f"scheduler.speculation: cannot tell which model cost model "
                      f"'{target.source}' prices; set draft_pass_s instead of draft_model")


def draft_cost_model(target: CostModel, draft: ModelSpec,
                     get_gpu: Callable[[str], GPUSpec]) -> CostModel:
    """The draft's cost on the target's GPUs: its own profile there when one is shipped (with the
    target's engine host terms), else a roofline with the target's parameters. The draft runs at
    the target's TP degree when it divides the draft's heads (vLLM's default), else on one GPU."""
    if isinstance(target, P.ProfiledCostModel):
        gpu_name, engine = str(target.fit["gpu"]), target.engine
        tp = target.tp if draft.heads % target.tp == 0 else 1
        path = P.find_profile(gpu_name, draft.name, tp, root=profiles_root())
        if path is not None:
            fit = json.loads((path / P.FIT_FILE).read_text())
            return P.ProfiledCostModel(fit, path, collectives=target.collectives if tp == target.tp else None,
                                       engine=engine)
        return RooflineCostModel(draft, get_gpu(gpu_name), tp, engine=engine)
    if isinstance(target, RooflineCostModel):
        tp = target.tp if draft.heads % target.tp == 0 else 1
        return RooflineCostModel(draft, target.gpu, tp, params=target.params, engine=target.engine)
    raise ConfigError(f"scheduler.speculation: cannot derive a draft cost next to cost model "
                      f"'{target.source}'; set draft_pass_s instead of draft_model")


def roofline_verify_time(m: RooflineCostModel, decodes: int, q: int, ctx_sum: int,
                         ctx_max: int, contexts: Callable[[], list[int]] | None) -> float | None:
    """Each sequence's attention is max(compute, memory), both linear in its context: when one
    side wins for every context >= 0 the group's sum is that side's line at the context sum.
    None when they cross (the caller lists the sequences)."""
    f_slope = m._attn_flops_coef * q / m._attn_rate
    f_icpt = f_slope * (q + 1) / 2.0
    b_slope = m._kv_bytes / m._bw
    b_icpt = b_slope * q
    if f_slope <= b_slope and f_icpt <= b_icpt:
        attn = (ctx_sum + decodes * q) * b_slope
    elif f_slope >= b_slope and f_icpt >= b_icpt:
        attn = m._attn_flops_coef * q * (ctx_sum + decodes * (q + 1) / 2.0) / m._attn_rate
    else:
        return None
    total = decodes * q
    return m._finish(m._context_free_time(total, decodes) + attn, decodes)


def profiled_verify_time(m: P.ProfiledCostModel, decodes: int, q: int, ctx_sum: int,
                         ctx_max: int) -> float:
    """``batch_time`` of ``decodes`` sequences x ``q`` tokens, from the group's totals: the
    attention features of identical-q sequences add up (blocks are linear in context, tiles and
    presence per class are counts), and the split decision reads the total and the longest."""
    n_cls = len(P.TILE_CLASSES)
    rows = q * m.group
    k = 0 if rows <= P.TILE_CLASSES[0] else 1 if rows <= P.TILE_CLASSES[1] else 2
    qpt = max(1, P.TILE_CLASSES[k] // m.group)
    n = -(-q // qpt)
    blocks = (n * ctx_sum + decodes * (qpt * n * (n - 1) / 2.0 + q)) / P.KV_BLOCK
    feats: list[float] = []
    target = -(-P.SPLIT_WAVES * m.sm_count // max(1, m.kv_heads))
    for c in range(n_cls):
        if c != k:
            feats += [0.0, 0.0, 0.0, 0.0, 0.0]
            continue
        chunk = max(P.MIN_CHUNK_BLOCKS, blocks / target)
        split = 1.0 if -(-(ctx_max + q) // P.KV_BLOCK) > chunk else 0.0
        tiles = float(decodes * n)
        feats += [1.0, blocks, tiles, split, split * (blocks / chunk + tiles / 2.0)]
    feats.append(q * (ctx_sum + decodes * (q + 1) / 2.0) if k == 2 else 0.0)
    t = decodes * q
    corr = sum(s * h for s, h in zip(m.lin_scale, P.lin_scale_basis(t), strict=False))
    layer = m.lin(t) * (1.0 + corr) + sum(w * x for w, x in zip(m.w, feats, strict=False))
    rows_out = t if q <= P.MAX_VERIFY_TOKENS else decodes
    kernels = m.layers * layer + m.embed(t) + m.lmhead(rows_out) + m._allreduce(t)
    return m._finish(kernels, decodes)
