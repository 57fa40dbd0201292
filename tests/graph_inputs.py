"""Declaring a test graph's inputs in one line."""

from __future__ import annotations

from ladder import Builder
from ladder.ir import Value


def declare_inputs(b: Builder, **types: str) -> list[Value]:
    """One input of ``b`` per keyword, in order: ``x, w = declare_inputs(b, x="f32[2, 4]", w="i8[4]")``."""
    return [b.input(name, ty) for name, ty in types.items()]
