"""``NAME=V1,V2`` flag values (``--search``, ``--sweep``), parsed one way for every flag that takes them.

Why a module of its own: both the design search (planner.design_space) and the frontier sweep
(planner.sweep) take repeatable ``NAME=list`` items and must reject the same mistakes with the
same kind of line (no ``=``, an unknown name, an empty list), naming the flag."""
from __future__ import annotations

from goodput.planner.errors import PlannerError


def parse_assignments(items: list[str] | None, flag: str, names, kind: str, placeholder: str,
                      hint: str = "") -> dict[str, list[str]]:
    """``['a=1,2', 'b=x', 'a=3']`` -> ``{'a': ['1', '2', '3'], 'b': ['x']}``; ``names`` are the
    allowed keys (lower case), ``kind`` what one is called in messages (dimension, parameter) and
    ``placeholder`` its name in the usage line (DIM, PARAM)."""
    out: dict[str, list[str]] = {}
    for item in items or []:
        if "=" not in item:
            raise PlannerError(f"{flag} expects {placeholder}=V1,V2 with {placeholder} one of "
                               f"{sorted(names)}; got {item!r}")
        k, v = item.split("=", 1)
        k = k.strip().lower()
        if k not in names:
            raise PlannerError(f"{flag} {k!r}: unknown {kind}; use one of {sorted(names)}{hint}")
        got = [x.strip() for x in v.split(",") if x.strip()]
        if not got:
            raise PlannerError(f"{flag} {k}: give at least one value")
        out.setdefault(k, []).extend(got)
    return out
