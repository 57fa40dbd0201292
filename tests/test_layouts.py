"""Packed layouts as declarations (ladder.packing): the bytes of every packing pinned to what the hand-written
packers produced before the layouts became declarations, the facts the kernels derive from a declaration
checked against numpy's pack, and ``tq2`` (llama.cpp's TQ2_0 byte order), the layout added by one declaration,
through numpy, the reference interpreter and the compiled cpu kernels (fast and generic decode); ``tq1``
(TQ1_0: chunks of differing sizes, ``parts``) the same way through the kernels that decode one code at a time."""

from __future__ import annotations

import hashlib
import zlib

import numpy as np
import pytest
from test_llvm_matmul import G, Guarded, _float_case, check, rand_w
from test_llvm_movement import check as check_bytes
from test_llvm_movement import rand_values

import ladder
from ladder.backends.llvm.compiler import compile_graph
from ladder.backends.llvm.lowerings.matmul_plan import fast_layout
from ladder.builder import Builder
from ladder.interpreter import Session
from ladder.packing import PACKINGS, get_packing, to_codes
from ladder.types import DTYPES, TensorType

# sha256 (first 16 hex digits) of the packed bytes of seeded values (``_pinned_bytes``), computed with the
# packers as they were before this file (ladder/packing.py of commit 8086bcf): a byte that moves fails here
PINS = {
    "bit/i1": "f1515fa9dfd8baf8", "bit/u1": "2e125538af126fdd", "crumb/i2": "35059366dd868c14",
    "crumb/ternary": "03a046eb631d5fb3", "crumb/u2": "5623e6c1e03f463a", "crumb16/i2": "d2e5d6d9f82f4c70",
    "crumb16/ternary": "d47bb073aaa68b34", "crumb16/u2": "35783710c7deac7e", "crumb32/i2": "58654cddbfba4ed9",
    "crumb32/ternary": "d045ee4fba4ff4dd", "crumb32/u2": "a4f96341d8ca4daa", "crumb64/i2": "60a860abc66d6da3",
    "crumb64/ternary": "786b0490c5d4b1bb", "crumb64/u2": "7a07e1ff70f548e9", "nib/fp4": "35e5d87469f2f005",
    "nib/i4": "f6f11cf3511caeaa", "nib/nf4": "e371a0a4bf3de060", "nib/u4": "6180e7cae72c4662",
    "nib16/fp4": "9649094008f4e7b7", "nib16/i4": "5ef1f48034d57dfb", "nib16/nf4": "1f055c4aeb5c3af8",
    "nib16/u4": "218c788b300c6e40", "nib32/fp4": "7e4557dd35de05e3", "nib32/i4": "0b8d31786b67cf25",
    "nib32/nf4": "f5dd33dde726a2ec", "nib32/u4": "4613071299877154", "nib64/fp4": "95b12d3ad38ba6e2",
    "nib64/i4": "6e50f0b87737f850", "nib64/nf4": "4c825c7645d66c35", "nib64/u4": "41ca0cfe975a2f54",
    "planes/i1": "465a57820a8d07f8", "planes/i2": "1d4aeda0ef37ec12", "planes/i4": "9f46ed59886fdcd9",
    "planes/ternary": "2e3e5d3e64568d0f", "planes/u1": "6674851af2470a13", "planes/u2": "186fa68f12f06d35",
    "planes/u4": "82280d4781a1f363", "trit5/ternary": "53268f54e8077c53", "bit+f16/i1": "8a1d1257d0ce26f7",
    "bit+bf16z/i1": "376ddc39f0994a87", "bit+f32/i1": "dad35461cb8efc1d", "crumb+f16/i2": "f86d19f48c456933",
    "crumb+bf16z/i2": "fc0a3765c103f2a7", "crumb+f32/i2": "75bc7eacc93ef8f8", "crumb16+f16/i2": "e0a2ad24d4a0374d",
    "crumb16+bf16z/i2": "ad89b71ed9f658bb", "crumb16+f32/i2": "c6b75b4e57c562f9", "crumb32+f16/i2": "46fb4998ce78e60d",
    "crumb32+bf16z/i2": "11c281a6f6880ee0", "crumb32+f32/i2": "be5fe6f1442147e9", "crumb64+f16/i2": "961d9010ecaa63b6",
    "crumb64+bf16z/i2": "5db2151de785f3a7", "crumb64+f32/i2": "06278b1157bba24e", "nib+f16/fp4": "e16f85c78ec2fc44",
    "nib+bf16z/fp4": "3fc022ef04ef211f", "nib+f32/fp4": "23dc7fa105531244", "nib16+f16/fp4": "1978ec8c494219fd",
    "nib16+bf16z/fp4": "26de2bfb78668c51", "nib16+f32/fp4": "7b948d55e88e77e1", "nib32+f16/fp4": "79ea01932b06667a",
    "nib32+bf16z/fp4": "905ae4bdce05e179", "nib32+f32/fp4": "3a634c7058123b4d", "nib64+f16/fp4": "8ef3b0097284e54f",
    "nib64+bf16z/fp4": "3659a18ce50b8d4c", "nib64+f32/fp4": "fc7b75c605c2f91b", "trit5+f16/ternary": "84340e471b1fa0d9",
    "trit5+bf16z/ternary": "3671a99add9b0224", "trit5+f32/ternary": "1081b3effa9b0978",
}
SHAPES = [(3, 517), (2, 64), (1, 1), (2, 320)]


