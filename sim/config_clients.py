"""Config sections of the request drivers: clients (open or closed loop, think time) and the
retrieval service of ``rag`` requests (docs/compound.md).

Kept out of ``goodput.sim.config`` (which only points at these classes) so the request drivers own their
settings, as batching policies own theirs; ``check_clients`` checks their meaning before a run,
one line naming the field and the fix, like ``goodput.sim.config_checks``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

CLIENT_MODES = ("open", "closed")
THINK_DISTRIBUTIONS = ("fixed", "exponential")
LATENCY_DISTRIBUTIONS = ("fixed", "lognormal", "exponential")


@dataclass
class ClientsConfig:
    """Who sends the requests.

    ``open`` replays the trace's arrival times (a session's later turns also wait for the previous
    reply plus a think time); ``closed`` runs ``concurrency`` clients that each send their next
    trace row when their previous request ended, after a think time, ignoring ``arrival_s`` (the
    closed-loop mode of benchmark tools: vLLM's ``--max-concurrency``, LLMPerf's concurrent
    requests)."""

    mode: str = "open"
    #: closed loop: clients sending at once (each has at most one request outstanding)
    concurrency: int = 1
    #: think time between a reply and the next request (a trace row's ``think_time_s`` wins)
    think_time_s: float = 0.0
    #: fixed (always ``think_time_s``) | exponential (mean ``think_time_s``, seeded)
    think: str = "fixed"
    seed: int = 0


@dataclass
class RetrievalConfig:
    """The retrieval service every ``rag`` request calls once per round: ``concurrency``
    retrievals in service at once (FIFO queue beyond), each taking a seeded random latency."""

    #: fixed | lognormal | exponential
    latency: str = "fixed"
    #: fixed: the latency; lognormal: its median; exponential: its mean (seconds)
    latency_s: float = 0.05
    #: lognormal: standard deviation of log(latency)
    sigma: float = 0.5
    #: retrievals served at once (a vector database's worker pool); None = unlimited
    concurrency: int | None = None
    seed: int = 0


def check_clients(cfg) -> None:
    """ConfigError for the first meaningless value of ``clients``, ``retrieval`` or
    ``slo.e2e_s`` (called by ``goodput.sim.simulator.simulate`` beside ``check_config``)."""
    from goodput.sim.config import ConfigError  # here: goodput.sim.config imports this module

    c = cfg.clients
    if c.mode not in CLIENT_MODES:
        raise ConfigError(f"clients.mode={c.mode!r}: use open (replay arrival_s) or closed "
                          "(clients.concurrency clients sending back to back)")
    if c.mode == "closed" and c.concurrency < 1:
        raise ConfigError(f"clients.concurrency={c.concurrency!r}: a closed loop needs at least 1 "
                          "client; set clients.concurrency >= 1")
    if not (c.think_time_s >= 0 and math.isfinite(c.think_time_s)):
        raise ConfigError(f"clients.think_time_s={c.think_time_s!r}: must be a finite number of "
                          "seconds >= 0 (0 = the next request right after the reply)")
    if c.think not in THINK_DISTRIBUTIONS:
        raise ConfigError(f"clients.think={c.think!r}: use fixed or exponential "
                          "(mean clients.think_time_s)")
    r = cfg.retrieval
    if r.latency not in LATENCY_DISTRIBUTIONS:
        raise ConfigError(f"retrieval.latency={r.latency!r}: use one of "
                          f"{', '.join(LATENCY_DISTRIBUTIONS)}")
    if not (r.latency_s >= 0 and math.isfinite(r.latency_s)) or (
            r.latency != "fixed" and r.latency_s == 0):
        low = ">= 0" if r.latency == "fixed" else "> 0"
        what = {"fixed": "latency", "lognormal": "median", "exponential": "mean"}[r.latency]
        raise ConfigError(f"retrieval.latency_s={r.latency_s!r}: must be a finite number of seconds "
                          f"{low} (the {r.latency} distribution's {what})")
    if r.latency == "lognormal" and not (r.sigma >= 0 and math.isfinite(r.sigma)):
        raise ConfigError(f"retrieval.sigma={r.sigma!r}: the lognormal's log-space standard "
                          "deviation must be a finite number >= 0 (0.5 is typical)")
    if r.concurrency is not None and r.concurrency < 1:
        raise ConfigError(f"retrieval.concurrency={r.concurrency!r}: must be >= 1 retrievals at "
                          "once, or left out for no limit")
    e2e = cfg.slo.e2e_s
    if e2e is not None and not (e2e > 0 and math.isfinite(e2e)):
        raise ConfigError(f"slo.e2e_s={e2e!r}: must be a finite number of seconds > 0 "
                          "(leave it out for no whole-request bound)")
