"""Model and GPU catalogs, loaded from the YAML data files beside this module (and user files).

Every entry cites its source (``source`` field). Names are matched case-insensitively and
aliases (e.g. ``h100`` for ``h100-sxm``) are accepted; an unknown name raises an error listing the
known ones so the user can fix the typo.

User catalogs (new models and GPUs without code): ``GOODPUT_CATALOG`` (paths separated by
``os.pathsep``) or ``add_catalog(path)`` name YAML files or directories. A directory contributes
its ``models.yaml`` and ``gpus.yaml``; a file holds ``models:`` and/or ``gpus:`` mappings. Their
entries override shipped entries of the same name field by field, later files win. A model entry may say
``hf_config: path/to/config.json`` (relative to its file) and is then imported from that Hugging
Face config (``goodput.sim.catalog.hf``), with any other fields of the entry overriding the import.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path

import yaml

_DATA = Path(__file__).parent
ENV_VAR = "GOODPUT_CATALOG"
MIB = 2**20
_extra: list[Path] = []


@dataclass(frozen=True)
class ModelSpec:
    """Architecture of a decoder-only transformer, enough to derive FLOPs, bytes and KV size."""

    name: str
    layers: int
    hidden_size: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn_size: int  # dense MLP width (MoE: of the dense layers, if any)
    gated_ffn: bool  # SwiGLU-style (3 matrices) vs plain (2 matrices)
    vocab_size: int
    max_context: int
    experts: int = 1  # MoE routed experts per layer (1 = dense)
    experts_top_k: int = 1
    moe_ffn_size: int = 0  # width of one routed expert; 0 = ffn_size (Mixtral)
    shared_ffn_size: int = 0  # total width of always-active shared experts (Qwen2-MoE, DeepSeek)
    dense_layers: int = 0  # MoE models: leading layers with a dense MLP of ffn_size (DeepSeek)
    tied_embeddings: bool = False
    bytes_per_param: int = 2  # weights: bf16/fp16 serving; 1 for FP8 (goodput.sim.catalog.precision)
    #: KV-cache bytes per element; 0 = bytes_per_param (a model's own dtype, vLLM's "auto")
    kv_cache_bytes: int = 0
    aliases: tuple[str, ...] = ()
    source: str = ""

    #: bytes per element of activations (and of the embedding rows gathered per token): 16-bit
    #: in every serving precision modelled here, FP8 weights included (W8A8 quantises GEMM inputs
    #: on the fly; what is stored and moved between layers stays bf16)
    ACTIVATION_BYTES = 2

    # ---- derived quantities (per whole model unless a tp argument is given) ----
    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def is_moe(self) -> bool:
        return self.experts > 1

    @property
    def moe_layers(self) -> int:
        return self.layers - self.dense_layers if self.is_moe else 0

    def attention_params_per_layer(self) -> int:
        return self.hidden_size * (self.q_dim + 2 * self.kv_dim) + self.q_dim * self.hidden_size

    def _mlp(self, width: int) -> int:
        return (3 if self.gated_ffn else 2) * self.hidden_size * width

    def ffn_params_per_expert(self) -> int:
        """One routed expert's MLP (the dense MLP for a dense model)."""
        return self._mlp(self.moe_ffn_size or self.ffn_size)

    def dense_ffn_params(self) -> int:
        """The dense MLP of a dense layer."""
        return self._mlp(self.ffn_size)

    def shared_ffn_params(self) -> int:
        """Always-active (shared-expert) MLP of an MoE layer; 0 without shared experts."""
        return self._mlp(self.shared_ffn_size) if self.shared_ffn_size else 0

    def moe_layer_params(self) -> int:
        """Parameters of one MoE layer: attention, router, routed and shared experts."""
        return (self.attention_params_per_layer() + self.hidden_size * self.experts
                + self.experts * self.ffn_params_per_expert() + self.shared_ffn_params())

    def params_per_layer(self) -> int:
        """Average parameters of one decoder layer (exact for models without dense_layers)."""
        if not self.is_moe:
            return self.attention_params_per_layer() + self.dense_ffn_params()
        dense = self.attention_params_per_layer() + self.dense_ffn_params()
        return (self.dense_layers * dense + self.moe_layers * self.moe_layer_params()) // self.layers

    def active_params_per_layer(self) -> int:
        """Parameters touched per token (MoE: only top-k experts and the shared ones)."""
        if not self.is_moe:
            return self.params_per_layer()
        return (self.attention_params_per_layer() + self.experts_top_k * self.ffn_params_per_expert()
                + self.shared_ffn_params())

    def layer_params_total(self) -> int:
        if not self.is_moe:
            return self.layers * self.params_per_layer()
        dense = self.attention_params_per_layer() + self.dense_ffn_params()
        return self.dense_layers * dense + self.moe_layers * self.moe_layer_params()

    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size * (1 if self.tied_embeddings else 2)

    def param_count(self) -> int:
        return self.layer_params_total() + self.embedding_params()

    def weight_bytes(self, tp: int = 1) -> float:
        """Bytes of weights held by one GPU of a TP group (weights sharded evenly)."""
        # embedding and LM head stay 16-bit under FP8 weight quantisation (as vLLM's fp8 does)
        embed = self.embedding_params() * max(self.bytes_per_param, self.ACTIVATION_BYTES)
        return (self.layer_params_total() * self.bytes_per_param + embed) / tp

    def kv_bytes_per_token(self, tp: int = 1) -> float:
        """KV-cache bytes one token occupies on one GPU of a TP group (K and V, all layers).

        KV heads are split across TP ranks; when tp exceeds kv_heads they are replicated, so a rank
        never holds less than one head.
        """
        heads_per_rank = max(1, self.kv_heads // tp) if self.kv_heads >= tp else 1
        return 2 * self.layers * heads_per_rank * self.head_dim * self.kv_element_bytes

    @property
    def kv_element_bytes(self) -> int:
        return self.kv_cache_bytes or self.bytes_per_param


@dataclass(frozen=True)
class GPUSpec:
    name: str
    #: device memory as the hardware reports it: nvidia-smi ``memory.total``, MiB (2**20 bytes).
    #: A datasheet's "80 GB" of HBM is 80 GiB; the driver shows a little less (H100: 81,559 MiB).
    memory_mib: float
    bf16_tflops: float  # dense BF16 peak, TFLOP/s
    mem_bw_tbs: float  # HBM bandwidth, TB/s
    nvlink_gbs: float  # per-GPU NVLink bandwidth (unidirectional), GB/s; 0 when absent
    pcie_gbs: float  # host link bandwidth (unidirectional), GB/s
    tdp_w: float
    price_per_hour: float  # on-demand USD per GPU-hour
    #: total the CUDA runtime reports (torch ``total_memory`` = cudaMemGetInfo total, what vLLM
    #: multiplies by gpu_memory_utilization), bytes, where measured; 0 = not measured
    cuda_memory_bytes: float = 0.0
    #: dense FP8 tensor-core peak, TFLOP/s; 0 = no FP8 tensor cores (FP8 weights then run
    #: weight-only: 1-byte reads, GEMMs at the BF16 rate)
    fp8_tflops: float = 0.0
    aliases: tuple[str, ...] = ()
    source: str = ""
    memory_source: str = ""

    @property
    def memory_bytes(self) -> float:
        """Bytes an engine sizes its KV cache against: the CUDA total where measured, else the
        nvidia-smi total (which runs 0.3-0.6% above it: H100 81,559 vs 81,079 MiB)."""
        return self.cuda_memory_bytes if self.cuda_memory_bytes > 0 else self.memory_mib * MIB

    @property
    def memory_gb(self) -> float:
        """``memory_bytes`` in decimal GB (1e9 bytes), for display and ordering."""
        return self.memory_bytes / 1e9

    @property
    def memory_gib(self) -> float:
        return self.memory_bytes / 2**30


def _entry(kind: str, cls, name: str, entry: dict, where: Path) -> object:
    entry = dict(entry)
    if kind == "models" and "hf_config" in entry:
        from goodput.sim.catalog.hf import load_hf_config, spec_fields_from_hf

        cfg_path = Path(entry.pop("hf_config"))
        if not cfg_path.is_absolute():
            cfg_path = where.parent / cfg_path
        entry = {**spec_fields_from_hf(load_hf_config(cfg_path)),
                 "source": f"Hugging Face config.json ({cfg_path})", **entry}
    if kind == "gpus" and "memory_gb" in entry and "memory_mib" not in entry:
        # Legacy field: a datasheet's "N GB" of HBM (vendors' GB of memory are GiB).
        entry["memory_mib"] = float(entry.pop("memory_gb")) * 1024
    allowed = {f.name for f in fields(cls)} - {"name"}
    unknown = set(entry) - allowed
    if unknown:
        raise ValueError(f"{where}: entry '{name}' has unknown fields {sorted(unknown)}")
    entry["aliases"] = tuple(entry.get("aliases", ()))
    try:
        return cls(name=name, **entry)
    except TypeError as exc:
        raise ValueError(f"{where}: entry '{name}': {exc}") from exc


def _sections(path: Path) -> list[tuple[str, dict, Path]]:
    """(kind, entries, file) of one catalog path: a directory or a YAML file."""
    if path.is_dir():
        return [(kind, yaml.safe_load((path / f"{kind}.yaml").read_text()) or {}, path / f"{kind}.yaml")
                for kind in ("models", "gpus") if (path / f"{kind}.yaml").exists()]
    if not path.exists():
        raise FileNotFoundError(f"catalog file '{path}' ({ENV_VAR} or add_catalog) does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict) or not set(raw) <= {"models", "gpus"}:
        raise ValueError(f"{path}: a user catalog file holds 'models:' and/or 'gpus:' mappings")
    return [(kind, raw[kind] or {}, path) for kind in ("models", "gpus") if kind in raw]


def catalog_paths() -> list[Path]:
    """User catalog paths in the order they apply: ``GOODPUT_CATALOG``, then ``add_catalog``."""
    env = [Path(p) for p in os.environ.get(ENV_VAR, "").split(os.pathsep) if p.strip()]
    return env + list(_extra)


def _load(kind: str, cls):
    """Shipped entries, then each user file's: a user entry for a known name is merged over the
    known entry's fields (so overriding one field keeps the rest, aliases included)."""
    path = _DATA / f"{kind}.yaml"
    raw: dict[str, tuple[str, dict, Path]] = {
        name.lower(): (name, dict(entry), path)
        for name, entry in yaml.safe_load(path.read_text()).items()}
    for user in catalog_paths():
        for k, entries, where in _sections(user):
            if k != kind:
                continue
            for name, entry in entries.items():
                base = raw.get(name.lower())
                merged = dict(entry) if base is None or "hf_config" in entry else {
                    **base[1], **entry}
                if base is not None and ({"memory_gb", "memory_mib"} & set(entry)
                                         and "cuda_memory_bytes" not in entry):
                    merged.pop("cuda_memory_bytes", None)  # a new total replaces the measured one
                    if "memory_gb" in entry:
                        merged.pop("memory_mib", None)
                raw[name.lower()] = (base[0] if base else name, merged, where)
    return {key: _entry(kind, cls, name, entry, where) for key, (name, entry, where) in raw.items()}


@cache
def models() -> dict[str, ModelSpec]:
    return _load("models", ModelSpec)


@cache
def gpus() -> dict[str, GPUSpec]:
    return _load("gpus", GPUSpec)


def reload() -> None:
    """Forget the loaded catalogs (after ``GOODPUT_CATALOG`` or a user file changed)."""
    models.cache_clear()
    gpus.cache_clear()


def add_catalog(path) -> None:
    """Load a user catalog (file or directory, see the module docstring) over the shipped one.

    The lead's config field ``catalog: [paths]`` should call this for each path before the
    cluster is resolved."""
    p = Path(path)
    _sections(p)  # fail now on a missing or malformed file
    if p not in _extra:
        _extra.append(p)
    reload()


def clear_user_catalogs() -> None:
    """Drop the catalogs given to ``add_catalog`` (``GOODPUT_CATALOG`` still applies)."""
    _extra.clear()
    reload()


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
    """A catalog model, or a precision variant of one (``llama-3.1-8b-fp8``, ``-kvfp8``,
    ``-fp8-kvfp8``: goodput.sim.catalog.precision) when no entry has that exact name."""
    try:
        return _lookup(models(), name, "model", "model")
    except ValueError:
        from goodput.sim.catalog.precision import split_variant, with_precision

        base, suffix = split_variant(name)
        if not suffix:
            raise
        return with_precision(_lookup(models(), base, "model", "model"), suffix)


def get_gpu(name: str) -> GPUSpec:
    return _lookup(gpus(), name, "GPU", "gpu")
