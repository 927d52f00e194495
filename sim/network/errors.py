"""The one error the network package raises for bad input.

A subclass of ``ValueError`` so callers that already catch configuration errors (the CLI turns
``ValueError`` into one clear line) need no new handler, while tests and the config checker can
catch network mistakes specifically.
"""
from __future__ import annotations


class NetworkConfigError(ValueError):
    """A link, topology or transfer parameter is invalid; the message names the field and the fix."""
