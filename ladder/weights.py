"""Weights: read from and write to safetensors by param name, check them, or make seeded random ones.

A weights file holds each param under its ``@name``. Low-bit params are stored unpacked, one value per byte
(int8 for signed/binary/ternary types, uint8 for unsigned types and for nf4/fp4 codes); bf16 as its uint16
bit pattern, fp8e4m3 as its byte. ``bind`` checks every param a graph needs and converts it to the in-memory
dtype; errors name the param with the expected and found type and shape.
"""

from __future__ import annotations

import os
import zlib
from typing import Mapping

import numpy as np

from .errors import LadderError, WeightsError
from .ir import Graph, Op
from .types import TensorType


def params(graph: Graph) -> dict[str, Op]:
    """The param ops of a graph by weight name (first occurrence)."""
    out: dict[str, Op] = {}
    for op in graph.ops():
        if op.kind == "param":
            out.setdefault(op.attr["ref"], op)
    return out


def load(path: str | os.PathLike) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        return dict(load_file(os.fspath(path)))
    except FileNotFoundError:
        raise WeightsError(f"weights file {os.fspath(path)!r} does not exist") from None
    except (SafetensorError, OSError, ValueError, TypeError) as e:
        raise WeightsError(f"cannot read weights file {os.fspath(path)!r}: {e}") from None


def save(path: str | os.PathLike, graph: Graph, weights: Mapping[str, np.ndarray]) -> None:
    """Write in-memory weights (as ``bind`` returns them) in the storage format described above."""
    from safetensors.numpy import save_file

    bound = bind(graph, weights)
    out = {ref: np.ascontiguousarray(op.result.type.dtype.to_storage(bound[ref]))
           for ref, op in params(graph).items()}
    save_file(out, os.fspath(path))


def bind(graph: Graph, weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Check that ``weights`` has every param of ``graph`` with its type and shape; return them in the
    in-memory dtype of each param's type. Arrays may be in storage or in-memory form."""
    needed = params(graph)
    missing = [ref for ref in needed if ref not in weights]
    if missing:
        listing = ", ".join(f"@{r} : {needed[r].result.type}" for r in missing[:8])
        more = f" and {len(missing) - 8} more" if len(missing) > 8 else ""
        raise WeightsError(f"missing weight(s) {listing}{more}", needed[missing[0]].loc)
    return {ref: convert(ref, op.result.type, weights[ref], op) for ref, op in needed.items()}


def convert(ref: str, t: TensorType, arr, op: Op | None = None) -> np.ndarray:
    loc = op.loc if op is not None else None
    arr = np.asarray(arr)
    found = f"{arr.dtype}{list(arr.shape)}"
    if tuple(arr.shape) != t.shape:
        raise WeightsError(f"weight @{ref} should be {t} but is {found} (shape differs)", loc)
    dt = t.dtype
    ok_dtypes = {np.dtype(dt.np_dtype), np.dtype(dt.storage_dtype)}
    if dt.is_float and dt.bits >= 16:
        ok_dtypes |= {np.dtype(np.float32), np.dtype(np.float16)}
    if arr.dtype not in ok_dtypes:
        want = " or ".join(sorted(str(d) for d in ok_dtypes))
        raise WeightsError(f"weight @{ref} should be {t}, stored as {want}, but is {found}", loc)
    try:
        if arr.dtype == dt.np_dtype:
            dt.check(arr, f"weight @{ref}", loc)
            return arr
        return dt.from_storage(arr, f"weight @{ref}", loc)
    except LadderError as e:
        raise WeightsError(e.message, loc) from None


def random(graph: Graph, seed: int) -> dict[str, np.ndarray]:
    """Seeded random weights for every param, in memory form. Each param draws from its own stream
    (seed, crc32 of its name), so adding a param leaves the others unchanged.

    Floats of rank >= 2 are N(0, 1/fan_in) with fan_in the last dimension; floats of rank <= 1 (scales,
    norm weights) are uniform in [0.5, 1.5]; low-bit and integer types are uniform over their values
    (8-bit and wider integers over [-8, 8])."""
    out = {}
    for ref, op in params(graph).items():
        t = op.result.type
        rng = np.random.default_rng([seed, zlib.crc32(ref.encode())])
        out[ref] = random_tensor(rng, t)
    return out


def random_tensor(rng: np.random.Generator, t: TensorType) -> np.ndarray:
    dt = t.dtype
    if dt.is_float and dt.bits >= 16:
        if t.rank >= 2:
            v = rng.standard_normal(t.shape, dtype=np.float32) / np.float32(np.sqrt(max(t.shape[-1], 1)))
        else:
            v = rng.uniform(0.5, 1.5, t.shape).astype(np.float32)
        return v.astype(dt.np_dtype)
    if dt.kind == "table":
        return rng.integers(0, 2**dt.bits, t.shape).astype(dt.np_dtype)
    if dt.values is not None and dt.bits <= 4:
        vals = np.asarray(dt.values, dtype=np.float32)
        return vals[rng.integers(0, len(vals), t.shape)].astype(dt.np_dtype)
    if dt.is_float:  # fp8
        return rng.uniform(-4, 4, t.shape).astype(np.float32).astype(dt.np_dtype)
    lo, hi = dt.value_range
    return rng.integers(max(lo, -8), min(hi, 8) + 1, t.shape).astype(dt.np_dtype)
