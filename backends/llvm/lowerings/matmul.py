"""Lowerings: matmul, qmatmul (float activations x low-bit weights) and qmatmul_i8 (BitNet's integer path).

Three tiers, chosen per op at lowering time:

* a **generic** kernel (matmul_generic.py) for every shape, dtype, packing, granularity and broadcast the
  reference accepts: work item = one (batch, n) output column; each weight element is decoded from its packed
  bytes as the packing's declaration says (ladder.packing; decode.py ``Decoder``), dequantized exactly as
  ``ladder.quant.dequantize`` does, and accumulated (f32 for float matmuls, int32 with wraparound for integer
  ones);
* a **fast** kernel (planned in matmul_plan.py, emitted by matmul_fast.py) for ``transpose_b`` with 2-D weights in
  a SIMD block packing (any whose declaration ``fast_layout`` takes: crumb16/32/64, nib16/32/64, trit5, tq2, with
  or without ``+f16``-style block scales; shifts, masks, XOR constants and code order are read off the
  declaration) over integer codes (ternary, i2, u2, i4, u4): work item = one weight row n; the row is streamed
  once per 64-row chunk of x (prefetched ``PREFETCH`` bytes ahead), each 32-byte piece is decoded in registers
  (shift + mask; base-3 digits by the multiply trick done as two byte adds and two compares per trit) and reused
  over a tile of 4 rows of x and, for several rows of x, 2 weight rows at once (M = 1 streams one row at a time:
  interleaved rows defeat the hardware prefetcher). The whole 32-code groups of a partial last block are decoded
  as vectors too (rows are padded to blocks).

  - ``qmatmul_i8``: codes are made unsigned-offset (``o = code ^ sign bit``, value = o - z), and
    dot = sum(x * o) - z * sum(x); on AVX2 ``vpmaddubsw`` (u8 x i8 pairs -> i16; |sum| <= 4 * 768 for crumb,
    2 * 3840 for nib, 5 * 512 for trit5, no saturation) then ``vpmaddwd`` by ones (-> i32); with VNNI (AVX512-VNNI
    or AVX-VNNI) one ``vpdpbusd`` does both; elsewhere plain i32 vector MACs.
    Then ``(f32(dot) * s1) * s2`` and the epilogue, the reference's order: bit-exact.
  - ``qmatmul`` (x f32): codes -> f32 values, dequantized per element exactly as the reference
    (v*s, (v - z)*s or v*s - z, no contraction), then FMA into 8-lane accumulators (up to 4 independent ones
    per output, so FMA latency does not bound a GEMV: 2.6x faster than one chain); a per-row scale without
    zero multiplies the row's sum once instead. Only the summation order (and rounding) differs from numpy's BLAS.

* the same fast kernel for ``qmatmul_i8`` over **unpacked int8** weights (matmul_plan.py ``_raw_i8_plan``);
* a **dense f32** kernel for float matmuls with 2-D f32 weights (either orientation): vector dot products
  over tiles of rows, or for ``[K, N]`` weights an outer-product micro-kernel (a block of output columns in
  registers, x broadcast a row at a time; matmul_dense.py).

The last < 32 codes of K not a multiple of the block are finished by the scalar decode (never reading past a
row); no kernel reads or writes outside its buffers. Epilogues run in f64 (libm) and round to the result type
per op, as the interpreter does (epilogue.py).
"""

from __future__ import annotations

from ladder.backends.llvm.codegen import lowers

from .matmul_dense import is_dense_f32, lower_dense_f32
from .matmul_fast import lower_fast
from .matmul_generic import lower_generic
from .matmul_plan import MatmulOp, fast_plan


@lowers("matmul", "qmatmul", "qmatmul_i8")
def lower_matmul(ctx, op, ins, outs):
    """The fast kernel where its planner takes the op, else the dense f32 one where it applies, else generic."""
    mm = MatmulOp.read(op, ins, outs)
    plan = fast_plan(ctx, mm)
    if plan is not None:
        return lower_fast(ctx, op, mm, plan)
    if is_dense_f32(mm):
        return lower_dense_f32(ctx, op, mm)
    return lower_generic(ctx, op, mm)
