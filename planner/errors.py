"""The one exception type the planner raises for unusable input or an impossible plan.

It subclasses ValueError so ``goodput``'s CLI (which reports ValueError as a clean one-line
error) shows it without a traceback; the message always names the slice, GPU or field at fault
and the limit that binds.
"""
from __future__ import annotations


class PlannerError(ValueError):
    """Planning cannot proceed; the message says which slice/GPU/field and which limit."""
