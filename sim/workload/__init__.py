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
    "ARRIVALS", "FORMATS", "SIGNATURES", "OPTIONAL", "REQUEST_KINDS", "REQUIRED",
    "Trace", "TraceError", "load_trace", "load_lengths", "save_trace", "write_chunks",
    "synthesize", "synthesize_chunks", "rescale", "time_slice", "arrival_times",
    "parse_length_dist", "LengthDist", "Fixed", "Uniform", "LogNormal", "Empirical",
    "trace_stats", "format_stats", "print_stats",
]
