"""What the optional compiled build (``make compiled``, mypyc) reads from the source, without
making mypy_extensions a dependency of the pure-Python package.

``mypyc_attr(allow_interpreted_subclasses=True)`` on a compiled class lets plugins and tests
subclass it from ordinary Python; interpreted, the decorator is the identity.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

try:
    from mypy_extensions import mypyc_attr
except ImportError:  # not installed (mypy brings it): nothing to tell a compiler
    def mypyc_attr(*_attrs: str, **_flags: Any) -> Callable[[T], T]:  # type: ignore[misc]
        return lambda cls: cls
