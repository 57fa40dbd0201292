"""Fuzzing the .lir parser: whatever the text, ``ladder.parse`` returns a Graph or raises a LadderError.

Valid programs (examples/*.lir and the programs below, which together use every op and every element type)
are mutated at random: characters deleted, inserted or replaced, lines deleted, duplicated or swapped,
tokens replaced by other tokens of the program, numbers inserted (small, huge, inf/nan), deep ``[[[[``
nesting, unicode, truncation and empty text. Every outcome must be a Graph (which then prints and re-parses
to an equal graph, and prints the same again) or a LadderError (whose message renders).

Mutants that parse must also run in the reference interpreter (tests/fuzz/text_inputs.py), or be refused with
a LadderError. The GGUF and safetensors surfaces are fuzzed in test_fuzz_gguf.py and test_fuzz_safetensors.py;
``python tests/fuzz`` runs all three for longer.

Inputs that once broke ladder are kept as regression tests at the end of this file.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ladder
from ladder.frontends import text as lir

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.lir"))

# -- programs that, with the examples, use every op, every attribute kind and every element type -----------

EXTRA_PROGRAMS = {
    "elementwise": """\
# element-wise ops, casts and consts of every kind
graph @"elementwise ops"(%x: f32[2, 4], %b: f32[4], %i: i8[2, 4], %h: f16[4]) -> (f32[2, 4], i8[2, 4], f16[4], bf16[2, 4]) {
  %c    = const [0.5, -1.0, 2.0, 3.0] : f32[4]
  %one  = const 1.0 : f32[]
  %a    = add %x, %b : f32[2, 4]
  %s    = sub %a, %c : f32[2, 4]
  %m    = mul %s, %one : f32[2, 4]
  %d    = div %m, %x : f32[2, 4]
  %n    = neg %d : f32[2, 4]
  %r    = relu %n : f32[2, 4]
  %r2   = relu2 %r : f32[2, 4]
  %g    = gelu %r2 {approximate = "tanh"} : f32[2, 4]
  %si   = silu %g : f32[2, 4]
  %sg   = sigmoid %si : f32[2, 4]
  %t    = tanh %sg : f32[2, 4]
  %er   = erf %t : f32[2, 4]
  %sq   = sqrt %er : f32[2, 4]
  %e    = exp %sq : f32[2, 4]
  %ro   = round %e : f32[2, 4]
  %cl   = clamp %ro {min = -1.5, max = inf} : f32[2, 4]
  %ii   = add %i, %i : i8[2, 4]
  %ir   = relu %ii : i8[2, 4]
  %ic   = clamp %ir {min = 0, max = 100} : i8[2, 4]
  %hs   = sigmoid %h : f16[4]
  %bf   = cast %cl {dtype = bf16} : bf16[2, 4]
  return %cl, %ic, %hs, %bf
}
""",
    "types": """\
# params and consts of every element type
graph @types(%x: fp8e4m3[2], %y: fp4[2]) -> (f32[2], f16[2], bf16[2], fp8e4m3[2], fp4[2], i32[2], i16[2], i8[2], u8[2], i4[2], u4[2], i2[2], u2[2], u1[2], i1[2], ternary[2], nf4[2]) {
  %f32  = const [1.5, -2.25e-3] : f32[2]
  %f16  = const [65504.0, -inf] : f16[2]
  %bf16 = const 0.5 : bf16[2]
  %f8   = const [448.0, -0.125] : fp8e4m3[2]
  %f4   = const [6.0, -0.5] : fp4[2]
  %i32  = const [-2147483648, 2147483647] : i32[2]
  %i16  = const [-32768, 32767] : i16[2]
  %i8   = const [-128, 127] : i8[2]
  %u8   = const [0, 255] : u8[2]
  %i4   = const [-8, 7] : i4[2]
  %u4   = const [0, 15] : u4[2]
  %i2   = const [-2, 1] : i2[2]
  %u2   = const [0, 3] : u2[2]
  %u1   = const [0, 1] : u1[2]
  %i1   = const [-1, 1] : i1[2]
  %ter  = const [-1, 0] : ternary[2]
  %nf4  = const [0, 15] : nf4[2]
  %pw   = param @"w/ternary" : ternary[2, 2]
  %pn   = param @w.nf4 : nf4[2, 2]
  return %f32, %f16, %bf16, %f8, %f4, %i32, %i16, %i8, %u8, %i4, %u4, %i2, %u2, %u1, %i1, %ter, %nf4
}
""",
    "quant": """\
