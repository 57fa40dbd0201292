"""Decode or lookup? The choice the ``lut`` pass makes per matmul shape: from tuning records when given, else a cost model.

The ``lut`` pass (``choose=auto``, in the default cpu pipeline) asks ``choose(problem, target, threads)``, with
the thread count ``ladder.compile`` was given (else all usable cores, the cpu backend's default):

1. **tuning records**, when given explicitly (``ladder.compile(..., tuning=FILE)``, ``lut{choose=auto,tuning=FILE}``,
   ``--tuning FILE``; nothing is read from a default place, so a compile depends only on its arguments), keyed
   by the CPU (LLVM name + a hash of its features), the activation type, weight type, shape m x n x k and the
   thread count; ``tune`` makes them by timing, on this machine, the decode kernel (``qmatmul_i8``/``qmatmul``
   on the target's preferred packing) against the lookup kernel for every lookup configuration (``rows`` per
   interleaved block x ``unroll``, the groups per loop step), keeping the fastest;
2. otherwise the **cost model** (``cost_model``), from benchmarks/bench_lut.py on this AVX2 Zen 3 (m = 4096
   outputs, k = 4096, one thread; a shared, noisy machine):

   * exact tables (int8 activations) and f32 tables (f32 activations): lookup for **1-bit weights** (i1, u1):
     GEMV 0.19 ms vs 4.5 ms (int8), 1.9 ms vs 20.9 ms (f32); GEMM n = 32 7.8 ms vs 94 ms: their ``bit`` packing
     has no SIMD decode, while a plane costs two byte shuffles per 32 rows and group. Decode for 2 and 4 bits,
     whose SIMD decode kernels win (int8: ternary GEMV 0.27 ms vs 0.36 ms, i4 0.91 vs 1.41 ms, ternary GEMM
     6.1 vs 9.6 ms; f32 tables lose 3 to 10x to f32 decode);
   * int8 tables (the lut pass with ``quantize``, f32 activations, T-MAC's setting): lookup, against f32 decode:
     ternary GEMV 0.47 ms (0.38 with fast aggregation) vs 1.41 ms, GEMM 13.8 (10.6) vs 20.7 ms; i4 GEMV 0.90
     (0.71) vs 1.42 ms; except 4-bit GEMM (n > 8) without fast aggregation (26.7 vs 21.5 ms): decode;
   * without byte shuffles (``table-lookup``) a lookup is one scalar load per row and group: decode.

A tuning file is a JSON object ``{"version": 1, "entries": {key: record}}``, rewritten whole through a temporary
file and ``os.replace`` (a crash never leaves a half-written file). Reading it trusts nothing: a file that is
not such an object (or is larger than ``MAX_FILE_BYTES``) is ignored, and a record whose fields are out of range
(``rows`` not 0 or a multiple of 8 up to ``MAX_ROWS``, ``unroll`` not one the kernel has, ``us`` not a table
of times, ...) is skipped, each with one ``TuningWarning`` naming the file and the record's key.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import tempfile
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import LadderError
from .target import Target, get_target
from .types import DTYPES

VERSION = 1
METHODS = ("decode", "lut")
KERNEL_UNROLLS = (1, 2, 4, 8)  # what the lut pass accepts
MAX_ROWS = 64  # rows per interleaved block: one per byte lane of the widest shuffle (AVX-512)
MAX_FILE_BYTES = 16 << 20  # some 50,000 records; a bigger file is not one tune wrote


TABLES = ("exact", "f32", "i8", "i8-fast")  # the lookup's tables: from i8 codes, f32, int8 (+ fast aggregation)


@dataclass(frozen=True)
class Problem:
    """One matmul: activations ``act`` ("i8" codes or "f32") [m, k] x weights ``dtype`` [n, k], and the tables a
    lookup would use (``tables``: "exact" for i8 codes; "f32", or "i8"/"i8-fast" for f32 activations when the
    lut pass quantizes its tables)."""

    act: str
    dtype: str
    m: int
    n: int
    k: int
    tables: str = ""

    def __post_init__(self):
        if not self.tables:
            object.__setattr__(self, "tables", "exact" if self.act == "i8" else "f32")
        if self.act not in ("i8", "f32") or self.tables not in TABLES or (self.act == "i8") != (self.tables == "exact"):
            raise LadderError(f"tune: no such problem: activations {self.act!r} with {self.tables!r} tables "
                              f"(i8 activations make exact tables; f32 ones f32, i8 or i8-fast tables)")

    @property
    def bits(self) -> int:
        return DTYPES[self.dtype].bits

    @property
    def lut_options(self) -> str:
        """The lut pass options that build this problem's tables."""
        return {"i8": ",quantize=true", "i8-fast": ",quantize=true,fast_aggregation=true"}.get(self.tables, "")

    def __str__(self) -> str:
        tables = f" ({self.tables} tables)" if self.tables.startswith("i8") else ""
        return f"{self.act} x {self.dtype} {self.m}x{self.n}x{self.k}{tables}"


@dataclass(frozen=True)
class Choice:
    method: str  # "decode" or "lut"
    rows: int = 0  # lut: rows per interleaved block (0: the target's vector bytes)
    unroll: int = 1  # lut: groups per loop step
    source: str = "cost model"  # or "tuned"
    us: dict = field(default_factory=dict, compare=False)  # measured microseconds per configuration


def cost_model(p: Problem, target: Target) -> Choice:
    """The choice without measurements (see the module docstring for where the rule comes from)."""
    if not target.supports("table-lookup"):
        return Choice("decode")
    if p.tables == "i8-fast" or (p.tables == "i8" and (p.bits <= 2 or p.m <= 8)):
        return Choice("lut")
    return Choice("lut" if p.bits == 1 else "decode")


