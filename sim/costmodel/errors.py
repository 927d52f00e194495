"""Provenance and error estimate of every prediction, from held-out measurement.

Every cost model's ``describe()`` carries two keys built here:

* ``provenance``: one line saying where the numbers come from (measured profile, calibrated or
  plain roofline; measured or estimated all-reduce; own, carried or no engine term);
* ``error_estimate``: ``{"pct": P, "basis": ..., "label": "measured profile, +-5%"}`` where
  ``P`` is a P95 absolute percentage error of a *held-out* comparison:

  - measured profile: the fit's held-out P95 (fit.json ``heldout_error``, per-layer time); with
    the GPU's own engine term, the larger of that and the term's held-out P95 on whole
    iterations of real serving runs it was not fitted on (engine.json ``heldout``, written by
    ``goodput fidelity calibrate --holdout``: other models, other sessions), which is what a
    simulated iteration is off by;
  - calibrated roofline: the leave-one-GPU-out P95 of calibration.json (iteration time, fitted
    on the other GPU, scored on this one), per phase where recorded;
  - plain roofline: the uncalibrated priors' P95 against the same profiles;
  - TP above 2 without a measured table of that GPU and degree: the all-reduce rule is not
    checked against any measurement; the label says ``unvalidated`` and ``pct`` adds the share
    of the iteration the estimated collectives take, as a bound on what a wrong floor could
    shift. With a table (``tp<k>.graph.csv`` preferred) the provenance says ``measured (graph)``
    or ``measured (eager, >= X MiB)`` instead; ``describe()["allreduce"]["by_tp"]`` lists the
    status of every TP degree.

Nothing here is tuned: the numbers are read from the files the fits wrote.
"""
from __future__ import annotations

import json

from goodput.sim.costmodel.base import Batch
from goodput.sim.costmodel.profile_store import PROFILES_ROOT

#: a typical decode batch the collectives share is evaluated on (8 sequences of 2k context)
_PROBE = Batch.decode([2048] * 8)


def _calibration(root=None) -> dict | None:
    path = (root or PROFILES_ROOT) / "calibration.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())


def _collective_share(cm) -> float:
    """Share of a typical decode iteration spent in the (estimated) all-reduces."""
    try:
        total = cm.batch_time(_PROBE)
        return cm._allreduce_time(_PROBE.total_new_tokens) / total if total > 0 else 0.0
    except (AttributeError, ValueError):
        return 0.0


def _label(kind: str, pct: float | None, extra: str = "") -> str:
    s = f"{kind}, +-{pct:.0f}%" if pct is not None else f"{kind}, error unknown"
    return s + (f"; {extra}" if extra else "")


def _precision_note(model) -> str:
    """What the error estimate does not cover for an FP8 variant (goodput.sim.catalog.precision): the
    calibration fitted 16-bit kernels only, so FP8 GEMM and attention efficiencies are assumed
    equal to the 16-bit ones."""
    parts = [what for what, on in (("FP8 weights", model.bytes_per_param == 1),
                                   ("FP8 KV cache", model.kv_element_bytes == 1)) if on]
    if not parts:
        return ""
    return f"{' and '.join(parts)} unmeasured (efficiencies of 16-bit kernels assumed)"


def roofline_error(cm) -> dict:
    cal = getattr(cm, "calibration", None)
    gpu, tp = cm.gpu.name, cm.tp
    if cal is not None:
        err = cal.get("error", {})
        held = err.get(f"leave_out_{gpu}") or {}
        others = [v for k, v in err.items() if k.startswith("leave_out_") and isinstance(v, dict)]
        if held:
            basis = f"calibration.json leave_out_{gpu}: fitted without {gpu}, P95 on its profiles"
            pct = held.get("p95_pct")
        else:
            basis = "calibration.json: worst leave-one-GPU-out P95 (this GPU was never measured)"
            pct = max((v.get("p95_pct", 0.0) for v in others), default=None)
        kind = f"roofline calibrated on {','.join(cal.get('gpus', []))}"
        phases = cal.get("error_by_phase", {}).get(f"leave_out_{gpu}") if held else None
    else:
        pri = ((_calibration() or {}).get("error") or {}).get("uncalibrated_priors") or {}
        pct, basis, kind, phases = (pri.get("p95_pct"),
                                    "calibration.json uncalibrated_priors: P95 on the profiles",
                                    "plain roofline (uncalibrated priors)", None)
    extra = ""
    if tp > 2 and not cm.allreduce.is_measured(tp):
        share = _collective_share(cm)
        extra = (f"TP{tp} collectives estimated (rule from {cm.allreduce.measured_on}), "
                 f"unvalidated; they are {share:.0%} of a typical decode iteration")
        pct = (pct or 0.0) + 100 * share
    precision = _precision_note(cm.model)
    if precision:
        extra = f"{extra}; {precision}" if extra else precision
    out = {"pct": pct, "basis": basis, "label": _label(kind + f" at TP{tp}", pct, extra)}
    if phases:
        out["by_phase"] = phases
    prov = f"{kind}; all-reduce {cm.allreduce.status(tp) if tp > 1 else 'none'}; " + (
        f"engine {cm.engine.name}" if cm.engine is not None else "host = iteration_overhead_s")
    return {"provenance": prov, "error_estimate": out}


def _engine_heldout(engine) -> dict | None:
    """The engine term's held-out whole-iteration error, when fitted on this GPU's own runs."""
    if engine is None or (engine.info or {}).get("carried_from"):
        return None
    return (engine.info or {}).get("heldout")


def profiled_error(cm) -> dict:
    f = cm.fit
    held = f.get("heldout_error") or {}
    pct = held.get("p95_pct")
    basis = "fit.json heldout_error: P95 of the held-out 20% of the profile's batches (per-layer time)"
    extra = []
    served = _engine_heldout(cm.engine)
    if served and served.get("p95_ape_pct") is not None:
        it_pct = float(served["p95_ape_pct"])
        extra.append(f"whole iterations +-{it_pct:.0f}% against real serving runs the engine "
                     "term never saw")
        if pct is None or it_pct > pct:
            pct = it_pct
            basis = ("engine.json heldout: P95 |error| of whole iterations of held-out real "
                     f"serving runs ({', '.join(served.get('on', []))}), kernels and engine term")
    if cm.tp > 1 and cm.collectives is None:
        extra.append("all-reduce estimated (measured-floor rule)")
    elif cm.tp > 1:
        extra.append(f"all-reduce {cm.collectives.kind()}")
    if cm.engine is not None and (cm.engine.info or {}).get("carried_from"):
        extra.append(f"engine term carried from {cm.engine.info['carried_from']} (no fidelity run "
                     "on this GPU)")
    elif cm.engine is None:
        extra.append("no engine term (profile host loop only)")
    label = _label(f"measured profile {f['gpu']}/{f['model']}/tp{cm.tp}", pct, "; ".join(extra))
    engine = cm.engine.name if cm.engine is not None else "profile host term"
    out = {"pct": pct, "basis": basis, "label": label}
    if served:
        out["by_kind"] = served.get("by_kind", {})
    return {"provenance": f"{cm.source}; engine {engine}", "error_estimate": out}


__all__ = ["profiled_error", "roofline_error"]
