"""GGUF files (llama.cpp's model format) -> ladder (installed as ``ladder.frontends.gguf``; needs the ``gguf`` extra).

The file is read with the ``gguf`` package's ``GGUFReader`` (a memory map; nothing in the file is executed)
after checks of its own, those llama.cpp makes: every tensor's type, rank, row length (a whole number of
blocks), that the tensors' data lie back to back (each padded to the alignment) and inside the file. Anything malformed is a ``LadderError`` naming the file.

``read_tensors(path)`` turns each tensor into ladder codes + scales (+ zeros) with the granularity of the
block format (``axis = -1``, ``group`` = the block, or the sub-block for K-quants), so that ladder's
``dequant`` gives bit for bit what ``gguf.quants.dequantize`` (and llama.cpp) gives:

type     codes        scale (+ zero) per group along a row        value
-----    -----        ------------------------------------        -----
F32 F16  f32 f16 bf16 -                                          the element
BF16
Q8_0     i8           f16 d per 32                               q * d
Q4_0     i4 (q - 8)   f16 d per 32                               (q - 8) * d
Q4_1     u4           f16 d, zero -m per 32 (``rescale``)        q * d + m
Q5_0     i8 (q - 16)  f16 d per 32                               (q - 16) * d
Q5_1     u8           f16 d, zero -m per 32 (``rescale``)        q * d + m
TQ1_0    ternary      f16 d per 256 (base-3: 5 trits a byte)     t * d
TQ2_0    ternary      f16 d per 256 (2 bits a trit)              t * d
Q2_K     u2           f32 d*sc, zero dmin*m per 16 (``rescale``)  q * (d*sc) - dmin*m
Q3_K     i4 (-4..3)   f32 d*(sc-32) per 16                       q * (d*(sc-32))
Q4_K     u4           f32 d*sc, zero dmin*m per 32 (``rescale``)  q * (d*sc) - dmin*m
Q5_K     u8           f32 d*sc, zero dmin*m per 32 (``rescale``)  q * (d*sc) - dmin*m
Q6_K     i8 (q - 32)  f32 d*sc per 16                            (q - 32) * (d*sc)

(K-quant sub-block scales are products of an f16 and a 6-bit or 8-bit integer, computed in f32 as llama.cpp
does; they are exact in f32.)

``load(path, shapes)`` builds one decoder step for the ``llama`` and ``bitnet`` architectures from the file's
metadata, with the input and output conventions of ``ladder.models.bitnet_decoder`` (``tokens``, ``pos``,
``start``, ``kv_len``, ``k_cacheN``/``v_cacheN`` -> logits and the updated caches), so
``ladder.demo.generate`` drives it (``config(path)`` gives the config it needs). ``shapes={"tokens": (S,)}``
sets the step's length (default 1); ``shapes={"k_cache0": (kv_heads, C, head_dim)}`` (any cache) sets the
cache capacity C (default: the file's ``context_length``).

* Quantized weights become ``param`` codes + ``param`` scales (+ zeros) + ``dequant`` + ``matmul
  {transpose_b}``, which ``legalize-types,fuse`` turn into one ``qmatmul`` over packed weights.
* llama: RMSNorm, RoPE in llama.cpp's normal mode (adjacent pairs: ``rope {style = "interleaved"}``; the
  converter permuted the Q/K rows for it), grouped-query causal attention, SwiGLU FFN, final norm, output
  projection (``output.weight``, or tied to ``token_embd.weight`` when absent).
* bitnet (llama.cpp's BitNet b1.58): the same, plus ``attn_sub_norm``/``ffn_sub_norm``, squared ReLU on the
  FFN gate, RoPE in NEOX mode (halves: ``style = "half"``, as llama.cpp uses for this architecture), the
  optional per-tensor ``blk.N.<proj>.scale`` multipliers, and activations quantized to int8 per token
  (absmax) before every projection, as BitNet does. A ternary weight whose blocks share one scale takes
  BitNet's integer path (``quantize`` -> i8 x ternary ``matmul`` -> rescale, fused into ``qmatmul_i8``);
  any other weight gets the int8-quantized activations dequantized (the same values) into a float matmul.

Not supported (a LadderError lists what the file has): other architectures, tensor types not in the table
(IQ*, Q8_1, Q8_K, MXFP4, integer tensors, ...), biases and other extra tensors, RoPE scaling (``rope_freqs``,
``rope.scaling.*``), partial rotary dimensions, head sizes other than embedding_length / head_count,
per-layer head counts, and byte-swapped (big-endian) files.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ladder.builder import Builder
from ladder.errors import LadderError
from ladder.ir import Graph, Value
from ladder.models import BitNetConfig, decoder_step_inputs
from ladder.quant import dequantize as _dequantize
from ladder.types import DTYPES, DType

from gguf import GGMLQuantizationType as QT
from gguf import GGUFReader, GGUFValueType
from gguf.constants import GGML_QUANT_SIZES


class GGUFError(LadderError):
    """A GGUF file is malformed, or holds something ladder does not read."""

    kind = "gguf error"


# -- tensors -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GGUFTensor:
    """One tensor of a GGUF file as ladder sees it: ``codes`` (of ladder type ``dtype``, in its numpy
    ``np_dtype``, row-major with the row, ggml's ne[0], last) and, for quantized types, ``scale`` (+ ``zero``)
    with one entry per ``group`` codes along the last axis (``zero_mode`` as in ``ladder.quant``).
    Float tensors (F32, F16, BF16) have ``scale = None``: their codes are their values."""

    name: str
    ggml_type: str
    dtype: DType
    codes: np.ndarray
    scale: np.ndarray | None = None
    zero: np.ndarray | None = None
    group: int = 0
    zero_mode: str = "none"
    axis: int = -1

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.codes.shape)

    @property
    def quantized(self) -> bool:
        return self.scale is not None

    def values(self) -> np.ndarray:
        """The tensor's values as float32 (ladder.quant's dequantize, the reference of the dequant op)."""
        if self.scale is None:
            return self.codes.astype(np.float32)
        return _dequantize(self.codes, self.dtype, self.scale.astype(np.float32),
                           None if self.zero is None else self.zero.astype(np.float32),
                           self.codes.ndim - 1, self.group, self.zero_mode)


_U8 = np.uint8
_SHIFT2 = np.array([0, 2, 4, 6], _U8)
_SHIFT4 = np.array([0, 4], _U8)
_SHIFT1 = np.arange(8, dtype=_U8)


def _f16(b: np.ndarray) -> np.ndarray:
    """(n, 2) bytes -> (n, 1) float16."""
    return np.ascontiguousarray(b).view(np.float16)


def _nibbles(qs: np.ndarray, half: int) -> np.ndarray:
    """Bytes (n, m) in chunks of ``half`` bytes -> 4-bit codes: per chunk, the low nibbles then the high."""
    n = qs.shape[0]
    return ((qs.reshape(n, -1, 1, half) >> _SHIFT4.reshape(1, 1, 2, 1)) & 0x0F).reshape(n, -1)


def _crumbs(qs: np.ndarray, width: int) -> np.ndarray:
    """Bytes (n, m) in chunks of ``width`` bytes -> 2-bit codes: per chunk, bits 0-1 of every byte, then 2-3, ..."""
    n = qs.shape[0]
    return ((qs.reshape(n, -1, 1, width) >> _SHIFT2.reshape(1, 1, 4, 1)) & 0x03).reshape(n, -1)


def _bits_le(qh: np.ndarray) -> np.ndarray:
    """Bytes (n, m) read as one little-endian bit string: element i is bit i % 8 of byte i // 8."""
    return np.unpackbits(qh, axis=-1, bitorder="little")


