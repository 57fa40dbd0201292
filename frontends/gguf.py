"""GGUF files (llama.cpp's model format) -> ladder (installed as ``ladder.frontends.gguf``; needs the ``gguf`` extra).

The file is read with the ``gguf`` package's ``GGUFReader`` (a memory map; nothing in the file is executed)
after checks of its own, those llama.cpp makes: every count and length in the header against the bytes left in
the file (``_HeaderCheck``, before the reader loops over them), every tensor's type, rank, row length (a whole
number of blocks), that the tensors' data lie back to back (each padded to the alignment) and inside the file.
Tensors stay in the memory map until one is asked for. Anything malformed is a ``LadderError`` naming the file.

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
Q2_K     u4 (0..3)    f32 d*sc, zero dmin*m per 16 (``rescale``)  q * (d*sc) - dmin*m
Q3_K     i4 (-4..3)   f32 d*(sc-32) per 16                       q * (d*(sc-32))
Q4_K     u4           f32 d*sc, zero dmin*m per 32 (``rescale``)  q * (d*sc) - dmin*m
Q5_K     i8 (0..31)   f32 d*sc, zero dmin*m per 32 (``rescale``)  q * (d*sc) - dmin*m
Q6_K     i8 (q - 32)  f32 d*sc per 16                            (q - 32) * (d*sc)
I2_S     ternary      f32 s per tensor (bitnet.cpp, type 36)      t * s

(K-quant sub-block scales are products of an f16 and a 6-bit or 8-bit integer, computed in f32 as llama.cpp
does; they are exact in f32. The graphs built for the integer kernels take them, and the mins, as the file holds
them: ``dequant(sub-scales i8, d f32 per 256)``, ``GGUFTensor.factors``.)

``load(path, shapes)`` builds one decoder step with ``ladder.models.decoder`` (the builder every importer
shares) from the file's metadata, with the step convention of ``ladder.generate`` (``tokens``, ``pos``,
``start``, ``kv_len``, ``k_cacheN``/``v_cacheN`` -> logits and the updated caches); ``config(path)`` gives
the dimensions. ``shapes={"tokens": (S,)}`` sets the step's length (default 1); ``shapes={"k_cache0":
(kv_heads, C, head_dim)}`` (any cache) sets the cache capacity C (default: the file's ``context_length``).
The graphs are checked against llama.cpp itself (tests/test_parity_llamacpp.py).

* Quantized weights become ``param`` codes + ``param`` scales (+ zeros) + ``dequant`` + ``matmul
  {transpose_b}``, which ``legalize-types,fuse`` turn into one ``qmatmul`` over packed weights. The weights
  are the file's blocks (``ladder.weights.Blocks``, a view of the memory map), decoded when a compile first
  reads them and packed once for every module compiled from them. Q4_0 and TQ2_0 blocks are ladder's
  ``q4+f16`` and ``tq2+f16`` byte for byte: their codes params say so (``stored``), and the file's bytes
  become the packed weight as they are, never decoded unless a graph reads their codes (an embedding's rows).
* Activations are quantized where llama.cpp quantizes them: into a Q8_0, Q4_0 or Q5_0 projection (whose
  llama.cpp dot product takes Q8_0 activations) x goes through llama.cpp's Q8_0 blocks, ``quantize {absmax, i8,
  group = 32}`` (q = rint(x * 127 / max|x|), as its x86 ``quantize_row_q8_0``) with the scale rounded to f16
  (``cast`` to f16 and back), then ``dequant``; ``fuse`` makes that and the weight's dequant one
  ``qmatmul_q8`` (integer dot products per block of 32, as llama.cpp's). Into a TQ2_0 or TQ1_0 projection x goes
  through Q8_K blocks (the same absmax int8 codes per 256, the scale kept f32: llama.cpp's ``quantize_row_q8_K``
  up to the scale's sign and last bit) and ``qmatmul_q8 {group = 256}``. Into a Q4_K projection x goes through
  the same Q8_K blocks, and the product is taken as llama.cpp's Q4_K dot product takes it, the codes' term less
  the mins' term: ``dequant(x's codes, x's scale per 256) @ dequant(q, dequant(sc, d)).T`` less ``(x's
  sums per 32) @ dequant(m, dmin).T``, which ``fuse`` makes one ``qmatmul_q8 {scale_group = 8}`` over 4-bit
  blocks of 32 reading sc, d, m and dmin as the file holds them (a byte a block, an f32 per 256); Q5_K's the same
  with its 5-bit codes as int8 blocks. Into Q6_K and Q3_K projections (and a Q6_K head) x goes through the same
  Q8_K blocks, and ``dequant(x's codes, x's scale per 256) @ dequant(q, dequant(sc, d)).T`` becomes one
  ``qmatmul_q8 {group = 16, scale_group = 16}`` (int8 or 4-bit blocks of 32, two scales a block); Q2_K's
  (2-bit codes as 4-bit blocks, a scale and a zero per 16) the same with its zeros' term (x's sums per 16)
  inside. Other weight types (Q4_1, Q5_1, F32) keep f32 activations; into F16 and BF16 weights x
  goes rounded to f16 / bf16, as llama.cpp's dot products for those types take it.
* llama: RMSNorm, RoPE in llama.cpp's normal mode (adjacent pairs: ``rope {style = "interleaved"}``; the
  converter permuted the Q/K rows for it), grouped-query causal attention, SwiGLU FFN, final norm, output
  projection (``output.weight``, or tied to ``token_embd.weight`` when absent).
* bitnet (llama.cpp's LLM_ARCH_BITNET): the same with float activations into every matmul, plus
  ``attn_sub_norm`` (before the output projection) and ``ffn_sub_norm`` (after SiLU(gate) * up, before the
  down projection), RoPE in NEOX mode (``style = "half"``), the optional per-tensor ``blk.N.<proj>.scale``
  multipliers, and the head always ``token_embd`` (llama.cpp loads no ``output.weight`` for it).
* bitnet-b1.58 (BitNet b1.58 2B4T as bitnet.cpp names it; also its earlier name bitnet-25): as bitnet but
  with squared ReLU on the gate and activations quantized to int8 per token (absmax) before every
  projection but the head, as transformers' BitNetForCausalLM does. A ternary weight whose blocks share one
  scale takes BitNet's integer path (``quantize`` -> i8 x ternary ``matmul`` -> rescale, fused into
  ``qmatmul_i8``); any other weight gets the int8-quantized activations dequantized into a float matmul.

Not supported (a LadderError lists what the file has): other architectures, tensor types not in the table
(IQ*, Q8_1, Q8_K, MXFP4, integer tensors, ...), biases and other extra tensors, RoPE scaling (``rope_freqs``,
``rope.scaling.*``), partial rotary dimensions, head sizes other than embedding_length / head_count,
per-layer head counts, and byte-swapped (big-endian) files.
"""

from __future__ import annotations

import math
import mmap
import os
import stat
import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ladder.builder import Builder
from ladder.errors import LadderError
from ladder.ir import Graph, Value
from ladder.models import (BITNET_B158, BITNET_GGUF, LLAMA_GGUF, Arch, BitNetConfig, bitlinear, check_kv_cache,
                           decoder, step_shapes)
from ladder.quant import dequantize as _dequantize
from ladder.types import DTYPES, DType
from ladder.packing import get_packing
from ladder.weights import Blocks

