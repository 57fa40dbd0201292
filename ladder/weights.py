"""Weights: read from and write to safetensors by param name, check them, or make seeded random ones.

A weights file holds each param under its ``@name``. Low-bit params are stored unpacked, one value per byte
(int8 for signed/binary/ternary types, uint8 for unsigned types and for nf4/fp4 codes); bf16 as its uint16
bit pattern, fp8e4m3 as its byte. ``bind`` checks every param a graph needs and converts it to the in-memory
dtype; errors name the param with the expected and found type and shape.

``load`` is lazy: it checks the file's header against the file's size (every length, shape and byte range,
before anything is allocated) and reads a tensor only when it is asked for, so a graph reads only its params.

**Weights kept as their file stores them.** An importer gives ``Blocks``: a quantized weight as its file holds
it and a way to decode it. Its ``codes``, ``scales`` (and ``zeros``) stand for the params ``pack`` takes;
``bind`` checks their type and shape without decoding. Where the file's bytes are already one of ladder's block
packings (GGUF's Q4_0, Q8_0 and TQ2_0 are ``q4+f16``, ``q8+f16`` and ``tq2+f16`` byte for byte) and a compile
packs exactly those params into exactly that packing, the bytes are the result (ladder.interpreter.Session):
no decode, no copy, no second image of the weight in memory. Any other use decodes them (``np.asarray``); see
``Blocks`` for what is kept.

**Packed once.** A weight packed into another layout than its file's (TQ1_0's base-3 digits into 2-bit fields)
is computed once per process (``Blocks.packed``) and, given a cache folder (a compile's ``cache_dir``), once
per file: ``PackCache`` keeps the packed bytes under the file's identity (path, size, mtime, inode), the
tensor's offset, name, type and shape, both layouts and a hash of the code that decodes and packs, and maps
them read-only on the next compile (a 2B TQ1_0 model: 4 s of numpy repacking, then 0.1 s).
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import math
import os
import struct
import sys
import tempfile
import threading
import weakref
import zlib
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np

from .errors import LadderError, WeightsError
from .ir import Graph, Op
from .types import MAX_RANK, TensorType

# safetensors' own bound on the JSON header; a larger length is a damaged file, not a big model
MAX_HEADER_BYTES = 100_000_000
# bytes per element of each safetensors dtype ladder reads (the numpy ones)
ITEM_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "U16": 2, "I16": 2, "F16": 2, "U32": 4, "I32": 4, "F32": 4,
              "U64": 8, "I64": 8, "F64": 8}


class Blocks:
    """One quantized weight as its file holds it, decoded only when needed: ``decode(which)`` returns its codes
    (0: ``dtype`` name, ``shape``), block scales (1) or zeros (2) as numpy arrays (``scale_shape``,
    ``scale_dtype``), or several parts as a tuple indexed by ``which`` (one decode giving them, None for those it
    does not give). ``codes``, ``scales``, ``zeros`` are the parts to put in a weights mapping, one per param.
    ``super_shape`` (a K-quant's): its scales are also the file's integer sub-scales (3: ``sub_scales``, int8,
    ``scale_shape``) times an f32 per super-block (4: ``super_scales``, ``super_shape``), which a kernel reads
    in place of the f32 scales; its zeros (with ``zero``) the same way (5: ``sub_zeros``, 6: ``super_zeros``).

    ``storage`` (optional): the file's bytes (uint8[..., row bytes], C-contiguous, usually a view of its memory
    map) when they are the codes and scales (and zeros) in the block packing ``layout`` (ladder.packing, e.g.
    ``q4+f16``); packing the parts in that layout is then those bytes. A packing into any other layout is
    computed once and kept here (``packed``), so the modules compiled from one weights mapping (a prefill and
    a decode step) share it. Scales stay once decoded; codes only while something else holds them (a
    compiled module that reads them): a weight that is packed is not kept decoded besides."""

    def __init__(self, name: str, dtype: str, shape: tuple[int, ...], decode: Callable[[int], np.ndarray], *,
                 repack: Callable[[str, int], np.ndarray | None] | None = None,
                 layout: str = "", storage: np.ndarray | None = None, scale_shape: tuple[int, ...] = (),
                 scale_dtype=np.float16, zero: bool = False, source: tuple[str, int] | None = None,
                 release: Callable[[], None] | None = None, super_shape: tuple[int, ...] | None = None):
        from .dtypes import DTYPES
        from .packing import get_packing

        self.name, self.layout, self.dtype, self.shape = name, layout, dtype, tuple(shape)
        if layout:
            p = get_packing(layout)
            want = tuple(self.shape[:-1]) + (p.row_bytes(self.shape[-1], None),)
            if storage is None or storage.dtype != np.uint8 or tuple(storage.shape) != want or \
                    not storage.flags.c_contiguous:
                raise LadderError(f"internal: blocks of '{name}' in {layout} are uint8{list(want)} (C order), got "
                                  f"{None if storage is None else (storage.dtype, list(storage.shape))}")
            scale_shape, scale_dtype, zero = p.scale_shape(self.shape), p.scale.np_dtype, p.zero
        self.storage = storage
        # (file path, byte offset of the weight in it): the key of its packings in a PackCache (None: not cached)
        self.source = source
        self._release = release  # drops the file's pages of this weight from the resident set (a hint)
        self._decode = decode
        self.repack = repack  # (layout, parts) -> the packed bytes made from the file's own, or None
        # held while the weight is packed or a part decoded into the pack cache: two modules compiled side by
        # side (ladder.generate.ModuleRunner.prepare) do each once, the second compile taking the first's
        self.lock = threading.RLock()
        self._kept: dict[int, np.ndarray] = {}  # scales and zeros
        self.mapped_parts: dict[int, np.ndarray] = {}  # parts mapped from the pack cache (decoded_part)
        self._codes = None  # a weak reference to the decoded codes
        self.packed: dict[str, np.ndarray] = {}  # layout -> the weight packed in it (ladder.interpreter.Session)
        self.codes = BlockPart(self, 0, self.shape, np.dtype(DTYPES[dtype].np_dtype))
        self.scales = BlockPart(self, 1, tuple(scale_shape), np.dtype(scale_dtype))
        self.zeros = BlockPart(self, 2, tuple(scale_shape), np.dtype(scale_dtype)) if zero else None
        self.sub_scales = self.super_scales = self.sub_zeros = self.super_zeros = None
        if super_shape is not None:
            self.sub_scales = BlockPart(self, 3, tuple(scale_shape), np.dtype(np.int8))
            self.super_scales = BlockPart(self, 4, tuple(super_shape), np.dtype(np.float32))
            if zero:
                self.sub_zeros = BlockPart(self, 5, tuple(scale_shape), np.dtype(np.int8))
                self.super_zeros = BlockPart(self, 6, tuple(super_shape), np.dtype(np.float32))

    def decoded(self, which: int) -> np.ndarray:
        codes = self._codes() if self._codes is not None else None
        if (codes if which == 0 else self._kept.get(which)) is None:
            got = self._decode(which)
            if isinstance(got, tuple):  # one decode gave every part: keep the scales (and zeros) it gave too
                parts = {i: p for i, p in enumerate(got) if p is not None}
            else:
                parts = {which: got}
            for i, part in parts.items():
                part = np.ascontiguousarray(part)
                if i == 0:
                    codes = part
                    self._codes = weakref.ref(codes)
                elif i not in self._kept:
                    self._kept[i] = part
        return codes if which == 0 else self._kept[which]

    def release(self) -> None:
        """The file's bytes are not needed now (the weight is packed in another layout): let the pages go from
        this process's resident set. Only advice: a later read maps them in again from the page cache."""
        if self._release is not None:
            self._release()

    def __repr__(self) -> str:
        return f"Blocks({self.name!r}, {self.layout or 'decoded when read'}, {self.dtype}{list(self.shape)})"