# quantize (two and three results) and dequant of low-bit weights
graph @quant(%x: f32[2, 8]) -> (f32[2, 4], i32[2, 4], f32[2, 8]) {
  %q, %s = quantize %x {scheme = "absmax", dtype = i8} : i8[2, 8], f32[2, 1]
  %u, %us, %uz = quantize %x {scheme = "rtn", dtype = u4, group = 4, zero_mode = "original"} : u4[2, 8], f32[2, 2], f32[2, 2]
  %t, %ts = quantize %x {scheme = "absmean", dtype = ternary, group = -1} : ternary[2, 8], f32[1, 1]
  %w  = param @w : ternary[4, 8]
  %ws = param @ws : f32[1]
  %wf = dequant %w, %ws {dtype = f32} : f32[4, 8]
  %y  = matmul %x, %wf {transpose_b = true} : f32[2, 4]
  %z  = matmul %q, %w {transpose_b = true} : i32[2, 4]
  %ud = dequant %u, %us, %uz {group = 4, zero_mode = "original"} : f32[2, 8]
  %n  = param @n : nf4[2, 8]
  %ns = param @ns : f32[2, 1]
  %nd = dequant %n, %ns {axis = -1, group = 0} : f32[2, 8]
  %o  = add %ud, %nd : f32[2, 8]
  return %y, %z, %o
}
""",
    "nn": """\
# norms, reductions, rotary embedding, attention with a KV cache
graph @nn(%x: f32[1, 2, 3, 4], %pos: i32[3], %len: i32[1], %cache: f32[1, 2, 6, 4]) -> (f32[1, 2, 3, 4], f32[1, 2, 1, 1], f32[1, 2, 6, 4]) {
  %w   = param @norm : f32[4]
  %b   = param @bias : f32[4]
  %h   = rmsnorm %x, %w {eps = 1e-06} : f32[1, 2, 3, 4]
  %l   = layernorm %h, %w, %b {eps = 0.001} : f32[1, 2, 3, 4]
  %sm  = softmax %l {axis = 2} : f32[1, 2, 3, 4]
  %r   = rope %sm, %pos {theta = 500000.0, style = "interleaved"} : f32[1, 2, 3, 4]
  %kc  = cache_write %cache, %r, %len {axis = -2} : f32[1, 2, 6, 4]
  %a   = attention %r, %kc, %kc, %len {causal = false, scale = 0.5} : f32[1, 2, 3, 4]
  %red = reduce %a {kind = "mean", axes = [2, 3], keepdims = true} : f32[1, 2, 1, 1]
  return %a, %red, %kc
}
""",
    "shape": """\
# data movement on low-bit and float tensors
graph @shape(%x: i4[2, 3, 4], %ids: i32[5]) -> (i4[4, 2, 3], i4[6, 4], i4[2, 3, 8], i4[2, 1, 4], f32[5, 3], i8[]) {
  %t  = transpose %x {perm = [2, 0, 1]} : i4[4, 2, 3]
  %r  = reshape %x {shape = [-1, 4]} : i4[6, 4]
  %c  = concat %x, %x {axis = -1} : i4[2, 3, 8]
  %s  = slice %x {starts = [-1], ends = [-4], axes = [1], steps = [-2]} : i4[2, 2, 4]
  %s1 = slice %s {starts = [0], ends = [1], axes = [1]} : i4[2, 1, 4]
  %e  = param @embed : f32[7, 3]
  %g  = gather %e, %ids {axis = 0} : f32[5, 3]
  %k  = const [1, 2, 3] : i8[3]
  %sum = reduce %k {kind = "sum"} : i8[]
  return %t, %r, %c, %s1, %g, %sum
}
""",
    "lowbit": """\
