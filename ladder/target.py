"""Targets: what a machine supports natively. Passes ask a target; none tests a backend's name.

* ``cpu`` (= ``cpu:native``): the host, from LLVM's host CPU name and features;
* ``cpu:generic`` (x86-64 baseline, 128-bit SSE2), ``cpu:avx2`` (256-bit, FMA, AVX2 byte shuffles and
  ``vpmaddubsw``), ``cpu:avx512`` (512-bit, AVX-512 BW/VL and VNNI ``vpdpbusd``): force a level;
* ``cpu:NAME`` for any LLVM x86 CPU name (``znver4``, ``sapphirerapids``, ``x86-64-v3``, ``haswell``, ...):
  that CPU with all its features, as clang's ``-march=NAME``. Its features are asked of LLVM itself
  (``llvm_cpu_features``), in a child process, since LLVM aborts on a name it does not know;
* ``lut``: a table-lookup machine (T-MAC on a CPU, or the LUT units of the ASIC target): it multiplies
  low-bit weights by looking up precomputed activation sums indexed by bit planes;
* ``asic:CONFIG`` (e.g. ``asic:lut-tc``): the LUT accelerator of a hardware config; ``lut``'s capabilities.

Capabilities (``target.supports(name)``):

=================  ====================================================================================
f32-fma            fused multiply-add on f32 vectors
i8-dot             int8 x int8 -> int32 dot products in one instruction (VNNI ``vpdpbusd``)
i8-madd            int8 products summed pairwise (AVX2 ``vpmaddubsw`` + ``vpmaddwd``)
table-lookup       16-entry byte table lookup across a vector (``pshufb``/``tbl``)
=================  ====================================================================================
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass, field
from functools import lru_cache

from .errors import LadderError
from .packing import Packing, get_packing
from .types import DType


@dataclass(frozen=True)
class Target:
    name: str
    vector_bits: int
    capabilities: frozenset[str]
    # dtype name -> packings, best first
    packings: tuple[tuple[str, tuple[str, ...]], ...]
    cpu_name: str = "generic"
    cpu_features: str = field(default="", repr=False)

    def supports(self, capability: str) -> bool:
        return capability in self.capabilities

    @property
    def vector_bytes(self) -> int:
        return self.vector_bits // 8

    def preferred_packings(self, dt: DType) -> tuple[str, ...]:
        return dict(self.packings).get(dt.name, ())

    def packing_for(self, dt: DType) -> Packing:
        prefs = self.preferred_packings(dt)
        if not prefs:
            raise LadderError(f"target {self.name} has no packing for {dt}")
        return get_packing(prefs[0])

    def __str__(self) -> str:
        return self.name

    def features(self) -> set[str]:
        """The LLVM features this target's code may use ('avx2', 'fma', ...)."""
        return {f[1:] for f in self.cpu_features.split(",") if f.startswith("+")}

    def runs_here(self) -> list[str]:
        """Features this target's code needs that the host CPU lacks (empty: its code runs on this machine)."""
        return sorted(self.features() - host_target().features())


def _cpu_packings(vector_bytes: int) -> tuple[tuple[str, tuple[str, ...]], ...]:
    # Blocks as wide as a vector register: one load decodes a whole block with shifts and masks.
    b = min(vector_bytes, 64)
    four = (f"nib{b}", "nib")
    two = (f"crumb{b}", "crumb")
    return (
        ("i4", four), ("u4", four), ("nf4", four), ("fp4", four),
        ("i2", two), ("u2", two), ("ternary", two + ("trit5", "planes")),
        ("i1", ("bit", "planes")), ("u1", ("bit", "planes")),
    )


_LUT_PACKINGS = (
    ("i4", ("planes", "nib")), ("u4", ("planes", "nib")), ("i2", ("planes", "crumb")),
    ("u2", ("planes", "crumb")), ("ternary", ("planes", "crumb", "trit5")), ("i1", ("planes", "bit")),
    ("u1", ("planes", "bit")), ("nf4", ("nib",)), ("fp4", ("nib",)),
)


