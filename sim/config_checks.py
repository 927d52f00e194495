"""Value checks of a whole run configuration, before anything is built or simulated.

The loader (``goodput.sim.config``) checks structure and types; this checks meaning: numbers in range,
no NaN, events that name instances that will exist at their time. One pass, the first problem as
one line naming the dotted field and what would be valid, so a bad setting never costs a
simulation (or, worse, runs and gives a number: a negative activation reserve used to double the
KV cache).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from goodput.sim.config import ConfigError, SimConfig
from goodput.sim.pool_checks import check_pools


def _nan_fields(obj: Any, path: str):
    """Dotted paths of every NaN float anywhere in a config tree."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            yield from _nan_fields(getattr(obj, f.name), f"{path}.{f.name}" if path else f.name)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _nan_fields(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _nan_fields(v, f"{path}[{i}]")
    elif isinstance(obj, float) and obj != obj:
        yield path


def _at_least(value: float | int | None, low: float, field: str, strict: bool = False,
              hint: str = "") -> None:
    if value is None:
        return
    bad = value <= low if strict else value < low
    if bad or (isinstance(value, float) and math.isinf(value)):
        op = ">" if strict else ">="
        raise ConfigError(f"{field}={value!r}: must be a finite number {op} {low:g}{hint}")


#: most instances one run may hold (cluster counts plus scale-outs): 100,000 took minutes just to
#: build, for a question a representative slice of the cluster answers in seconds
MAX_INSTANCES = 10_000


def _fraction(value: float, field: str, open_low: bool = False, open_high: bool = False) -> None:
    low_ok = value > 0 if open_low else value >= 0
    high_ok = value < 1 if open_high else value <= 1
    if not (low_ok and high_ok):
        lo, hi = "(0" if open_low else "[0", "1)" if open_high else "1]"
        raise ConfigError(f"{field}={value!r}: must be a fraction in {lo}, {hi} (write 0.9 for 90%)")


def check_config(cfg: SimConfig) -> None:
    """Raise ConfigError for the first meaningless value in ``cfg`` (see the module docstring)."""
    for path in _nan_fields(cfg, ""):
        raise ConfigError(f"{path} is NaN: give a number (or leave the field out for its default)")
    for g, group in enumerate(cfg.cluster):
        _at_least(group.tp, 1, f"cluster[{g}].tp")
        _at_least(group.pp, 1, f"cluster[{g}].pp")
        _at_least(group.count, 1, f"cluster[{g}].count")
    total = (sum(g.count * max(1, g.pp) for g in cfg.cluster)  # a PP instance is pp engines
             + sum(e.action == "scale_out" for e in cfg.events))
    if total > MAX_INSTANCES:
        big = max(range(len(cfg.cluster)), key=lambda g: cfg.cluster[g].count)
        raise ConfigError(f"cluster[{big}].count={cfg.cluster[big].count}: {total} instances in "
                          f"all, more than the {MAX_INSTANCES} one run simulates; simulate a "
                          "representative part (fewer instances on a proportionally thinned "
                          "trace, e.g. trace.rate scaled down as much)")
    s = cfg.scheduler
    _at_least(s.activation_reserve_gb, 0, "scheduler.activation_reserve_gb")
    _at_least(s.swap_space_gb, 0, "scheduler.swap_space_gb")
    _at_least(s.host_link_gbs, 0, "scheduler.host_link_gbs", strict=True,
              hint=" (GB/s; leave it out for the GPU's PCIe bandwidth)")
    _at_least(s.block_size, 1, "scheduler.block_size")
    _at_least(s.max_batch_size, 1, "scheduler.max_batch_size")
    _at_least(s.max_batched_tokens, 1, "scheduler.max_batched_tokens",
              hint=" (leave it out for max(model context, 2048))")
    _at_least(s.num_gpu_blocks, 1, "scheduler.num_gpu_blocks",
              hint=" (leave it out to size the KV cache from memory)")
    _fraction(s.gpu_memory_utilization, "scheduler.gpu_memory_utilization", open_low=True)
    _fraction(s.watermark, "scheduler.watermark", open_high=True)
    r = cfg.router
    _at_least(r.migration_interval_s, 0, "router.migration_interval_s", strict=True)
    _at_least(r.max_stages, 1, "router.max_stages")
    _at_least(r.priority_headroom, 0, "router.priority_headroom")
    for name in ("migrate_out_freeness", "migrate_in_freeness"):
        _at_least(getattr(r, name), 0, f"router.{name}",
                  hint=" (free KV blocks per request hosted)")
    _at_least(r.link.bandwidth_gbs, 0, "router.link.bandwidth_gbs", strict=True)
    _at_least(r.link.latency_s, 0, "router.link.latency_s")
    _at_least(r.link.jitter_s, 0, "router.link.jitter_s")
    _at_least(cfg.output.timeseries_interval_s, 0, "output.timeseries_interval_s",
              hint=" (seconds between samples; 0 samples at every iteration boundary)")
    _at_least(cfg.slo.ttft_s, 0, "slo.ttft_s", strict=True, hint=" seconds (leave it out for no bound)")
    _at_least(cfg.slo.tpot_s, 0, "slo.tpot_s", strict=True, hint=" seconds (leave it out for no bound)")
    target = cfg.slo.attainment_target
    if not 0 < target <= 1:
        raise ConfigError(f"slo.attainment_target={target!r}: must be a fraction in (0, 1] "
                          "(write 0.9 for 90%)")
    t = cfg.trace
    _at_least(t.max_requests, 1, "trace.max_requests", hint=" (leave it out to replay every request)")
    _at_least(t.rate, 0, "trace.rate", strict=True, hint=" (requests per second)")
    _at_least(t.num_requests, 1, "trace.num_requests")
    _at_least(t.cv, 0, "trace.cv", strict=True, hint=" (coefficient of variation of gaps)")
    _at_least(t.start_s, 0, "trace.start_s")
    if t.end_s is not None:
        _at_least(t.end_s, t.start_s or 0.0, "trace.end_s", strict=True,
                  hint=" (seconds; after trace.start_s)")
    if cfg.max_sim_time_s is not None:
        _at_least(cfg.max_sim_time_s, 0, "max_sim_time_s", strict=True,
                  hint=" (simulated seconds; leave it out to run until every request ends)")
    _check_events(cfg)
    check_pools(cfg)


