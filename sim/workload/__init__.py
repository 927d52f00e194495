"""Workload: load real LLM-serving traces, synthesize new ones, summarise and convert them.

Everything produces a `Trace` in the canonical schema (`schema.REQUIRED` / `schema.OPTIONAL`),
so the simulator never sees a source-specific column. See docs/traces.md for the columns and rules,
traces/README.md for the formats.
"""
from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names with their types, for checkers; at run time they come lazily
    from .arrivals import ARRIVALS, arrival_times
    from .formats import FORMATS, SIGNATURES
    from .generators import rescale, synthesize, synthesize_chunks, time_slice
    from .lengths import Empirical, Fixed, LengthDist, LogNormal, Uniform, parse_length_dist
    from .loaders import load_lengths, load_trace, save_trace, write_chunks
    from .schema import OPTIONAL, PREFIX_BLOCK_TOKENS, RAG_COLUMNS, REQUEST_KINDS, REQUIRED, Trace, TraceError
    from .sessions import mooncake_like, save_mooncake
    from .stats import format_stats, prefix_sharing, print_stats, trace_stats

#: public name -> the module of this package that defines it; imported on first use, so that
#: importing a light submodule (``goodput.sim.workload.format_names``, the CLI) does not load pandas
_WHERE = {
    "ARRIVALS": "arrivals", "arrival_times": "arrivals",
    "FORMATS": "formats", "SIGNATURES": "formats",
    "rescale": "generators", "synthesize": "generators", "synthesize_chunks": "generators",
    "time_slice": "generators",
    "Empirical": "lengths", "Fixed": "lengths", "LengthDist": "lengths", "LogNormal": "lengths",
    "Uniform": "lengths", "parse_length_dist": "lengths",
    "load_lengths": "loaders", "load_trace": "loaders", "save_trace": "loaders",
    "write_chunks": "loaders",
    "OPTIONAL": "schema", "PREFIX_BLOCK_TOKENS": "schema", "RAG_COLUMNS": "schema",
    "REQUEST_KINDS": "schema", "REQUIRED": "schema", "Trace": "schema", "TraceError": "schema",
    "mooncake_like": "sessions", "save_mooncake": "sessions",
    "format_stats": "stats", "prefix_sharing": "stats", "print_stats": "stats",
    "trace_stats": "stats",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'goodput.sim.workload' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "ARRIVALS",
    "FORMATS",
    "OPTIONAL",
    "PREFIX_BLOCK_TOKENS",
    "RAG_COLUMNS",
    "REQUEST_KINDS",
    "REQUIRED",
    "SIGNATURES",
    "Empirical",
    "Fixed",
    "LengthDist",
    "LogNormal",
    "Trace",
    "TraceError",
    "Uniform",
    "arrival_times",
    "format_stats",
    "load_lengths",
    "load_trace",
    "mooncake_like",
    "parse_length_dist",
    "prefix_sharing",
    "print_stats",
    "rescale",
    "save_mooncake",
    "save_trace",
    "synthesize",
    "synthesize_chunks",
    "time_slice",
    "trace_stats",
    "write_chunks",
]
