"""Targets: what a machine supports natively. Passes ask a target; none tests a backend's name.

* ``cpu`` (= ``cpu:native``): the host, from LLVM's host CPU name and features;
* ``cpu:generic`` (x86-64 baseline, 128-bit SSE2), ``cpu:avx2`` (256-bit, FMA, AVX2 byte shuffles and
  ``vpmaddubsw``), ``cpu:avx512`` (512-bit, AVX-512 BW/VL and VNNI ``vpdpbusd``): force a level;
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
    raise LadderError(f"unknown cpu level '{level}'; known: native, generic, avx2, avx512")


@lru_cache(maxsize=1)
def host_target() -> Target:
    """The host CPU as LLVM sees it (name and features), mapped to the widest level it supports."""
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    name = llvm.get_host_cpu_name()
    feats = llvm.get_host_cpu_features()
    have = {k for k, on in feats.items() if on}
    flat = feats.flatten()
    if {"avx512f", "avx512bw", "avx512vl"} <= have:
        t = cpu_target("avx512", name, flat)
        caps = set(t.capabilities)
        if "avx512vnni" not in have:
            caps.discard("i8-dot")
        return Target("cpu:native", 512, frozenset(caps), t.packings, name, flat)
    if "avx2" in have:
        caps = {"i8-madd", "table-lookup"} | ({"f32-fma"} if "fma" in have else set()) | \
            ({"i8-dot"} if "avxvnni" in have else set())
        return Target("cpu:native", 256, frozenset(caps), _cpu_packings(32), name, flat)
    neon = "neon" in have
    caps = {"f32-fma", "table-lookup"} if neon else ({"table-lookup"} if "ssse3" in have else set())
    return Target("cpu:native", 128, frozenset(caps), _cpu_packings(16), name, flat)


LUT = Target("lut", 128, frozenset({"table-lookup"}), _LUT_PACKINGS, "lut", "")


def asic_target(config: str) -> Target:
    """``asic:CONFIG``: the LUT accelerator described by a hardware config (ladder.backends.asic); it takes
    the ``lut`` target's capabilities and packings. The backend checks that the config exists."""
    if not config:
        raise LadderError("target 'asic:' needs a hardware config name, e.g. asic:lut-tc")
    return Target(f"asic:{config}", LUT.vector_bits, LUT.capabilities, LUT.packings, "asic", "")


def get_target(spec: "str | Target") -> Target:
    """``cpu``, ``cpu:native``, ``cpu:generic``, ``cpu:avx2``, ``cpu:avx512`` or ``lut``."""
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
    raise LadderError(f"unknown target '{spec}'; known: cpu, cpu:native, cpu:generic, cpu:avx2, cpu:avx512, lut, "
                      f"asic:CONFIG")