class BlockPart:
    """The codes (0), scales (1) or zeros (2) of a ``Blocks`` weight, as a weights mapping holds them: their
    ``shape`` and ``dtype`` are known without decoding; ``np.asarray`` decodes."""

    def __init__(self, blocks: Blocks, which: int, shape: tuple[int, ...], dtype: np.dtype):
        self.blocks, self.which, self.shape, self.dtype = blocks, which, tuple(shape), dtype
        self.ndim = len(self.shape)

    def __array__(self, dtype=None, copy=None):
        arr = self.blocks.decoded(self.which)  # shared with the Blocks' other readers: copied when asked
        return arr.astype(dtype) if dtype is not None else (arr.copy() if copy else arr)

    def __repr__(self) -> str:
        return f"the {PART_NAMES[self.which]} of {self.blocks!r}"


PART_NAMES = ("codes", "scales", "zeros", "sub-scales", "super-scales", "sub-zeros", "super-zeros")


def _one_weight(parts) -> Blocks | None:
    """The Blocks whose codes, scales (and zeros) ``parts`` are, in that order (or its codes alone)."""
    if not parts or not all(isinstance(p, BlockPart) for p in parts):
        return None
    b = parts[0].blocks
    want = [b.codes, b.scales, b.zeros]
    if any(p is not w for p, w in zip(parts, want)):
        return None
    return b