def cpu_target(level: str, cpu_name: str = "", features: str = "") -> Target:
    if level == "avx512":
        caps = {"f32-fma", "i8-dot", "i8-madd", "table-lookup"}
        return Target("cpu:avx512", 512, frozenset(caps), _cpu_packings(64), cpu_name or "skylake-avx512",
                      features or "+avx512f,+avx512bw,+avx512vl,+avx512vnni,+avx2,+fma")
    if level == "avx2":
        return Target("cpu:avx2", 256, frozenset({"f32-fma", "i8-madd", "table-lookup"}), _cpu_packings(32),
                      cpu_name or "haswell", features or "+avx2,+fma")
    if level == "generic":
        return Target("cpu:generic", 128, frozenset(), _cpu_packings(16), cpu_name or "x86-64", features or "")
    return named_cpu_target(level)


def _from_features(name: str, cpu_name: str, have: set[str], flat: str) -> Target:
    """A target for a CPU with LLVM features ``have``, mapped to the widest level it supports."""
    if {"avx512f", "avx512bw", "avx512vl"} <= have:
        caps = {"f32-fma", "i8-madd", "table-lookup"} | ({"i8-dot"} if "avx512vnni" in have else set())
        return Target(name, 512, frozenset(caps), _cpu_packings(64), cpu_name, flat)
    if "avx2" in have:
        caps = {"i8-madd", "table-lookup"} | ({"f32-fma"} if "fma" in have else set()) | \
            ({"i8-dot"} if "avxvnni" in have else set())
        return Target(name, 256, frozenset(caps), _cpu_packings(32), cpu_name, flat)
    neon = "neon" in have
    caps = {"f32-fma", "table-lookup"} if neon else ({"table-lookup"} if "ssse3" in have else set())
    return Target(name, 128, frozenset(caps), _cpu_packings(16), cpu_name, flat)


@lru_cache(maxsize=1)
def host_target() -> Target:
    """The host CPU as LLVM sees it (name and features), mapped to the widest level it supports."""
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    name = llvm.get_host_cpu_name()
    feats = llvm.get_host_cpu_features()
    return _from_features("cpu:native", name, {k for k, on in feats.items() if on}, feats.flatten())