def _values(dt, shape, rng):
    if dt.kind == "table":
        return rng.integers(0, 16, shape).astype(np.uint8)
    vals = np.asarray(dt.values, dtype=np.float32)
    return vals[rng.integers(0, len(vals), shape)].astype(dt.np_dtype)


def _pinned_bytes(name: str, dname: str) -> str:
    p, dt = get_packing(name), DTYPES[dname]
    h = hashlib.sha256()
    for shape in SHAPES:
        rng = np.random.default_rng(zlib.crc32(f"{name}/{dname}/{shape}".encode()))
        v = _values(dt, shape, rng)
        if "+" in name:
            nb = -(-shape[-1] // p.block)
            s = rng.standard_normal(shape[:-1] + (nb,)).astype(p.scale.np_dtype)
            z = rng.standard_normal(shape[:-1] + (nb,)).astype(p.scale.np_dtype) if p.zero else None
            storage = p.pack(v, dt, s, z)
        else:
            storage = p.pack(v, dt)
        h.update(repr(storage.shape).encode())
        h.update(storage.tobytes())
    return h.hexdigest()[:16]


@pytest.mark.parametrize("case", sorted(PINS))
def test_existing_packings_keep_their_bytes(case):
    name, dname = case.split("/")
    assert _pinned_bytes(name, dname) == PINS[case]


def test_every_pinned_packing_is_still_declared():
    bases = {c.split("/")[0].split("+")[0] for c in PINS}
    assert bases == set(PACKINGS) - {"tq1", "tq2", "q4", "q8"}  # declared after the pins (their bytes: test_packing's oracle)
    assert {c for c in PINS if "+" in c} == {f"{b}+{s}/{sorted(PACKINGS[b].dtypes)[0]}" for b in bases
                                             if not PACKINGS[b].planes for s in ("f16", "bf16z", "f32")}


# -- what the kernels derive from a declaration, against numpy's pack ---------------------------------------

def _decode(p, row: np.ndarray, k: int, dt) -> int:
    """Code k of a packed row, the way the LLVM scalar decode (decode.Decoder) derives it from the declaration:
    the block, ``place`` (byte, slot), the slot's field or digit, one byte per plane, the stored code's XOR."""
    blk, i = divmod(k, p.block)
    byte, slot = p.place(i)
    per = len(row) // (dt.bits if p.planes else 1)
    code = 0
    for plane in range(dt.bits if p.planes else 1):
        v = int(row[plane * per + blk * p.block_bytes + byte])
        if p.radix:
            f = (((v * p.radix ** slot) & 0xFF) * p.radix) >> 8
        else:
            f = (v >> p.shift(slot)) & p.mask
        code |= f << (plane * p.bits)
    return code ^ p.stored_xor(dt)


@pytest.mark.parametrize("name", sorted(PACKINGS))
def test_scalar_decode_from_the_declaration_matches_numpy(name):
    p = PACKINGS[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    for dname in sorted(p.dtypes):
        dt = DTYPES[dname]
        k = 2 * p.block + 37
        v = _values(dt, (1, k), rng)
        row = p.pack(v, dt)[0]
        codes = to_codes(v, dt)[0]
        assert [_decode(p, row, i, dt) for i in range(k)] == codes.tolist(), dname


def test_vector_constants_come_from_the_declarations():
    # the fast matmul's XOR constants and (xor, zero) offsets, as they were written by hand before
    old_offsets = {"ternary": (0, 1), "i2": (2, 2), "u2": (0, 0), "i4": (8, 8), "u4": (0, 0)}
    for name, p in PACKINGS.items():
        for dname in p.dtypes:
            if dname in old_offsets and fast_layout(p) and p.codes == "type":
                assert p.value_offset(DTYPES[dname]) == old_offsets[dname], (name, dname)
    assert PACKINGS["crumb32"].byte_xor(DTYPES["i2"]) == 0xAA and PACKINGS["nib64"].byte_xor(DTYPES["i4"]) == 0x88
    assert PACKINGS["tq2"].byte_xor(DTYPES["i2"]) == 0xAA and PACKINGS["trit5"].byte_xor(DTYPES["ternary"]) == 0
    assert PACKINGS["nib16"].byte_xor(DTYPES["u4"]) == 0
    # the kernels take exactly the layouts they took when they tested names
    assert {n for n, p in PACKINGS.items() if fast_layout(p)} == {
        "crumb16", "crumb32", "crumb64", "nib16", "nib32", "nib64", "trit5", "tq2", "q4"}
    assert {n for n, p in PACKINGS.items() if p.nib_pairs} == {"nib16", "q4"}
    assert PACKINGS["q4"].byte_xor(DTYPES["i4"]) == 0 and PACKINGS["q4"].value_offset(DTYPES["i4"]) == (0, 8)
    assert PACKINGS["planes"].index_shifts(4) == (0, 4) and PACKINGS["planes"].index_shifts(2) == (0, 2, 4, 6)


def test_plane_indices_are_the_documented_nibbles():
    p, dt = PACKINGS["planes"], DTYPES["i2"]
    storage = p.pack(_values(dt, (3, 75), np.random.default_rng(4)), dt)
    n, k8 = storage.shape[0], storage.shape[1] // 2
    planes = storage.reshape(n, 2, k8).transpose(1, 0, 2)
    want = np.stack([planes & 0x0F, planes >> 4], axis=-1).reshape(2, n, 2 * k8)
    assert np.array_equal(p.plane_indices(storage, dt, 4), want)


def test_a_declaration_is_checked():
    from ladder.errors import LadderError
    from ladder.packing import Packing
    with pytest.raises(LadderError, match="overlapping"):
        Packing("x", frozenset({"u2"}), "", block=4, block_bytes=1, bits=2, shifts=(0, 1, 4, 6))
    with pytest.raises(LadderError, match="radix"):
        Packing("x", frozenset({"ternary"}), "", block=6, block_bytes=1, radix=3)


# -- tq2: a layout added by one declaration --------------------------------------------------------------------

def test_tq2_is_llama_cpp_tq2_0_byte_for_byte():
    """tq2+f16 against llama.cpp's dequantize_row_tq2_0 (ggml-quants.c), written out here as a loop."""
    p, dt = get_packing("tq2+f16"), DTYPES["ternary"]
    rng = np.random.default_rng(9)
    v = _values(dt, (2, 512), rng)
    d = np.array([[0.25, -1.5], [3.0, 0.125]], np.float16)
    storage = p.pack(v, dt, d)
    assert storage.shape == (2, 2 * 66) and p.bits_per_weight(dt) == pytest.approx(2.0625)
    for r in range(2):
        out = []
        for blk in range(2):
            x = storage[r, 66 * blk:66 * (blk + 1)]
            qs, scale = x[:64], x[64:66].view(np.float16)[0]
            for j in range(0, 64, 32):
                for l in range(4):
                    for m in range(32):
                        out.append((((int(qs[j + m]) >> (l * 2)) & 3) - 1) * float(scale))
        assert out == (v[r].astype(np.float32) * np.repeat(d[r].astype(np.float32), 256)).tolist()


def test_q4_is_llama_cpp_q4_0_byte_for_byte():
    """q4+f16 against llama.cpp's dequantize_row_q4_0 (ggml-quants.c), written out here as a loop: per 18-byte
    block an f16 d, then byte j holds code j (low nibble) and code j + 16 (high), each value + 8."""
    p, dt = get_packing("q4+f16"), DTYPES["i4"]
    v = _values(dt, (2, 64), np.random.default_rng(11))
    d = np.array([[0.5, -2.0], [0.25, 3.0]], np.float16)
    storage = p.pack(v, dt, d)
    assert storage.shape == (2, 2 * 18) and p.bits_per_weight(dt) == pytest.approx(4.5)
    for r in range(2):
        out = []
        for blk in range(2):
            x = storage[r, 18 * blk:18 * (blk + 1)]
            scale, qs = float(x[:2].view(np.float16)[0]), x[2:]
            out += [((int(q) & 0x0F) - 8) * scale for q in qs] + [((int(q) >> 4) - 8) * scale for q in qs]
        assert out == (v[r].astype(np.float32) * np.repeat(d[r].astype(np.float32), 32)).tolist()


@pytest.mark.parametrize("layout", ["tq2", "tq2+f16", "tq2+bf16z", "tq2+f32"])
def test_tq2_round_trips(layout):
    p = get_packing(layout)
    rng = np.random.default_rng(5)
    for dname in ("ternary", "i2", "u2"):
        dt = DTYPES[dname]
        for k in (1, 31, 129, 256, 300, 600):
            v = _values(dt, (3, k), rng)
            if "+" in layout:
                s = rng.standard_normal((3, p.blocks(k))).astype(p.scale.np_dtype)
                z = rng.standard_normal(s.shape).astype(p.scale.np_dtype) if p.zero else None
                storage = p.pack(v, dt, s, z)
                s2, z2 = p.unpack_scales(storage, (3, k))
                assert np.array_equal(s2.view(np.uint8), s.view(np.uint8))
                assert z is None or np.array_equal(z2.view(np.uint8), z.view(np.uint8))
            else:
                storage = p.pack(v, dt)
            assert storage.shape == p.storage_shape((3, k), dt)
            back = p.unpack(storage, (3, k), dt)
            assert np.array_equal(np.asarray(back).view(np.uint8), np.asarray(v).view(np.uint8)), (dname, k)


def _tq2_matmuls(M: int, N: int, K: int, seed: int) -> G:
    """qmatmul / qmatmul_i8 over tq2 and tq2+SCALE: the fast kernel (transpose_b, 2-D weights) and the generic
    scalar decode (transpose_b false, batched weights)."""
    rng = np.random.default_rng(seed)
    gb = G()
    x = rng.standard_normal((M, K)).astype(np.float32)
    xn = gb.input(x, "f32")
    for dname in ("ternary", "i2", "u2"):
        _float_case(gb, rng, x, xn, dname, "tq2", N, K)
        _float_case(gb, rng, x, xn, dname, "tq2", N, K, mode="group32")
    _float_case(gb, rng, x, xn, "ternary", "tq2+f16", N, K)
    _float_case(gb, rng, x, xn, "i2", "tq2+bf16z", N, K)
    xi = gb.input(rng.integers(-128, 128, (M, K)).astype(np.int8), "i8")
    s1 = gb.input((rng.random((M, 1)) + 0.1).astype(np.float32), "f32")
    s2 = gb.param((rng.random(N) + 0.5).astype(np.float32), "f32")
    for dname in ("ternary", "i2", "u2"):
        w = gb.param(rand_w(rng, DTYPES[dname], (N, K)), dname)
        gb.lines.append(f'%p{w} = pack %{w} {{layout = "tq2"}} : {dname}<tq2>[{N}, {K}]')
        gb.op(f"qmatmul_i8 %{xi}, %p{w}, %{s1}, %{s2} {{transpose_b = true}}", f"f32[{M}, {N}]")
    wk = gb.param(rand_w(rng, DTYPES["ternary"], (K, N)), "ternary")  # packed along N
    gb.lines.append(f'%p{wk} = pack %{wk} {{layout = "tq2"}} : ternary<tq2>[{K}, {N}]')
    s2k = gb.param((rng.random(N) + 0.5).astype(np.float32), "f32")
    gb.op(f"qmatmul_i8 %{xi}, %p{wk}, %{s1}, %{s2k} {{transpose_b = false}}", f"f32[{M}, {N}]")
    wb = gb.param(rand_w(rng, DTYPES["i2"], (2, N, K)), "i2")
    gb.lines.append(f'%p{wb} = pack %{wb} {{layout = "tq2"}} : i2<tq2>[2, {N}, {K}]')
    gb.op(f"qmatmul_i8 %{xi}, %p{wb}, %{s1}, %{s2} {{transpose_b = true}}", f"f32[2, {M}, {N}]")
    return gb


def test_tq2_qmatmul_interpreter_and_cpu_agree():
    """On the host CPU and cpu:generic, 1 and 2 threads, against the interpreter: a full 256-code block and a
    partial one (K = 300)."""
    check(_tq2_matmuls(3, 5, 300, 13))


@pytest.mark.parametrize("target", ["cpu", "cpu:generic"])
def test_tq2_kernels_stay_inside_their_buffers(target):
    """Every kernel over tq2 called on buffers whose last byte sits before an unreadable page (a read past the
    end faults) with canary bytes in front (a write before the start shows), at odd K."""
    for M, N, K in [(1, 1, 1), (5, 3, 129), (1, 2, 288), (2, 1, 520)]:
        gb = _tq2_matmuls(M, N, K, K)
        assert _guarded_steps(gb, target) == len(gb.outs)


def _guarded_steps(gb, target) -> int:
    """Every step of gb's graph compiled for ``target`` run on guarded buffers against the interpreter; how many
    steps ran."""
    g = gb.graph()
    cg = compile_graph(g, gb.weights, target=target, pipeline="")
    ref = ladder.run(g, gb.feeds, weights=gb.weights)
    env = dict(gb.feeds)
    env.update(cg.fixed_outputs)
    env.update(Session(cg.graph, gb.weights).fixed)
    for step in cg.steps:
        ins = [Guarded(env[o]) for o in step.op.operands]
        r = step.op.results[0]
        out = Guarded(np.full(r.type.storage_shape, np.nan, r.type.storage_np_dtype))
        step.fn(*[a.ptr for a in ins], out.ptr, 0, step.spec.work)
        assert all(a.canary_ok() for a in ins + [out]), step.op.describe()
        tol = gb.meta[r.name]
        assert np.all(np.abs(out.arr - ref[r.name]) <= (0 if tol is None else tol)), step.op.describe()
    return len(cg.steps)


@pytest.mark.parametrize("target", ["cpu", "cpu:generic"])
def test_tq2_pack_and_unpack_kernels(target):
    rng = np.random.default_rng(21)
    b = Builder("tq2")
    inputs, packs, unpacks = {}, [], []
    for n, (layout, dname, k) in enumerate([("tq2", "ternary", 300), ("tq2", "i2", 100), ("tq2+f16", "ternary", 300),
                                            ("tq2+f32z", "u2", 513), ("tq2", "u2", 1)]):
        p = get_packing(layout)
        operands = [b.input(f"x{n}", f"{dname}[2, {k}]")]
        inputs[f"x{n}"] = rand_values(dname, (2, k), rng)
        if "+" in layout:
            for role in ("s", "z")[:1 + p.zero]:
                operands.append(b.input(f"{role}{n}", TensorType(p.scale, p.scale_shape((2, k)))))
                inputs[f"{role}{n}"] = rand_values(p.scale.name, p.scale_shape((2, k)), rng)
        packs.append((operands, layout))
        t = TensorType(DTYPES[dname], (2, k), layout)
        unpacks.append(b.input(f"u{n}", t))
        inputs[f"u{n}"] = rng.integers(0, 256, t.storage_shape).astype(np.uint8)  # every code, random padding
    outs = [b.pack(*operands, layout=layout) for operands, layout in packs] + [b.unpack(u) for u in unpacks]
    check_bytes(b.build(*outs), inputs, targets=[target])


# -- tq1: chunks of differing sizes (parts), decoded one code at a time ---------------------------------------

def _tq1_matmuls(M: int, N: int, K: int, seed: int) -> G:
    """qmatmul / qmatmul_i8 over tq1 and tq1+SCALE, both orientations and batched weights: all in the generic
    kernel's scalar decode (the fast kernel declines chunks of differing sizes)."""
    rng = np.random.default_rng(seed)
    gb = G()
    x = rng.standard_normal((M, K)).astype(np.float32)
    xn = gb.input(x, "f32")
    _float_case(gb, rng, x, xn, "ternary", "tq1", N, K)
    _float_case(gb, rng, x, xn, "ternary", "tq1+f16", N, K)
    _float_case(gb, rng, x, xn, "ternary", "tq1+bf16z", N, K)
    xi = gb.input(rng.integers(-128, 128, (M, K)).astype(np.int8), "i8")
    s1 = gb.input((rng.random((M, 1)) + 0.1).astype(np.float32), "f32")
    s2 = gb.param((rng.random(N) + 0.5).astype(np.float32), "f32")
    w = gb.param(rand_w(rng, DTYPES["ternary"], (2, N, K)), "ternary")
    gb.lines.append(f'%p{w} = pack %{w} {{layout = "tq1"}} : ternary<tq1>[2, {N}, {K}]')
    gb.op(f"qmatmul_i8 %{xi}, %p{w}, %{s1}, %{s2} {{transpose_b = true}}", f"f32[2, {M}, {N}]")
    wk = gb.param(rand_w(rng, DTYPES["ternary"], (K, N)), "ternary")  # packed along N
    gb.lines.append(f'%p{wk} = pack %{wk} {{layout = "tq1"}} : ternary<tq1>[{K}, {N}]')
    gb.op(f"qmatmul_i8 %{xi}, %p{wk}, %{s1}, %{s2} {{transpose_b = false}}", f"f32[{M}, {N}]")
    return gb


def test_tq1_qmatmul_interpreter_and_cpu_agree():
    """Against the interpreter, 1 and 2 threads: a full 256-code block and a partial one (K = 300, N = 300 for
    the weights packed along N)."""
    assert not fast_layout(PACKINGS["tq1"])  # declined by the fast kernel, not an internal error
    check(_tq1_matmuls(2, 300, 300, 31), targets=["cpu"])


def test_tq1_kernels_stay_inside_their_buffers():
    """Every kernel over tq1 on guarded buffers (as for tq2), at K ending in each of the three chunks."""
    for M, N, K in [(1, 1, 1), (2, 3, 250), (1, 2, 512)]:
        gb = _tq1_matmuls(M, N, K, K)
        assert _guarded_steps(gb, "cpu") == len(gb.outs)


def test_tq1_pack_and_unpack_kernels():
    """pack (unused slots of the last chunk's bytes written as digit 0) and unpack against numpy, at K ending
    in each chunk; unpack of random bytes reads every byte value (past 242 too) as numpy does."""
    rng = np.random.default_rng(23)
    b = Builder("tq1")
    inputs, packs, unpacks = {}, [], []
    for n, (layout, k) in enumerate([("tq1", 300), ("tq1", 100), ("tq1", 250), ("tq1+f16", 512), ("tq1+f32z", 1)]):
        p = get_packing(layout)
        operands = [b.input(f"x{n}", f"ternary[2, {k}]")]
        inputs[f"x{n}"] = rand_values("ternary", (2, k), rng)
        if "+" in layout:
            for role in ("s", "z")[:1 + p.zero]:
                operands.append(b.input(f"{role}{n}", TensorType(p.scale, p.scale_shape((2, k)))))
                inputs[f"{role}{n}"] = rand_values(p.scale.name, p.scale_shape((2, k)), rng)
        packs.append((operands, layout))
        t = TensorType(DTYPES["ternary"], (2, k), layout)
        unpacks.append(b.input(f"u{n}", t))
        inputs[f"u{n}"] = rng.integers(0, 256, t.storage_shape).astype(np.uint8)
    outs = [b.pack(*operands, layout=layout) for operands, layout in packs] + [b.unpack(u) for u in unpacks]
    check_bytes(b.build(*outs), inputs, targets=["cpu"])
