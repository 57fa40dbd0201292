"""Hardware configs of the ASIC target: one TOML file per machine, loaded into a frozen ``HwConfig``.

A config says what the lowering must respect (SRAM size, the lmma tile, where weights live, which weight
widths the LUT units take) and what a cost model charges for (clock, DRAM bandwidth, unit counts, ...)::

    name = "lut-tc"               # top level: the machine            (strict: unknown keys are errors)
    clock_mhz = 1000
    sram_kb = 1024
    dram_gbps = 68.0
    weight_placement = "stream"   # "stream" (DRAM, Slim-Llama) | "resident" (crossbars, PIM-LLM)
                                  # | "hardwired" (never moved, Taalas)
    weight_bits = [1, 2, 4]       # weight widths the LUT units / crossbars / hardwired units take; a narrower
                                  # weight runs on them too (fewer bit planes), a wider one on the systolic array
    tile_kb = 64                  # weight tile size the lowering aims for
    [lut]       units, group, table_bits, mirror, tile = {m, n, k}          (strict)
    [systolic]  rows, cols, dataflow = "ws" | "os" | "is"                   (strict)
    [vector]    lanes                                                        (strict)
    [anything-else]               # e.g. [energy], [cost], [area], [xbar], [published]

**Extension rule**: the top level and the ``[lut]``, ``[systolic]`` and ``[vector]`` tables belong to this
module and are checked strictly (an unknown key is a ``ConfigError`` naming the file, the key and the
known keys). Every *other* top-level table is passed through untouched in ``HwConfig.extra`` (a dict of
dicts, e.g. ``cfg.section("energy")``): the cost model defines and validates its own sections there, so
adding a cost field never needs a change here.

``load_config("lut-tc")`` finds a shipped config (``backends/asic/configs/*.toml``) by name; a path to a
``.toml`` file works too. ``with_overrides(cfg, {"sram_kb": 512, "systolic.rows": 64})`` gives a changed copy
(design-space sweeps), re-validated.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ladder.errors import LadderError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CONFIG_DIR = Path(__file__).parent / "configs"
PLACEMENTS = ("stream", "resident", "hardwired")
DATAFLOWS = ("ws", "os", "is")


class ConfigError(LadderError):
    """A hardware config is missing, unreadable, or has an unknown or invalid key."""

    kind = "config error"


@dataclass(frozen=True)
class LmmaTile:
    """The hardware tile of one lmma step: M activations rows x N weight rows x K activations (the
    elongated M2N64K4 of LUT Tensor Core)."""

    m: int = 2
    n: int = 64
    k: int = 4


@dataclass(frozen=True)
class LutConfig:
    units: int = 16
    group: int = 4        # activations per table (a table has 2**group entries)
    table_bits: int = 16  # bits of one table entry
    mirror: bool = True   # 8 signed entries + the group sum instead of 16 (LUT[~i] = -LUT[i])
    tile: LmmaTile = LmmaTile()


@dataclass(frozen=True)
class SystolicConfig:
    rows: int = 32
    cols: int = 32
    dataflow: str = "os"


@dataclass(frozen=True)
class VectorConfig:
    lanes: int = 64


@dataclass(frozen=True)
class HwConfig:
    name: str
    clock_mhz: float = 1000.0
    sram_kb: float = 1024.0
    dram_gbps: float = 68.0
    weight_placement: str = "stream"
    weight_bits: tuple[int, ...] = (1, 2, 4)
    tile_kb: float = 64.0
    description: str = ""
    lut: LutConfig = LutConfig()
    systolic: SystolicConfig = SystolicConfig()
    vector: VectorConfig = VectorConfig()
    # Every other top-level table, untouched (cost-model sections: energy, cost, area, xbar, published...).
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)
    source: str = field(default="", compare=False)  # the file it came from

    @property
    def sram_bytes(self) -> int:
        return int(self.sram_kb * 1024)

    @property
    def tile_bytes(self) -> int:
        return int(self.tile_kb * 1024)

    def section(self, name: str) -> dict[str, Any]:
        """A pass-through table (``{}`` when the file has none)."""
        return dict(self.extra.get(name, {}))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source")
        d.update(d.pop("extra"))
        return d


# Sub-tables this module owns, by key.
_SECTIONS = {"lut": LutConfig, "systolic": SystolicConfig, "vector": VectorConfig}


def shipped_configs() -> list[str]:
    """Names of the configs shipped in backends/asic/configs/."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))


