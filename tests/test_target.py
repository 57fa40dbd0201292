"""Targets (ladder.target): lookup, the host's features, capabilities per level and packings per type."""

from __future__ import annotations

import llvmlite.binding as llvm
import numpy as np
import pytest
from llvmlite.binding.targets import FeatureMap

from ladder import DTYPES, LadderError
from ladder import target as target_mod
from ladder.packing import PACKINGS
from ladder.target import LUT, Target, get_target, host_target

LOW_BIT = ("i4", "u4", "i2", "u2", "i1", "u1", "ternary", "nf4", "fp4")
FOUR = ("i4", "u4", "nf4", "fp4")
TWO = ("i2", "u2", "ternary")
CAPS = ("f32-fma", "i8-dot", "i8-madd", "table-lookup")
SPECS = ("cpu", "cpu:native", "cpu:generic", "cpu:avx2", "cpu:avx512", "lut")

# level: (name, vector bits, capabilities, block bytes of the preferred 4- and 2-bit packings)
LEVELS = {
    "cpu:generic": ("cpu:generic", 128, set(), 16),
    "cpu:avx2": ("cpu:avx2", 256, {"f32-fma", "i8-madd", "table-lookup"}, 32),
    "cpu:avx512": ("cpu:avx512", 512, {"f32-fma", "i8-dot", "i8-madd", "table-lookup"}, 64),
}


def host_features() -> set[str]:
    llvm.initialize_native_target()
    return {k for k, on in llvm.get_host_cpu_features().items() if on}


@pytest.fixture
def fresh_host():
    host_target.cache_clear()
    yield
    host_target.cache_clear()


# -- lookup --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", SPECS)
def test_get_target_known(spec):
    t = get_target(spec)
    assert isinstance(t, Target)
    want = "cpu:native" if spec == "cpu" else spec
    assert t.name == want and str(t) == want
    assert get_target(t) is t
    assert get_target(f"  {spec} ").name == want
    assert t.vector_bytes * 8 == t.vector_bits
    assert set(t.capabilities) <= set(CAPS)


def test_cpu_is_cpu_native():
    assert get_target("cpu") == get_target("cpu:native") == host_target()
    assert get_target("lut") is LUT


@pytest.mark.parametrize("spec", ["gpu", "", "cpu:avx", "cpu:sse", "CPU", "lut:x", "cuda"])
def test_get_target_unknown(spec):
    with pytest.raises(LadderError) as e:
        get_target(spec)
    msg = e.value.message
    if spec.startswith("cpu:"):
        for level in ("native", "generic", "avx2", "avx512"):
            assert level in msg
    else:
        for known in SPECS:
            assert known in msg


# -- the host ----------------------------------------------------------------------------------------------

def test_host_reflects_llvm_features():
    have = host_features()
    t = get_target("cpu")
    avx512 = {"avx512f", "avx512bw", "avx512vl"} <= have
    if avx512:
        assert t.vector_bits == 512
    elif "avx2" in have:
        assert t.vector_bits == 256
    else:
        assert t.vector_bits == 128
    assert t.cpu_name == llvm.get_host_cpu_name()
    assert t.cpu_features == llvm.get_host_cpu_features().flatten()
    assert t.supports("i8-dot") == (("avx512vnni" in have) if avx512 else ("avxvnni" in have and "avx2" in have))
    if "avx2" in have:
        assert t.supports("table-lookup") and t.supports("i8-madd")
    if "fma" in have and "avx2" in have:
        assert t.supports("f32-fma")
    b = t.vector_bits // 8
    for name in FOUR:
        assert t.preferred_packings(DTYPES[name])[0] == f"nib{b}"
    for name in TWO:
        assert t.preferred_packings(DTYPES[name])[0] == f"crumb{b}"


def _fake_host(monkeypatch, features: set[str], name: str = "fakecpu"):
    fm = FeatureMap()
    for f in sorted(features | {"sse2", "avx512er"}):
        fm[f] = f in features
    monkeypatch.setattr(llvm, "get_host_cpu_features", lambda: fm)
    monkeypatch.setattr(llvm, "get_host_cpu_name", lambda: name)
    return fm


BASE = {"sse", "sse2", "sse3", "ssse3", "sse4.1", "sse4.2", "avx"}