def stored_pack(layout: str, parts) -> np.ndarray | None:
    """``pack(parts...) {layout}`` without computing it: the file's bytes when that is the packing they are
    stored in (the codes, scales and zeros of one ``Blocks``), or the packing computed before; else None."""
    b = _one_weight(parts)
    if b is None:
        return None
    whole = len(parts) == 2 + (b.zeros is not None)
    if b.layout == layout and whole:
        return b.storage
    return b.packed.get(f"{layout}/{len(parts)}")


def keep_pack(layout: str, parts, packed: np.ndarray) -> None:
    """Remember ``pack(parts...) {layout}`` on the weight, for the next module compiled from it; its file's
    pages are then not needed (``Blocks.release``)."""
    b = _one_weight(parts)
    if b is not None:
        b.packed[f"{layout}/{len(parts)}"] = packed
        b.release()


class PackCache:
    """Weights packed into another layout than their file's, kept in ``folder`` between runs: one file per (model
    path, weight, layout), ``<sha256 of those>.pack``, its full key (JSON) in front of the bytes. ``load`` maps an
    entry read-only, trusted only when the folder and the entry pass the compiled-code cache's checks
    (ladder.context: ``cache_folder_problem``, ``cache_entry_problem``; the entry opened without following a
    symlink), its key equals this one and its length is that of the packed shape. The key holds the weight's file
    identity (real path, size, mtime, inode: a file rewritten in place misses), its offset, name, type, shape, both
    layouts and a hash of the code that decodes and packs (``_pack_code``: what a new ladder version would change).
    Entries are written to a temporary file and renamed into place; any failure to read or write only costs the
    packing's time. The bytes are not checksummed (a 600 MB weight would take longer to hash than to pack a small
    one): an entry is only ever replaced whole, by this user."""

    MAGIC = b"LADDERPACK1\0"
    ALIGN = 64  # the bytes start at a multiple of this in the file

    def __init__(self, folder):
        self.folder = Path(folder)

    def key(self, b: "Blocks", layout: str, nparts: int) -> bytes | None:
        if b.source is None:
            return None
        path, offset = b.source
        try:
            real = os.path.realpath(path)
            st = os.stat(real)
        except OSError:
            return None
        return json.dumps({"file": real, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "inode": st.st_ino,
                           "offset": int(offset), "tensor": b.name, "dtype": b.dtype, "shape": list(b.shape),
                           "stored": b.layout, "layout": layout, "parts": nparts,
                           "code": _pack_code(getattr(b._decode, "__module__", "") or "")},
                          sort_keys=True).encode()

    def _path(self, key: bytes) -> Path:
        """The entry's file: named by the weight's place alone (file path, tensor, layout, parts), so that a
        newer key (the file rewritten, another ladder) replaces the entry instead of adding one: the folder
        holds at most one packed copy of each weight of each model path."""
        k = json.loads(key)
        slot = json.dumps([k["file"], k["tensor"], k["layout"], k["parts"]]).encode()
        return self.folder / f"{hashlib.sha256(slot).hexdigest()}.pack"

    def _header(self, key: bytes) -> bytes:
        head = self.MAGIC + struct.pack("<Q", len(key)) + key
        return head + b"\0" * (-len(head) % self.ALIGN)

    def _folder_ok(self) -> bool:
        from .context import cache_folder_problem

        return cache_folder_problem(self.folder) is None

    def load(self, b: "Blocks", layout: str, nparts: int, shape: tuple[int, ...]) -> np.ndarray | None:
        """The packed bytes (uint8 ``shape``, a read-only memory map), or None."""
        from .context import cache_entry_problem

        key = self.key(b, layout, nparts)
        if key is None or not self._folder_ok():
            return None
        path, head = self._path(key), self._header(key)
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        try:  # the checks below are of the very file opened (its descriptor), mapped through that descriptor
            with open(path, "rb", opener=lambda p, _: os.open(p, flags)) as f:
                st = os.fstat(f.fileno())
                if cache_entry_problem(st, path) is not None or st.st_size != len(head) + math.prod(shape):
                    return None
                if f.read(len(head)) != head:
                    return None
                return np.memmap(f, np.uint8, "r", offset=len(head), shape=tuple(shape))
        except (OSError, ValueError):
            return None

    def store(self, b: "Blocks", layout: str, nparts: int, packed: np.ndarray) -> None:
        key = self.key(b, layout, nparts)
        if key is None or packed.dtype != np.uint8:
            return
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            if not self._folder_ok():
                return
            fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(self._header(key))
                    f.write(memoryview(np.ascontiguousarray(packed)).cast("B"))
                os.replace(tmp, self._path(key))
            except BaseException:
                os.unlink(tmp)
                raise
        except OSError:
            pass  # a cache that cannot be written only costs the next compile the packing's time


