"""Lowerings: movement ops (reshape, transpose, concat, slice, gather, cache_write) and the low-bit storage
ops (unpack, pack of run-time tensors).

Movement never looks at values: every kernel copies elements as raw bytes (an element is its storage's
itemsize: 4 for f32/i32, 2 for f16/bf16/i16, 1 for every 8-bit and sub-byte type), so one generator serves
every element type. All shapes are static; each op is first reduced to a canonical strided copy (size-1
axes dropped, axes that stay adjacent merged, a contiguous innermost run turned into one wider "element"),
and the kernel is specialised to that copy's constant sizes and byte strides.

Unpack and pack are generated from each packing's declaration (ladder.packing, read into a ``_Layout``): how
many bytes a block reads, how many codes each byte position holds, where code h of byte j sits in the row, how
it is extracted (bit field or digit, per plane) and where the scaled layouts keep a block's scale
(``nib16+f16``, ``tq2+f16``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from llvmlite import ir

from ladder.backends.llvm.codegen import (C64, I8, I16, I64, PTR, VOID, KernelSpec, for_range, lowers, report,
                                          storage_type)
from ladder.errors import LadderError
from ladder.packing import PACKINGS, Packing, ScaledPacking, from_codes
from ladder.types import TensorType

I1 = ir.IntType(1)
TILE = 16  # transpose tiles are TILE x TILE elements (8 x 8 for elements wider than 4 bytes)


# -- small IR helpers --------------------------------------------------------------------------------------

def _byte_at(b: ir.IRBuilder, ptr, off):
    """ptr + off bytes."""
    if isinstance(off, int):
        if off == 0:
            return ptr
        off = C64(off)
    return b.gep(ptr, [off], source_etype=I8)


def _memcpy(ctx, b: ir.IRBuilder, dst, src, nbytes) -> None:
    fn = ctx.declare("llvm.memcpy.p0.p0.i64", VOID, [PTR, PTR, I64, I1])
    b.call(fn, [dst, src, C64(nbytes) if isinstance(nbytes, int) else nbytes, ir.Constant(I1, 0)])


def _copy(ctx, b: ir.IRBuilder, dst, src, nbytes: int) -> None:
    """Copy a constant number of bytes (one element or a contiguous run of them)."""
    if nbytes <= 0:
        return
    if nbytes in (1, 2, 4, 8):
        t = ir.IntType(8 * nbytes)
        b.store(b.load(src, typ=t, align=1), dst, align=1)
    else:
        _memcpy(ctx, b, dst, src, nbytes)


def _unravel(b: ir.IRBuilder, idx, dims: Sequence[int]) -> list:
    """Row-major multi-index of ``idx`` over constant ``dims`` (division by constants)."""
    out = []
    for d in reversed(dims[1:]):
        out.append(b.urem(idx, C64(d)))
        idx = b.udiv(idx, C64(d))
    out.append(idx)
    return out[::-1] if dims else []


def _dot(b: ir.IRBuilder, coords, strides: Sequence[int], base: int = 0):
    acc = C64(base)
    for c, s in zip(coords, strides):
        if s:
            acc = b.add(acc, b.mul(c, C64(s)))
    return acc


def _itemsize(t: TensorType) -> int:
    return int(np.dtype(t.storage_np_dtype).itemsize)


def _unpacked(op, types) -> None:
    for t in types:
        if t.layout:
            raise LadderError(f"internal: {op.kind} of a packed tensor ({t}) reached the cpu backend")


def _strides(shape: Sequence[int]) -> list[int]:
    s, out = 1, []
    for d in reversed(shape):
        out.append(s)
        s *= d
    return out[::-1]


def _items(b: ir.IRBuilder, begin, end, name: str = "item"):
    """The loop over work items: not vectorised (see codegen.for_range)."""
    return for_range(b, begin, end, name=name, vectorize=False)


def _min(b: ir.IRBuilder, x, y):
    return b.select(b.icmp_signed("<", x, y), x, y)


# -- strided copies: reshape, transpose, slice ------------------------------------------------------------

COPY_CHUNK = 16384  # bytes per work item of a contiguous copy


def _contiguous_copy(ctx, hint: str, nbytes: int, src_off: int = 0) -> KernelSpec:
    """out[0:nbytes] = in[src_off:src_off + nbytes], split into chunks of COPY_CHUNK bytes."""
    fn, b, (pin, pout), begin, end = ctx.kernel(hint, 2)
    work = -(-nbytes // COPY_CHUNK) if nbytes > 0 else 0
    if work:
        lo = b.mul(begin, C64(COPY_CHUNK))
        hi = _min(b, b.mul(end, C64(COPY_CHUNK)), C64(nbytes))
        with _if(b, b.icmp_signed("<", lo, hi)):
            _memcpy(ctx, b, _byte_at(b, pout, lo), _byte_at(b, _byte_at(b, pin, src_off), lo), b.sub(hi, lo))
    b.ret_void()
    return KernelSpec(fn, work)


class _if:
    """``with _if(b, cond):`` emits the body only when cond holds (a structured if without else)."""

    def __init__(self, b: ir.IRBuilder, cond):
        self.b, self.cond = b, cond

    def __enter__(self):
        fn = self.b.function
        self.then = fn.append_basic_block("if.then")
        self.done = fn.append_basic_block("if.done")
        self.b.cbranch(self.cond, self.then, self.done)
        self.b.position_at_end(self.then)

    def __exit__(self, *exc):
        if exc[0] is None:
            self.b.branch(self.done)
            self.b.position_at_end(self.done)
        return False


@dataclass
class _Strided:
    """out (contiguous, row-major over ``dims``, each element ``elem`` bytes) = in at byte offset
    ``base + sum(i_k * strides[k])``. ``empty`` when the output has no elements."""

    dims: list[int]
    strides: list[int]
    base: int
    elem: int
    empty: bool = False


def _canonical(dims: Sequence[int], strides: Sequence[int], base: int, elem: int) -> _Strided:
    if any(d == 0 for d in dims):
        return _Strided([], [], base, elem, empty=True)
    merged: list[list[int]] = []
    for d, s in zip(dims, strides):
        if d == 1:
            continue
        if merged and merged[-1][1] == s * d:  # the outer axis steps over exactly the inner one
            merged[-1] = [merged[-1][0] * d, s]
        else:
            merged.append([d, s])
    while merged and merged[-1][1] == elem:  # a contiguous innermost run: one wider element
        elem *= merged.pop()[0]
    return _Strided([d for d, _ in merged], [s for _, s in merged], base, elem)


def _strided_copy(ctx, hint: str, sc: _Strided) -> KernelSpec:
    if sc.empty:
        fn, b, _, _, _ = ctx.kernel(hint, 2)
        b.ret_void()
        return KernelSpec(fn, 0)
    if not sc.dims:
        return _contiguous_copy(ctx, hint, sc.elem, sc.base)
    j = next((k for k in range(len(sc.dims) - 1) if sc.strides[k] == sc.elem), None)
    if j is not None:
        return _tiled_copy(ctx, hint, sc, j)
    return _row_copy(ctx, hint, sc)


def _row_copy(ctx, hint: str, sc: _Strided) -> KernelSpec:
    """One work item per output row (all axes but the last); the row is read with a constant stride."""
    dims, E = sc.dims, sc.elem
    outer, n, s = dims[:-1], dims[-1], sc.strides[-1]
    fn, b, (pin, pout), begin, end = ctx.kernel(hint, 2)
    with _items(b, begin, end, name="row") as row:
        ibase = b.add(_dot(b, _unravel(b, row, outer), sc.strides[:-1]), C64(sc.base))
        obase = b.mul(row, C64(n * E))
        with for_range(b, 0, n, name="k") as k:
            src = _byte_at(b, pin, b.add(ibase, b.mul(k, C64(s))))
            _copy(ctx, b, _byte_at(b, pout, b.add(obase, b.mul(k, C64(E)))), src, E)
    b.ret_void()
    return KernelSpec(fn, math.prod(outer))


def _tiled_copy(ctx, hint: str, sc: _Strided, j: int) -> KernelSpec:
    """A transpose: output axis j reads the input contiguously, the last output axis writes the output
    contiguously. Copy T x T tiles of (j, last) so that both sides stay in cache; a work item is one
    T-wide band of axis j (for every index of the other axes)."""
    dims, E, strides = sc.dims, sc.elem, sc.strides
    r = len(dims)
    l = r - 1
    T = TILE if E <= 4 else 8  # (wider tiles thrash L1 sets when the input stride is a power of two)
    ostr = [s * E for s in _strides(dims)]
    outer = [k for k in range(r) if k not in (j, l)]
    item_dims = [dims[k] for k in outer] + [-(-dims[j] // T)]
    fn, b, (pin, pout), begin, end = ctx.kernel(hint, 2)
    with _items(b, begin, end) as item:
        co = _unravel(b, item, item_dims)
        obase = _dot(b, co[:-1], [ostr[k] for k in outer])
        ibase = b.add(_dot(b, co[:-1], [strides[k] for k in outer]), C64(sc.base))
        jlo = b.mul(co[-1], C64(T))
        jhi = _min(b, b.add(jlo, C64(T)), C64(dims[j]))
        with for_range(b, 0, dims[l], step=T, name="lt") as lt:
            lhi = _min(b, b.add(lt, C64(T)), C64(dims[l]))
            with for_range(b, jlo, jhi, name="oj") as oj:
                orow = b.add(obase, b.mul(oj, C64(ostr[j])))
                irow = b.add(ibase, b.mul(oj, C64(E)))
                with for_range(b, lt, lhi, name="ol") as ol:
                    src = _byte_at(b, pin, b.add(irow, b.mul(ol, C64(strides[l]))))
                    _copy(ctx, b, _byte_at(b, pout, b.add(orow, b.mul(ol, C64(E)))), src, E)
    b.ret_void()
    return KernelSpec(fn, math.prod(item_dims))


@lowers("reshape")
def lower_reshape(ctx, op, ins, outs):
    _unpacked(op, list(ins) + list(outs))
    return _contiguous_copy(ctx, f"reshape_{op.name}", outs[0].size * _itemsize(outs[0]))


@lowers("transpose")
def lower_transpose(ctx, op, ins, outs):
    (x,), (y,) = ins, outs
    _unpacked(op, [x, y])
    perm = [int(p) for p in op.attr["perm"]]
    E = _itemsize(x)
    istr = [s * E for s in _strides(x.shape)]
    sc = _canonical([x.shape[p] for p in perm], [istr[p] for p in perm], 0, E)
    return _strided_copy(ctx, f"transpose_{op.name}", sc)


def slice_plan(shape: Sequence[int], attrs) -> list[tuple[int, int, int]]:
    """(start, step, count) per axis of ``x[start:end:step]``, exactly as Slice.slices + slice.indices."""
    from ladder.ops import OPS
    from ladder.types import DTYPES

    sl = OPS["slice"].slices(TensorType(DTYPES["u8"], tuple(shape)), OPS["slice"].full_attrs(attrs))
    out = []
    for s, d in zip(sl, shape):
        start, stop, step = s.indices(d)
        out.append((start, step, len(range(start, stop, step))))
    return out


@lowers("slice")
def lower_slice(ctx, op, ins, outs):
    (x,), (y,) = ins, outs
    _unpacked(op, [x, y])
    E = _itemsize(x)
    istr = [s * E for s in _strides(x.shape)]
    plan = slice_plan(x.shape, op.attr)
    assert tuple(c for _, _, c in plan) == y.shape
    if y.size == 0:
        base = 0
    else:
        base = sum(start * s for (start, _, _), s in zip(plan, istr))
    sc = _canonical([c for _, _, c in plan], [st * s for (_, st, _), s in zip(plan, istr)], base, E)
    return _strided_copy(ctx, f"slice_{op.name}", sc)


# -- concat -----------------------------------------------------------------------------------------------

@lowers("concat")
def lower_concat(ctx, op, ins, outs):
    (y,) = outs
    _unpacked(op, list(ins) + [y])
    axis = int(op.attr["axis"]) % y.rank
    E = _itemsize(y)
    outer = math.prod(y.shape[:axis])
    inner = math.prod(y.shape[axis + 1:]) * E
    rows = [t.shape[axis] * inner for t in ins]  # bytes of each operand per outer index
    orow = sum(rows)
    k = len(ins)
    fn, b, ptrs, begin, end = ctx.kernel(f"concat_{op.name}", k + 1)
    pout = ptrs[-1]
    if orow:
        with _items(b, begin, end) as item:
            row, which = b.udiv(item, C64(k)), b.urem(item, C64(k))
            done = fn.append_basic_block("case.done")
            sw = b.switch(which, done)
            off = 0
            for i, nb in enumerate(rows):
                if nb:
                    blk = fn.append_basic_block(f"case{i}")
                    sw.add_case(C64(i), blk)
                    b.position_at_end(blk)
                    dst = _byte_at(b, pout, b.add(b.mul(row, C64(orow)), C64(off)))
                    _memcpy(ctx, b, dst, _byte_at(b, ptrs[i], b.mul(row, C64(nb))), nb)
                    b.branch(done)
                off += nb
            b.position_at_end(done)
    b.ret_void()
    return KernelSpec(fn, outer * k if orow else 0)


# -- gather and cache_write: run-time positions, checked ------------------------------------------------

def _load_int(b: ir.IRBuilder, ptr, t: TensorType, index):
    """Element ``index`` of an integer tensor, as i64 (u8 zero-extended, signed types sign-extended)."""
    et = storage_type(t.dtype)
    v = b.load(b.gep(ptr, [C64(index) if isinstance(index, int) else index], source_etype=et), typ=et)
    return b.zext(v, I64) if t.dtype.kind == "uint" else b.sext(v, I64)


@lowers("gather")
def lower_gather(ctx, op, ins, outs):
    (table, idx), (y,) = ins, outs
    _unpacked(op, [idx])
    axis = int(op.attr.get("axis", 0)) % table.rank
    E = _itemsize(table)
    P = math.prod(table.shape[:axis])
    N = table.shape[axis]
    QE = math.prod(table.storage_shape[axis + 1:]) * E  # a packed table (axis before the last): its row bytes
    nI = idx.size
    fn, b, (pt, pi, py, pst), begin, end = ctx.kernel(f"gather_{op.name}", 3, status=True)
    # one item per (outer index, index); with no outer elements the indices are still checked
    work = max(P, 1) * nI
    if work:
        with _items(b, begin, end) as item:
            p, i = b.udiv(item, C64(nI)), b.urem(item, C64(nI))
            v = _load_int(b, pi, idx, i)
            v = b.select(b.icmp_signed("<", v, C64(0)), b.add(v, C64(N)), v)
            ok = b.icmp_unsigned("<", v, C64(N))  # 0 <= v < N
            with b.if_else(ok) as (then, other):
                with then:
                    if P and QE:
                        src = _byte_at(b, pt, b.mul(b.add(b.mul(p, C64(N)), v), C64(QE)))
                        _copy(ctx, b, _byte_at(b, py, b.mul(item, C64(QE))), src, QE)
                with other:
                    report(b, pst, 1)
    b.ret_void()
    return KernelSpec(fn, work, errors={1: f"an index is out of range for axis {axis} of size {N}"})


@lowers("cache_write")
def lower_cache_write(ctx, op, ins, outs):
    """Each item copies one slice of the cache (the axes before ``axis``) with the new rows in it; when the
    output is the cache's buffer itself (a state updated in place, backends/llvm/compiler.py) only the new
    rows are written."""
    (cache, new, pos), (y,) = ins, outs
    _unpacked(op, [cache, new, pos, y])
    axis = int(op.attr.get("axis", -2)) % cache.rank
    E = _itemsize(cache)
    P = math.prod(cache.shape[:axis])
    cap, n = cache.shape[axis], new.shape[axis]
    QE = math.prod(cache.shape[axis + 1:]) * E
    fn, b, (pc, pn, pp, py, pst), begin, end = ctx.kernel(f"cache_write_{op.name}", 4, status=True)
    work = max(P, 1)  # the position is checked even when the cache has no elements
    with _items(b, begin, end, name="p") as p:
        at = _load_int(b, pp, pos, 0)
        ok = b.and_(b.icmp_signed(">=", at, C64(0)), b.icmp_signed("<=", b.add(at, C64(n)), C64(cap)))
        with b.if_else(ok) as (then, other):
            with then:
                if P and QE:
                    row_c = b.mul(p, C64(cap * QE))
                    head = b.mul(at, C64(QE))  # bytes before the new rows
                    tail = b.add(head, C64(n * QE))
                    out_row, cache_row = _byte_at(b, py, row_c), _byte_at(b, pc, row_c)
                    # in place (the output is the cache's own buffer: a module's state): the other rows are
                    # already there, only the new ones are written
                    with b.if_then(b.icmp_unsigned("!=", py, pc)):
                        _memcpy(ctx, b, out_row, cache_row, head)
                        _memcpy(ctx, b, _byte_at(b, out_row, tail), _byte_at(b, cache_row, tail),
                                b.sub(C64(cap * QE), tail))
                    if n:
                        _memcpy(ctx, b, _byte_at(b, out_row, head), _byte_at(b, pn, b.mul(p, C64(n * QE))),
                                n * QE)
            with other:
                report(b, pst, 1)
    b.ret_void()
    return KernelSpec(fn, work, errors={1: f"writing {n} positions overflows the cache of {cap} "
                                           f"(the position is negative or past {cap - n})"})


# -- unpack and pack: generated from each packing's declaration ---------------------------------------------

INTERLEAVED_RUN = 256  # bytes per work item for the in-order layouts (nib, crumb, bit, planes)


@dataclass(frozen=True)
class _Layout:
    """A packed row of K codes as ``nb`` blocks, read off the packing's declaration (``decl``, ladder.packing).
    Block ``blk`` starts at byte ``blk * S``; its codes start ``at`` bytes in, as units (the declaration's
    chunks, ``Packing.segments``), unit u being ``chunks[u] = (first byte, B, used, first code)``: B byte
    positions from the first byte (per plane: plane p of position j is at ``j + p * plane_stride``), position j
    holding ``used`` codes, code h < used being the row's code ``blk * C + first code + (j + h * B if split else
    j * used + h)``. A byte holds ``H`` slots; those past its unit's ``used`` hold 0 (TQ1_0's last chunk). A
    scaled layout keeps its blocks' scale (and zero) at ``scale_at`` bytes from their start. In-order layouts
    (one-byte blocks, no scales) take ``runs`` of up to INTERLEAVED_RUN bytes as blocks."""

    decl: Packing
    chunks: tuple[tuple[int, int, int, int], ...]
    H: int
    split: bool
    runs: bool
    S: int
    at: int
    scale_at: tuple[int, ...]
    planes: int
    plane_stride: int
    nb: int
    K: int
    R: int
    pad: int  # the (final, stored) code of padding positions

    @property
    def C(self) -> int:
        return sum(nb * used for _, nb, used, _ in self.chunks)

    def pos(self, b: ir.IRBuilder, u: int, j, h: int):
        """The code (in its block) at position j (i64) of unit u, slot h."""
        _, nb, used, first = self.chunks[u]
        if self.split:
            return b.add(j, C64(first + h * nb))
        return b.add(b.mul(j, C64(used)), C64(first + h))

    def units(self, last: bool) -> list[tuple[list[int], int]]:
        """For each unit of a block (the last block when ``last``): how many byte positions j hold a real (not
        padding) code h, for each used slot h, and how many byte positions the unit stores."""
        if not last:
            return [([nb] * used, nb) for _, nb, used, _ in self.chunks]
        rem = self.K - (self.nb - 1) * self.C
        out = []
        for _, nb, used, first in self.chunks:
            r = rem - first
            if self.split:  # a split unit is stored whole (its tail is padding)
                cnt = [max(0, min(nb, r - h * nb)) for h in range(used)]
            else:
                cnt = [max(0, min(nb, -(-(r - h) // used))) for h in range(used)]
            out.append((cnt, max(0, -(-r // used)) if self.runs else nb))
        return out


def _layout(t: TensorType) -> _Layout:
    p = t.packing
    K = t.shape[-1]
    R = p.row_bytes(K, t.dtype)
    scaled = isinstance(p, ScaledPacking)
    base = p.base if scaled else p
    if base.name not in PACKINGS or PACKINGS[base.name] != base:
        raise LadderError(f"internal: the cpu backend does not know packing {p.name}")
    H = base.slots
    planes = t.dtype.bits if base.planes else 1
    runs = not scaled and base.block_bytes == 1
    if runs:  # codes run in order along the row: take runs of INTERLEAVED_RUN byte positions as blocks
        B = max(1, min(INTERLEAVED_RUN, -(-K // H)))
        chunks, S, at, scale_at = ((0, B, H, 0),), B, 0, ()
    else:
        chunks = base.segments
        S = p.stride if scaled else base.block_bytes
        at = p.codes_offset if scaled else 0
        scale_at = tuple(p.scale_offset(w) for w in range(1 + p.zero)) if scaled else ()
    C = sum(nb * used for _, nb, used, _ in chunks)
    nb = -(-K // C) if K else 0
    # split unless runs: a one-byte chunk's codes sit the same either way
    lay = _Layout(base, chunks, H, not runs, runs, S, at, scale_at, planes,
                  R // planes if planes > 1 else 0, nb, K, R, base._pad(t.dtype))
    if K:  # the description covers the row exactly
        last = lay.units(True)
        assert sum(sum(cnt) for cnt, _ in last) == K - (nb - 1) * lay.C
        assert (nb - 1) * S + (last[0][1] if runs else S) + (planes - 1) * lay.plane_stride == R
    return lay


def _code_map(dt) -> tuple[int, int] | np.ndarray:
    """How a code becomes the byte numpy holds for the value (from_codes): (a, c) when the byte is
    a * code + c (mod 256), else the table."""
    codes = np.arange(2 ** dt.bits, dtype=np.uint8)
    table = np.asarray(from_codes(codes, dt)).view(np.uint8).astype(np.int64)
    a = int(table[1] - table[0]) % 256 if len(table) > 1 else 1
    c = int(table[0])
    if all((a * k + c) % 256 == v for k, v in enumerate(table)):
        return a, c
    return table


def _decode_code(b: ir.IRBuilder, lay: _Layout, dt, h: int, bytes_):
    """The type's code h of a byte position (i8) from its loaded byte(s), one per plane: the declared bit
    field (or base-radix digit) of slot h, the planes' fields put together, the stored code made the type's."""
    d = lay.decl
    if d.radix:  # digit h of byte x: ((x * radix^h) mod 256) * radix >> 8
        w = b.and_(b.mul(b.zext(bytes_[0], I16), ir.Constant(I16, d.radix ** h)), ir.Constant(I16, 255))
        return b.trunc(b.lshr(b.mul(w, ir.Constant(I16, d.radix)), ir.Constant(I16, 8)), I8)
    code = None
    for p, y in enumerate(bytes_):
        f = b.and_(b.lshr(y, ir.Constant(I8, d.shift(h))), ir.Constant(I8, d.mask))
        code = f if p == 0 else b.or_(code, b.shl(f, ir.Constant(I8, p * d.bits)))
    xor = d.stored_xor(dt)
    return b.xor(code, ir.Constant(I8, xor)) if xor else code


def _value_byte(ctx, b: ir.IRBuilder, dt, code):
    m = _code_map(dt)
    if isinstance(m, tuple):
        a, c = m
        v = code if a == 1 else b.mul(code, ir.Constant(I8, a))
        return v if c == 0 else b.add(v, ir.Constant(I8, c))
    gname = f"ladder.codes.{dt.name}"
    g = ctx.module.globals.get(gname)
    if g is None:
        arr_t = ir.ArrayType(I8, 256)
        full = [int(m[i]) if i < len(m) else 0 for i in range(256)]
        g = ir.GlobalVariable(ctx.module, arr_t, gname)
        g.global_constant, g.linkage, g.initializer = True, "internal", ir.Constant(arr_t, full)
    return b.load(b.gep(g, [C64(0), b.zext(code, I64)], source_etype=g.value_type), typ=I8)


def _blocks_kernel(ctx, hint: str, n_ptrs: int, lay: _Layout, rows: int, emit_block) -> KernelSpec:
    """Work item = (row, block); ``emit_block(b, ptrs, row, blk, units)`` emits one block's code for the given
    per-unit counts (``_Layout.units``: constants)."""
    fn, b, ptrs, begin, end = ctx.kernel(hint, n_ptrs)
    work = rows * lay.nb
    if work:
        with _items(b, begin, end) as item:
            row, blk = b.udiv(item, C64(lay.nb)), b.urem(item, C64(lay.nb))
            if lay.nb > 1:
                with b.if_else(b.icmp_unsigned("<", blk, C64(lay.nb - 1))) as (full, last):
                    with full:
                        emit_block(b, ptrs, row, blk, lay.units(False))
                    with last:
                        emit_block(b, ptrs, row, blk, lay.units(True))
            else:
                emit_block(b, ptrs, row, blk, lay.units(True))
    b.ret_void()
    return KernelSpec(fn, work)


@lowers("unpack")
def lower_unpack(ctx, op, ins, outs):
    (x,), (y,) = ins, outs
    lay, dt = _layout(x), x.dtype
    assert _itemsize(y) == 1
    rows = math.prod(x.shape[:-1])

    def emit_block(b, ptrs, row, blk, units):
        pin, pout = ptrs
        for u, (cnt, _) in enumerate(units):
            first = lay.at + lay.chunks[u][0]
            ib = _byte_at(b, pin, b.add(b.mul(row, C64(lay.R)), b.add(b.mul(blk, C64(lay.S)), C64(first))))
            ob = _byte_at(b, pout, b.add(b.mul(row, C64(lay.K)), b.mul(blk, C64(lay.C))))

            def body(j, hs):
                bytes_ = [b.load(_byte_at(b, ib, b.add(j, C64(p * lay.plane_stride))), typ=I8)
                          for p in range(lay.planes)]
                for h in hs:
                    v = _value_byte(ctx, b, dt, _decode_code(b, lay, dt, h, bytes_))
                    b.store(v, _byte_at(b, ob, lay.pos(b, u, j, h)))

            jall = min(cnt)
            if jall:
                with for_range(b, 0, jall, name="j") as j:
                    body(j, range(len(cnt)))
            for h in range(len(cnt)):
                if cnt[h] > jall:
                    with for_range(b, jall, cnt[h], name=f"j{h}") as j:
                        body(j, [h])

    return _blocks_kernel(ctx, f"unpack_{op.name}", 2, lay, rows, emit_block)


def _value_code(b: ir.IRBuilder, dt, v):
    """The byte numpy holds for a value -> its code (ladder.packing.to_codes)."""
    if dt.kind == "table":
        return v
    if dt.kind == "ternary":
        return b.add(v, ir.Constant(I8, 1))
    if dt.kind == "binary":
        return b.ashr(b.add(v, ir.Constant(I8, 1)), ir.Constant(I8, 1))
    if dt.name == "fp4":
        return b.and_(v, ir.Constant(I8, 15))
    if dt.kind in ("int", "uint"):
        return b.and_(v, ir.Constant(I8, (1 << dt.bits) - 1))
    raise LadderError(f"internal: {dt} has no packable codes")


def _encode_bytes(b: ir.IRBuilder, lay: _Layout, codes) -> list:
    """The H stored codes of a byte position -> its stored byte(s) (one per plane), by the declaration."""
    d = lay.decl

    def sh(c, n):
        return b.shl(c, ir.Constant(I8, n)) if n else c

    def orall(vs):
        acc = vs[0]
        for v in vs[1:]:
            acc = b.or_(acc, v)
        return acc

    if d.radix:  # q = sum_h c_h radix^(H-1-h); the byte is ceil(256 q / radix^H)
        q = ir.Constant(I16, 0)
        for h, c in enumerate(codes):
            q = b.add(q, b.mul(b.zext(c, I16), ir.Constant(I16, d.radix ** (lay.H - 1 - h))))
        top = d.radix ** lay.H
        q = b.udiv(b.add(b.mul(q, ir.Constant(I16, 256)), ir.Constant(I16, top - 1)), ir.Constant(I16, top))
        return [b.trunc(q, I8)]
    if lay.planes == 1:
        return [orall([sh(c, d.shift(h)) for h, c in enumerate(codes)])]
    return [orall([sh(b.and_(b.lshr(c, ir.Constant(I8, p * d.bits)), ir.Constant(I8, d.mask)), d.shift(h))
                   for h, c in enumerate(codes)]) for p in range(lay.planes)]


@lowers("pack")
def lower_pack(ctx, op, ins, outs):
    x, (y,) = ins[0], outs
    if x.layout:
        raise LadderError(f"internal: pack of a packed tensor ({x}) reached the cpu backend")
    lay, dt = _layout(y), x.dtype
    assert _itemsize(x) == 1
    rows = math.prod(y.shape[:-1])
    n_scales = len(ins) - 1
    sb = y.packing.scale.bits // 8 if n_scales else 0
    xor = lay.decl.stored_xor(dt)

    def emit_block(b, ptrs, row, blk, units):
        pin, pout = ptrs[0], ptrs[-1]
        rb = b.add(b.mul(row, C64(lay.R)), b.mul(blk, C64(lay.S)))
        for s in range(n_scales):  # the block's scale (and zero), as raw bytes
            src = _byte_at(b, ptrs[1 + s], b.mul(b.add(b.mul(row, C64(lay.nb)), blk), C64(sb)))
            _copy(ctx, b, _byte_at(b, pout, b.add(rb, C64(lay.scale_at[s]))), src, sb)
        for u, (cnt, jb) in enumerate(units):
            ob = _byte_at(b, pout, b.add(rb, C64(lay.at + lay.chunks[u][0])))
            ib = _byte_at(b, pin, b.add(b.mul(row, C64(lay.K)), b.mul(blk, C64(lay.C))))
            # byte positions in runs where each code h is either real or padding throughout (no selects)
            cuts = sorted({0, jb} | {min(max(c, 0), jb) for c in cnt})
            for lo, hi in zip(cuts, cuts[1:]):
                with for_range(b, lo, hi, name="j") as j:
                    codes = []
                    for h in range(lay.H):
                        if h >= len(cnt):  # a slot this unit does not use holds 0
                            codes.append(ir.Constant(I8, 0))
                            continue
                        if cnt[h] < hi:  # (then cnt[h] <= lo) a padding position
                            codes.append(ir.Constant(I8, lay.pad))
                            continue
                        c = _value_code(b, dt, b.load(_byte_at(b, ib, lay.pos(b, u, j, h)), typ=I8))
                        codes.append(b.xor(c, ir.Constant(I8, xor)) if xor else c)
                    for p, v in enumerate(_encode_bytes(b, lay, codes)):
                        b.store(v, _byte_at(b, ob, b.add(j, C64(p * lay.plane_stride))))

    return _blocks_kernel(ctx, f"pack_{op.name}", len(ins) + 1, lay, rows, emit_block)
