"""ladder: a compiler for low-bit neural networks.

    import ladder
    g = ladder.parse("model.lir")                  # or text, or ladder.Builder(...)
    out = ladder.run(g, {"x": x}, weights)        # the reference interpreter
    g2 = ladder.PassManager("canonicalize").run(g)
"""

from __future__ import annotations

import os
from pathlib import Path

from . import types
from .builder import Builder
from .compile import CompiledModule, compile
from .errors import (LadderError, Location, ParseError, PipelineError, RuntimeFailure, TypeRangeError,
                     VerifyError, WeightsError)
from .interpreter import run
from .ir import Graph, Op, Value
from .llm import LLM
from .passes import Pass, PassManager, register_pass
from .types import DTYPES, DType, TensorType, dtype, tensor_type
from .verifier import verify

__version__ = "0.1.0"

__all__ = [
    "Builder", "CompiledModule", "compile", "DTYPES", "DType", "Graph", "LadderError", "LLM", "Location", "Op", "ParseError", "Pass",
    "PassManager", "PipelineError", "RuntimeFailure", "TensorType", "TypeRangeError", "Value", "VerifyError",
    "WeightsError", "dtype", "parse", "register_pass", "run", "tensor_type", "types", "verify",
]


def parse(source: str | os.PathLike, filename: str | None = None) -> Graph:
    """Parse .lir text, or the file at ``source`` when it is a path (a Path, or a string without a newline
    that names an existing file or ends in .lir)."""
    from .frontends import text

    if isinstance(source, os.PathLike) or (
        isinstance(source, str) and "\n" not in source and (source.endswith(".lir") or _is_file(source))
    ):
        return text.parse_file(source)
    return text.parse(source, filename or "<string>")


def _is_file(name: str) -> bool:
    try:
        return Path(name).is_file()
    except (OSError, ValueError):  # a name too long for the OS, or holding a NUL
        return False