@functools.lru_cache(maxsize=None)
def _pack_code(decoder_module: str) -> str:
    """sha256 over the code a packed weight depends on: the packings (ladder.packing), this module, and the
    module of the importer's decode (``decoder_module``)."""
    h = hashlib.sha256()
    files = [Path(__file__).with_name("packing.py"), Path(__file__)]
    mod = sys.modules.get(decoder_module)
    if mod is not None and getattr(mod, "__file__", None):
        files.append(Path(mod.__file__))
    for f in files:
        try:
            h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
        except OSError:
            h.update(f.name.encode() + b"\0?\0")
    return h.hexdigest()


REPACK_CODES = 1 << 20  # codes repacked at a time (repack_rows): bounds the temporaries of a large weight


def repack_rows(layout: str, parts, shape: tuple[int, ...]) -> np.ndarray | None:
    """``pack(parts...) {layout}`` of a weight its file stores in another block packing (TQ1_0's ``tq1+f16``
    into ``crumb64+f16``), made from the file's bytes REPACK_CODES codes at a time: each run of rows unpacked
    from the stored packing (codes and scales, as the packing declares them) and packed into ``layout``. The
    temporaries stay a few MB where decoding a whole 128256 x 2560 embedding first took ~0.8 GB. None unless
    ``parts`` are all the parts of one weight with stored bytes and both packings have scales of the same blocks."""
    from .dtypes import DTYPES
    from .packing import ScaledPacking, get_packing

    b = _one_weight(parts)
    if b is not None and b.repack is not None:  # the importer's own repacking of its format
        got = b.repack(layout, len(parts))
        if got is not None and got.size == math.prod(shape):
            return got.reshape(shape)
    if b is None or b.storage is None or not b.layout or len(parts) != 2 + (b.zeros is not None):
        return None
    src, dst, dt = get_packing(b.layout), get_packing(layout), DTYPES[b.dtype]
    if (not isinstance(src, ScaledPacking) or not isinstance(dst, ScaledPacking) or src.zero != dst.zero
            or src.block != dst.block):
        return None
    k = b.shape[-1]
    rows = b.storage.reshape(-1, b.storage.shape[-1])
    out = np.empty((rows.shape[0], dst.row_bytes(k, dt)), np.uint8)
    if out.size != math.prod(shape):
        return None
    step = max(1, REPACK_CODES // max(k, 1))
    for r0 in range(0, rows.shape[0], step):
        part = rows[r0:r0 + step]
        codes = src.unpack(part, (len(part), k), dt)
        scale, zero = src.unpack_scales(part, (len(part), k))
        out[r0:r0 + step] = dst.pack(codes, dt, scale, *(() if zero is None else (zero,)))
    return out.reshape(shape)


def cached_pack(cache: "PackCache | None", layout: str, parts, shape: tuple[int, ...]) -> np.ndarray | None:
    """``pack(parts...) {layout}`` from the pack cache (kept on the weight, as ``keep_pack``), or None."""
    b = _one_weight(parts)
    if cache is None or b is None:
        return None
    got = cache.load(b, layout, len(parts), shape)
    if got is not None:
        keep_pack(layout, parts, got)
    return got


def store_pack(cache: "PackCache | None", layout: str, parts, packed: np.ndarray) -> None:
    b = _one_weight(parts)
    if cache is not None and b is not None:
        cache.store(b, layout, len(parts), packed)


def decoded_part(cache: "PackCache | None", part: "BlockPart") -> np.ndarray:
    """A weight's codes, scales or zeros as an array. The parts of a weight its file stores in no ladder packing
    (the K-quants: 6-bit scales and mins, decoded to f32; Q6_K's codes, decoded to int8) that a kernel reads as
    they are come mapped from the pack cache (an entry per part, ``decoded/0``, ``decoded/1`` and ``decoded/2``
    in the layout's place of the key); on a miss the scales and zeros are decoded together, kept there and
    mapped, and the decoded arrays let go (a 2B Q4_K model's 9.4M blocks take ~1.3 s to decode, and their
    scales and mins 0.6 GB; a Q4_K_M file's Q6_K codes take 0.6 GB as int8: its cached compile 5.3 -> 1.7 s).
    The same for the sub-scales, super-scales and their zeros' (``decoded/3`` .. ``decoded/6``): every part the
    one decode gave is kept."""
    b = part.blocks
    if cache is None or b.layout:
        return np.asarray(part)
    with b.lock:
        return _decoded_part(cache, part, b)


def _decoded_part(cache: "PackCache", part: "BlockPart", b: Blocks) -> np.ndarray:
    parts = [p for p in (b.scales, b.zeros, b.sub_scales, b.super_scales, b.sub_zeros, b.super_zeros)
             if p is not None]

    def mapped(p):
        got = cache.load(b, f"decoded/{p.which}", 1, (math.prod(p.shape) * p.dtype.itemsize,))
        return None if got is None else got.view(p.dtype).reshape(p.shape)

    def keep(p, got):
        b.mapped_parts[p.which] = got  # one mapping a part, for every module compiled from the weight
        if p.which == 0:
            b._codes = weakref.ref(got)
        else:
            b._kept[p.which] = got
        return got

    held = b.mapped_parts.get(part.which)
    if held is not None:
        return held
    got = mapped(part)
    if got is not None:
        return keep(part, got)
    if part.which == 0:  # codes a kernel reads as they are (Q6_K's and Q5_K's int8): kept, then mapped
        cache.store(b, "decoded/0", 1, np.ascontiguousarray(np.asarray(part)).reshape(-1).view(np.uint8))
        got = mapped(part)
        return np.asarray(part) if got is None else keep(part, got)
    np.asarray(part)  # one decode: the parts it gave are kept on the weight
    done = [p for p in parts if p.which in b._kept and p.which not in b.mapped_parts]
    for p in done:
        cache.store(b, f"decoded/{p.which}", 1, np.ascontiguousarray(b._kept[p.which]).reshape(-1).view(np.uint8))
    for p in done:  # the entries just written, in place of the decoded arrays: file pages, as next time
        m = mapped(p)
        if m is not None:
            keep(p, m)
    return np.asarray(part)  # the entry mapped just now, or (not written) the decoded array


def params(graph: Graph) -> dict[str, Op]:
    """The param ops of a graph by weight name (first occurrence)."""
    out: dict[str, Op] = {}
    for op in graph.ops():
        if op.kind == "param":
            out.setdefault(op.attr["ref"], op)
    return out


class WeightsFile(Mapping[str, np.ndarray]):
    """A safetensors file read lazily: its header is checked when it is opened, each tensor is read (through
    ``safetensors.safe_open``, a memory map) when it is looked up. ``shapes`` gives every tensor's
    (safetensors dtype, shape) without reading it."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self.shapes: dict[str, tuple[str, tuple[int, ...]]] = _read_header(self.path)
        self._file = None

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self.shapes:
            raise KeyError(name)
        from safetensors import SafetensorError, safe_open

        try:
            if self._file is None:
                self._file = safe_open(self.path, framework="np")
            return self._file.get_tensor(name)
        except (SafetensorError, OSError, ValueError, TypeError) as e:
            raise WeightsError(f"cannot read tensor '{name}' of weights file {self.path!r}: {e}") from None

    def __contains__(self, name) -> bool:  # Mapping's default would read the tensor to answer
        return name in self.shapes

    def __iter__(self) -> Iterator[str]:
        return iter(self.shapes)

    def __len__(self) -> int:
        return len(self.shapes)

    def __repr__(self) -> str:
        return f"WeightsFile({self.path!r}, {len(self)} tensors)"


def load(path: str | os.PathLike) -> WeightsFile:
    """The weights in a safetensors file, by name, read lazily (see ``WeightsFile``). A damaged file is a
    WeightsError naming the file and, where one is at fault, the tensor."""
    return WeightsFile(path)


def _read_header(path: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Check a safetensors header against the file: its length, JSON, each tensor's dtype and shape, and that
    each tensor's bytes lie inside the file without overlapping another's. (dtype, shape) by name."""
    def bad(msg: str) -> WeightsError:
        return WeightsError(f"weights file {path!r}: {msg}")

    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(8)
            if len(head) < 8:
                raise bad(f"is {size} bytes long, too short for a safetensors file (an 8-byte header length, "
                          f"then a JSON header)")
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, MAX_HEADER_BYTES):
                raise bad(f"its header length is {n} bytes, but the file has {size - 8} bytes after the length "
                          f"(and safetensors allows at most {MAX_HEADER_BYTES}): truncated, or not safetensors")
            text = fh.read(n)
    except FileNotFoundError:
        raise WeightsError(f"weights file {path!r} does not exist") from None
    except IsADirectoryError:
        raise WeightsError(f"weights file {path!r} is a directory") from None
    except OSError as e:
        raise WeightsError(f"cannot read weights file {path!r}: {e}") from None
    try:
        header = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise bad(f"its header is not valid JSON ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(header, dict):
        raise bad(f"its header should be a JSON object, got {type(header).__name__}")
    data_len = size - 8 - n
    out: dict[str, tuple[str, tuple[int, ...]]] = {}
    spans = []
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise bad("its __metadata__ should map names to strings")
            continue
        dtype, shape = _check_entry(name, entry, data_len, bad)
        out[name] = (dtype, shape)
        begin, end = entry["data_offsets"]
        if end > begin:
            spans.append((begin, end, name))
    spans.sort()
    for (b0, e0, n0), (b1, _, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise bad(f"tensors '{n0}' (bytes {b0}..{e0}) and '{n1}' (from byte {b1}) overlap")
    return out


def _check_entry(name: str, entry, data_len: int, bad) -> tuple[str, tuple[int, ...]]:
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
        raise bad(f"tensor '{name}' should have a dtype, a shape and data_offsets, got {str(entry)[:80]}")
    dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype not in ITEM_BYTES:
        raise bad(f"tensor '{name}' has dtype {str(dtype)[:20]!r}; ladder reads {', '.join(ITEM_BYTES)}")
    if not isinstance(shape, list) or len(shape) > MAX_RANK or \
            not all(type(d) is int and d >= 0 for d in shape):
        raise bad(f"tensor '{name}' has shape {str(shape)[:80]}; expected at most {MAX_RANK} sizes >= 0")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets) \
            or not 0 <= offsets[0] <= offsets[1]:
        raise bad(f"tensor '{name}' has data_offsets {str(offsets)[:80]}; expected [begin, end], 0 <= begin <= end")
    begin, end = offsets
    need = math.prod(shape) * ITEM_BYTES[dtype]  # Python ints: no overflow, however large the claim
    if end > data_len:
        raise bad(f"tensor '{name}' ({dtype}{shape}) claims bytes {begin}..{end} of the data, but the file holds "
                  f"{data_len} bytes of data: truncated, or a damaged header")
    if end - begin != need:
        raise bad(f"tensor '{name}' is {dtype}{shape}, {need} bytes, but its data_offsets span {end - begin} bytes")
    return dtype, tuple(shape)


def save(path: str | os.PathLike, graph: Graph, weights: Mapping[str, np.ndarray]) -> None:
    """Write in-memory weights (as ``bind`` returns them) in the storage format described above."""
    from safetensors.numpy import save_file

    bound = {ref: np.asarray(v) for ref, v in bind(graph, weights).items()}
    # np.require keeps a 0-d weight 0-d (np.ascontiguousarray makes it [1], which then no longer binds)
    out = {ref: np.require(op.result.type.dtype.to_storage(bound[ref]), requirements="C")
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
        raise WeightsError(f"missing weight(s) {listing}{more}", needed[missing[0]].loc,
                           notes=_names_held(missing, [k for k in weights if k not in needed], weights))
    return {ref: convert(ref, op.result.type, weights[ref], op) for ref, op in needed.items()}


def _names_held(missing: list[str], unused: list[str], weights) -> tuple[str, ...]:
    """Notes for a name mismatch: what the weights hold that the graph does not use, closest matches to the
    missing names first (a renamed or re-prefixed weight is then the first thing a reader sees)."""
    where = f"the weights file {weights.path!r}" if isinstance(weights, WeightsFile) else "the weights given"
    if not unused:
        return (f"{where} hold{'s' if isinstance(weights, WeightsFile) else ''} no other names",)
    pool = unused if len(unused) <= 5000 else sorted(unused)[:5000]  # difflib is quadratic; bound it
    close: list[str] = []
    for ref in missing[:8]:
        close += [c for c in difflib.get_close_matches(ref, pool, n=3, cutoff=0.5) if c not in close]
    rest = sorted(n for n in unused if n not in close)
    shown = close + rest
    more = f" and {len(shown) - 12} more" if len(shown) > 12 else ""
    return (f"{where} also hold{'s' if isinstance(weights, WeightsFile) else ''} {len(unused)} name(s) the "
            f"graph does not use, closest first: {', '.join(repr(n) for n in shown[:12])}{more}",)


def convert(ref: str, t: TensorType, arr, op: Op | None = None) -> np.ndarray:
    loc = op.loc if op is not None else None
    if isinstance(arr, BlockPart):  # kept as the file's blocks: checked without decoding (see Blocks)
        if tuple(arr.shape) != t.shape or arr.dtype != np.dtype(t.dtype.np_dtype) or \
                (arr.which == 0 and arr.blocks.dtype != t.dtype.name):
            raise WeightsError(f"weight @{ref} should be {t} but is {arr!r} ({arr.dtype}{list(arr.shape)})", loc)
        return arr
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