def _check_events(cfg: SimConfig) -> None:
    """Event times are finite and >= 0; an event names an instance that exists by then
    (scale-outs before it count); draining and failed instances leave at least one instance
    taking requests; fault events fit the cluster (docs/reliability.md, fault injection)."""
    exists = sum(g.count for g in cfg.cluster)
    out: set[int] = set()  # draining or failed
    failed: set[int] = set()
    pools = any(g.role == "prefill" for g in cfg.cluster)
    llumnix = cfg.router.name == "llumnix"
    order = sorted(range(len(cfg.events)), key=lambda n: (cfg.events[n].time_s, n))
    for n in order:
        ev = cfg.events[n]
        _at_least(ev.time_s, 0, f"events[{n}].time_s")
        at = f"events[{n}]"
        if ev.action == "scale_out":
            if not 0 <= ev.group < len(cfg.cluster):
                raise ConfigError(f"{at}.group {ev.group} does not exist (cluster has "
                                  f"{len(cfg.cluster)} groups: 0..{len(cfg.cluster) - 1})")
            exists += 1
            continue
        if ev.action not in EVENT_ACTIONS:
            raise ConfigError(f"{at}.action must be one of {', '.join(EVENT_ACTIONS)}, got '{ev.action}'")
        if ev.action.endswith("_link"):
            _check_link_event(ev, at, pools, llumnix)
            continue
        if not 0 <= ev.instance < exists:
            raise ConfigError(f"{at}.instance {ev.instance} does not exist at "
                              f"t={ev.time_s:g} s (instances 0..{exists - 1} by then)")
        if ev.action == "slow":
            _at_least(ev.factor, 0, f"{at}.factor", strict=True,
                      hint=" (iteration time multiplier: 2 = twice as slow, 1 restores)")
        elif ev.action == "recover":
            if ev.instance not in failed:
                raise ConfigError(f"{at}: instance {ev.instance} recovers at t={ev.time_s:g} s "
                                  "but has not failed before; add a 'fail' event first")
            failed.discard(ev.instance)
            out.discard(ev.instance)
        else:  # drain or fail
            if ev.action == "fail":
                if pools or llumnix:
                    raise ConfigError(f"{at}: instance failures are modelled for colocated clusters "
                                      "without live migration; not with prefill/decode pools or llumnix")
                failed.add(ev.instance)
            out.add(ev.instance)
            if len(out) >= exists:
                raise ConfigError(f"{at}: {ev.action} of instance {ev.instance} at t={ev.time_s:g} s "
                                  "leaves no instance to take requests; scale out first, recover "
                                  "one, or stop fewer")


EVENT_ACTIONS = ("drain", "scale_out", "fail", "recover", "slow", "degrade_link", "partition_link",
                 "restore_link")


def _check_link_event(ev, at: str, pools: bool, llumnix: bool) -> None:
    if ev.action == "degrade_link" and not 0 < ev.factor <= 1:
        raise ConfigError(f"{at}.factor={ev.factor!r}: a degraded link keeps a fraction (0, 1] of "
                          "its bandwidth; use partition_link to cut it")
    if pools:
        if not ev.links:
            raise ConfigError(f"{at}.links: name the fabric links (ids like n0.nic0.tx, or node:N)")
        return
    if not llumnix:
        raise ConfigError(f"{at}: link events need a network: prefill/decode pools (their fabric) "
                          "or the llumnix router (its live-migration link)")
    if ev.action == "partition_link" or ev.links:
        raise ConfigError(f"{at}: the live-migration link can only be degraded or restored as a "
                          "whole (leave links empty); partitions are modelled on the pools' fabric")