# legalized low-bit weights: pack, unpack and the fused matmuls (what legalize-types and fuse produce)
graph @lowbit(%x: f32[2, 40], %pw: ternary<trit5>[3, 40]) -> (f32[2, 6], f32[2, 6], f32[2, 3], i4[6, 40], f32[2, 6]) {
  %w  = param @w : i4[6, 40]
  %s  = param @s : f32[6, 2]
  %p  = pack %w {layout = "nib32"} : i4<nib32>[6, 40]
  %u  = unpack %p : i4[6, 40]
  %a  = qmatmul %x, %p, %s {transpose_b = true, group = 32, epilogue = ["silu"]} : f32[2, 6]
  %t  = param @t : ternary[6, 40]
  %ts = param @ts : f32[1]
  %tp = pack %t {layout = "crumb16"} : ternary<crumb16>[6, 40]
  %q, %xs = quantize %x {scheme = "absmax", dtype = i8} : i8[2, 40], f32[2, 1]
  %b  = qmatmul_i8 %q, %tp, %xs, %ts {transpose_b = true} : f32[2, 6]
  %c  = qmatmul_i8 %q, %pw, %xs, %ts {transpose_b = true, epilogue = ["relu2"]} : f32[2, 3]
  %q8, %s8 = quantize %x {scheme = "absmax", dtype = i8, axis = -1, group = 32} : i8[2, 40], f32[2, 2]
  %d  = qmatmul_q8 %q8, %s8, %p, %s {group = 32, epilogue = ["silu"]} : f32[2, 6]
  return %a, %b, %c, %u, %d
}
""",
    "lut": """\
