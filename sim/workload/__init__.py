"""Workload: load real LLM-serving traces, synthesize new ones, summarise and convert them.

Everything produces a `Trace` in the canonical schema (`schema.REQUIRED` / `schema.OPTIONAL`),
so the simulator never sees a source-specific column. See traces/README.md for the formats.
"""
from .arrivals import ARRIVALS, arrival_times
from .formats import FORMATS, SIGNATURES
from .generators import rescale, synthesize, synthesize_chunks, time_slice
from .lengths import Empirical, Fixed, LengthDist, LogNormal, Uniform, parse_length_dist
from .loaders import load_lengths, load_trace, save_trace, write_chunks
from .schema import OPTIONAL, REQUEST_KINDS, REQUIRED, Trace, TraceError
from .stats import format_stats, print_stats, trace_stats

__all__ = [
    "ARRIVALS",
    "FORMATS",
    "OPTIONAL",
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
    "parse_length_dist",
    "print_stats",
    "rescale",
    "save_trace",
    "synthesize",
    "synthesize_chunks",
    "time_slice",
    "trace_stats",
    "write_chunks",
]
