"""Model and GPU catalogs, loaded from the YAML data files beside this module.

Every entry cites its source (``source`` field). Names are matched case-insensitively and
aliases (e.g. ``h100`` for ``h100-sxm``) are accepted; an unknown name raises an error listing the
known ones so the user can fix the typo.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path

import yaml

_DATA = Path(__file__).parent


@dataclass(frozen=True)
class ModelSpec:
    """Architecture of a decoder-only transformer, enough to derive FLOPs, bytes and KV size."""

    name: str
    layers: int
    hidden_size: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn_size: int
    gated_ffn: bool  # SwiGLU-style (3 matrices) vs plain (2 matrices)
    vocab_size: int
    max_context: int
    experts: int = 1  # MoE experts per layer (1 = dense)
    experts_top_k: int = 1
    tied_embeddings: bool = False
    bytes_per_param: int = 2  # bf16/fp16 serving
    aliases: tuple[str, ...] = ()
    source: str = ""

    # ---- derived quantities (per whole model unless a tp argument is given) ----
    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def attention_params_per_layer(self) -> int:
        return self.hidden_size * (self.q_dim + 2 * self.kv_dim) + self.q_dim * self.hidden_size

    def ffn_params_per_expert(self) -> int:
        mats = 3 if self.gated_ffn else 2
        return mats * self.hidden_size * self.ffn_size

    def params_per_layer(self) -> int:
        router = self.hidden_size * self.experts if self.experts > 1 else 0
        return self.attention_params_per_layer() + self.experts * self.ffn_params_per_expert() + router

    def active_params_per_layer(self) -> int:
        """Parameters touched per token (MoE: only top-k experts)."""
        return self.attention_params_per_layer() + self.experts_top_k * self.ffn_params_per_expert()

    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size * (1 if self.tied_embeddings else 2)

    def param_count(self) -> int:
        return self.layers * self.params_per_layer() + self.embedding_params()

    def weight_bytes(self, tp: int = 1) -> float:
        """Bytes of weights held by one GPU of a TP group (weights sharded evenly)."""
        return self.param_count() * self.bytes_per_param / tp

    def kv_bytes_per_token(self, tp: int = 1) -> float:
        """KV-cache bytes one token occupies on one GPU of a TP group (K and V, all layers).

        KV heads are split across TP ranks; when tp exceeds kv_heads they are replicated, so a rank
        never holds less than one head.
        """
        heads_per_rank = max(1, self.kv_heads // tp) if self.kv_heads >= tp else 1
        return 2 * self.layers * heads_per_rank * self.head_dim * self.bytes_per_param


@dataclass(frozen=True)
class GPUSpec:
    name: str
    memory_gb: float  # usable HBM, GB (1e9 bytes)
    bf16_tflops: float  # dense BF16 peak, TFLOP/s
    mem_bw_tbs: float  # HBM bandwidth, TB/s
    nvlink_gbs: float  # per-GPU NVLink bandwidth (unidirectional), GB/s; 0 when absent
    pcie_gbs: float  # host link bandwidth (unidirectional), GB/s
    tdp_w: float
    price_per_hour: float  # on-demand USD per GPU-hour
    aliases: tuple[str, ...] = ()
    source: str = ""

    @property
    def memory_bytes(self) -> float:
        return self.memory_gb * 1e9


def _load(kind: str, cls):
    path = _DATA / f"{kind}.yaml"
    raw = yaml.safe_load(path.read_text())
    allowed = {f.name for f in fields(cls)}
    out = {}
    for name, entry in raw.items():
        unknown = set(entry) - allowed
        if unknown:
            raise ValueError(f"{path.name}: entry '{name}' has unknown fields {sorted(unknown)}")
        entry = dict(entry)
        entry["aliases"] = tuple(entry.get("aliases", ()))
        out[name.lower()] = cls(name=name, **entry)
    return out


@cache
def models() -> dict[str, ModelSpec]:
    return _load("models", ModelSpec)


@cache
def gpus() -> dict[str, GPUSpec]:
    return _load("gpus", GPUSpec)


def _lookup(table: dict, name: str, what: str, flag: str):
    key = name.strip().lower()
    if key in table:
        return table[key]
    for spec in table.values():
        if key in (a.lower() for a in spec.aliases):
            return spec
    known = ", ".join(sorted(table))
    raise ValueError(f"unknown {what} '{name}' (field '{flag}'); known: {known}")


def get_model(name: str) -> ModelSpec:
    return _lookup(models(), name, "model", "model")


def get_gpu(name: str) -> GPUSpec:
    return _lookup(gpus(), name, "GPU", "gpu")
