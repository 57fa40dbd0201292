"""GGUF fuzz inputs: a byte-level writer that records where every count, length, type and offset lies, small
valid models to start from, mutators that aim at those fields, and random files drawn field by field.

Written here from the GGUF layout (not with gguf-py's writer), so that a file can say anything: an array of
2^40 strings, general.architecture as an array of u32, a tensor of 7 dimensions, an offset past the end.
"""

from __future__ import annotations

import math
import random
import struct
from dataclasses import dataclass, field

import numpy as np
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT
from gguf.constants import GGML_QUANT_SIZES

_FMT = {VT.UINT8: "B", VT.INT8: "b", VT.UINT16: "H", VT.INT16: "h", VT.UINT32: "I", VT.INT32: "i",
        VT.FLOAT32: "f", VT.BOOL: "B", VT.UINT64: "Q", VT.INT64: "q", VT.FLOAT64: "d"}

# values a length or count field is set to: the edges of every integer width, and sizes no file could hold
INTERESTING = [0, 1, 2, 3, 4, 5, 7, 8, 31, 32, 63, 64, 255, 256, (1 << 15) - 1, 1 << 16, (1 << 31) - 1, 1 << 31,
               (1 << 32) - 1, 1 << 32, 1 << 40, 1 << 62, (1 << 63) - 1, 1 << 63, (1 << 64) - 1]


@dataclass(frozen=True)
class Field:
    at: int
    size: int  # bytes: 4 or 8
    kind: str  # count, length, vtype, value, ndims, dim, ttype, offset, version


@dataclass
class GGUFBytes:
    data: bytes
    fields: list[Field] = field(default_factory=list)
    header_end: int = 0  # where the tensor data begins


class _Writer:
    def __init__(self):
        self.buf = bytearray()
        self.fields: list[Field] = []

    def put(self, fmt: str, v, kind: str | None = None) -> None:
        if kind:
            self.fields.append(Field(len(self.buf), struct.calcsize(fmt), kind))
        self.buf += struct.pack("<" + fmt, v)

    def string(self, b: bytes) -> None:
        self.put("Q", len(b), "length")
        self.buf += b

    def value(self, vt: VT, v) -> None:
        if vt == VT.STRING:
            self.string(v if isinstance(v, bytes) else str(v).encode("utf-8", "surrogatepass"))
        elif vt == VT.ARRAY:
            itype, items = v
            self.put("I", int(itype), "vtype")
            self.put("Q", len(items), "length")
            for it in items:
                self.value(itype, it)
        else:
            self.put(_FMT[vt], v, "value")


def tensor_bytes(t: QT, ne: list[int]) -> int:
    block, size = GGML_QUANT_SIZES[t]
    return math.prod(ne) // block * size


