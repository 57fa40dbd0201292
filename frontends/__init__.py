"""Frontends: ways into a ladder Graph (installed as ``ladder.frontends``).

* ``text``: the .lir text format, parsed with lark;
* ``onnx``: ONNX models (extra ``onnx``);
* ``gguf``: GGUF files of the llama.cpp world (extra ``gguf``);
* ``hf``: Hugging Face model folders (config.json + safetensors), chosen for a folder.

``load(path)`` picks one by the file's suffix and returns the graph with the weights the file holds
(none for .lir, whose params are read from a separate safetensors file).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from ladder.errors import LadderError
from ladder.ir import Graph

SUFFIXES = {".lir": "text", ".onnx": "onnx", ".gguf": "gguf"}
EXTRAS = {"onnx": "onnx", "gguf": "gguf"}


def load(path: str | os.PathLike, shapes: Mapping[str, tuple[int, ...]] | None = None
         ) -> tuple[Graph, dict[str, np.ndarray]]:
    """(graph, weights) from a .lir, .onnx or .gguf file. ``shapes`` fixes symbolic input dimensions."""
    if Path(path).is_dir():  # a Hugging Face model folder (config.json + safetensors)
        from . import hf

        return hf.load(path, shapes=shapes)
    kind = SUFFIXES.get(Path(path).suffix.lower())
    if kind is None:
        raise LadderError(f"{path}: unknown model format '{Path(path).suffix}'; ladder reads {', '.join(SUFFIXES)}")
    if kind == "text":
        from . import text

        return text.parse_file(path), {}
    try:
        module = importlib.import_module(f"ladder.frontends.{kind}")
    except ImportError as e:
        if e.name in (EXTRAS[kind], f"ladder.frontends.{kind}"):
            raise LadderError(f"{path}: reading {kind} files needs the '{EXTRAS[kind]}' extra: "
                              f"pip install 'ladder[{EXTRAS[kind]}]'") from None
        raise
    return module.load(path, shapes=shapes)
