"""Workload: load real LLM-serving traces, synthesize new ones, summarise and convert them.

Everything produces a `Trace` in the canonical schema (`schema.REQUIRED` / `schema.OPTIONAL`),
so the simulator never sees a source-specific column. See docs/traces.md for the columns and rules,
traces/README.md for the formats.
"""
from .arrivals import ARRIVALS, arrival_times
from .formats import FORMATS, SIGNATURES
from .generators import rescale, synthesize, synthesize_chunks, time_slice
from .lengths import Empirical, Fixed, LengthDist, LogNormal, Uniform, parse_length_dist
from .loaders import load_lengths, load_trace, save_trace, write_chunks
from .schema import OPTIONAL, PREFIX_BLOCK_TOKENS, RAG_COLUMNS, REQUEST_KINDS, REQUIRED, Trace, TraceError
from .sessions import mooncake_like, save_mooncake
from .stats import format_stats, prefix_sharing, print_stats, trace_stats

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