# T-MAC table lookup: tables on the activations, lookups over interleaved bit planes (what the lut pass builds)
graph @lut(%x: f32[2, 37], %xs: f32[2, 1]) -> (f32[2, 5], f32[2, 5]) {
  %w  = param @w : i2[1, 320]
  %ws = param @ws : f32[1]
  %p  = pack %w {layout = "planes"} : i2<planes>[1, 320]
  %q, %qs = quantize %x {scheme = "absmax", dtype = i8} : i8[2, 37], f32[2, 1]
  %t, %s = lut_precompute %q : i8[2, 10, 2, 16], i32[2, 1]
  %a  = lut_matmul %t, %s, %p, %qs, %ws {n = 5, rows = 8} : f32[2, 5]
  %u, %us, %uc = lut_precompute %x {quantize = true} : i8[2, 10, 16], f32[2, 1], f32[2, 1]
  %b  = lut_matmul %u, %us, %p, %xs, %ws, %uc {n = 5, rows = 8, fast_aggregation = true} : f32[2, 5]
  return %a, %b
}
""",
}

PROGRAMS = {p.stem: p.read_text() for p in EXAMPLES}
PROGRAMS.update(EXTRA_PROGRAMS)
SEEDS = list(PROGRAMS.values())


def test_seed_programs_are_valid_and_cover_every_op_and_type():
    assert len(EXAMPLES) >= 3, "examples/*.lir went missing"
    kinds, dtypes = set(), set()
    for name, text in PROGRAMS.items():
        g = ladder.parse(text)
        assert isinstance(g, ladder.Graph), name
        assert ladder.parse(str(g)) == g, name
        for op in g.ops():
            kinds.add(op.kind)
            dtypes.update(r.type.dtype.name for r in op.results)
        dtypes.update(v.type.dtype.name for v in g.inputs)
    assert kinds == set(ladder.ops.OPS)
    assert dtypes == set(ladder.DTYPES)


# -- mutations ---------------------------------------------------------------------------------------------

TOKEN_RE = re.compile(
    r'@"(?:\\.|[^"\\\n])*"|"(?:\\.|[^"\\\n])*"|%[A-Za-z0-9_.$]+|@[A-Za-z0-9_.$/\-]+'
    r"|[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[A-Za-z_][A-Za-z0-9_]*|->|\S"
)
PUNCT = list("[]{}(),:%@=\"#-.+e\n\t ") + ["->", "%x", "@w", "return", "graph", "const", "param", "{}", "[]"]
UNICODE = ["é", "中", "🙂", "\u200b", "\u00a0", "\x00", "\x7f", "\ufeff", "\u2028", "\r", "İ", "\ud800", "ß", "Ω"]
NUMBERS = ["0", "1", "-1", "2", "-0", "-0.0", "0.5", "3.0", "1e5", "1e-30", "1e309", "-1e309", "inf", "-inf",
           "nan", "+nan", "65536", "2147483648", "-2147483649", "4294967296", "9" * 18, "9" * 19, "9" * 40,
           "1" + "0" * 400, "1e400", ".5", "5.", "+7", "00012"]


def _number(rnd: random.Random) -> str:
    r = rnd.random()
    if r < 0.5:
        return rnd.choice(NUMBERS)
    if r < 0.7:
        return str(rnd.randint(-10, 10))
    if r < 0.9:
        return repr(rnd.uniform(-1e6, 1e6))
    return str(rnd.randint(-(10**30), 10**30))


def _tokens(text: str) -> list[re.Match]:
    return list(TOKEN_RE.finditer(text))


def _pos(rnd: random.Random, text: str) -> int:
    return rnd.randint(0, len(text))


def m_delete_char(rnd, text):
    if not text:
        return text
    i = rnd.randrange(len(text))
    return text[:i] + text[i + 1:]


def m_insert_char(rnd, text):
    i = _pos(rnd, text)
    ch = rnd.choice(PUNCT) if rnd.random() < 0.7 else chr(rnd.randint(32, 126))
    return text[:i] + ch + text[i:]


def m_replace_char(rnd, text):
    if not text:
        return text
    i = rnd.randrange(len(text))
    ch = rnd.choice(PUNCT) if rnd.random() < 0.7 else chr(rnd.randint(32, 126))
    return text[:i] + ch + text[i + 1:]


def _lines(text):
    return text.split("\n")


def m_delete_line(rnd, text):
    lines = _lines(text)
    del lines[rnd.randrange(len(lines))]
    return "\n".join(lines)


def m_duplicate_line(rnd, text):
    lines = _lines(text)
    i = rnd.randrange(len(lines))
    lines.insert(rnd.randint(0, len(lines)), lines[i])
    return "\n".join(lines)


def m_swap_lines(rnd, text):
    lines = _lines(text)
    i, j = rnd.randrange(len(lines)), rnd.randrange(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines)


def m_replace_token(rnd, text):
    toks = _tokens(text)
    if not toks:
        return text
    a, b = rnd.choice(toks), rnd.choice(toks)
    return text[:a.start()] + b.group() + text[a.end():]


def m_delete_token(rnd, text):
    toks = _tokens(text)
    if not toks:
        return text
    a = rnd.choice(toks)
    return text[:a.start()] + text[a.end():]


def m_insert_token(rnd, text):
    toks = _tokens(text)
    if not toks:
        return text
    i = _pos(rnd, text)
    return text[:i] + rnd.choice([" ", ""]) + rnd.choice(toks).group() + rnd.choice([" ", ""]) + text[i:]


def m_replace_number(rnd, text):
    toks = [t for t in _tokens(text) if re.fullmatch(r"[+-]?[\d.].*", t.group())]
    if not toks:
        return m_insert_number(rnd, text)
    a = rnd.choice(toks)
    return text[:a.start()] + _number(rnd) + text[a.end():]


def m_insert_number(rnd, text):
    i = _pos(rnd, text)
    sep = rnd.choice(["", " ", ", "])
    return text[:i] + sep + _number(rnd) + sep + text[i:]


def m_replace_word(rnd, text):
    """A name (op, type, attribute, keyword) replaced by another name ladder knows (or nearly knows)."""
    toks = [t for t in _tokens(text) if re.fullmatch(r"[A-Za-z_]\w*", t.group())]
    if not toks:
        return text
    words = (list(ladder.ops.OPS) + list(ladder.DTYPES) + ["true", "false", "none", "graph", "return",
             "f64", "int4", "axis", "dtype", "shape", "group", "scheme", "ref", "value", "x", "_"])
    a = rnd.choice(toks)
    return text[:a.start()] + rnd.choice(words) + text[a.end():]


def m_nest(rnd, text):
    depth = rnd.choice([2, 10, 33, 65, 100, 500, 3000, 20000])
    toks = [t for t in _tokens(text) if t.group()[0] in "[0123456789-+.in"]
    r = rnd.random()
    if toks and r < 0.5:  # wrap a literal or shape in many brackets
        a = rnd.choice(toks)
        return text[:a.start()] + "[" * depth + a.group() + "]" * depth + text[a.end():]
    i = _pos(rnd, text)
    if r < 0.75:
        return text[:i] + "[" * depth + text[i:]
    return text[:i] + rnd.choice(["[", "(", "{"]) * depth + rnd.choice(["]", ")", "}"]) * depth + text[i:]


def m_unicode(rnd, text):
    i = _pos(rnd, text)
    s = "".join(rnd.choice(UNICODE) for _ in range(rnd.randint(1, 3)))
    if rnd.random() < 0.3:
        s = chr(rnd.randint(0x80, 0x10FFFF))
    return text[:i] + s + text[i:]


def m_truncate(rnd, text):
    return text[:_pos(rnd, text)]


def m_empty(rnd, text):
    return rnd.choice(["", " ", "\n", "\n\n\t ", "# only a comment", "graph", "}", "{", "\x00", "\ufeff"])


def m_splice(rnd, text):
    """A piece of another seed program pasted in."""
    other = rnd.choice(SEEDS)
    i, j = sorted((_pos(rnd, other), _pos(rnd, other)))
    k = _pos(rnd, text)
    return text[:k] + other[i:j] + text[k:]


MUTATIONS = [m_delete_char, m_insert_char, m_replace_char, m_delete_line, m_duplicate_line, m_swap_lines,
             m_replace_token, m_delete_token, m_insert_token, m_replace_number, m_insert_number, m_replace_word,
             m_nest, m_unicode, m_truncate, m_empty, m_splice]
# Mutations that tend to keep a program valid (so the "it parsed" branch is exercised too) are drawn more.
WEIGHTS = [3, 3, 3, 2, 2, 2, 3, 2, 2, 4, 2, 4, 1, 1, 1, 0.3, 1]


def mutate(rnd: random.Random, text: str) -> str:
    for _ in range(rnd.choice([1, 1, 1, 2, 3])):
        text = rnd.choices(MUTATIONS, WEIGHTS)[0](rnd, text)
    return text


# -- the check ---------------------------------------------------------------------------------------------

def _unverified(text: str) -> None:
    """The parser without the verifier also gives a Graph (which prints) or a LadderError."""
    try:
        g = lir.parse(text, check=False)
    except ladder.LadderError:
        return
    except Exception as e:  # noqa: BLE001
        raise AssertionError(f"{type(e).__name__} escaped parse(check=False) for the text:\n{text!r}") from e
    assert isinstance(str(g), str)


class Outcome:
    def __init__(self):
        self.parsed = self.errors = 0


def check_text(text: str, outcome: Outcome | None = None) -> None:
    """``ladder.parse(text)`` gives a Graph that round-trips, or raises a LadderError that renders."""
    try:
        g = ladder.parse(text)
    except ladder.LadderError as e:
        _unverified(text)
        msg = str(e)  # rendering the message must not fail either
        assert msg and e.message
        if e.loc is not None and e.loc.line > 0:
            assert e.loc.line <= max(1, len(text.splitlines()) + 1), (e.loc, text)
        if outcome:
            outcome.errors += 1
        return
    except Exception as e:  # noqa: BLE001 - the point of the test
        raise AssertionError(f"{type(e).__name__} escaped ladder.parse for the text:\n{text!r}") from e
    assert isinstance(g, ladder.Graph)
    # without the verifier the parser builds the same graph
    assert lir.parse(text, check=False) == g
    printed = str(g)
    try:
        g2 = ladder.parse(printed)
    except ladder.LadderError as e:
        raise AssertionError(f"the printed graph does not parse.\ninput:\n{text}\nprinted:\n{printed}") from e
    assert g2 == g and str(g2) == printed, f"printing does not round-trip.\ninput:\n{text}\nprinted:\n{printed}"
    if outcome:
        outcome.parsed += 1


@pytest.mark.parametrize("seed", range(4))
def test_random_mutations(seed):
    rnd = random.Random(1000 + seed)
    outcome = Outcome()
    n = 1000
    for i in range(n):
        base = SEEDS[i % len(SEEDS)]
        text = mutate(rnd, base)
        check_text(text, outcome)
    # The mutations must exercise both outcomes, or the fuzzer tests nothing.
    assert outcome.parsed + outcome.errors == n
    assert outcome.parsed > n // 20, vars(outcome)
    assert outcome.errors > n // 4, vars(outcome)


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_every_line_deleted_and_every_prefix(name):
    """Systematic: each program with each line deleted, and cut after each line and mid-line."""
    text = PROGRAMS[name]
    lines = text.split("\n")
    for i in range(len(lines)):
        check_text("\n".join(lines[:i] + lines[i + 1:]))
        check_text("\n".join(lines[:i]))
        check_text("\n".join(lines[:i]) + "\n" + lines[i][: len(lines[i]) // 2])


def test_special_texts():
    for text in ["", " ", "\n", "\x00", "\ufeff", "#", "graph", "graph @", "graph @g", "graph @g(", "}",
                 "graph @g() -> () {}", "graph @g() -> () { return }", "[" * 100000, "{" * 5000,
                 "graph @g(%x: f32[" + "[" * 5000 + "]) -> f32[1] {\n return %x\n}\n",
                 "graph @g(%x: f32[" + "9" * 5000 + "]) -> f32[1] {\n return %x\n}\n",
                 "graph @g() -> f32[1] {\n  %c = const " + "9" * 5000 + " : f32[1]\n  return %c\n}\n",
                 "graph @g() -> f32[1] {\n  %c = const " + "[" * 30000 + "1" + "]" * 30000
                 + " : f32[1]\n  return %c\n}\n",
                 "\n".join(["graph @g(%x: f32[1]) -> f32[1] {"] + [f"  %v{i} = relu %x : f32[1]" for i in range(2000)]
                           + ["  return %v1999", "}"])]:
        check_text(text)


# -- hypothesis-driven variants ----------------------------------------------------------------------------

@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), st.randoms(use_true_random=False))
def test_hypothesis_mutations(base, rnd):
    check_text(mutate(rnd, base))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), st.data())
def test_hypothesis_spliced_text(base, data):
    """Arbitrary text (any unicode, or the format's own alphabet) pasted over a random span of a program."""
    i = data.draw(st.integers(0, len(base)), label="start")
    j = data.draw(st.integers(i, min(len(base), i + 40)), label="end")
    alphabet = st.sampled_from(list("%@[](){},:=#\"-.0123456789eE+ \n\tabcfinrstuxz_") + ["inf", "nan", "f32"])
    piece = data.draw(st.one_of(st.text(max_size=20), st.lists(alphabet, max_size=20).map("".join)), label="piece")
    check_text(base[:i] + piece + base[j:])


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_hypothesis_arbitrary_text(text):
    check_text(text)


# -- regressions: inputs that broke ladder at commit fb21511 ------------------------------------------------

REGRESSIONS = {
    # a NaN attribute made the graph unequal to its re-parse (nan != nan)
    "nan attribute": "graph @g(%x: f32[2]) -> f32[2] {\n  %y = clamp %x {max = nan} : f32[2]\n  return %y\n}\n",
    # -nan printed as 'nan' and re-parsed with the sign bit cleared
    "negative nan const": "graph @g() -> f32[2] {\n  %c = const [-nan, 1.0] : f32[2]\n  return %c\n}\n",
    # f32[0, 2] printed as '[]', which did not parse back
    "empty const": "graph @g() -> f32[0, 2] {\n  %c = const 1.0 : f32[0, 2]\n  return %c\n}\n",
}


@pytest.mark.parametrize("name", sorted(REGRESSIONS))
def test_regression_roundtrips(name):
    text = REGRESSIONS[name]
    g = ladder.parse(text)
    g2 = ladder.parse(str(g))
    assert g2 == g and str(g2) == str(g)
    check_text(text)


def test_regression_const_of_rank_over_64():
    # a numpy ValueError ("maximum supported dimension ... 64") escaped ladder.parse for a splat const
    ty = "f32[" + ", ".join(["1"] * 65) + "]"
    text = f"graph @g() -> {ty} {{\n  %c = const 1.0 : {ty}\n  return %c\n}}\n"
    with pytest.raises(ladder.ParseError) as info:
        ladder.parse(text)
    assert info.value.loc.line in (1, 2)
    check_text(text)


# -- a program that parses must also run (or be refused with a LadderError) ---------------------------------------

@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SEEDS), st.randoms(use_true_random=False))
def test_hypothesis_mutations_run(base, rnd):
    """Mutants that pass the verifier run in the reference interpreter on seeded random inputs and weights,
    within a memory budget; failing that, they raise a LadderError. Nothing else, and no hang."""
    from fuzz.guard import expect_ok_or_ladder_error
    from fuzz.text_inputs import check_runs

    text = mutate(rnd, base)
    expect_ok_or_ladder_error(check_runs, text, seconds=20, describe=lambda: repr(text))