def gguf_file(meta: list[tuple[str | bytes, VT, object]], tensors: list[tuple[str, QT, list[int], bytes]],
              align: int = 32, version: int = 3) -> GGUFBytes:
    """A GGUF file: ``meta`` as (key, value type, value) with arrays as (element type, items); ``tensors`` as
    (name, type, ne in ggml order, data); offsets are computed and the data padded to ``align``."""
    w = _Writer()
    w.buf += b"GGUF"
    w.put("I", version, "version")
    w.put("Q", len(tensors), "count")
    w.put("Q", len(meta), "count")
    for key, vt, v in meta:
        w.string(key if isinstance(key, bytes) else key.encode())  # bytes: a key that is not UTF-8
        w.put("I", int(vt), "vtype")
        w.value(vt, v)
    offset = 0
    for name, t, ne, data in tensors:
        w.string(name.encode())
        w.put("I", len(ne), "ndims")
        for d in ne:
            w.put("Q", d, "dim")
        w.put("I", int(t), "ttype")
        w.put("Q", offset, "offset")
        offset += -(-len(data) // align) * align
    w.buf += b"\0" * (-len(w.buf) % align)
    header_end = len(w.buf)
    for *_, data in tensors:
        w.buf += data + b"\0" * (-len(data) % align)
    return GGUFBytes(bytes(w.buf), w.fields, header_end)


# -- seeds: small files that read (and, for the models, load) --------------------------------------------------

def _random_blocks(rng: np.random.Generator, t: QT, ne: list[int]) -> bytes:
    if t == QT.F32:
        return (rng.standard_normal(math.prod(ne)) * 0.2).astype(np.float32).tobytes()
    if t == QT.F16:
        return (rng.standard_normal(math.prod(ne)) * 0.2).astype(np.float16).tobytes()
    if t == QT.BF16:
        return ((rng.standard_normal(math.prod(ne)) * 0.2).astype(np.float32).view(np.uint32) >> 16) \
            .astype(np.uint16).tobytes()
    if int(t) == 36:  # bitnet.cpp's I2_S: codes 0..2 in 32-byte blocks of 128, then the f32 scale in 32 bytes
        codes = rng.integers(0, 3, (math.prod(ne) // 128, 4, 32), dtype=np.uint8)
        packed = (codes << np.array([6, 4, 2, 0], np.uint8).reshape(1, 4, 1)).sum(axis=1, dtype=np.uint8)
        return packed.tobytes() + np.float32(0.05).tobytes() + bytes(28)
    raw = rng.integers(0, 256, tensor_bytes(t, ne), dtype=np.uint8)
    if t == QT.TQ2_0:  # 2-bit trits: the code 3 is no ternary value, so keep the seeds' codes in 0..2
        blocks = raw.reshape(-1, GGML_QUANT_SIZES[t][1])
        crumbs = rng.integers(0, 3, (blocks.shape[0], 64, 4), dtype=np.uint8)
        blocks[:, :64] = (crumbs << np.array([0, 2, 4, 6], np.uint8)).sum(axis=-1, dtype=np.uint8)
    return raw.tobytes()  # any bytes are blocks; the f16 scales may be inf or nan, which reading must survive


def model_meta(arch: str, hidden: int, ffn: int, heads: int, kv_heads: int, layers: int, context: int,
               vocab: int) -> list[tuple[str, VT, object]]:
    return [("general.architecture", VT.STRING, arch), ("general.name", VT.STRING, "fuzz seed"),
            (f"{arch}.block_count", VT.UINT32, layers), (f"{arch}.embedding_length", VT.UINT32, hidden),
            (f"{arch}.feed_forward_length", VT.UINT32, ffn), (f"{arch}.attention.head_count", VT.UINT32, heads),
            (f"{arch}.attention.head_count_kv", VT.UINT32, kv_heads), (f"{arch}.context_length", VT.UINT32, context),
            (f"{arch}.rope.freq_base", VT.FLOAT32, 10000.0),
            (f"{arch}.attention.layer_norm_rms_epsilon", VT.FLOAT32, 1e-5),
            ("tokenizer.ggml.model", VT.STRING, "llama"),
            ("tokenizer.ggml.tokens", VT.ARRAY, (VT.STRING, [f"t{i}" for i in range(vocab)])),
            ("tokenizer.ggml.scores", VT.ARRAY, (VT.FLOAT32, [float(-i) for i in range(vocab)])),
            ("tokenizer.ggml.token_type", VT.ARRAY, (VT.INT32, [1] * vocab))]


def model_tensors(rng, arch: str, hidden: int, ffn: int, heads: int, kv_heads: int, layers: int, vocab: int,
                  types: dict[str, QT]) -> list[tuple[str, QT, list[int], bytes]]:
    kvd = kv_heads * (hidden // heads)
    out = []

    def add(name, t, n_out, k):
        ne = [k] if n_out is None else [k, n_out]
        out.append((name, t, ne, _random_blocks(rng, t, ne)))

    add("token_embd.weight", types.get("token_embd", QT.F32), vocab, hidden)
    for i in range(layers):
        p = f"blk.{i}"
        add(f"{p}.attn_norm.weight", QT.F32, None, hidden)
        for proj, (n, k) in {"attn_q": (hidden, hidden), "attn_k": (kvd, hidden), "attn_v": (kvd, hidden),
                             "attn_output": (hidden, hidden), "ffn_gate": (ffn, hidden), "ffn_up": (ffn, hidden),
                             "ffn_down": (hidden, ffn)}.items():
            add(f"{p}.{proj}.weight", types.get(proj, QT.F32), n, k)
        add(f"{p}.ffn_norm.weight", QT.F32, None, hidden)
        if arch.startswith("bitnet"):
            add(f"{p}.attn_sub_norm.weight", QT.F32, None, hidden)
            add(f"{p}.ffn_sub_norm.weight", QT.F32, None, ffn)
    add("output_norm.weight", QT.F32, None, hidden)
    if not arch.startswith("bitnet"):
        add("output.weight", types.get("output", QT.F16), vocab, hidden)
    return out


def seeds() -> dict[str, GGUFBytes]:
    """A llama model over the 32-element block types, a bitnet model over ternary types, and a file of one
    tensor of every type ladder reads (not a model)."""
    rng = np.random.default_rng(2024)
    llama = dict(hidden=64, ffn=96, heads=2, kv_heads=1, layers=1, vocab=8)
    ltypes = {"token_embd": QT.Q8_0, "attn_q": QT.Q4_0, "attn_k": QT.Q4_1, "attn_v": QT.Q5_0,
              "attn_output": QT.Q5_1, "ffn_gate": QT.F16, "ffn_up": QT.BF16, "ffn_down": QT.Q8_0}
    bitnet = dict(hidden=256, ffn=256, heads=4, kv_heads=2, layers=1, vocab=4)
    btypes = {p: QT.TQ2_0 for p in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up")}
    btypes.update(ffn_down=QT.TQ1_0, token_embd=QT.Q6_K)
    every = [(f"t.{t.name.lower()}", t, [256, 2], _random_blocks(rng, t, [256, 2]))
             for t in (QT.F32, QT.F16, QT.BF16, QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.TQ1_0, QT.TQ2_0,
                       QT.Q2_K, QT.Q3_K, QT.Q4_K, QT.Q5_K, QT.Q6_K)]
    every.append(("t.i2_s", 36, [256, 2], _random_blocks(np.random.default_rng(36), 36, [256, 2])))  # I2_S
    return {
        "llama": gguf_file(model_meta("llama", context=16, **llama), model_tensors(rng, "llama", **llama, types=ltypes)),
        "bitnet": gguf_file(model_meta("bitnet", context=16, **bitnet) + [("general.alignment", VT.UINT32, 64)],
                            model_tensors(rng, "bitnet", **bitnet, types=btypes), align=64),
        "every type": gguf_file([("general.architecture", VT.STRING, "llama"),
                                 ("general.alignment", VT.UINT32, 32)], every),
    }


# -- mutations ---------------------------------------------------------------------------------------------------

def _interesting(rnd: random.Random, old: int, size: int) -> int:
    top = (1 << (8 * size)) - 1
    v = rnd.choice(INTERESTING) if rnd.random() < 0.7 else old + rnd.choice([-2, -1, 1, 2, 32, -32, 256])
    return v & top


def m_field(rnd: random.Random, f: GGUFBytes, data: bytearray) -> None:
    """Set a count, length, type, dimension or offset to a value from INTERESTING (or off by a little)."""
    if not f.fields:
        return
    fl = rnd.choice(f.fields)
    if fl.at + fl.size > len(data):
        return
    fmt = "<I" if fl.size == 4 else "<Q"
    old = struct.unpack_from(fmt, data, fl.at)[0]
    if fl.kind in ("vtype", "ttype") and rnd.random() < 0.6:
        new = rnd.choice(list(range(0, 14)) + [30, 36, 39, 40, 41, 255, (1 << 32) - 1]) if fl.kind == "ttype" \
            else rnd.choice(list(range(0, 14)) + [(1 << 32) - 1])
    else:
        new = _interesting(rnd, old, fl.size)
    struct.pack_into(fmt, data, fl.at, new)


def m_flip(rnd, f, data):
    end = f.header_end if rnd.random() < 0.8 else len(data)
    for _ in range(rnd.choice([1, 1, 2, 4])):
        at = rnd.randrange(max(1, end))
        if at < len(data):
            data[at] = rnd.randrange(256) if rnd.random() < 0.5 else data[at] ^ (1 << rnd.randrange(8))


def m_truncate(rnd, f, data):
    del data[rnd.randrange(len(data) + 1):]


def m_insert(rnd, f, data):
    at = rnd.randrange(min(len(data), f.header_end) + 1)
    data[at:at] = bytes(rnd.randrange(256) for _ in range(rnd.choice([1, 4, 8, 13])))


def m_delete(rnd, f, data):
    at = rnd.randrange(min(len(data), f.header_end) + 1)
    del data[at:at + rnd.choice([1, 4, 8, 13])]


def m_copy(rnd, f, data):
    """Paste a piece of the header over another place: whole fields land where others were."""
    if len(data) < 16:
        return
    n = rnd.choice([4, 8, 12, 24])
    src, dst = rnd.randrange(len(data) - n), rnd.randrange(min(len(data), f.header_end) or 1)
    data[dst:dst + n] = data[src:src + n]


MUTATIONS = [m_field, m_field, m_field, m_flip, m_truncate, m_insert, m_delete, m_copy]


def mutate(rnd: random.Random, f: GGUFBytes) -> bytes:
    data = bytearray(f.data)
    for _ in range(rnd.choice([1, 1, 1, 2, 3])):
        rnd.choice(MUTATIONS)(rnd, f, data)
    return bytes(data)


# -- random files, field by field ---------------------------------------------------------------------------------

def _random_value(rnd: random.Random, depth: int = 0) -> tuple[VT, object]:
    vt = rnd.choice(list(VT) if depth == 0 else [v for v in VT if v != VT.ARRAY] + [VT.ARRAY] * (depth < 2))
    if vt == VT.STRING:
        return vt, rnd.choice([b"", b"llama", b"bitnet", b"\xff\xfe", "\udc80".encode("utf-8", "surrogatepass"),
                               "é中".encode(), b"x" * rnd.choice([1, 100, 3000])])
    if vt == VT.ARRAY:
        it, _ = _random_value(rnd, depth + 1)
        items = [_random_value_of(rnd, it, depth + 1) for _ in range(rnd.choice([0, 1, 2, 5, 70]))]
        return vt, (it, items)
    return vt, _random_value_of(rnd, vt, depth)


def _random_value_of(rnd, vt: VT, depth: int):
    if vt == VT.STRING:
        return rnd.choice([b"", b"a", b"llama", b"\xc3"])
    if vt == VT.ARRAY:
        return (VT.UINT8, [1, 2])
    if vt in (VT.FLOAT32, VT.FLOAT64):
        return rnd.choice([0.0, -1.0, 1e-5, 1e4, float("inf"), float("nan"), 3.4e38])
    if vt == VT.BOOL:
        return rnd.choice([0, 1, 2, 255])
    bits = 8 * struct.calcsize(_FMT[vt])
    signed = _FMT[vt].islower()
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    return min(hi, max(lo, rnd.choice([0, 1, 2, 7, 16, 32, 64, 100, -1, 1 << 31, 1 << 40, hi, lo])))


def random_file(rnd: random.Random) -> bytes:
    """A file drawn field by field: the model's metadata with random types and values (general.architecture
    among them), extra keys of every type (nested arrays too), and the model's tensors with random types,
    shapes and data sizes."""
    arch = rnd.choice(["llama", "bitnet", "gpt2"])
    dims = dict(hidden=64, ffn=96, heads=2, kv_heads=1, layers=1, vocab=8)
    meta = []
    for key, vt, v in model_meta(arch, context=16, **dims):
        r = rnd.random()
        if r < 0.75:
            meta.append((key, vt, v))
        elif r < 0.95:
            meta.append((key, *_random_value(rnd)))
    for i in range(rnd.choice([0, 0, 1, 3])):
        key = f"x.{i}" if rnd.random() < 0.8 else rnd.choice(["general.alignment", "general.architecture", ""])
        meta.append((key, *_random_value(rnd)))
    if rnd.random() < 0.1:
        meta.append(("general.alignment", rnd.choice([VT.UINT32, VT.UINT64, VT.INT32]), rnd.choice([0, 1, 3, 16, 64])))
    rng = np.random.default_rng(rnd.randrange(1 << 32))
    tensors = []
    all_types = list(QT)
    for name, t, ne, data in model_tensors(rng, arch, **dims, types={}):
        r = rnd.random()
        if r < 0.1:
            continue
        if r < 0.3:
            t = rnd.choice(all_types)
            block = GGML_QUANT_SIZES.get(t, (1, 1))[0]
            ne = [block * rnd.choice([1, 2])] + ne[1:]
            data = bytes(tensor_bytes(t, ne)) if t in GGML_QUANT_SIZES else b"\0" * 8
        if rnd.random() < 0.1:
            ne = [rnd.choice([0, 1, 32, 1 << 20, 1 << 62]) for _ in range(rnd.choice([1, 2, 3, 4, 5]))]
        if rnd.random() < 0.1:
            data = data[: rnd.randrange(len(data) + 1)]
        tensors.append((name, t, ne, data))
    try:
        f = gguf_file(meta, tensors, align=rnd.choice([32, 32, 64]))
    except (struct.error, OverflowError):
        return b"GGUF"
    return mutate(rnd, f) if rnd.random() < 0.3 else f.data


def make_input(seed: int, seed_files: dict[str, GGUFBytes] | None = None) -> bytes:
    """The fuzz input number ``seed``."""
    return draw(random.Random(seed), seed_files)


def draw(rnd: random.Random, seed_files: dict[str, GGUFBytes] | None = None) -> bytes:
    """A mutated seed file, or a file drawn field by field."""
    files = seed_files or seeds()
    if rnd.random() < 0.35:
        return random_file(rnd)
    return mutate(rnd, files[rnd.choice(sorted(files))])


def check(path) -> None:
    """What every GGUF input must survive: open, decode every tensor, build the model (each may raise a
    LadderError, nothing else)."""
    from ladder.frontends import gguf as lg

    f = lg.open_file(path)
    for name in f.infos:
        try:
            f.tensor(name)
        except lg.GGUFError:
            pass  # a tensor ladder does not read; the others must still be tried
    lg.load(path)