def _bits(qh: np.ndarray) -> np.ndarray:
    """Bytes (n, m) -> bit b of every byte, for b = 0..7 in turn (n, 8 m)."""
    n = qh.shape[0]
    return ((qh.reshape(n, 1, -1) >> _SHIFT1.reshape(1, 8, 1)) & 0x01).reshape(n, -1)


def _trits(qs: np.ndarray, pows) -> np.ndarray:
    """llama.cpp's base-3 packing: byte x, for each power p, gives trit ((x * p mod 256) * 3) >> 8."""
    n = qs.shape[0]
    p = np.asarray(pows, np.uint16).reshape(1, -1, 1)
    v = (qs.astype(np.uint16).reshape(n, 1, -1) * p) & 0xFF
    return ((v * 3) >> 8).reshape(n, -1).astype(np.uint8)


def _k_scale_min(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K/Q5_K's 12 bytes of 6-bit scales and mins -> (sc, m), each (n, 8)."""
    n = scales.shape[0]
    s = scales.reshape(n, 3, 4)
    d, m, md = s[:, 0], s[:, 1], s[:, 2]
    sc = np.concatenate([d & 0x3F, (md & 0x0F) | ((d >> 2) & 0x30)], axis=-1)
    mn = np.concatenate([m & 0x3F, (md >> 4) | ((m >> 2) & 0x30)], axis=-1)
    return sc, mn


def _q3k_scales(scales: np.ndarray) -> np.ndarray:
    """Q3_K's 12 bytes of 6-bit scales -> (n, 16) signed (scale - 32)."""
    n = scales.shape[0]
    lo = ((scales[:, :8].reshape(n, 1, 8) >> _SHIFT4.reshape(1, 2, 1)) & 0x0F).reshape(n, 16)
    hi = ((scales[:, 8:].reshape(n, 1, 4) >> _SHIFT2.reshape(1, 4, 1)) & 0x03).reshape(n, 16)
    return (lo | (hi << 4)).astype(np.int16) - 32


def _decode_blocks(t: QT, b: np.ndarray):
    """Blocks (n, type_size) bytes -> (codes (n, block) as integers, scale (n, g), zero (n, g) or None,
    group, ladder dtype name, zero mode)."""
    f32 = np.float32
    if t == QT.Q8_0:
        return b[:, 2:].view(np.int8), _f16(b[:, :2]), None, 32, "i8", "none"
    if t == QT.Q4_0:
        return _nibbles(b[:, 2:], 16).astype(np.int8) - 8, _f16(b[:, :2]), None, 32, "i4", "none"
    if t == QT.Q4_1:
        return _nibbles(b[:, 4:], 16), _f16(b[:, :2]), -_f16(b[:, 2:4]), 32, "u4", "rescale"
    if t in (QT.Q5_0, QT.Q5_1):
        off = 2 if t == QT.Q5_0 else 4
        hi = _bits_le(b[:, off:off + 4])  # qh is a little-endian uint32: bit i -> element i
        q = _nibbles(b[:, off + 4:], 16) | (hi << 4)
        if t == QT.Q5_0:
            return q.astype(np.int8) - 16, _f16(b[:, :2]), None, 32, "i8", "none"
        return q, _f16(b[:, :2]), -_f16(b[:, 2:4]), 32, "u8", "rescale"
    if t == QT.TQ2_0:
        return _crumbs(b[:, :64], 32).astype(np.int8) - 1, _f16(b[:, 64:66]), None, 256, "ternary", "none"
    if t == QT.TQ1_0:
        pw5 = (1, 3, 9, 27, 81)
        q = np.concatenate([_trits(b[:, :32], pw5), _trits(b[:, 32:48], pw5), _trits(b[:, 48:52], pw5[:4])],
                           axis=-1)
        return q.astype(np.int8) - 1, _f16(b[:, 52:54]), None, 256, "ternary", "none"
    if t == QT.Q2_K:
        sc, qs = b[:, :16], b[:, 16:80]
        d, dmin = _f16(b[:, 80:82]).astype(f32), _f16(b[:, 82:84]).astype(f32)
        scale = d * (sc & 0x0F).astype(f32)
        zero = dmin * (sc >> 4).astype(f32)
        return _crumbs(qs, 32), scale, zero, 16, "u2", "rescale"
    if t == QT.Q3_K:
        hmask, qs, sc = b[:, :32], b[:, 32:96], b[:, 96:108]
        d = _f16(b[:, 108:110]).astype(f32)
        q = _crumbs(qs, 32).astype(np.int8) - ((_bits(hmask) ^ 1) << 2).astype(np.int8)
        return q, d * _q3k_scales(sc).astype(f32), None, 16, "i4", "none"
    if t in (QT.Q4_K, QT.Q5_K):
        d, dmin = _f16(b[:, :2]).astype(f32), _f16(b[:, 2:4]).astype(f32)
        sc, mn = _k_scale_min(b[:, 4:16])
        scale, zero = d * sc.astype(f32), dmin * mn.astype(f32)
        if t == QT.Q4_K:
            return _nibbles(b[:, 16:], 32), scale, zero, 32, "u4", "rescale"
        q = _nibbles(b[:, 48:], 32) | (_bits(b[:, 16:48]) << 4)
        return q, scale, zero, 32, "u8", "rescale"
    if t == QT.Q6_K:
        ql, qh, sc = b[:, :128], b[:, 128:192], b[:, 192:208].view(np.int8)
        d = _f16(b[:, 208:210]).astype(f32)
        q = (_nibbles(ql, 64) | (_crumbs(qh, 32) << 4)).astype(np.int8) - 32
        return q, d * sc.astype(f32), None, 16, "i8", "none"
    raise AssertionError(t)


QUANTIZED = (QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.TQ1_0, QT.TQ2_0,
             QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K)
FLOATS = {QT.F32: "f32", QT.F16: "f16", QT.BF16: "bf16"}
SUPPORTED = tuple(FLOATS) + QUANTIZED
MAX_DIMS = 4  # GGML_MAX_DIMS


def supported_types() -> list[str]:
    return [t.name for t in SUPPORTED]


def _convert(name: str, t: QT, data: np.ndarray, shape: tuple[int, ...]) -> GGUFTensor:
    if t in FLOATS:
        dt = DTYPES[FLOATS[t]]
        raw = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        vals = raw.view({QT.F32: np.float32, QT.F16: np.float16, QT.BF16: dt.np_dtype}[t])
        return GGUFTensor(name, t.name, dt, vals.reshape(shape).copy())
    block, size = GGML_QUANT_SIZES[t]
    blocks = np.ascontiguousarray(data).reshape(-1, size)
    codes, scale, zero, group, dtname, zm = _decode_blocks(t, blocks)
    lead, k = shape[:-1], shape[-1]
    dt = DTYPES[dtname]
    if dtname == "ternary" and codes.size and codes.max() > 1:
        raise GGUFError(f"tensor '{name}' ({t.name}) holds the unused 2-bit code 3, which is not a ternary value")
    per_block = block // group
    codes = codes.reshape(shape).astype(dt.np_dtype)
    scale = np.ascontiguousarray(scale).reshape(*lead, (k // block) * per_block).copy()
    if zero is not None:
        zero = np.ascontiguousarray(zero).reshape(scale.shape).copy()
    return GGUFTensor(name, t.name, dt, codes, scale, zero, group, zm)


# -- reading a file --------------------------------------------------------------------------------------

class _Reader(GGUFReader):
    """GGUFReader with checks of every tensor's info before the reader builds its arrays."""

    def _build_tensors(self, start_offs: int, fields) -> None:
        size = len(self.data)
        expected = 0  # llama.cpp requires the tensors' data back to back, each padded to the alignment
        for field in fields:
            _len, name_data, n_dims, dims, raw_dtype, offset = field.parts
            name = bytes(name_data).decode("utf-8", errors="replace")
            if n_dims.size != 1 or dims.size != int(n_dims[0]) or raw_dtype.size != 1 or offset.size != 1:
                raise GGUFError(f"tensor info of '{name}' is cut short by the end of the file")
            if not 1 <= dims.size <= MAX_DIMS:
                raise GGUFError(f"tensor '{name}' has {dims.size} dimensions; GGUF allows 1 to {MAX_DIMS}")
            try:
                t = QT(int(raw_dtype[0]))
            except ValueError:
                raise GGUFError(f"tensor '{name}' has unknown type number {int(raw_dtype[0])}") from None
            ne = [int(d) for d in dims]
            if any(d < 0 or d >= 1 << 40 for d in ne) or math.prod(ne) >= 1 << 48:
                raise GGUFError(f"tensor '{name}' has an impossible shape {ne}")
            if t not in GGML_QUANT_SIZES:
                raise GGUFError(f"tensor '{name}' has type {t.name}, whose block size is unknown")
            block, tsize = GGML_QUANT_SIZES[t]
            if ne[0] % block:
                raise GGUFError(f"tensor '{name}' ({t.name}) has rows of {ne[0]} elements, not a whole number "
                                f"of {block}-element blocks")
            n_bytes = math.prod(ne) // block * tsize
            rel = int(offset[0])
            if rel != expected:
                raise GGUFError(f"tensor '{name}' ({t.name}, shape {ne}) has data offset {rel}, expected {expected} "
                                f"(the end of the tensors before it): a wrong offset, or a wrong type or shape "
                                f"of a tensor before it")
            begin = start_offs + rel
            if begin + n_bytes > size:
                raise GGUFError(f"tensor '{name}' ({t.name}, shape {ne}) needs bytes {begin}..{begin + n_bytes} "
                                f"but the file has {size} bytes (truncated, or a wrong type or shape)")
            expected = rel + -(-n_bytes // self.alignment) * self.alignment
        super()._build_tensors(start_offs, fields)


@dataclass
class GGUFFile:
    """A read GGUF file: metadata (key -> Python value) and tensor infos by name (data not yet decoded)."""

    path: str
    metadata: dict[str, Any]
    infos: dict[str, Any]  # name -> gguf ReaderTensor

    def tensor(self, name: str) -> GGUFTensor:
        info = self.infos[name]
        return _tensor_of(self.path, info)


def _tensor_of(path: str, info) -> GGUFTensor:
    t = QT(int(info.tensor_type))
    shape = tuple(int(d) for d in reversed([int(x) for x in info.shape]))
    if t not in SUPPORTED:
        raise GGUFError(f"{path}: tensor '{info.name}' has type {t.name}, which ladder does not read; "
                        f"it reads {', '.join(supported_types())}")
    try:
        return _convert(info.name, t, info.data, shape)
    except GGUFError as e:
        raise GGUFError(f"{path}: {e.message}") from None
    except (ValueError, TypeError, IndexError) as e:  # data of the wrong size for its shape
        raise GGUFError(f"{path}: tensor '{info.name}' ({t.name}, shape {list(shape)}) is malformed: {e}") from None


def _field_value(field) -> Any:
    types = list(field.types)
    if not types:
        return None
    if types[0] == GGUFValueType.ARRAY:
        # ladder reads no array (a tokenizer's vocabulary is one): keep short ones, for messages
        if len(field.data) > 64 or (len(types) > 1 and types[-1] == GGUFValueType.ARRAY):
            return ArrayValue(len(field.data))
        return field.contents()
    return field.contents()


@dataclass(frozen=True)
class ArrayValue:
    """A metadata array ladder does not decode (only its length is kept)."""

    length: int


def open_file(path: str | os.PathLike) -> GGUFFile:
    """Read a GGUF file's metadata and tensor infos; LadderError (GGUFError) for anything malformed."""
    p = os.fspath(path)
    try:
        reader = _Reader(p, "r")
    except GGUFError as e:
        raise GGUFError(f"{p}: {e.message}") from None
    except FileNotFoundError:
        raise GGUFError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise GGUFError(f"{p}: is a directory, not a GGUF file") from None
    except PermissionError as e:
        raise GGUFError(f"{p}: cannot read: {e}") from None
    except Exception as e:  # the reader's own errors: ValueError, KeyError, IndexError, struct/numpy errors
        msg = str(e) or type(e).__name__
        if "magic" in msg.lower():
            raise GGUFError(f"{p}: not a GGUF file (its first 4 bytes are not 'GGUF')") from None
        if isinstance(e, ValueError) and "mmap" in msg and "empty" in msg:
            raise GGUFError(f"{p}: is empty, not a GGUF file") from None
        raise GGUFError(f"{p}: malformed GGUF file ({type(e).__name__}: {msg}); truncated or corrupt?") from None
    if reader.byte_order != "I":
        raise GGUFError(f"{p}: a byte-swapped (big-endian) GGUF file; ladder reads little-endian files only")
    meta: dict[str, Any] = {}
    for key, field in reader.fields.items():
        try:
            meta[key] = _field_value(field)
        except Exception as e:  # invalid UTF-8 in a string, and the like
            raise GGUFError(f"{p}: metadata '{key}' is malformed ({type(e).__name__}: {e})") from None
    infos = {t.name: t for t in reader.tensors}
    return GGUFFile(p, meta, infos)


def read_tensors(path: str | os.PathLike) -> dict[str, GGUFTensor]:
    """Every tensor of a GGUF file as ladder codes + scales (+ zeros); see the module's table."""
    f = open_file(path)
    unsupported = sorted(f"{n} ({QT(int(i.tensor_type)).name})" for n, i in f.infos.items()
                         if QT(int(i.tensor_type)) not in SUPPORTED)
    if unsupported:
        raise GGUFError(f"{f.path}: tensor type(s) ladder does not read: {', '.join(unsupported)}; "
                        f"it reads {', '.join(supported_types())}")
    return {name: f.tensor(name) for name in f.infos}


# -- the model ----------------------------------------------------------------------------------------

ARCHITECTURES = ("llama", "bitnet")
PROJECTIONS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


@dataclass(frozen=True)
class Hyper:
    arch: str
    cfg: BitNetConfig

    @property
    def rope_style(self) -> str:
        return "interleaved" if self.arch == "llama" else "half"


def _meta_int(f: GGUFFile, key: str, default: int | None = None, problems: list | None = None) -> int:
    v = f.metadata.get(key, default)
    if v is None:
        problems.append(f"metadata '{key}' is missing")
        return 1
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 1 <= int(v) < 1 << 31:
        problems.append(f"metadata '{key}' should be a positive integer, got {v!r}")
        return 1
    return int(v)


def _meta_float(f: GGUFFile, key: str, default: float, problems: list) -> float:
    v = f.metadata.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v) \
            or v < 0:
        problems.append(f"metadata '{key}' should be a finite number >= 0, got {v!r}")
        return default
    return float(v)


def _hyper(f: GGUFFile) -> Hyper:
    arch = f.metadata.get("general.architecture")
    if not isinstance(arch, str):
        raise GGUFError(f"{f.path}: metadata 'general.architecture' is missing or not a string")
    if arch not in ARCHITECTURES:
        raise GGUFError(f"{f.path}: architecture '{arch}' is not supported; ladder builds "
                        f"{', '.join(ARCHITECTURES)}")
    problems: list[str] = []
    a = arch
    layers = _meta_int(f, f"{a}.block_count", problems=problems)
    hidden = _meta_int(f, f"{a}.embedding_length", problems=problems)
    heads = _meta_int(f, f"{a}.attention.head_count", problems=problems)
    kv_heads = _meta_int(f, f"{a}.attention.head_count_kv", heads, problems=problems)
    ffn = _meta_int(f, f"{a}.feed_forward_length", problems=problems)
    context = _meta_int(f, f"{a}.context_length", problems=problems)
    theta = _meta_float(f, f"{a}.rope.freq_base", 10000.0, problems)
    eps = _meta_float(f, f"{a}.attention.layer_norm_rms_epsilon", 1e-5, problems)
    if theta <= 0:
        problems.append(f"metadata '{a}.rope.freq_base' must be > 0")
    if not problems:
        if hidden % heads:
            problems.append(f"embedding_length {hidden} is not a multiple of head_count {heads}")
        elif heads % kv_heads:
            problems.append(f"head_count {heads} is not a multiple of head_count_kv {kv_heads}")
        elif (hidden // heads) % 2:
            problems.append(f"the head size {hidden // heads} is odd; RoPE needs it even")
    head_dim = hidden // heads if heads else 0
    for key in (f"{a}.attention.key_length", f"{a}.attention.value_length", f"{a}.rope.dimension_count"):
        v = f.metadata.get(key)
        if v is not None and v != head_dim:
            problems.append(f"'{key}' = {v!r} differs from the head size {head_dim} (not supported)")
    stype = f.metadata.get(f"{a}.rope.scaling.type")
    factor = f.metadata.get(f"{a}.rope.scaling.factor")
    if (stype not in (None, "none") and not (stype == "linear" and factor in (None, 1, 1.0))) or \
            (stype is None and factor not in (None, 1, 1.0)):
        problems.append(f"RoPE scaling ({stype or 'factor'} {factor}) is not supported")
    if problems:
        raise GGUFError(f"{f.path}: cannot build the {arch} model: " + "; ".join(problems))
    cfg = BitNetConfig(vocab=1, hidden=hidden, layers=layers, heads=heads, kv_heads=kv_heads, ffn=ffn,
                       context=context, rope_theta=theta, eps=eps)
    return Hyper(arch, cfg)


def _expected_tensors(h: Hyper, vocab: int, has_output: bool) -> dict[str, tuple[int, ...]]:
    c = h.cfg
    d, kvd = c.hidden, c.kv_heads * c.head_dim
    out = {"token_embd.weight": (vocab, d), "output_norm.weight": (d,)}
    if has_output:
        out["output.weight"] = (vocab, d)
    for i in range(c.layers):
        p = f"blk.{i}"
        out.update({f"{p}.attn_norm.weight": (d,), f"{p}.attn_q.weight": (d, d), f"{p}.attn_k.weight": (kvd, d),
                    f"{p}.attn_v.weight": (kvd, d), f"{p}.attn_output.weight": (d, d),
                    f"{p}.ffn_norm.weight": (d,), f"{p}.ffn_gate.weight": (c.ffn, d),
                    f"{p}.ffn_up.weight": (c.ffn, d), f"{p}.ffn_down.weight": (d, c.ffn)})
        if h.arch == "bitnet":
            out[f"{p}.attn_sub_norm.weight"] = (d,)
            out[f"{p}.ffn_sub_norm.weight"] = (c.ffn,)
    return out


def _optional_tensors(h: Hyper) -> dict[str, tuple[int, ...]]:
    if h.arch != "bitnet":
        return {}
    return {f"blk.{i}.{proj}.scale": (1,) for i in range(h.cfg.layers) for proj in PROJECTIONS}


def _check_tensors(f: GGUFFile, h: Hyper) -> tuple[int, dict[str, tuple[int, ...]]]:
    """(vocab, the tensors the model reads with their shapes); raises listing every problem."""
    emb = f.infos.get("token_embd.weight")
    if emb is None:
        raise GGUFError(f"{f.path}: the {h.arch} model needs tensor 'token_embd.weight', which is missing")
    eshape = tuple(int(x) for x in reversed([int(d) for d in emb.shape]))
    if len(eshape) != 2:
        raise GGUFError(f"{f.path}: tensor 'token_embd.weight' should be [vocab, {h.cfg.hidden}], "
                        f"got {list(eshape)}")
    vocab = eshape[0]
    want = _expected_tensors(h, vocab, "output.weight" in f.infos)
    optional = _optional_tensors(h)
    problems = []
    missing = [n for n in want if n not in f.infos]
    if missing:
        more = f" and {len(missing) - 6} more" if len(missing) > 6 else ""
        problems.append(f"missing tensor(s) {', '.join(missing[:6])}{more}")
    extra = [n for n in f.infos if n not in want and n not in optional]
    if extra:
        more = f" and {len(extra) - 6} more" if len(extra) > 6 else ""
        problems.append(f"tensor(s) this {h.arch} model does not use (not supported): "
                        f"{', '.join(extra[:6])}{more}")
    bad_types = []
    for n, info in f.infos.items():
        t = QT(int(info.tensor_type))
        shape = tuple(int(x) for x in reversed([int(d) for d in info.shape]))
        expect = want.get(n, optional.get(n))
        if expect is not None and shape != expect:
            problems.append(f"tensor '{n}' has shape {list(shape)} but the metadata says {list(expect)}")
        if t not in SUPPORTED:
            bad_types.append(f"{n} ({t.name})")
    if bad_types:
        problems.append(f"tensor type(s) ladder does not read: {', '.join(bad_types[:6])}"
                        f"{' ...' if len(bad_types) > 6 else ''} (it reads {', '.join(supported_types())})")
    if problems:
        raise GGUFError(f"{f.path}: cannot build the {h.arch} model: " + "; ".join(problems))
    return vocab, {**want, **{n: s for n, s in optional.items() if n in f.infos}}


def _context_and_seq(h: Hyper, shapes: Mapping[str, Any] | None) -> tuple[int, int]:
    c = h.cfg
    seq, context = 1, c.context
    for name, shape in (shapes or {}).items():
        name = name.lstrip("%")
        dims = tuple(shape) if shape is not None else None
        if name in ("tokens", "pos"):
            if dims is None or len(dims) != 1 or not 1 <= int(dims[0]) <= 1 << 20:
                raise GGUFError(f"shape of '{name}' must be (S,) with S >= 1, got {shape}")
            seq = int(dims[0])
        elif name.startswith(("k_cache", "v_cache")) and name[7:].isdigit() and int(name[7:]) < c.layers:
            if dims is None or len(dims) != 3 or dims[0] != c.kv_heads or dims[2] != c.head_dim or dims[1] < 1:
                raise GGUFError(f"shape of '{name}' must be ({c.kv_heads}, CONTEXT, {c.head_dim}), got {shape}")
            context = int(dims[1])
        else:
            raise GGUFError(f"no input '{name}' to give a shape to; the inputs are tokens, pos, start, kv_len, "
                            f"k_cacheN, v_cacheN (N < {c.layers})")
    if seq > context:
        raise GGUFError(f"a step of {seq} tokens does not fit the cache of {context} positions")
    return seq, context


def config(path: str | os.PathLike, shapes: Mapping[str, Any] | None = None) -> BitNetConfig:
    """The decoder's dimensions (what ``ladder.demo.generate`` needs), with the context that ``load`` with
    the same ``shapes`` uses."""
    f = open_file(path)
    h = _hyper(f)
    vocab, _ = _check_tensors(f, h)
    _, context = _context_and_seq(h, shapes)
    c = h.cfg
    return BitNetConfig(vocab=vocab, hidden=c.hidden, layers=c.layers, heads=c.heads, kv_heads=c.kv_heads,
                        ffn=c.ffn, context=context, rope_theta=c.rope_theta, eps=c.eps)


class _Model:
    """Builds the graph and collects the weights it reads."""

    def __init__(self, f: GGUFFile, h: Hyper, seq: int, context: int, name: str):
        self.f, self.h, self.seq, self.context = f, h, seq, context
        self.b = Builder(name)
        self.weights: dict[str, np.ndarray] = {}
        self._tensors: dict[str, GGUFTensor] = {}

    def tensor(self, name: str) -> GGUFTensor:
        if name not in self._tensors:
            self._tensors[name] = self.f.tensor(name)
        return self._tensors[name]

    def _param(self, ref: str, arr: np.ndarray, dt: DType) -> Value:
        if ref in self.weights and self.weights[ref] is not arr:
            raise GGUFError(f"{self.f.path}: weight name '{ref}' is used twice")
        self.weights[ref] = arr
        return self.b.param(ref, f"{dt.name}[{', '.join(map(str, arr.shape))}]")

    def vector(self, name: str) -> Value:
        """A 1-D weight (norms), as f32 values."""
        t = self.tensor(name)
        vals = t.values() if (t.quantized or t.dtype.name != "f32") else t.codes
        if name not in self.weights:
            self.weights[name] = np.ascontiguousarray(vals, np.float32)
        return self.b.param(name, f"f32[{t.shape[0]}]")

    def _float(self, v: Value) -> Value:
        return v if v.type.dtype.name == "f32" else self.b.cast(v, dtype="f32")

    def matrix(self, name: str) -> Value:
        """A 2-D weight as f32 values: a float param (cast to f32), or codes + scales (+ zeros) + dequant."""
        t = self.tensor(name)
        codes = self._param(name, t.codes, t.dtype)
        if not t.quantized:
            return self._float(codes)
        scale = self._param(f"{name}.scales", t.scale, _np_dtype_ladder(t.scale))
        extra = [self._param(f"{name}.zeros", t.zero, _np_dtype_ladder(t.zero))] if t.zero is not None else []
        return self.b.dequant(codes, scale, *extra, axis=-1, group=t.group, zero_mode=t.zero_mode)

    def embed(self, tokens: Value) -> Value:
        t = self.tensor("token_embd.weight")
        b = self.b
        codes = self._param("token_embd.weight", t.codes, t.dtype)
        rows = b.gather(codes, tokens)
        if not t.quantized:
            return self._float(rows)
        scale = b.gather(self._param("token_embd.weight.scales", t.scale, _np_dtype_ladder(t.scale)), tokens)
        extra = []
        if t.zero is not None:
            extra = [b.gather(self._param("token_embd.weight.zeros", t.zero, _np_dtype_ladder(t.zero)), tokens)]
        return b.dequant(rows, scale, *extra, axis=-1, group=t.group, zero_mode=t.zero_mode)

    def linear(self, x: Value, name: str, scale_name: str | None = None, *, name_out: str | None = None) -> Value:
        b = self.b
        if self.h.arch != "bitnet":
            y = b.matmul(x, self.matrix(name), transpose_b=True, name=None if scale_name else name_out)
            return b.mul(y, self.vector(scale_name), name=name_out) if scale_name else y
        xq, xs = b.quantize(x, scheme="absmax", dtype="i8")
        t = self.tensor(name)
        shared = _shared_ternary_scale(t)
        if shared is not None:  # BitNet's integer path: i8 x ternary -> i32, then the two scales
            codes, s = shared
            w = self._param(name, codes, t.dtype)
            ws = self._param(f"{name}.scales", s, DTYPES["f32"])
            acc = b.matmul(xq, w, transpose_b=True)
            y = b.mul(b.mul(b.cast(acc, dtype="f32"), xs), ws, name=None if scale_name else name_out)
        else:
            y = b.matmul(b.dequant(xq, xs), self.matrix(name), transpose_b=True,
                         name=None if scale_name else name_out)
        if scale_name:
            y = b.mul(y, self.vector(scale_name), name=name_out)
        return y


def _np_dtype_ladder(arr: np.ndarray) -> DType:
    return DTYPES["f16"] if arr.dtype == np.float16 else DTYPES["f32"]


def _shared_ternary_scale(t: GGUFTensor):
    """(codes, f32[1] scale) when a ternary tensor's blocks all share one scale (blocks of scale 0 hold only
    zeros whatever their codes, so their codes become 0); else None."""
    if t.dtype.name != "ternary" or not t.quantized:
        return None
    s = t.scale.astype(np.float32)
    nz = s[s != 0]
    if nz.size == 0:  # every block is zero
        return np.zeros_like(t.codes), np.zeros(1, np.float32)
    if not np.all(np.isfinite(nz)) or not np.all(nz == nz.flat[0]):
        return None
    codes = t.codes
    if nz.size != s.size:
        keep = np.repeat(s != 0, t.group, axis=-1)[..., :codes.shape[-1]]
        codes = np.where(keep, codes, 0).astype(codes.dtype)
    return codes, np.array([nz.flat[0]], np.float32)


def load(path: str | os.PathLike, shapes: Mapping[str, tuple[int, ...]] | None = None
         ) -> tuple[Graph, dict[str, np.ndarray]]:
    """(one decoder step graph, its weights by param name) from a llama or bitnet GGUF file."""
    f = open_file(path)
    h = _hyper(f)
    vocab, used = _check_tensors(f, h)
    seq, context = _context_and_seq(h, shapes)
    m = _Model(f, h, seq, context, f"{h.arch}_step")
    c, b = h.cfg, m.b
    d, hd = c.hidden, c.head_dim

    tokens, pos, start, kv_len, caches = decoder_step_inputs(b, seq, c.kv_heads, context, hd, c.layers)

    def heads(t: Value, n: int) -> Value:
        return b.transpose(b.reshape(t, shape=[seq, n, hd]), perm=[1, 0, 2])

    def scale_of(p: str, proj: str) -> str | None:
        name = f"{p}.{proj}.scale"
        return name if name in used else None

    bitnet = h.arch == "bitnet"
    x = m.embed(tokens)
    new_caches = []
    for i, (kc, vc) in enumerate(caches):
        p = f"blk.{i}"
        hn = b.rmsnorm(x, m.vector(f"{p}.attn_norm.weight"), eps=c.eps)
        q = m.linear(hn, f"{p}.attn_q.weight", scale_of(p, "attn_q"))
        k = m.linear(hn, f"{p}.attn_k.weight", scale_of(p, "attn_k"))
        v = m.linear(hn, f"{p}.attn_v.weight", scale_of(p, "attn_v"))
        q = b.rope(heads(q, c.heads), pos, theta=c.rope_theta, style=h.rope_style)
        k = b.rope(heads(k, c.kv_heads), pos, theta=c.rope_theta, style=h.rope_style)
        v = heads(v, c.kv_heads)
        kc2 = b.cache_write(kc, k, start)
        vc2 = b.cache_write(vc, v, start)
        new_caches += [kc2, vc2]
        att = b.attention(q, kc2, vc2, kv_len)
        att = b.reshape(b.transpose(att, perm=[1, 0, 2]), shape=[seq, d])
        if bitnet:
            att = b.rmsnorm(att, m.vector(f"{p}.attn_sub_norm.weight"), eps=c.eps)
        x = b.add(x, m.linear(att, f"{p}.attn_output.weight", scale_of(p, "attn_output")))

        hn = b.rmsnorm(x, m.vector(f"{p}.ffn_norm.weight"), eps=c.eps)
        gate = m.linear(hn, f"{p}.ffn_gate.weight", scale_of(p, "ffn_gate"))
        up = m.linear(hn, f"{p}.ffn_up.weight", scale_of(p, "ffn_up"))
        a = b.mul(b.relu2(gate) if bitnet else b.silu(gate), up)
        if bitnet:
            a = b.rmsnorm(a, m.vector(f"{p}.ffn_sub_norm.weight"), eps=c.eps)
        x = b.add(x, m.linear(a, f"{p}.ffn_down.weight", scale_of(p, "ffn_down")))

    x = b.rmsnorm(x, m.vector("output_norm.weight"), eps=c.eps)
    out_name = "output.weight" if "output.weight" in f.infos else "token_embd.weight"
    # the output projection is a float-activation matmul for both (llama.cpp's bitnet does not quantize it)
    logits = b.matmul(x, m.matrix(out_name), transpose_b=True, name="logits")
    graph = b.build(logits, *new_caches)
    return graph, m.weights