RUN_REGRESSIONS = {
    # a lone surrogate in a quoted name passed check, then failed in run with a UnicodeEncodeError
    "lone surrogate": ('graph @g(%x: f32[2]) -> f32[2] {\n  %w = param @"\\ud800" : f32[2]\n'
                       '  %y = add %x, %w : f32[2]\n  return %y\n}\n', ladder.ParseError, "lone surrogate"),
    # sizes: MemoryError, swapping, or a traceback, before the memory budget
    "f32[100000000000] input": ("graph @g(%x: f32[100000000000]) -> f32[100000000000] {\n"
                                "  %y = relu %x : f32[100000000000]\n  return %y\n}\n", ladder.LadderError,
                                "memory budget"),
    "65536x65536 intermediate": ("graph @g(%a: f32[65536, 1], %b: f32[1, 65536]) -> f32[1, 1] {\n"
                                 "  %y = matmul %a, %b : f32[65536, 65536]\n"
                                 "  %z = slice %y {starts = [0, 0], ends = [1, 1]} : f32[1, 1]\n  return %z\n}\n",
                                 ladder.LadderError, "memory budget"),
    "broadcast to 2^62": ("graph @g(%a: f32[2147483648, 1], %b: f32[1, 2147483648]) -> f32[2147483648, 2147483648] {\n"
                          "  %y = add %a, %b : f32[2147483648, 2147483648]\n  return %y\n}\n", ladder.LadderError,
                          "memory budget"),
}


@pytest.mark.parametrize("name", sorted(RUN_REGRESSIONS))
def test_run_regressions(name):
    from fuzz.guard import time_limit
    from fuzz.text_inputs import check_runs

    text, cls, words = RUN_REGRESSIONS[name]
    with time_limit(20), pytest.raises(cls, match=words):
        check_runs(text)
