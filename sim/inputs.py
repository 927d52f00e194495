"""Turn the ``trace`` section of a config into the request stream the simulator replays."""
from __future__ import annotations

from goodput.sim.config import ConfigError, TraceConfig
from goodput.sim.workload.generators import rescale, synthesize, synthesize_chunks, time_slice
from goodput.sim.workload.loaders import load_trace
from goodput.sim.workload.schema import Trace, TraceError

#: synthetic traces larger than this are streamed in chunks instead of being materialised
STREAM_THRESHOLD = 200_000


def build_trace(cfg: TraceConfig, seed: int = 0, **load_opts):
    """Return (requests, count): a Trace, or an iterator of DataFrame chunks for huge synthetic runs.

    ``load_opts`` (``sort``, ``zero_tokens``: ``goodput simulate --sort / --zero-tokens``) go to
    ``load_trace`` for a trace file."""
    if cfg.path:
        try:
            trace = load_trace(cfg.path, cfg.format, **load_opts)
        except TraceError as exc:
            if "no timestamps" not in str(exc) or cfg.rate is None:
                raise
            # a length-only trace: arrivals are synthesized at trace.rate
            trace = load_trace(cfg.path, cfg.format, rate=cfg.rate, arrival=cfg.arrival,
                               cv=cfg.cv if cfg.arrival == "gamma" else None, seed=seed, **load_opts)
        if cfg.start_s is not None or cfg.end_s is not None:
            trace = time_slice(trace, cfg.start_s or 0.0, cfg.end_s)
        if cfg.rate is not None and "arrivals" not in trace.meta and len(trace) > 1:
            trace = rescale(trace, rate=cfg.rate)
        if cfg.max_requests is not None:
            trace = Trace(trace.df.iloc[: cfg.max_requests].copy(), trace.source, trace.format, trace.meta)
        return trace, len(trace)
    if cfg.rate is None:
        raise ConfigError("trace.rate is required for a synthetic trace (no trace.path given): "
                          "set the request rate in req/s, e.g. --rate 5")
    n = cfg.max_requests or cfg.num_requests
    if n > STREAM_THRESHOLD:
        return synthesize_chunks(n, cfg.rate, cfg.prompt, cfg.output, cfg.arrival, cfg.cv, seed), n
    return synthesize(n, cfg.rate, cfg.prompt, cfg.output, cfg.arrival, cfg.cv, seed), n