from gguf import GGMLQuantizationType as QT
from gguf import GGUFReader, GGUFValueType, ReaderTensor
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
    stored: str = ""  # the block packing codes and scales are kept in (``STORED``; ladder.weights.Blocks)
    # a K-quant's scale as the file has it: (int8 sub-scales like ``scale``, f32 d per 256), scale = f32(sub) * d,
    # then its zeros the same way (or None, None)
    factors: tuple[Any, Any, Any, Any] | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.codes.shape)

    @property
    def quantized(self) -> bool:
        return self.scale is not None

    def values(self) -> np.ndarray:
        """The tensor's values as float32 (ladder.quant's dequantize, the reference of the dequant op)."""
        if self.scale is None:
            return np.asarray(self.codes).astype(np.float32)
        return _dequantize(np.asarray(self.codes), self.dtype, np.asarray(self.scale).astype(np.float32),
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


def _trits(qs: np.ndarray, pows, out: np.ndarray | None = None) -> np.ndarray:
    """llama.cpp's base-3 packing: byte x, for each power p, gives trit ((x * p mod 256) * 3) >> 8, which is
    (v > 85) + (v > 170) for v = x * p mod 256: all in bytes (uint8 products wrap mod 256), nothing widened.
    ``out``: uint8 (n, len(pows) * m) to write them into (a column range of a larger array will do)."""
    n, m = qs.shape
    out = np.empty((n, len(pows) * m), np.uint8) if out is None else out
    for i, p in enumerate(pows):
        v = qs * np.uint8(p)
        np.add(v > 85, v > 170, out=out[:, i * m:(i + 1) * m], dtype=np.uint8)
    return out


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


# K-quants whose sub-block scales are an integer (6 or 8 bits, or 4 for Q2_K) times the block's f16 d: kept
# so (ladder.weights.Blocks' sub_scales, super_scales) for the int8 dot product kernel (qmatmul_q8 {scale_group})
FACTORED = (QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K)


def _k_factors(t: QT, b: np.ndarray):
    """A K-quant's sub-block scales (and mins) as the file holds them: int8 sub-scales (n, 256 / group) and their
    f32 d (n, 1), whose product in f32 is ``_decode_blocks``' scale (exact: a code of at most 8 bits times an
    f16); then the mins' int8 codes and f32 dmin the same way (zero = dmin * m), or None, None."""
    f32 = np.float32
    if t == QT.Q2_K:
        sc = b[:, :16]
        return ((sc & 0x0F).astype(np.int8), _f16(b[:, 80:82]).astype(f32),
                (sc >> 4).astype(np.int8), _f16(b[:, 82:84]).astype(f32))
    if t == QT.Q3_K:
        return _q3k_scales(b[:, 96:108]).astype(np.int8), _f16(b[:, 108:110]).astype(f32), None, None
    if t in (QT.Q4_K, QT.Q5_K):
        sc, mn = _k_scale_min(b[:, 4:16])
        return sc.astype(np.int8), _f16(b[:, :2]).astype(f32), mn.astype(np.int8), _f16(b[:, 2:4]).astype(f32)
    if t == QT.Q6_K:
        return b[:, 192:208].view(np.int8).copy(), _f16(b[:, 208:210]).astype(f32), None, None
    raise AssertionError(t)


def _decode_blocks(t: QT, b: np.ndarray, codes: bool = True):
    """Blocks (n, type_size) bytes -> (codes (n, block) as integers, scale (n, g), zero (n, g) or None,
    group, ladder dtype name, zero mode). ``codes=False``: the codes are None (not decoded), for the types whose
    scales are a small part of the work (the K-quants, Q4_1, Q5_0, Q5_1)."""
    f32 = np.float32
    want = (lambda f: f()) if codes else (lambda f: None)
    if t == QT.Q8_0:
        return b[:, 2:].view(np.int8), _f16(b[:, :2]), None, 32, "i8", "none"
    if t == QT.Q4_0:
        return _nibbles(b[:, 2:], 16).astype(np.int8) - 8, _f16(b[:, :2]), None, 32, "i4", "none"
    if t == QT.Q4_1:
        return want(lambda: _nibbles(b[:, 4:], 16)), _f16(b[:, :2]), -_f16(b[:, 2:4]), 32, "u4", "rescale"
    if t in (QT.Q5_0, QT.Q5_1):
        off = 2 if t == QT.Q5_0 else 4
        # qh is a little-endian uint32: bit i -> element i
        q = want(lambda: _nibbles(b[:, off + 4:], 16) | (_bits_le(b[:, off:off + 4]) << 4))
        if t == QT.Q5_0:
            return None if q is None else q.astype(np.int8) - 16, _f16(b[:, :2]), None, 32, "i8", "none"
        return q, _f16(b[:, :2]), -_f16(b[:, 2:4]), 32, "u8", "rescale"
    if t == QT.TQ2_0:
        return _crumbs(b[:, :64], 32).astype(np.int8) - 1, _f16(b[:, 64:66]), None, 256, "ternary", "none"
    if t == QT.TQ1_0:
        pw5 = (1, 3, 9, 27, 81)
        q = np.empty((b.shape[0], 256), np.uint8)  # the trits written in place, then less 1 in place
        _trits(b[:, :32], pw5, q[:, :160])
        _trits(b[:, 32:48], pw5, q[:, 160:240])
        _trits(b[:, 48:52], pw5[:4], q[:, 240:])
        q = q.view(np.int8)
        q -= 1
        return q, _f16(b[:, 52:54]), None, 256, "ternary", "none"
    # the K-quants' scales (and zeros): their file's integer sub-scales times d (dmin), in f32
    sub, d, zsub, dmin = _k_factors(t, b)
    scale = d * sub.astype(f32)
    zero = None if zsub is None else dmin * zsub.astype(f32)
    if t == QT.Q2_K:
        # 2-bit codes as u4: the int8 dot product kernel's 4-bit blocks of 32 (Q8_K_BLOCKS)
        return want(lambda: _crumbs(b[:, 16:80], 32)), scale, zero, 16, "u4", "rescale"
    if t == QT.Q3_K:
        hmask, qs = b[:, :32], b[:, 32:96]
        q = want(lambda: _crumbs(qs, 32).astype(np.int8) - ((_bits(hmask) ^ 1) << 2).astype(np.int8))
        return q, scale, None, 16, "i4", "none"
    if t == QT.Q4_K:
        return want(lambda: _nibbles(b[:, 16:], 32)), scale, zero, 32, "u4", "rescale"
    if t == QT.Q5_K:
        # 5-bit codes 0..31 as i8: the int8 dot product kernel's bytes (Q8_K_BLOCKS)
        q = want(lambda: (_nibbles(b[:, 48:], 32) | (_bits(b[:, 16:48]) << 4)).astype(np.int8))
        return q, scale, zero, 32, "i8", "rescale"
    ql, qh = b[:, :128], b[:, 128:192]  # Q6_K
    q = want(lambda: (_nibbles(ql, 64) | (_crumbs(qh, 32) << 4)).astype(np.int8) - 32)
    return q, scale, None, 16, "i8", "none"
    raise AssertionError(t)


@dataclass(frozen=True)
class ExtraType:
    """A GGML type number the ``gguf`` package has no member for (so ``GGUFReader`` cannot build its tensors),
    named like a ``GGMLQuantizationType`` for ladder's checks and messages."""

    name: str
    value: int

    def __int__(self) -> int:
        return self.value


I2_S_TYPE = ExtraType("I2_S", 36)  # GGML_TYPE_I2_S in bitnet.cpp's ggml fork
EXTRA_TYPES = {I2_S_TYPE.value: I2_S_TYPE}


_U64 = struct.Struct("<Q")


def ggml_type(raw: int) -> QT | ExtraType:
    """A tensor info's type number as a type; ValueError when neither the gguf package nor ladder knows it."""
    return EXTRA_TYPES[raw] if raw in EXTRA_TYPES else QT(raw)


# weight types whose llama.cpp dot product takes activations in Q8_0 blocks (its type_traits' vec_dot_type)
Q8_0_ACTIVATIONS = ("Q8_0", "Q4_0", "Q5_0")
# weight types whose llama.cpp dot product takes Q8_K activations (int8 per 256, an f32 scale) and that ladder
# has a block kernel for (backends/llvm/lowerings/q8k.py: TQ2_0's crumbs, and TQ1_0's base-3 digits as the
# file stores them); Q4_K's below, the other K-quants keep f32 x
Q8_K_ACTIVATIONS = ("TQ2_0", "TQ1_0")
# K-quants whose llama.cpp dot product takes Q8_K activations and that ladder computes with int8 dot products
# over blocks of 32 (qmatmul_q8, x's per-256 scale repeated per the weight's group) (``_q8_k_blocks``): Q4_K's
# 4-bit codes with a scale and a zero ("rescale": q * s - z) per 32 are the Q4_0 kernel's nibble blocks, and Q5_K's
# 5-bit ones the Q8_0 kernel's bytes, less the zeros' term (x's per-32 sums times the zeros, in the same kernel);
# Q6_K's int8 codes (q - 32) and Q3_K's 4-bit ones with a scale per 16 take the same kernel with two
# scales a block (``group = 16``), and Q2_K's 2-bit ones (as 4-bit blocks) too, less its zeros' term per 16
Q8_K_BLOCKS = ("Q4_K", "Q5_K", "Q6_K", "Q3_K", "Q2_K")
# float weight types whose llama.cpp dot product takes x rounded to the weight's own type
ROUNDED_ACTIVATIONS = {"F16": "f16", "BF16": "bf16"}
QUANTIZED = (QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.TQ1_0, QT.TQ2_0,
             QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K)
FLOATS = {QT.F32: "f32", QT.F16: "f16", QT.BF16: "bf16"}
SUPPORTED = tuple(FLOATS) + QUANTIZED + (I2_S_TYPE,)
# types whose scales (and zeros) decode apart from their codes (``_decode_blocks(codes=False)``)
SCALES_APART = (QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K)
MAX_DIMS = 4  # GGML_MAX_DIMS


def supported_types() -> list[str]:
    return [t.name for t in SUPPORTED]


# GGUF types whose blocks are a ladder block packing byte for byte (ladder.packing: q4 is Q4_0's nibbles, tq2
# TQ2_0's crumbs, tq1 TQ1_0's base-3 digits, q8 Q8_0's bytes, each followed or preceded by the block's f16 scale
# as the file has it)
STORED = {QT.Q4_0: "q4+f16", QT.TQ2_0: "tq2+f16", QT.TQ1_0: "tq1+f16", QT.Q8_0: "q8+f16"}
_CHECK_ROWS = 16384  # blocks checked at a time for TQ2_0's unused code (a 1 MB copy of their codes at most)


def _release(data: np.ndarray) -> None:
    """Drop the whole pages of ``data`` (a view of the file's read-only memory map) from this process's resident
    set once it is decoded (madvise DONTNEED: clean file pages, read again from the page cache if touched)."""
    base = data
    while base is not None and not isinstance(base, mmap.mmap):
        base = getattr(base, "base", None)
    if base is None or not hasattr(mmap, "MADV_DONTNEED") or not data.nbytes:
        return
    try:
        start = data.ctypes.data - np.frombuffer(base, np.uint8).ctypes.data
        page = mmap.PAGESIZE
        lo, hi = -(-start // page) * page, (start + data.nbytes) // page * page
        if hi > lo:
            base.madvise(mmap.MADV_DONTNEED, lo, hi - lo)
    except (OSError, ValueError, TypeError):  # advice only: a refusal changes nothing
        pass


def _lazy(name: str, t: QT, data: np.ndarray, shape: tuple[int, ...],
          source: tuple[str, int] | None = None) -> GGUFTensor | None:
    """A quantized tensor decoded only when read (ladder.weights.Blocks; its type, group and scale type from
    its first block), Q4_0, Q8_0, TQ1_0 and TQ2_0 kept as the file's bytes (``STORED``); None for a float type and
    for data of the wrong size (which ``_convert`` then reports). ``source``: (the file's path, the tensor's
    offset in it), for the pack cache."""
    if t in FLOATS or t not in GGML_QUANT_SIZES:
        return None
    block, size = GGML_QUANT_SIZES[t]
    if not shape or shape[-1] % block or not isinstance(data, np.ndarray) or data.dtype != np.uint8 \
            or data.size != math.prod(shape) // block * size or data.size == 0:
        return None
    lead, k = tuple(shape[:-1]), shape[-1]
    storage = np.ascontiguousarray(data).reshape(lead + (k // block * size,))
    blocks = storage.reshape(-1, size)
    with np.errstate(invalid="ignore", over="ignore"):
        _, scale, zero, group, dtname, zm = _decode_blocks(t, blocks[:1])
    if t == QT.TQ2_0:  # the 2-bit code 3 is no ternary value: refuse it as the decode would
        for i in range(0, blocks.shape[0], _CHECK_ROWS):  # 64 bits at a time (a 2B model's 0.25-0.29 -> 0.12 s)
            qs = np.ascontiguousarray(blocks[i:i + _CHECK_ROWS, :64]).view(np.uint64)
            if np.any(qs & (qs >> np.uint64(1)) & np.uint64(0x5555555555555555)):
                raise GGUFError(f"tensor '{name}' ({t.name}) holds the unused 2-bit code 3, which is not a "
                                f"ternary value")
    layout = STORED.get(t, "")

    def decode(which: int) -> np.ndarray:
        if which >= 3:  # the sub-scales and their f32 d, and the mins' the same way
            with np.errstate(invalid="ignore", over="ignore"):
                parts = _k_factors(t, blocks)
            _release(data)
            return (None, None, None) + tuple(None if a is None else np.ascontiguousarray(a).reshape(
                lead + (k // (group if i % 2 == 0 else 256),)) for i, a in enumerate(parts))
        if which == 1 and layout:  # the scales alone: the f16 of each block, where the packing says
            at = get_packing(layout).scale_offset(0)
            return blocks[:, at:at + 2].copy().view(np.float16).reshape(lead + (k // block,))
        if which and t in SCALES_APART:  # scales and zeros without the codes (a compile whose codes are packed)
            with np.errstate(invalid="ignore", over="ignore"):
                _, sc, zr, _, _, _ = _decode_blocks(t, blocks, codes=False)
            if not layout:  # every block's page was read: let them go (a later read maps them in again)
                _release(data)
            sc = np.ascontiguousarray(sc).reshape(lead + (k // group,))
            return None, sc, None if zr is None else np.ascontiguousarray(zr).reshape(sc.shape)
        g = _convert(name, t, data, shape)
        if not layout:
            _release(data)  # decoded: its file pages need not stay in this process's resident set
        return g.codes, g.scale, g.zero  # every part of one decode (Blocks keeps the scales)

    def repack(to: str, nparts: int) -> np.ndarray | None:
        """Q4_K's codes (and scales) in a 32-code nibble packing (with the scales inside), from the file's bytes."""
        if t != QT.Q4_K or nparts not in (1, 2):
            return None
        return _q4_k_repacked(blocks, np.asarray(b.scales).reshape(-1) if nparts == 2 else None, get_packing(to), k)

    factored = t in FACTORED
    b = Blocks(name, dtname, shape, decode, repack=repack, layout=layout, storage=storage if layout else None,
               scale_shape=lead + (k // group,), scale_dtype=np.asarray(scale).dtype, zero=zero is not None,
               source=source, release=lambda: _release(data), super_shape=lead + (k // 256,) if factored else None)
    return GGUFTensor(name, t.name, DTYPES[dtname], b.codes, b.scales, b.zeros, group, zm, stored=layout,
                      factors=(b.sub_scales, b.super_scales, b.sub_zeros, b.super_zeros) if factored else None)


def _q4_k_repacked(blocks: np.ndarray, scales: np.ndarray | None, p, k: int) -> np.ndarray | None:
    """Q4_K blocks (uint8[n, 144]) and their f32 scales (d * sc, 8 a block) packed in ``p`` when it is 32-code
    nibble blocks (code j in the low nibble of byte j, code j + 16 in its high one) with an f32 scale inside each
    and no zero (``nib16+f32``), or the codes alone (``scales`` None) in such blocks without scales (``nib16``):
    made from the file's code bytes, without decoding a code. A Q4_K block's 128
    code bytes are 4 runs of 32: the low nibbles are one block of 32 codes, the high ones the next. None for
    any other packing. Rows of blocks a few MB at a time (a 2B model's 211 weights: the decode and generic pack
    took ~14 s of a cold compile on one core)."""
    from ladder.packing import ScaledPacking

    u4 = DTYPES["u4"]
    if scales is None:
        if isinstance(p, ScaledPacking) or not p.nib_pairs or p.block_bytes != 16 or not p.accepts(u4):
            return None
        base, stride, codes_at, scale_at = p, 16, 0, None
    elif (not isinstance(p, ScaledPacking) or p.zero or p.scale.name != "f32" or not p.base.nib_pairs
            or p.stride < 20 or not p.accepts(u4)):
        return None
    else:
        base, stride, codes_at, scale_at = p.base, p.stride, p.codes_offset, p.scale_offset(0)
    xor = base.byte_xor(u4)
    n = blocks.shape[0]
    out = np.empty((n * 8, stride), np.uint8)
    step = 4096  # blocks of 256 at a time
    for i in range(0, n, step):
        qs = blocks[i:i + step, 16:144].reshape(-1, 4, 2, 16)  # [block, run, first / second 16 bytes, byte]
        lo, hi = qs[:, :, 0], qs[:, :, 1]
        # the block of the low nibbles, then that of the high ones
        both = np.stack([(lo & 15) | (hi << 4), (lo >> 4) | (hi & 0xF0)], axis=2).reshape(-1, 16)
        rows = out[i * 8:(i + len(qs)) * 8]
        rows[:, codes_at:codes_at + 16] = both ^ np.uint8(xor) if xor else both
        if scales is not None:
            sc = scales[i * 8:(i + len(qs)) * 8].astype(np.float32)
            rows[:, scale_at:scale_at + 4] = sc.view(np.uint8).reshape(-1, 4)
    return out.reshape(-1, (k // 32) * stride)


_DECODE_BLOCKS = 4096  # blocks decoded at a time: the temporaries stay in cache (the few MB of a chunk)


def _decode_chunked(t: QT, blocks: np.ndarray):
    """``_decode_blocks`` of all the blocks, _DECODE_BLOCKS at a time into arrays made once: numpy's temporaries
    of a whole tensor (a 2B model's Q6_K embedding: 0.33 G codes, a few passes over 128 MB each) would not stay
    in cache (that tensor's codes 2.9 -> 0.9 s on a Zen 4, a K = 6912 projection's 76 -> 44 ms)."""
    n = blocks.shape[0]
    if n <= _DECODE_BLOCKS:
        return _decode_blocks(t, blocks)
    first = _decode_blocks(t, blocks[:_DECODE_BLOCKS])
    outs = [None if a is None else np.empty((n,) + np.shape(a)[1:], np.asarray(a).dtype) for a in first[:3]]
    for i in range(0, n, _DECODE_BLOCKS):
        part = first if i == 0 else _decode_blocks(t, blocks[i:i + _DECODE_BLOCKS])
        for out, a in zip(outs, part[:3]):
            if out is not None:
                out[i:i + _DECODE_BLOCKS] = a
    return (*outs, *first[3:])


def _convert(name: str, t: QT, data: np.ndarray, shape: tuple[int, ...]) -> GGUFTensor:
    if t in FLOATS:
        dt = DTYPES[FLOATS[t]]
        raw = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        vals = raw.view({QT.F32: np.float32, QT.F16: np.float16, QT.BF16: dt.np_dtype}[t])
        return GGUFTensor(name, t.name, dt, vals.reshape(shape).copy())
    block, size = GGML_QUANT_SIZES[t]
    blocks = np.ascontiguousarray(data).reshape(-1, size)
    with np.errstate(invalid="ignore", over="ignore"):  # an inf or nan f16 scale is the file's value: keep it
        codes, scale, zero, group, dtname, zm = _decode_chunked(t, blocks)
    lead, k = shape[:-1], shape[-1]
    dt = DTYPES[dtname]
    if dtname == "ternary" and t != QT.TQ1_0 and codes.size and codes.max() > 1:  # base-3 digits cannot be 3
        raise GGUFError(f"tensor '{name}' ({t.name}) holds the unused 2-bit code 3, which is not a ternary value")
    per_block = block // group
    codes = np.ascontiguousarray(codes.reshape(shape), dtype=dt.np_dtype)  # Q8_0: one copy, not two
    scale = np.ascontiguousarray(scale).reshape(*lead, (k // block) * per_block).copy()
    if zero is not None:
        zero = np.ascontiguousarray(zero).reshape(scale.shape).copy()
    return GGUFTensor(name, t.name, dt, codes, scale, zero, group, zm)


# bitnet.cpp's I2_S (GGML type 36, which the gguf package does not know): 2-bit ternary codes for the whole
# tensor, then its one f32 scale (padded to 32 bytes). Each 32-byte block holds 128 elements: byte p of the
# block holds element g * 32 + p in bits 6 - 2g (g = 0..3); code 0, 1, 2 means -1, 0, +1. (This is the
# layout of bitnet.cpp's x86 build, which wrote the published 2B4T file; its ARM build packs 64-element blocks.)
I2_S = I2_S_TYPE.value
I2_S_BLOCK = 128
_SHIFT_I2S = np.array([6, 4, 2, 0], _U8)


def i2s_nbytes(n: int) -> int:
    """Bytes of an I2_S tensor of ``n`` elements: the codes, then the scale padded to 32 bytes (bitnet.cpp's
    ``ggml_nbytes`` and what its quantizer returns; in the file the next tensor starts after these bytes padded
    to ``general.alignment``, as for any type)."""
    return n // 4 + 32


def decode_i2s(name: str, raw: np.ndarray, shape: tuple[int, ...]) -> GGUFTensor:
    """An I2_S tensor's bytes -> ternary codes with one per-tensor scale (as ``scale`` per row, ``group`` the
    row length, so that it takes BitNet's integer path)."""
    n = math.prod(shape)
    raw = np.ascontiguousarray(raw).reshape(-1).view(_U8)
    if n % I2_S_BLOCK:
        raise GGUFError(f"tensor '{name}' (I2_S) has {n} elements, not a whole number of {I2_S_BLOCK}-element "
                        f"blocks")
    if raw.size < n // 4 + 4:
        raise GGUFError(f"tensor '{name}' (I2_S, shape {list(shape)}) needs {n // 4 + 4} bytes, has {raw.size}")
    q = raw[:n // 4].reshape(-1, 1, 32)
    codes = ((q >> _SHIFT_I2S.reshape(1, 4, 1)) & 0x03).reshape(shape)
    if codes.size and codes.max() > 2:
        raise GGUFError(f"tensor '{name}' (I2_S) holds the unused 2-bit code 3, which is not a ternary value")
    scale = raw[n // 4:n // 4 + 4].view(np.float32)
    if not np.isfinite(scale[0]):
        raise GGUFError(f"tensor '{name}' (I2_S) has a non-finite scale {scale[0]}")
    rows = np.full(shape[:-1] + (1,), scale[0], np.float32)
    return GGUFTensor(name, "I2_S", DTYPES["ternary"], codes.astype(np.int8) - 1, rows, None, shape[-1])


# -- reading a file --------------------------------------------------------------------------------------

_SCALAR_BYTES = {GGUFValueType.UINT8: 1, GGUFValueType.INT8: 1, GGUFValueType.BOOL: 1, GGUFValueType.UINT16: 2,
                 GGUFValueType.INT16: 2, GGUFValueType.UINT32: 4, GGUFValueType.INT32: 4, GGUFValueType.FLOAT32: 4,
                 GGUFValueType.UINT64: 8, GGUFValueType.INT64: 8, GGUFValueType.FLOAT64: 8}
_MIN_KV_BYTES = 8 + 4 + 1               # an empty key, the value type, a one-byte value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 8 + 4 + 8  # an empty name, n_dims, one dimension, the type, the offset
MAX_NAME = 64                           # GGML_MAX_NAME: llama.cpp refuses tensor names of 64 bytes or more


class _HeaderCheck:
    """A walk over a GGUF header (counts, every key-value pair, every tensor info) that checks each count and
    length against the bytes left in the file before it is used. ``GGUFReader`` trusts them: an array length
    of 2^40 had it looping for hours. Also refuses what llama.cpp refuses: nested arrays, duplicate keys and
    tensor names, over-long names, a ``general.alignment`` that is not a u32 power of two."""

    def __init__(self, buf, size: int):
        self.buf, self.size, self.pos = buf, size, 0

    def left(self) -> int:
        return self.size - self.pos

    def unpack(self, fmt: str, what: str):
        n = struct.calcsize(fmt)
        if n > self.left():
            raise GGUFError(f"{what} at byte {self.pos} is cut short by the end of the file ({self.size} bytes)")
        v = struct.unpack_from("<" + fmt, self.buf, self.pos)[0]
        self.pos += n
        return v

    def string(self, what: str) -> bytes:
        at = self.pos
        n = self.unpack("Q", f"the length of {what}")
        if n > self.left():
            raise GGUFError(f"{what} at byte {at} has length {n}, but only {self.left()} bytes are left in the file")
        self.pos += n
        return bytes(self.buf[self.pos - n:self.pos])

    def text(self, what: str) -> str:
        at, raw = self.pos, self.string(what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise GGUFError(f"{what} at byte {at} is not UTF-8: {raw[:40]!r}") from None

    def count(self, n: int, min_bytes: int, what: str) -> int:
        if n > self.left() // min_bytes:
            raise GGUFError(f"{what} is {n}, but the {self.left()} bytes left in the file hold at most "
                            f"{self.left() // min_bytes}")
        return n

    def value_type(self, key: str, what: str) -> GGUFValueType:
        raw = self.unpack("I", what)
        try:
            return GGUFValueType(raw)
        except ValueError:
            raise GGUFError(f"metadata '{key}' has unknown value type {raw}") from None

    def skip_value(self, key: str, vtype: GGUFValueType) -> None:
        if vtype == GGUFValueType.STRING:
            self.string(f"the string value of metadata '{key}'")
        elif vtype == GGUFValueType.ARRAY:
            itype = self.value_type(key, f"the element type of metadata '{key}'")
            if itype == GGUFValueType.ARRAY:
                raise GGUFError(f"metadata '{key}' is an array of arrays, which GGUF readers (llama.cpp) refuse")
            item = _SCALAR_BYTES.get(itype, 8)  # a string takes at least its 8-byte length
            n = self.count(self.unpack("Q", f"the length of array '{key}'"), item, f"the length of array '{key}'")
            if itype == GGUFValueType.STRING:  # (a vocabulary: 128,256 strings) lengths read in a tight loop;
                buf, pos, size = self.buf, self.pos, self.size  # an element cut short is read again by string()
                length = _U64.unpack_from  # for its located error
                for i in range(n):
                    if size - pos < 8 or length(buf, pos)[0] > size - pos - 8:
                        self.pos = pos
                        self.string(f"element {i} of array '{key}'")
                    pos += 8 + length(buf, pos)[0]
                self.pos = pos
            else:
                self.pos += n * item
        else:
            self.unpack({1: "B", 2: "H", 4: "I", 8: "Q"}[_SCALAR_BYTES[vtype]], f"the value of metadata '{key}'")

    def check(self) -> None:
        if self.size == 0:
            raise GGUFError("is empty, not a GGUF file")
        if self.size < 4 or bytes(self.buf[:4]) != b"GGUF":
            raise GGUFError("not a GGUF file (its first 4 bytes are not 'GGUF')")
        self.pos = 4
        version = self.unpack("I", "the version")
        if version & 0xFFFF == 0 and version:
            raise GGUFError("a byte-swapped (big-endian) GGUF file; ladder reads little-endian files only")
        if version not in (2, 3):
            raise GGUFError(f"GGUF version {version} is not supported; ladder reads versions 2 and 3")
        n_tensors = self.unpack("Q", "the tensor count")
        n_kv = self.count(self.unpack("Q", "the metadata count"), _MIN_KV_BYTES, "the metadata count")
        keys: set[str] = set()
        for i in range(n_kv):
            key = self.text(f"the key of metadata entry {i}")
            if key in keys:
                raise GGUFError(f"metadata key '{key}' appears twice")
            keys.add(key)
            vtype = self.value_type(key, f"the value type of metadata '{key}'")
            at = self.pos
            self.skip_value(key, vtype)
            if key == "general.alignment":
                align = struct.unpack_from("<I", self.buf, at)[0] if vtype == GGUFValueType.UINT32 else None
                if align is None or align == 0 or align & (align - 1):
                    shown = align if align is not None else vtype.name
                    raise GGUFError(f"metadata 'general.alignment' should be a u32 power of two, got {shown}")
        self.count(n_tensors, _MIN_TENSOR_INFO_BYTES, "the tensor count")
        names: set[str] = set()
        for i in range(n_tensors):
            name = self.text(f"the name of tensor {i}")
            if len(name.encode()) >= MAX_NAME:
                raise GGUFError(f"tensor {i}'s name '{name[:80]}' is {len(name.encode())} bytes; "
                                f"GGUF names are shorter than {MAX_NAME}")
            if name in names:
                raise GGUFError(f"tensor '{name}' appears twice")
            names.add(name)
            n_dims = self.unpack("I", f"the dimension count of tensor '{name}'")
            if not 1 <= n_dims <= MAX_DIMS:
                raise GGUFError(f"tensor '{name}' has {n_dims} dimensions; GGUF allows 1 to {MAX_DIMS}")
            for d in range(n_dims):
                self.unpack("Q", f"dimension {d} of tensor '{name}'")
            self.unpack("I", f"the type of tensor '{name}'")
            self.unpack("Q", f"the data offset of tensor '{name}'")


def _check_header(path: str) -> None:
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            _HeaderCheck(b"", 0).check()
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            _HeaderCheck(buf, size).check()


_LONG_ARRAY = 64  # metadata arrays longer than this are kept as their length only (``ArrayValue``)


class _Reader(GGUFReader):
    """GGUFReader with checks of every tensor's info before the reader builds its arrays. Tensors of a type the
    gguf package does not know (``EXTRA_TYPES``: I2_S) are kept from it and built here as raw bytes. A metadata
    array longer than _LONG_ARRAY (a vocabulary: 32,000 to 128,000 strings) is stepped over instead of built
    item by item, a part per item (1.6 s for a 32,000-token vocabulary): ladder keeps only its length."""

    def _get_field_parts(self, orig_offs: int, raw_type: int):
        if raw_type != GGUFValueType.ARRAY:
            return super()._get_field_parts(orig_offs, raw_type)
        raw_itype = self._get(orig_offs, np.uint32)
        alen = self._get(orig_offs + 4, np.uint64)
        n, itype = int(alen[0]), int(raw_itype[0])
        if n <= _LONG_ARRAY or itype == GGUFValueType.ARRAY:
            return super()._get_field_parts(orig_offs, raw_type)
        offs = orig_offs + 12
        if itype == GGUFValueType.STRING:  # _HeaderCheck has checked every length against the file
            fmt, buf = ("<Q" if self.byte_order == "I" else ">Q"), memoryview(self.data)
            for _ in range(n):
                offs += 8 + struct.unpack_from(fmt, buf, offs)[0]
        else:
            offs += n * int(np.dtype(self.gguf_scalar_to_np[GGUFValueType(itype)]).itemsize)
        blob = self.data[orig_offs + 12:offs]
        return offs - orig_offs, [raw_itype, alen, blob], [2] * n, [GGUFValueType.ARRAY, GGUFValueType(itype)]

    def _build_tensors(self, start_offs: int, fields) -> None:
        # a np.uint32 after padding to a general.alignment the file sets; offsets past 4 GiB must not overflow
        start_offs = int(start_offs)
        size = len(self.data)
        expected = 0  # llama.cpp requires the tensors' data back to back, each padded to the alignment
        before = ""  # the tensor that ends at ``expected``, for the message when the next one does not start there
        extra: dict[int, tuple[ExtraType, int]] = {}  # id(field) -> (type, data bytes)
        for field in fields:
            _len, name_data, n_dims, dims, raw_dtype, offset = field.parts
            name = bytes(name_data).decode("utf-8", errors="replace")
            if n_dims.size != 1 or dims.size != int(n_dims[0]) or raw_dtype.size != 1 or offset.size != 1:
                raise GGUFError(f"tensor info of '{name}' is cut short by the end of the file")
            if not 1 <= dims.size <= MAX_DIMS:
                raise GGUFError(f"tensor '{name}' has {dims.size} dimensions; GGUF allows 1 to {MAX_DIMS}")
            try:
                t = ggml_type(int(raw_dtype[0]))
            except ValueError:
                raise GGUFError(f"tensor '{name}' has unknown type number {int(raw_dtype[0])}") from None
            ne = [int(d) for d in dims]
            if any(d < 0 or d >= 1 << 40 for d in ne) or math.prod(ne) >= 1 << 48:
                raise GGUFError(f"tensor '{name}' has an impossible shape {ne}")
            if t is I2_S_TYPE:  # block size 1 in bitnet.cpp; decode_i2s checks its 128-element blocks
                n_bytes = i2s_nbytes(math.prod(ne))
                extra[id(field)] = (t, n_bytes)
            else:
                if t not in GGML_QUANT_SIZES:
                    raise GGUFError(f"tensor '{name}' has type {t.name}, whose block size is unknown")
                block, tsize = GGML_QUANT_SIZES[t]
                if ne[0] % block:
                    raise GGUFError(f"tensor '{name}' ({t.name}) has rows of {ne[0]} elements, not a whole number "
                                    f"of {block}-element blocks")
                n_bytes = math.prod(ne) // block * tsize
            rel = int(offset[0])
            if rel != expected:
                where = f"the end of {before}" if before else "the first tensor starts the data"
                raise GGUFError(f"tensor '{name}' ({t.name}, shape {ne}) has data offset {rel}, expected {expected} "
                                f"({where}): a wrong offset, or a wrong type, shape or data size of a tensor "
                                f"before it")
            begin = start_offs + rel
            if begin + n_bytes > size:
                raise GGUFError(f"tensor '{name}' ({t.name}, shape {ne}) needs bytes {begin}..{begin + n_bytes} "
                                f"but the file has {size} bytes (truncated, or a wrong type or shape)")
            align = int(self.alignment)  # a np.uint32 too: -n_bytes // it would overflow
            expected = rel + -(-n_bytes // align) * align
            before = f"tensor '{name}' ({t.name}, shape {ne}, {n_bytes} bytes, padded to {align})"
        super()._build_tensors(start_offs, [fl for fl in fields if id(fl) not in extra])
        built = iter(self.tensors)  # the gguf package's tensors, in file order, between the extra-typed ones
        self.tensors = [self._raw_tensor(start_offs, fl, *extra[id(fl)]) if id(fl) in extra else next(built)
                        for fl in fields]

    def _raw_tensor(self, start_offs: int, field, t: ExtraType, n_bytes: int) -> ReaderTensor:
        """A tensor of a type the gguf package does not know: its bytes, unconverted (checked above)."""
        _len, name_data, _n_dims, dims, _raw_dtype, offset = field.parts
        begin = start_offs + int(offset[0])
        return ReaderTensor(name=bytes(name_data).decode("utf-8"), tensor_type=t, shape=dims,
                            n_elements=math.prod(int(d) for d in dims), n_bytes=n_bytes, data_offset=begin,
                            data=self._get(begin, np.uint8, n_bytes), field=field)


@dataclass
class GGUFFile:
    """A read GGUF file: metadata (key -> Python value) and tensor infos by name (data not yet decoded)."""

    path: str
    metadata: dict[str, Any]
    infos: dict[str, Any]  # name -> gguf ReaderTensor

    def tensor(self, name: str, keep_blocks: bool = False) -> GGUFTensor:
        """A tensor decoded to codes + scales; ``keep_blocks``: a quantized one decoded only when read, Q4_0,
        Q8_0 and TQ2_0 kept as the file's blocks (``STORED``), its codes, scales (and zeros)
        ladder.weights.BlockParts."""
        info = self.infos[name]
        return _tensor_of(self.path, info, keep_blocks)


def _tensor_of(path: str, info, keep_blocks: bool = False) -> GGUFTensor:
    t = ggml_type(int(info.tensor_type))
    shape = tuple(int(d) for d in reversed([int(x) for x in info.shape]))
    if t not in SUPPORTED:
        raise GGUFError(f"{path}: tensor '{info.name}' has type {t.name}, which ladder does not read; "
                        f"it reads {', '.join(supported_types())}")
    try:
        if t is I2_S_TYPE:
            return decode_i2s(info.name, info.data, shape)
        return (_lazy(info.name, t, info.data, shape, (path, int(info.data_offset))) if keep_blocks else None) or \
            _convert(info.name, t, info.data, shape)
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


_OPENED: "OrderedDict[tuple, GGUFFile]" = OrderedDict()  # the last files read, by path and identity
_KEEP_OPEN = 2


def open_file(path: str | os.PathLike) -> GGUFFile:
    """Read a GGUF file's metadata and tensor infos; LadderError (GGUFError) for anything malformed.

    The last two files read are kept (their tensors are memory maps): importing a model reads the file once for
    the decode graph, once for the prefill graph and once for the tokenizer, and the reader's metadata parsing
    (a 32,000-token vocabulary is 100,000 fields' parts) costs seconds. A file counts as the same while its
    path, inode, size and modification time are."""
    p = os.fspath(path)
    try:
        st = os.stat(p)
        key = (p, os.path.realpath(p), st.st_ino, st.st_size, st.st_mtime_ns) if stat.S_ISREG(st.st_mode) else None
    except (OSError, ValueError):
        key = None
    if key is not None and key in _OPENED:
        _OPENED.move_to_end(key)
        return _OPENED[key]
    f = _open_file(p)
    if key is not None:
        _OPENED[key] = f
        while len(_OPENED) > _KEEP_OPEN:
            _OPENED.popitem(last=False)
    return f


def _open_file(p: str) -> GGUFFile:
    try:
        _check_header(p)
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
    unsupported = sorted(f"{n} ({ggml_type(int(i.tensor_type)).name})" for n, i in f.infos.items()
                         if ggml_type(int(i.tensor_type)) not in SUPPORTED)
    if unsupported:
        raise GGUFError(f"{f.path}: tensor type(s) ladder does not read: {', '.join(unsupported)}; "
                        f"it reads {', '.join(supported_types())}")
    return {name: f.tensor(name) for name in f.infos}


# -- the model ----------------------------------------------------------------------------------------

# general.architecture -> how the decoder is wired. "bitnet-b1.58" (and its earlier name "bitnet-25") is
# BitNet b1.58 2B4T as bitnet.cpp writes it.
ARCHITECTURES = {"llama": LLAMA_GGUF, "bitnet": BITNET_GGUF, "bitnet-b1.58": BITNET_B158, "bitnet-25": BITNET_B158}
# the decoder builder's projection names -> GGUF's
PROJECTIONS = {"q": "attn_q", "k": "attn_k", "v": "attn_v", "o": "attn_output", "gate": "ffn_gate",
               "up": "ffn_up", "down": "ffn_down"}


@dataclass(frozen=True)
class Hyper:
    arch: str           # general.architecture
    cfg: BitNetConfig   # dimensions (vocab is filled in from token_embd)

    @property
    def wiring(self) -> Arch:
        return ARCHITECTURES[self.arch]

    @property
    def rope_style(self) -> str:
        return self.wiring.rope_style

    @property
    def tied_only(self) -> bool:
        """llama.cpp's bitnet always projects with token_embd (it loads no output.weight)."""
        return self.arch == "bitnet"


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
    if has_output and not h.tied_only:
        out["output.weight"] = (vocab, d)
    for i in range(c.layers):
        p = f"blk.{i}"
        out.update({f"{p}.attn_norm.weight": (d,), f"{p}.attn_q.weight": (d, d), f"{p}.attn_k.weight": (kvd, d),
                    f"{p}.attn_v.weight": (kvd, d), f"{p}.attn_output.weight": (d, d),
                    f"{p}.ffn_norm.weight": (d,), f"{p}.ffn_gate.weight": (c.ffn, d),
                    f"{p}.ffn_up.weight": (c.ffn, d), f"{p}.ffn_down.weight": (d, c.ffn)})
        if h.wiring.sub_norms:
            out[f"{p}.attn_sub_norm.weight"] = (d,)
            out[f"{p}.ffn_sub_norm.weight"] = (c.ffn,)
    return out


def _optional_tensors(h: Hyper) -> dict[str, tuple[int, ...]]:
    if not h.wiring.sub_norms:  # the BitNet architectures' optional per-tensor weight scales
        return {}
    return {f"blk.{i}.{proj}.scale": (1,) for i in range(h.cfg.layers) for proj in PROJECTIONS.values()}


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
    if h.cfg.layers > len(f.infos):  # each layer has 9 tensors: the name lists below would never end
        raise GGUFError(f"{f.path}: metadata '{h.arch}.block_count' is {h.cfg.layers}, but the file holds only "
                        f"{len(f.infos)} tensors (a layer has 9)")
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
        t = ggml_type(int(info.tensor_type))
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


def config(path: str | os.PathLike, shapes: Mapping[str, Any] | None = None) -> BitNetConfig:
    """The decoder's dimensions (what ``ladder.demo.generate`` needs), with the context that ``load`` with
    the same ``shapes`` uses."""
    f = open_file(path)
    h = _hyper(f)
    vocab, _ = _check_tensors(f, h)
    _, context = step_shapes(h.cfg, shapes, GGUFError)
    c = h.cfg
    return BitNetConfig(vocab=vocab, hidden=c.hidden, layers=c.layers, heads=c.heads, kv_heads=c.kv_heads,
                        ffn=c.ffn, context=context, rope_theta=c.rope_theta, eps=c.eps)


class _Source:
    """The GGUF file as the decoder builder's weight source: GGUF tensor names, weights collected by param
    name (quantized ones as codes + scales (+ zeros) + ``dequant``)."""

    def __init__(self, f: GGUFFile, h: Hyper, used: Mapping[str, tuple[int, ...]]):
        self.f, self.h, self.used = f, h, used
        self.weights: dict[str, np.ndarray] = {}
        self._tensors: dict[str, GGUFTensor] = {}
        self._rounded: dict[tuple[str, Any], Value] = {}  # (x's name, how) -> x as a dot product takes it
        self._shared: dict[str, Any] = {}  # weight name -> _shared_ternary_scale's answer (decided once)
        self._values: dict[str, Value] = {}  # weight name -> its param in the graph being built

    def next_graph(self) -> None:
        """Start another step graph over the same weights (each tensor stays decoded once)."""
        self._rounded.clear()  # its Values belong to the previous graph's builder
        self._values.clear()

    def tensor(self, name: str) -> GGUFTensor:
        if name not in self._tensors:
            self._tensors[name] = self.f.tensor(name, keep_blocks=True)
        return self._tensors[name]

    def _param(self, b: Builder, ref: str, arr: np.ndarray, dt: DType, stored: str = "") -> Value:
        if ref in self.weights and self.weights[ref] is not arr:
            raise GGUFError(f"{self.f.path}: weight name '{ref}' is used twice")
        self.weights[ref] = arr
        if ref not in self._values:  # one value a weight: a tied head and the embedding read the same one
            self._values[ref] = b.param(ref, f"{dt.name}[{', '.join(map(str, arr.shape))}]", stored=stored)
        return self._values[ref]

    def _vector(self, b: Builder, name: str) -> Value:
        """A 1-D weight (norms, scales), as f32 values."""
        t = self.tensor(name)
        if name not in self.weights:
            vals = t.values() if (t.quantized or t.dtype.name != "f32") else t.codes
            self.weights[name] = np.ascontiguousarray(vals, np.float32).reshape(-1)
        return b.param(name, f"f32[{self.weights[name].shape[0]}]")

    def _matrix(self, b: Builder, name: str) -> Value:
        """A 2-D weight as f32 values: a float param (cast to f32), or codes + scales (+ zeros) + dequant."""
        t = self.tensor(name)
        codes = self._param(b, name, t.codes, t.dtype, t.stored)
        if not t.quantized:
            return codes if t.dtype.name == "f32" else b.cast(codes, dtype="f32")
        scale = self._param(b, f"{name}.scales", t.scale, _np_dtype_ladder(t.scale))
        extra = [self._param(b, f"{name}.zeros", t.zero, _np_dtype_ladder(t.zero))] if t.zero is not None else []
        return b.dequant(codes, scale, *extra, axis=-1, group=t.group, zero_mode=t.zero_mode)

    # -- the WeightSource protocol of ladder.models

    def embed(self, b: Builder, tokens: Value) -> Value:
        t = self.tensor("token_embd.weight")
        rows = b.gather(self._param(b, "token_embd.weight", t.codes, t.dtype, t.stored), tokens)
        if not t.quantized:
            return rows if t.dtype.name == "f32" else b.cast(rows, dtype="f32")
        scale = self._k_scale(b, t, tokens)
        extra = [self._k_scale(b, t, tokens, zeros=True)] if t.zero is not None else []
        return b.dequant(rows, scale, *extra, axis=-1, group=t.group, zero_mode=t.zero_mode)

    def norm(self, b: Builder, name: str, size: int) -> Value:
        if name == "final_norm":
            return self._vector(b, "output_norm.weight")
        _, i, which = name.split(".")
        return self._vector(b, f"blk.{i}.{which}.weight")

    def _activations(self, b: Builder, x: Value, wname: str) -> Value:
        """x as llama.cpp's dot product for weight ``wname`` takes it, dequantized: Q8_0 blocks (int8 per 32 by
        absmax, the scale rounded to f16) or Q8_K blocks (int8 per 256, an f32 scale) for the types whose dot
        product is with those (Q8_0_ACTIVATIONS, Q8_K_ACTIVATIONS); x rounded to f16 / bf16 for F16 / BF16
        weights (ROUNDED_ACTIVATIONS: their dot products take x in the weight's type); else x itself."""
        kind = self.tensor(wname).ggml_type
        how = (ROUNDED_ACTIVATIONS.get(kind) or (32 if kind in Q8_0_ACTIVATIONS else 0)
               or (256 if kind in Q8_K_ACTIVATIONS else 0))
        if not how or isinstance(how, int) and x.type.shape[-1] % how:
            return x
        key = (x.name, how)  # Q8_0 and Q4_0 weights share x's Q8_0 blocks, F16 weights x in f16
        if key not in self._rounded:
            self._rounded[key] = _rounded_as(b, x, how)
        return self._rounded[key]

    def _times(self, b: Builder, x: Value, wname: str, name: str | None = None) -> Value:
        """x @ W.T for weight ``wname``, x taken as llama.cpp's dot product for W's type takes it."""
        t = self.tensor(wname)
        if t.ggml_type in Q8_K_BLOCKS and x.type.shape[-1] % 256 == 0 and t.group in (16, 32):
            return self._q8_k_blocks(b, x, wname, name)
        return b.matmul(self._activations(b, x, wname), self._matrix(b, wname), transpose_b=True, name=name)

    def _q8_k_blocks(self, b: Builder, x: Value, wname: str, name: str | None = None) -> Value:
        """x @ W.T for codes q with a scale s and maybe a zero z per group g (16 or 32) (W = q * s - z), x in Q8_K
        blocks (x^ = codes * one f32 scale per 256): x^ @ (q * s).T [- (x^'s sums per g) @ z.T]. The first is
        ``dequant(codes, x's scale per 256) @ dequant(q, s).T``, which ``fuse`` makes one ``qmatmul_q8 {group = g,
        scale_group}`` over int8 or 4-bit blocks of 32 (x's scale per super-block); the second reads 1/g of the
        weight's elements."""
        t = self.tensor(wname)
        g, k = t.group, x.type.shape[-1]
        lead = list(x.type.shape[:-1])
        key = (x.name, "q8k")  # x's Q8_K blocks once, dequantized once, summed once per group
        if key not in self._rounded:
            xq, xs = b.quantize(x, scheme="absmax", dtype="i8", axis=-1, group=256)
            self._rounded[key] = b.dequant(xq, xs, axis=-1, group=256)
        xd = self._rounded[key]
        codes = self._param(b, wname, t.codes, t.dtype, t.stored)
        y = b.matmul(xd, b.dequant(codes, self._k_scale(b, t), axis=-1, group=g), transpose_b=True,
                     name=name if t.zero is None else None)
        if t.zero is None:
            return y
        if key + (g,) not in self._rounded:  # x's sums per g: only weights with zeros read them
            self._rounded[key + (g,)] = b.reduce(b.reshape(xd, shape=lead + [k // g, g]), kind="sum", axes=[-1])
        zeros = self._k_scale(b, t, zeros=True)  # which fuse gives qmatmul_q8 with the scales (the mins' term)
        return b.sub(y, b.matmul(self._rounded[key + (g,)], zeros, transpose_b=True), name=name)

    def _k_scale(self, b: Builder, t: GGUFTensor, rows: Value | None = None, zeros: bool = False) -> Value:
        """A K-quant's scales, or zeros (of the rows ``rows`` when given), as the file has them: its integer
        sub-scales dequantized by their f32 d per 256 (``fuse`` gives both to qmatmul_q8 {scale_group}: a kernel
        reads a byte a scale); other types' f32 scales (zeros) as they are."""
        if t.factors is None:
            arr, ref = (t.zero, "zeros") if zeros else (t.scale, "scales")
            scale = self._param(b, f"{t.name}.{ref}", arr, _np_dtype_ladder(arr))
            return scale if rows is None else b.gather(scale, rows)
        sub, sup = t.factors[2:] if zeros else t.factors[:2]
        what = "zeros" if zeros else "scales"
        codes = self._param(b, f"{t.name}.sub{what}", sub, DTYPES["i8"])
        d = self._param(b, f"{t.name}.super{what}", sup, DTYPES["f32"])
        if rows is not None:
            codes, d = b.gather(codes, rows), b.gather(d, rows)
        return b.dequant(codes, d, axis=-1, group=256 // t.group)

    def project(self, b: Builder, x: Value, act_scale: Value | None, name: str, out_features: int,
                in_features: int) -> Value:
        _, i, proj = name.split(".")
        base = f"blk.{i}.{PROJECTIONS[proj]}"
        wname = f"{base}.weight"
        if act_scale is None:
            y = self._times(b, x, wname)
        else:
            t = self.tensor(wname)
            if wname not in self._shared:
                self._shared[wname] = _shared_ternary_scale(t)
            shared = self._shared[wname]
            if shared is not None:  # BitNet's integer path: i8 x ternary -> i32, then the two scales
                codes, s = shared
                y = bitlinear(b, x, act_scale, self._param(b, wname, codes, t.dtype),
                              self._param(b, f"{wname}.scales", s, DTYPES["f32"]))
            else:  # the same int8-quantized activations, dequantized into a float matmul
                y = b.matmul(b.dequant(x, act_scale), self._matrix(b, wname), transpose_b=True)
        if f"{base}.scale" in self.used:
            y = b.mul(y, self._vector(b, f"{base}.scale"))
        return y

    def head(self, b: Builder, x: Value) -> Value:
        # BitNet's int8 activations stop before the head; llama.cpp's Q8_0 ones follow the head's weight type
        name = "output.weight" if "output.weight" in self.used else "token_embd.weight"
        return self._times(b, x, name, name="logits")


def _rounded_as(b: Builder, x: Value, how: str | int) -> Value:
    """x rounded to dtype ``how`` (f16, bf16) and back, or through absmax int8 blocks of ``how`` values and back
    (32: Q8_0, whose scale is f16; 256: Q8_K, whose scale stays f32)."""
    if isinstance(how, str):
        return b.cast(b.cast(x, dtype=how), dtype="f32")
    xq, xs = b.quantize(x, scheme="absmax", dtype="i8", axis=-1, group=how)
    if how == 32:
        xs = b.cast(b.cast(xs, dtype="f16"), dtype="f32")
    return b.dequant(xq, xs, axis=-1, group=how)


def _np_dtype_ladder(arr: np.ndarray) -> DType:
    return DTYPES["f16"] if arr.dtype == np.float16 else DTYPES["f32"]


def _shared_ternary_scale(t: GGUFTensor):
    """(codes, f32[1] scale) when a ternary tensor's blocks all share one scale (blocks of scale 0 hold only
    zeros whatever their codes, so their codes become 0); else None."""
    if t.dtype.name != "ternary" or not t.quantized:
        return None
    s = np.asarray(t.scale).astype(np.float32)
    nz = s[s != 0]
    if nz.size == 0:  # every block is zero
        return np.zeros(t.shape, t.dtype.np_dtype), np.zeros(1, np.float32)
    if not np.all(np.isfinite(nz)) or not np.all(nz == nz.flat[0]):
        return None
    codes = t.codes
    if nz.size != s.size:
        keep = np.repeat(s != 0, t.group, axis=-1)[..., :codes.shape[-1]]
        codes = np.where(keep, np.asarray(codes), 0).astype(codes.dtype)
    return codes, np.array([nz.flat[0]], np.float32)


def load(path: str | os.PathLike, shapes: Mapping[str, tuple[int, ...]] | None = None, last_logits: bool = False,
         kv_cache: str = "f16") -> tuple[Graph, dict[str, np.ndarray]]:
    """(one decoder step graph, its weights by param name) from a GGUF file of a supported architecture
    (``last_logits``: see ladder.models.decoder; ``kv_cache``: the cache's element type, f16 as llama.cpp's
    default, or f32 / bf16)."""
    (graph,), weights = load_steps(path, [(shapes, last_logits)], kv_cache)
    return graph, weights


def load_steps(path: str | os.PathLike, steps: Sequence[tuple[Mapping[str, tuple[int, ...]] | None, bool]],
               kv_cache: str = "f16") -> tuple[list[Graph], dict[str, np.ndarray]]:
    """Several step graphs of one file over one set of weights, each tensor decoded once (a prompt's step and
    the decode step): ``steps`` holds (shapes, last_logits) per graph, as ``load`` takes them."""
    f = open_file(path)
    h = _hyper(f)
    vocab, used = _check_tensors(f, h)
    c = h.cfg
    src = _Source(f, h, used)
    graphs = []
    for shapes, last_logits in steps:
        seq, context = step_shapes(h.cfg, shapes, GGUFError)
        dims = BitNetConfig(vocab=vocab, hidden=c.hidden, layers=c.layers, heads=c.heads, kv_heads=c.kv_heads,
                            ffn=c.ffn, context=context, rope_theta=c.rope_theta, eps=c.eps,
                            kv_cache=check_kv_cache(kv_cache))
        src.next_graph()
        graphs.append(decoder(h.wiring, dims, src, seq, f"{h.arch.replace('-', '_').replace('.', '_')}_step",
                              last_logits))
    return graphs, src.weights