# What a named CPU can do is read from the code LLVM generates for it: each probe is plain IR whose
# instruction selection shows one feature (no target intrinsic, so a CPU without the feature still compiles).
_PROBE_IR = """
define <16 x float> @p_avx512f(<16 x float> %a, <16 x float> %b) { %r = fadd <16 x float> %a, %b
  ret <16 x float> %r }
define <64 x i8> @p_avx512bw(<64 x i8> %a, <64 x i8> %b) { %r = add <64 x i8> %a, %b
  ret <64 x i8> %r }
define <4 x i64> @p_avx512vl(<4 x i64> %a) { %r = call <4 x i64> @llvm.abs.v4i64(<4 x i64> %a, i1 false)
  ret <4 x i64> %r }
define <8 x float> @p_avx(<8 x float> %a, <8 x float> %b) { %r = fadd <8 x float> %a, %b
  ret <8 x float> %r }
define <8 x i32> @p_avx2(<8 x i32> %a, <8 x i32> %b) { %r = add <8 x i32> %a, %b
  ret <8 x i32> %r }
define <8 x float> @p_fma(<8 x float> %a, <8 x float> %b, <8 x float> %c) {
  %r = call <8 x float> @llvm.fma.v8f32(<8 x float> %a, <8 x float> %b, <8 x float> %c)
  ret <8 x float> %r }
define <16 x i8> @p_ssse3(<16 x i8> %a) { %r = call <16 x i8> @llvm.abs.v16i8(<16 x i8> %a, i1 false)
  ret <16 x i8> %r }
define <4 x i32> @p_sse41(<4 x i32> %a, <4 x i32> %b) { %r = call <4 x i32> @llvm.smin.v4i32(<4 x i32> %a, <4 x i32> %b)
  ret <4 x i32> %r }
define <4 x half> @p_f16c(<4 x float> %a) { %r = fptrunc <4 x float> %a to <4 x half>
  ret <4 x half> %r }
define <32 x half> @p_avx512fp16(<32 x half> %a, <32 x half> %b) { %r = fadd <32 x half> %a, %b
  ret <32 x half> %r }
define i32 @p_bmi2(i32 %a, i32 %b) { %r = shl i32 %a, %b
  ret i32 %r }
define i32 @p_popcnt(i32 %a) { %r = call i32 @llvm.ctpop.i32(i32 %a)
  ret i32 %r }
define i32 @p_lzcnt(i32 %a) { %r = call i32 @llvm.ctlz.i32(i32 %a, i1 false)
  ret i32 %r }
declare <4 x i64> @llvm.abs.v4i64(<4 x i64>, i1)
declare <8 x float> @llvm.fma.v8f32(<8 x float>, <8 x float>, <8 x float>)
declare <16 x i8> @llvm.abs.v16i8(<16 x i8>, i1)
declare <4 x i32> @llvm.smin.v4i32(<4 x i32>, <4 x i32>)
declare i32 @llvm.ctpop.i32(i32)
declare i32 @llvm.ctlz.i32(i32, i1)
"""
# probe function -> (LLVM feature, what its assembly shows when the CPU has it). A 256-bit vpdpwssd without
# AVX-512 is AVX-VNNI; with AVX-512 VNNI it is the EVEX form, so avxvnni is only claimed below 512 bits.
_PROBES = {
    "p_avx512f": ("avx512f", r"%zmm"), "p_avx512bw": ("avx512bw", r"vpaddb\s+%zmm"),
    "p_avx512vl": ("avx512vl", r"vpabsq\s+%ymm"), "p_avx": ("avx", r"vaddps\s+%ymm"),
    "p_avx2": ("avx2", r"vpaddd\s+%ymm"), "p_fma": ("fma", r"vfmadd"), "p_ssse3": ("ssse3", r"pabsb"),
    "p_sse41": ("sse4.1", r"pminsd"), "p_f16c": ("f16c", r"vcvtps2ph"), "p_avx512fp16": ("avx512fp16", r"vaddph"),
    "p_bmi2": ("bmi2", r"shlx"), "p_popcnt": ("popcnt", r"^popcnt"), "p_lzcnt": ("lzcnt", r"^lzcnt"),
    "p_avx512vnni": ("avx512vnni", r"vpdpwssd\s+%zmm"), "p_avxvnni": ("avxvnni", r"vpdpwssd"),
}
CPU_LEVELS = ("generic", "avx2", "avx512")
CPU_EXAMPLES = ("x86-64", "x86-64-v2", "x86-64-v3", "x86-64-v4", "haswell", "skylake-avx512", "icelake-server",
                "sapphirerapids", "alderlake", "znver3", "znver4", "znver5")


def _vnni_probe(feature: str, n: int) -> str:
    """vpdpwssd's pattern, ``n`` i32 lanes wide: acc + the sums of adjacent pairs of i16 x i16 products."""
    def lanes(first):
        return "<" + ", ".join(f"i32 {i}" for i in range(first, 2 * n, 2)) + ">"

    wide, half = f"<{2 * n} x i32>", f"<{n} x i32>"
    return f"""define {half} @p_{feature}(<{2 * n} x i16> %a, <{2 * n} x i16> %b, {half} %acc) {{
  %xa = sext <{2 * n} x i16> %a to {wide}
  %xb = sext <{2 * n} x i16> %b to {wide}
  %m = mul {wide} %xa, %xb
  %e = shufflevector {wide} %m, {wide} poison, {half} {lanes(0)}
  %o = shufflevector {wide} %m, {wide} poison, {half} {lanes(1)}
  %s = add {half} %e, %o
  %r = add {half} %s, %acc
  ret {half} %r }}
"""


def _probe_ir() -> str:
    return _PROBE_IR + _vnni_probe("avx512vnni", 16) + _vnni_probe("avxvnni", 8)


