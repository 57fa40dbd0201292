"""Reading stored elements in LLVM IR: one code of a packed row (``Decoder``, derived from the packing's
declaration in ladder.packing), an integer element as numpy holds it, and a block scale as f32.

The byte-address helper here (``gep8``) serves every matmul-family kernel (matmul_*.py, q8dot.py, q8k.py).
"""

from __future__ import annotations

from llvmlite import ir

from ladder.backends.llvm.codegen import C32, C64, F32, I8, I32, storage_type, to_f32
from ladder.ops.lowbit import block_scales
from ladder.types import TensorType



def gep8(b, p, off):
    """The address ``off`` bytes (an i64 value or an int) past ``p``."""
    return b.gep(p, [off if isinstance(off, ir.Value) else C64(off)], source_etype=I8)


def int_value(b, ptr, dt):
    """An integer element (as numpy holds it) -> its value as i32."""
    st = storage_type(dt)
    v = b.load(ptr, typ=st)
    if st == I32:
        return v
    if dt.kind == "int" and dt.bits < 8:  # ml_dtypes int4/int2 hold the low bits, not a sign-extended byte
        half = 1 << (dt.bits - 1)
        v = b.and_(b.zext(v, I32), C32((1 << dt.bits) - 1))
        return b.sub(b.xor(v, C32(half)), C32(half))
    return b.zext(v, I32) if dt.kind == "uint" else b.sext(v, I32)


class Decoder:
    """Scalar decode of element k of a packed row (any packing of ladder.packing, block-scaled or not), derived
    from the packing's declaration: the byte and slot of a code (``Packing.place``), its field (shift and mask)
    or base-``radix`` digit, one byte per bit plane, and the stored code's XOR to the type's code."""

    def __init__(self, ctx, t: TensorType):
        self.ctx, self.t, self.dt = ctx, t, t.dtype
        p = t.packing
        self.scaled = block_scales(t)
        self.base = p.base if self.scaled else p
        self.row_bytes = p.row_bytes(t.shape[-1], t.dtype)
        if self.scaled:
            self.sdt = p.scale
            self.packing = p
            self.stride = p.stride
            self.zero = p.zero

    def _place(self, b, k):
        """(byte offset in the row or plane (i64), slot (i32)) of position k, from the declaration."""
        L = self.base
        if L.parts:
            return self._place_parts(b, k)
        H, ch = L.slots, L.chunk_bytes
        if L.block_bytes == 1:  # codes in order: byte k / H, slot k mod H
            return b.udiv(k, C64(H)), b.trunc(b.urem(k, C64(H)), I32)
        blk, j = b.udiv(k, C64(L.block)), b.urem(k, C64(L.block))
        byte = b.mul(blk, C64(L.block_bytes))
        if ch != L.block_bytes:  # chunks of ch bytes, ch * H codes each
            byte = b.add(byte, b.mul(b.udiv(j, C64(ch * H)), C64(ch)))
            j = b.urem(j, C64(ch * H))
        return b.add(byte, b.urem(j, C64(ch))), b.trunc(b.udiv(j, C64(ch)), I32)

    def _place_parts(self, b, k):
        """``_place`` for chunks of differing sizes (``Packing.segments``): code j of the block taken as a code of
        each chunk in turn, a select chain over the chunks' first codes keeping the last chunk starting at or
        before j."""
        L = self.base
        blk, j = b.udiv(k, C64(L.block)), b.urem(k, C64(L.block))
        off = slot = None
        for first_byte, nb, _used, first_code in L.segments:
            i = b.sub(j, C64(first_code)) if first_code else j
            o, s = b.add(b.urem(i, C64(nb)), C64(first_byte)), b.trunc(b.udiv(i, C64(nb)), I32)
            if off is None:
                off, slot = o, s
            else:
                past = b.icmp_unsigned(">=", j, C64(first_code))
                off, slot = b.select(past, o, off), b.select(past, s, slot)
        return b.add(b.mul(blk, C64(L.block_bytes)), off), slot

    def _field(self, b, v, slot):
        """Slot ``slot`` (i32) of byte v (i32): a bit field, or a base-radix digit."""
        L = self.base
        if L.radix:  # digit n of byte v: ((v * radix^n) mod 256) * radix >> 8
            pw = C32(1)
            for n in range(1, L.slots):
                pw = b.select(b.icmp_unsigned("==", slot, C32(n)), C32(L.radix ** n), pw)
            return b.lshr(b.mul(b.and_(b.mul(v, pw), C32(255)), C32(L.radix)), C32(8))
        sh = L.slot_shifts
        a = sh[1] - sh[0] if len(sh) > 1 else 0
        if not a:
            shift = C32(sh[0])
        elif all(s == sh[0] + a * h for h, s in enumerate(sh)):  # shift = sh[0] + a * slot
            mag = abs(a)
            step = slot if mag == 1 else (b.shl(slot, C32(mag.bit_length() - 1)) if mag & (mag - 1) == 0
                                          else b.mul(slot, C32(mag)))
            if a > 0:
                shift = b.add(step, C32(sh[0])) if sh[0] else step
            else:
                shift = b.sub(C32(sh[0]), step)
        else:
            shift = C32(sh[0])
            for h in range(1, len(sh)):
                shift = b.select(b.icmp_unsigned("==", slot, C32(h)), C32(sh[h]), shift)
        return b.and_(b.lshr(v, shift), C32(L.mask))

    def code(self, b, row, k):
        """The type's code (i32) of position k (i64) of the row at ``row``."""
        L = self.base
        if self.scaled:
            blk = b.udiv(k, C64(L.block))
            k = b.urem(k, C64(L.block))
            row = gep8(b, row, b.add(b.mul(blk, C64(self.stride)), C64(self.packing.codes_offset)))
        byte = lambda off: b.zext(b.load(gep8(b, row, off), typ=I8), I32)  # noqa: E731
        off, slot = self._place(b, k)
        planes = self.dt.bits if L.planes else 1
        per = self.row_bytes // planes
        code = None
        for p in range(planes):  # plane p holds bits p * L.bits .. of the stored code
            f = self._field(b, byte(b.add(off, C64(p * per)) if p else off), slot)
            code = f if p == 0 else b.or_(code, b.shl(f, C32(p * L.bits)))
        xor = L.stored_xor(self.dt)
        return b.xor(code, C32(xor)) if xor else code

    def int_value(self, b, code):
        dt = self.dt
        if dt.kind == "int":
            half = 1 << (dt.bits - 1)
            return b.sub(b.xor(code, C32(half)), C32(half))
        if dt.kind == "ternary":
            return b.sub(code, C32(1))
        if dt.kind == "binary":
            return b.sub(b.shl(code, C32(1)), C32(1))
        return code

    def f32_value(self, b, code):
        if self.dt.kind == "table" or self.dt.name == "fp4":
            return to_f32(b, b.trunc(code, I8), self.dt)
        return b.sitofp(self.int_value(b, code), F32)

    def block_scale(self, b, row, k, which=0):
        """The f32 scale (which=0) or zero (which=1) of the block holding position k."""
        blk = b.udiv(k, C64(self.base.block))
        ptr = gep8(b, row, b.add(b.mul(blk, C64(self.stride)), C64(self.packing.scale_offset(which))))
        return to_f32(b, b.load(ptr, typ=storage_type(self.sdt)), self.sdt)
