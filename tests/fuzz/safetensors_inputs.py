"""safetensors fuzz inputs: a writer that keeps the header as data (so a mutation can change one tensor's dtype,
shape or offsets), a seed file holding a small graph's weights (0-d, low-bit, bf16, and one tensor the graph
does not use), mutators of the header's JSON, its length and its bytes."""

from __future__ import annotations

import json
import random
import struct

import numpy as np

GRAPH = """\
graph @fuzz(%x: f32[2, 8]) -> f32[2, 4] {
  %w  = param @w : f32[4, 8]
  %s  = param @s : f32[]
  %t  = param @t : ternary[4, 8]
  %ts = param @ts : f32[4, 1]
  %h  = param @h : bf16[4]
  %d  = dequant %t, %ts : f32[4, 8]
  %a  = add %w, %d : f32[4, 8]
  %y  = matmul %x, %a {transpose_b = true} : f32[2, 4]
  %z  = mul %y, %s : f32[2, 4]
  %hf = cast %h {dtype = f32} : f32[4]
  %o  = add %z, %hf : f32[2, 4]
  return %o
}
"""

DTYPES = ["BOOL", "U8", "I8", "U16", "I16", "F16", "BF16", "U32", "I32", "F32", "U64", "I64", "F64", "F8_E4M3",
          "F8_E5M2", "C64", "F4", "Q4", "", 7]
INTERESTING = [0, 1, 2, 3, 4, 7, 8, 16, 32, 255, 1 << 16, (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32,
               1 << 34, 1 << 36, 1 << 40, 1 << 53, (1 << 63) - 1, 1 << 63, (1 << 64) - 1, -1, -(1 << 63)]


def st_file(header: dict, data: bytes, header_len: int | None = None) -> bytes:
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text) if header_len is None else header_len % (1 << 64)) + text + data


def seed() -> tuple[dict, bytes]:
    """The seed's header (name -> dtype, shape, data_offsets) and data: the graph's params in ladder's storage
    form, plus an unused u8 tensor."""
    rng = np.random.default_rng(11)
    arrays = {
        "w": rng.standard_normal((4, 8)).astype(np.float32),
        "s": np.array(0.5, np.float32),
        "t": rng.integers(-1, 2, (4, 8)).astype(np.int8),
        "ts": rng.uniform(0.5, 1.5, (4, 1)).astype(np.float32),
        "h": (rng.standard_normal(4).astype(np.float32).view(np.uint32) >> 16).astype(np.uint16),
        "unused": rng.integers(0, 256, 16).astype(np.uint8),
    }
    names = {np.float32: "F32", np.int8: "I8", np.uint16: "U16", np.uint8: "U8"}
    header, data = {}, b""
    for name, a in arrays.items():
        header[name] = {"dtype": names[a.dtype.type], "shape": list(a.shape),
                        "data_offsets": [len(data), len(data) + a.nbytes]}
        data += a.tobytes()
    header["__metadata__"] = {"format": "np"}
    return header, data


def _value(rnd: random.Random):
    return rnd.choice([rnd.choice(INTERESTING), rnd.choice(INTERESTING), None, "4", 2.5, [], {}, True])


def mutate_header(rnd: random.Random, header: dict, data_len: int) -> dict:
    h = json.loads(json.dumps(header))
    names = [n for n in h if n != "__metadata__" and isinstance(h[n], dict)]
    if not names:
        return h
    name = rnd.choice(names)
    e = h[name]
    what = rnd.randrange(10)
    try:
        _mutate_entry(rnd, h, names, name, e, what, data_len)
    except (KeyError, TypeError, IndexError, ValueError):  # an earlier mutation removed what this one changes
        pass
    return h


def _mutate_entry(rnd: random.Random, h: dict, names: list[str], name: str, e: dict, what: int,
                  data_len: int) -> None:
    if what == 0:
        e["dtype"] = rnd.choice(DTYPES)
    elif what == 1:  # one dimension set to an edge value, or the rank changed
        if e["shape"] and rnd.random() < 0.7:
            e["shape"][rnd.randrange(len(e["shape"]))] = _value(rnd)
        else:
            e["shape"] = rnd.choice([[], [1], [0], [1] * 40, [1 << 34], [1 << 62, 1 << 62], [2, 2, 2]])
    elif what == 2:
        e["data_offsets"][rnd.randrange(2)] = _value(rnd)
    elif what == 3:  # a huge unused tensor whose offsets agree with its shape, past the end of the data
        h["big"] = {"dtype": "F32", "shape": [1 << 34], "data_offsets": [data_len, data_len + (1 << 36)]}
    elif what == 4:
        del e[rnd.choice(["dtype", "shape", "data_offsets"])]
    elif what == 5:
        h[name] = _value(rnd)
    elif what == 6:
        h["__metadata__"] = rnd.choice([{"k": 1}, [], "x", {"k": "v"}, None])
    elif what == 7:  # renamed: the graph's weight is missing
        h[name + rnd.choice(["_", ".weight", "X"])] = h.pop(name)
    elif what == 8:  # another tensor's bytes (overlap)
        other = h[rnd.choice(names)]
        e["data_offsets"] = list(other["data_offsets"]) if isinstance(other, dict) else e["data_offsets"]
    else:
        e["shape"] = list(reversed(e["shape"]))


def make_input(seed_number: int) -> bytes:
    """The fuzz input number ``seed_number``."""
    return draw(random.Random(seed_number))


def draw(rnd: random.Random) -> bytes:
    header, data = seed()
    header_len = None
    for _ in range(rnd.choice([1, 1, 2])):
        r = rnd.random()
        if r < 0.55:
            header = mutate_header(rnd, header, len(data))
        elif r < 0.65:
            header_len = rnd.choice(INTERESTING)
        elif r < 0.75:
            data = data[: rnd.randrange(len(data) + 1)]
        elif r < 0.85:  # values out of their type's range (a 2 in a ternary), or NaN floats
            b = bytearray(data)
            at = rnd.randrange(len(b))
            b[at] = rnd.choice([2, 3, 127, 128, 255, 0x7F, 0xC0])
            data = bytes(b)
    out = bytearray(st_file(header, data, header_len))
    if rnd.random() < 0.15:  # a few raw bytes changed anywhere: the JSON breaks, or a digit changes
        for _ in range(rnd.choice([1, 2, 4])):
            at = rnd.randrange(len(out))
            out[at] = rnd.randrange(256) if rnd.random() < 0.5 else out[at] ^ (1 << rnd.randrange(8))
    if rnd.random() < 0.05:
        del out[rnd.randrange(len(out) + 1):]
    return bytes(out)


def check(path) -> None:
    """What every safetensors input must survive: open (lazily), read every tensor, bind the graph's weights
    and run it in the reference interpreter."""
    import ladder
    from ladder import weights

    f = weights.load(path)
    for name in f:
        f[name]
    g = ladder.parse(GRAPH)
    out = ladder.run(g, {"x": np.ones((2, 8), np.float32)}, f)
    assert out[g.outputs[0]].shape == (2, 4)