def load_config(spec: "str | Path | HwConfig") -> HwConfig:
    """A shipped config by name (``lut-tc``), or a path to a TOML file."""
    if isinstance(spec, HwConfig):
        return spec
    path = Path(spec)
    if not (str(spec).endswith(".toml") or path.exists()):
        path = CONFIG_DIR / f"{spec}.toml"
        if not path.exists():
            raise ConfigError(f"no hardware config '{spec}'; shipped: {', '.join(shipped_configs())} "
                              f"(or give a path to a .toml file)")
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read hardware config {path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    return from_dict(data, str(path))


def from_dict(data: Mapping[str, Any], source: str = "<dict>") -> HwConfig:
    """Build and validate a config from parsed TOML."""
    top = {f.name for f in dataclasses.fields(HwConfig)} - {"extra", "source", *_SECTIONS}
    values: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, v in data.items():
        if key in _SECTIONS:
            values[key] = read_table(_SECTIONS[key], v, f"[{key}]", source)
        elif key in top:
            values[key] = v
        elif isinstance(v, dict):
            extra[key] = v
        else:
            raise ConfigError(f"{source}: unknown key '{key}'; known top-level keys: {', '.join(sorted(top))} "
                              f"(tables other than {', '.join(f'[{s}]' for s in _SECTIONS)} pass through)")
    if "name" not in values:
        raise ConfigError(f"{source}: a hardware config needs a name")
    cfg = HwConfig(**{k: _coerce(HwConfig, k, v, source, "") for k, v in values.items()}, extra=extra,
                   source=source)
    validate(cfg)
    return cfg


def read_table(cls, table: Any, where: str, source: str):
    """A parsed TOML table as the frozen dataclass ``cls``: the one validator of config tables, for this
    module's ``[lut]``, ``[systolic]``, ``[vector]`` and the cost model's sections alike (costsim.read_section).

    Every key must be a field of ``cls`` and every value of its default's type (an int may stand for a float,
    a list of ints for a tuple; a field whose default is a dataclass takes a nested table, ``[lut.tile]``);
    anything else is a ConfigError naming ``source``, the key and ``where`` (``"[lut]"``)."""
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: {where} must be a table, got {table!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in table:
        if key not in fields:
            raise ConfigError(f"{source}: unknown key '{key}' in {where}; known: {', '.join(sorted(fields))}")
    values = {}
    for key, v in table.items():
        default = fields[key].default
        if dataclasses.is_dataclass(default):
            v = read_table(type(default), v, f"{where[:-1]}.{key}]", source)
        values[key] = _coerce(cls, key, v, source, where)
    return cls(**values)


def _coerce(cls, key: str, value: Any, source: str, where: str) -> Any:
    """Check a value against the field's default's type (ints may stand for floats, lists of ints for tuples)."""
    default = next(f for f in dataclasses.fields(cls) if f.name == key)
    want = default.default if default.default is not dataclasses.MISSING else ""
    where = f" in {where}" if where else ""
    if isinstance(want, bool):
        ok = isinstance(value, bool)
    elif isinstance(want, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(want, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(want, tuple):
        ok = isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        value = tuple(value) if ok else value
    elif isinstance(want, str):
        ok = isinstance(value, str)
    else:  # a nested dataclass, already built
        ok = True
    if not ok:
        kind = type(want).__name__ if not isinstance(want, tuple) else "list of integers"
        raise ConfigError(f"{source}: '{key}'{where} must be {kind}, got {value!r}")
    return value


def validate(cfg: HwConfig) -> None:
    src = cfg.source or cfg.name
    positive = {"clock_mhz": cfg.clock_mhz, "sram_kb": cfg.sram_kb, "dram_gbps": cfg.dram_gbps,
                "tile_kb": cfg.tile_kb, "lut.units": cfg.lut.units, "lut.group": cfg.lut.group,
                "lut.table_bits": cfg.lut.table_bits, "lut.tile.m": cfg.lut.tile.m, "lut.tile.n": cfg.lut.tile.n,
                "lut.tile.k": cfg.lut.tile.k, "systolic.rows": cfg.systolic.rows,
                "systolic.cols": cfg.systolic.cols, "vector.lanes": cfg.vector.lanes}
    for key, v in positive.items():
        if v <= 0:
            raise ConfigError(f"{src}: '{key}' must be > 0, got {v}")
    if cfg.weight_placement not in PLACEMENTS:
        raise ConfigError(f"{src}: weight_placement must be one of {', '.join(PLACEMENTS)}, "
                          f"got '{cfg.weight_placement}'")
    if cfg.systolic.dataflow not in DATAFLOWS:
        raise ConfigError(f"{src}: systolic.dataflow must be one of {', '.join(DATAFLOWS)}, "
                          f"got '{cfg.systolic.dataflow}'")
    if not cfg.weight_bits or any(not 1 <= b <= 8 for b in cfg.weight_bits):
        raise ConfigError(f"{src}: weight_bits must list widths between 1 and 8, got {list(cfg.weight_bits)}")
    if cfg.lut.group != 4:
        raise ConfigError(f"{src}: lut.group must be 4 (the bit-plane layout indexes 4 weights per table)")


def with_overrides(cfg: HwConfig, changes: Mapping[str, Any]) -> HwConfig:
    """A copy with dotted keys changed (``sram_kb``, ``systolic.rows``, ``lut.tile.n``, ``energy.sram_pj``);
    the result is validated like a loaded file."""
    data = cfg.to_dict()
    for key, value in changes.items():
        *path, last = key.split(".")
        node = data
        for part in path:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"cannot set '{key}': config {cfg.name} has no table '{part}'")
            node = node[part]
        if path and path[0] in _SECTIONS and last not in node:
            raise ConfigError(f"cannot set '{key}': [{'.'.join(path)}] has no key '{last}'; "
                              f"known: {', '.join(sorted(node))}")
        node[last] = list(value) if isinstance(value, tuple) else value
    data["weight_bits"] = list(data["weight_bits"])
    return from_dict(data, f"{cfg.source or cfg.name} (with {', '.join(f'{k}={v}' for k, v in changes.items())})")


__all__ = ["CONFIG_DIR", "ConfigError", "HwConfig", "LmmaTile", "LutConfig", "SystolicConfig", "VectorConfig",
           "load_config", "from_dict", "read_table", "shipped_configs", "validate", "with_overrides"]