# -- tuning records --------------------------------------------------------------------------------------

class TuningWarning(UserWarning):
    """A tuning file, or one of its records, is damaged and was not used."""


@dataclass(frozen=True)
class TuningRecords:
    """The validated records of one tuning file: entry key -> Choice (``source`` "tuned")."""

    path: str
    entries: Mapping[str, Choice] = field(default_factory=dict)

    def get(self, key: str) -> Choice | None:
        return self.entries.get(key)

    def __len__(self) -> int:
        return len(self.entries)


def machine_key(target: Target) -> str:
    feats = hashlib.sha256(target.cpu_features.encode()).hexdigest()[:12]
    return f"{target.name}/{target.cpu_name}/{feats}"


def entry_key(p: Problem, target: Target, threads: int) -> str:
    return f"{machine_key(target)}|{p.act}|{p.tables}|{p.dtype}|{p.m}x{p.n}x{p.k}|t{threads}"


def _int_field(rec: dict, name: str, default: int, ok: Callable[[int], bool], want: str) -> int:
    v = rec.get(name, default)
    if type(v) is not int or not ok(v):  # bool is an int subclass, 7.0 is not a count: both refused
        raise ValueError(f"{name} must be {want}, got {json.dumps(v)[:40]}")
    return v


def parse_record(rec: object) -> Choice:
    """A record as a Choice, or ValueError saying what is wrong with it."""
    if not isinstance(rec, dict):
        raise ValueError(f"a record is a JSON object, got {type(rec).__name__} {json.dumps(rec)[:40]}")
    method = rec.get("method")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {json.dumps(method)[:40]}")
    rows = _int_field(rec, "rows", 0, lambda r: r == 0 or (r % 8 == 0 and 8 <= r <= MAX_ROWS),
                      f"0 or a multiple of 8 up to {MAX_ROWS}")
    unroll = _int_field(rec, "unroll", 1, lambda u: u in KERNEL_UNROLLS, f"one of {KERNEL_UNROLLS}")
    us = rec.get("us", {})
    if not isinstance(us, dict) or not all(
            type(t) in (int, float) and math.isfinite(t) and t >= 0 for t in us.values()):
        raise ValueError("us must map configurations to microseconds (finite numbers >= 0)")
    return Choice(method, rows, unroll, "tuned", dict(us))


def load_records(path: str | os.PathLike) -> TuningRecords:
    """The valid records of the tuning file at ``path``; a damaged file or record is skipped with a
    TuningWarning. A file that cannot be read at all (missing, a folder, a pipe) is a LadderError: it was
    asked for."""
    return TuningRecords(str(path), {k: c for k, (c, _) in _read(Path(path)).items()})


def _read(path: Path) -> dict[str, tuple[Choice, dict]]:
    """key -> (Choice, the record as stored) for every valid record of the file."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # opening a FIFO would block
            raise LadderError(f"tuning file {path} is not a regular file")
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise LadderError(f"cannot read tuning file {path}: {e.strerror or e}") from None
    if len(raw) > MAX_FILE_BYTES:
        return _ignored(path, f"it is larger than {MAX_FILE_BYTES >> 20} MiB")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        return _ignored(path, f"it is not JSON ({type(e).__name__})")
    if not isinstance(data, dict) or data.get("version") != VERSION or not isinstance(data.get("entries"), dict):
        return _ignored(path, f"it is not a ladder tuning file of version {VERSION} "
                              f"(an object with \"version\": {VERSION} and \"entries\")")
    out = {}
    for key, rec in data["entries"].items():
        try:
            out[key] = (parse_record(rec), rec)
        except ValueError as e:
            shown = key if len(key) <= 80 else key[:77] + "..."
            warnings.warn(f"{path}: tuning record {shown!r} skipped: {e}", TuningWarning, stacklevel=3)
    return out


def _ignored(path: Path, why: str) -> dict:
    warnings.warn(f"{path}: tuning file ignored: {why}", TuningWarning, stacklevel=4)
    return {}


def save_records(new: Mapping[str, Choice | dict], path: str | os.PathLike) -> Path:
    """Merge ``new`` (key -> Choice, or a record dict) into the tuning file at ``path`` (created if missing),
    atomically. Damaged records already in the file are dropped (with their warning)."""
    path = Path(path)
    entries = {k: rec for k, (_, rec) in _read(path).items()} if path.exists() else {}
    entries.update({k: _as_record(c) for k, c in new.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tune.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"version": VERSION, "entries": entries}, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _as_record(c: Choice | dict) -> dict:
    if isinstance(c, Choice):
        rec = asdict(c)
        rec.pop("source")
        return rec
    return dict(c)


def host_threads(threads: int | None = None) -> int:
    """``threads``, or the cores this process may use (the cpu backend's default)."""
    if threads:
        return threads
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def choose(p: Problem, target: Target | str = "cpu", threads: int | None = None,
           records: TuningRecords | None = None) -> Choice:
    """The record for this problem in ``records`` (ladder.tune.load_records) if there is one, else the cost
    model's choice."""
    target = get_target(target)
    if records is not None:
        c = records.get(entry_key(p, target, host_threads(threads)))
        if c is not None:
            return c
    return cost_model(p, target)


__all__ = ["KERNEL_UNROLLS", "MAX_FILE_BYTES", "MAX_ROWS", "METHODS", "TABLES", "VERSION", "Choice", "Problem",
           "TuningRecords", "TuningWarning", "choose", "cost_model", "entry_key", "host_threads", "load_records",
           "machine_key", "parse_record", "save_records"]