# The child that asks LLVM (it imports llvmlite only, not ladder: ~0.3 s). argv: cpu name; stdin: probe IR;
# stdout: each probe function's instructions, one line each, after a line "@name".
_CHILD = """
import sys, llvmlite.binding as llvm
llvm.initialize_native_target(); llvm.initialize_native_asmprinter()
tm = llvm.Target.from_triple(llvm.get_process_triple()).create_target_machine(cpu=sys.argv[1], features="", opt=2)
for line in tm.emit_assembly(llvm.parse_assembly(sys.stdin.read())).splitlines():
    if line.startswith("p_") and line.endswith(":"):
        print("@" + line[:-1])
    elif line.startswith("\t") and not line.startswith("\t."):
        print(line.strip())
"""


def _features_from_asm(text: str) -> list[str]:
    bodies: dict[str, list[str]] = {}
    cur: list[str] = []
    for line in text.splitlines():
        if line.startswith("@"):
            cur = bodies.setdefault(line[1:], [])
        else:
            cur.append(line)
    have = [feat for fn, (feat, pat) in _PROBES.items() if re.search(pat, "\n".join(bodies.get(fn, ())), re.M)]
    if "avx512f" in have and "avxvnni" in have:
        have.remove("avxvnni")
    return have


@lru_cache(maxsize=None)
def llvm_cpu_features(cpu: str) -> frozenset[str]:
    """The features LLVM gives the x86 CPU ``cpu`` (those ladder's capabilities and ``runs_here`` use)."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", cpu) or cpu == "help":  # 'help' makes LLVM list its names
        raise _unknown_cpu(cpu)
    done = subprocess.run([sys.executable, "-c", _CHILD, cpu], input=_probe_ir(), capture_output=True, text=True,
                          timeout=120)
    if done.returncode or "not a recognized processor" in done.stderr:
        raise _unknown_cpu(cpu)
    return frozenset(_features_from_asm(done.stdout))


def _unknown_cpu(cpu: str) -> LadderError:
    return LadderError(f"unknown cpu '{cpu}': LLVM knows no x86 processor of that name; use a level "
                       f"({', '.join(CPU_LEVELS)}, native) or an LLVM cpu name, e.g. {', '.join(CPU_EXAMPLES)}")


@lru_cache(maxsize=None)
def named_cpu_target(cpu: str) -> Target:
    """``cpu:NAME``: the LLVM x86 CPU ``NAME`` with all its features, as clang's ``-march=NAME``."""
    have = llvm_cpu_features(cpu)
    return _from_features(f"cpu:{cpu}", cpu, set(have), ",".join(f"+{f}" for f in sorted(have)))


LUT = Target("lut", 128, frozenset({"table-lookup"}), _LUT_PACKINGS, "lut", "")


def asic_target(config: str) -> Target:
    """``asic:CONFIG``: the LUT accelerator described by a hardware config (ladder.backends.asic); it takes
    the ``lut`` target's capabilities and packings. The backend checks that the config exists."""
    if not config:
        raise LadderError("target 'asic:' needs a hardware config name, e.g. asic:lut-tc")
    return Target(f"asic:{config}", LUT.vector_bits, LUT.capabilities, LUT.packings, "asic", "")


def get_target(spec: "str | Target") -> Target:
    """``cpu``, ``cpu:native``, ``cpu:generic``, ``cpu:avx2``, ``cpu:avx512``, ``cpu:NAME`` (an LLVM x86 CPU
    name), ``lut`` or ``asic:CONFIG``."""
    if isinstance(spec, Target):
        return spec
    spec = spec.strip()
    if spec in ("cpu", "cpu:native"):
        return host_target()
    if spec.startswith("cpu:"):
        return cpu_target(spec[4:])
    if spec == "lut":
        return LUT
    if spec.startswith("asic:"):
        return asic_target(spec[5:])
    raise LadderError(f"unknown target '{spec}'; known: cpu, cpu:native, cpu:generic, cpu:avx2, cpu:avx512, "
                      f"cpu:NAME (an LLVM cpu name, e.g. cpu:znver4), lut, asic:CONFIG")