# features: (vector bits, capabilities)
HOSTS = [
    (BASE | {"avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512vnni"}, 512, set(CAPS)),
    (BASE | {"avx2", "fma", "avx512f", "avx512bw", "avx512vl"}, 512, {"f32-fma", "i8-madd", "table-lookup"}),
    (BASE | {"avx2", "fma", "avx512f"}, 256, {"f32-fma", "i8-madd", "table-lookup"}),  # no BW/VL
    (BASE | {"avx2", "fma", "avx512f", "avx512bw"}, 256, {"f32-fma", "i8-madd", "table-lookup"}),
    (BASE | {"avx2", "fma"}, 256, {"f32-fma", "i8-madd", "table-lookup"}),
    (BASE | {"avx2", "fma", "avxvnni"}, 256, set(CAPS)),
    (BASE, 128, {"table-lookup"}),
    ({"sse", "sse2"}, 128, set()),
    ({"neon"}, 128, {"f32-fma", "table-lookup"}),
]


@pytest.mark.parametrize("features,bits,caps", HOSTS)
def test_host_mapping_from_features(monkeypatch, fresh_host, features, bits, caps):
    fm = _fake_host(monkeypatch, set(features))
    t = get_target("cpu:native")
    assert t.name == "cpu:native"
    assert t.vector_bits == bits
    assert set(t.capabilities) == caps
    assert t.cpu_name == "fakecpu"
    assert t.cpu_features == fm.flatten()
    b = bits // 8
    for name in FOUR:
        assert t.packing_for(DTYPES[name]).name == f"nib{b}"
    for name in TWO:
        assert t.packing_for(DTYPES[name]).name == f"crumb{b}"
    for name in LOW_BIT:
        prefs = t.preferred_packings(DTYPES[name])
        assert prefs and all(PACKINGS[p].accepts(DTYPES[name]) for p in prefs)


def test_host_avx2_without_fma_is_256_bit(monkeypatch, fresh_host):
    _fake_host(monkeypatch, BASE | {"avx2"})
    t = get_target("cpu")
    assert t.vector_bits == 256
    assert t.packing_for(DTYPES["i4"]).name == "nib32"
    assert not t.supports("f32-fma")


# -- capabilities per level -------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", sorted(LEVELS))
def test_cpu_levels(spec):
    name, bits, caps, _ = LEVELS[spec]
    t = get_target(spec)
    assert t.name == name
    assert t.vector_bits == bits
    assert set(t.capabilities) == caps
    for c in CAPS:
        assert t.supports(c) == (c in caps)
    assert not t.supports("no-such-capability")


def test_i8_dot_only_with_vnni():
    for spec in ("cpu:generic", "cpu:avx2", "cpu:avx512", "lut"):
        t = get_target(spec)
        assert t.supports("i8-dot") == ("vnni" in t.cpu_features)
    assert get_target("cpu:avx512").supports("i8-dot")


def test_table_lookup_levels():
    assert not get_target("cpu:generic").supports("table-lookup")
    for spec in ("cpu:avx2", "cpu:avx512", "lut"):
        assert get_target(spec).supports("table-lookup")


def test_lut_capabilities():
    assert set(LUT.capabilities) == {"table-lookup"}
    assert not LUT.supports("i8-dot") and not LUT.supports("f32-fma")


# -- packings per type -------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("name", LOW_BIT)
def test_every_low_bit_type_has_a_packing(spec, name):
    t, dt = get_target(spec), DTYPES[name]
    prefs = t.preferred_packings(dt)
    assert prefs, f"{spec} has no packing for {name}"
    assert len(set(prefs)) == len(prefs)
    for p in prefs:
        assert p in PACKINGS and PACKINGS[p].accepts(dt)
    chosen = t.packing_for(dt)
    assert chosen is PACKINGS[prefs[0]]
    assert chosen.accepts(dt)


@pytest.mark.parametrize("spec", SPECS)
def test_wide_types_have_no_packing(spec):
    t = get_target(spec)
    for name in ("f32", "f16", "i8", "u8", "i32"):
        assert t.preferred_packings(DTYPES[name]) == ()
        with pytest.raises(LadderError, match=name):
            t.packing_for(DTYPES[name])


def test_lut_prefers_bit_planes():
    for name in ("ternary", "i2", "u2", "i4", "u4"):
        assert LUT.preferred_packings(DTYPES[name])[0] == "planes"
        assert LUT.packing_for(DTYPES[name]) is PACKINGS["planes"]
    for name in ("nf4", "fp4"):  # planes cannot hold table / float types
        assert LUT.packing_for(DTYPES[name]).name.startswith("nib")


@pytest.mark.parametrize("spec", sorted(LEVELS))
def test_cpu_block_sizes_follow_vector_width(spec):
    _, bits, _, b = LEVELS[spec]
    t = get_target(spec)
    assert b == bits // 8 == t.vector_bytes
    for name in FOUR:
        assert t.preferred_packings(DTYPES[name])[0] == f"nib{b}"
        assert t.packing_for(DTYPES[name]).block_bytes == t.vector_bytes
    for name in TWO:
        assert t.preferred_packings(DTYPES[name])[0] == f"crumb{b}"
        assert t.packing_for(DTYPES[name]).block_bytes == t.vector_bytes
    for name in ("i1", "u1"):
        assert t.packing_for(DTYPES[name]).name == "bit"
    assert "trit5" in t.preferred_packings(DTYPES["ternary"])


