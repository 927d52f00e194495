"""What the placement search measures and combines: one phase's capacity per (tp, pp)
candidate, a design of prefill + decode instances, and a verification's attainments."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PhaseCapacity:
    phase: str  # prefill | decode
    gpu: str
    tp: int
    rate: float  # req/s one instance sustains (0: misses at every probed rate)
    limit: str = ""  # why the search stopped where it did ('' = bracketed normally)
    probes: list = field(default_factory=list)  # [rate, attainment]
    pp: int = 1

    @property
    def gpus(self) -> int:
        return self.tp * self.pp

    @property
    def per_gpu(self) -> float:
        return self.rate / self.gpus

    @property
    def name(self) -> str:
        return f"{self.gpu} tp{self.tp}" + (f" pp{self.pp}" if self.pp > 1 else "")


@dataclass
class Design:
    prefill: PhaseCapacity
    decode: PhaseCapacity
    n_prefill: int
    n_decode: int

    @property
    def gpus(self) -> int:
        return self.n_prefill * self.prefill.gpus + self.n_decode * self.decode.gpus

    @property
    def rate(self) -> float:
        """Rate the design sustains by the per-phase capacities (req/s)."""
        return min(self.n_prefill * self.prefill.rate, self.n_decode * self.decode.rate)

    @property
    def per_gpu(self) -> float:
        return self.rate / self.gpus

    def text(self) -> str:
        return (f"{self.n_prefill} x prefill {self.prefill.name} + "
                f"{self.n_decode} x decode {self.decode.name} ({self.gpus} GPUs)")


@dataclass
class Check:
    rate: float
    attainment: float  # both bounds
    ttft_attainment: float
    tpot_attainment: float
    ttft_p90: float
    tpot_p90: float

    def meets(self, target: float) -> bool:
        return self.attainment >= target