def test_cpu_target_rejects_unknown_level():
    with pytest.raises(LadderError, match="avx2"):
        target_mod.cpu_target("sse4")


# -- named CPUs (any LLVM x86 cpu name, as clang's -march) ---------------------------------------------------

# name: (vector bits, capabilities, features it must have, features it must not)
NAMED = {
    "x86-64": (128, set(), set(), {"ssse3", "avx", "avx2"}),
    "x86-64-v2": (128, {"table-lookup"}, {"ssse3", "sse4.1", "popcnt"}, {"avx"}),
    "x86-64-v3": (256, {"f32-fma", "i8-madd", "table-lookup"}, {"avx2", "fma", "bmi2", "f16c"}, {"avx512f"}),
    "haswell": (256, {"f32-fma", "i8-madd", "table-lookup"}, {"avx2", "fma"}, {"avx512f", "avxvnni"}),
    "alderlake": (256, {"f32-fma", "i8-dot", "i8-madd", "table-lookup"}, {"avxvnni"}, {"avx512f"}),
    "skylake-avx512": (512, {"f32-fma", "i8-madd", "table-lookup"}, {"avx512bw", "avx512vl"}, {"avx512vnni"}),
    "icelake-server": (512, set(CAPS), {"avx512vnni"}, {"avx512fp16"}),
    "sapphirerapids": (512, set(CAPS), {"avx512vnni", "avx512fp16"}, set()),
    "znver3": (256, {"f32-fma", "i8-madd", "table-lookup"}, {"avx2"}, {"avx512f"}),
    "znver4": (512, set(CAPS), {"avx512f", "avx512vnni"}, {"avx512fp16"}),
    "znver5": (512, set(CAPS), {"avx512f", "avx512vnni"}, set()),
}


@pytest.mark.parametrize("name", NAMED)
def test_named_cpu_has_its_llvm_features(name):
    bits, caps, has, lacks = NAMED[name]
    t = get_target(f"cpu:{name}")
    assert (t.name, t.cpu_name, t.vector_bits) == (f"cpu:{name}", name, bits)
    assert set(t.capabilities) == caps
    assert has <= t.features() and not lacks & t.features()
    assert get_target(f"cpu:{name}") is t  # asked of LLVM once
    # runs here exactly when the host has every feature the named CPU's code may use
    assert t.runs_here() == sorted(t.features() - host_features())


def test_named_cpu_packings_follow_its_vector_width():
    assert get_target("cpu:znver4").packing_for(DTYPES["i4"]).name == "nib64"
    assert get_target("cpu:haswell").packing_for(DTYPES["i4"]).name == "nib32"
    assert get_target("cpu:x86-64").packing_for(DTYPES["i4"]).name == "nib16"


@pytest.mark.parametrize("name", ["bogus", "znver99", "x86-64-v9", "Haswell", "znver4,+avx", "-help", "help"])
def test_unknown_cpu_name_is_a_clear_error(name):
    with pytest.raises(LadderError) as e:
        get_target(f"cpu:{name}")
    msg = e.value.message
    assert f"unknown cpu '{name}'" in msg
    for level in ("native", "generic", "avx2", "avx512"):
        assert level in msg
    assert "znver4" in msg and "x86-64-v3" in msg  # example names


def test_a_named_cpu_the_host_cannot_run_compiles_ahead_of_time_only():
    import ladder

    g = ladder.parse("graph @g(%x: f32[3, 5]) -> f32[3, 5] {\n  %y = relu %x : f32[3, 5]\n  return %y\n}")
    foreign = next(get_target(f"cpu:{n}") for n in ("znver5", "sapphirerapids", "x86-64") if
                   get_target(f"cpu:{n}").runs_here() or n == "x86-64")
    if foreign.runs_here():
        with pytest.raises(LadderError, match=f"cannot run code for {foreign.name}"):
            ladder.compile(g, foreign.name)
    else:  # a host that runs them all (x86-64 runs everywhere)
        x = np.arange(15, dtype=np.float32).reshape(3, 5) - 7
        assert np.array_equal(ladder.compile(g, foreign.name, cache=False)({"x": x})["y"], np.maximum(x, 0))
    assert ladder.compile(g, foreign.name, jit=False, cache=False)._backend.module.obj
