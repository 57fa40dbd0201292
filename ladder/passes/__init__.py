"""Graph passes and the pass manager. Importing this package registers the passes."""

from .manager import (PASSES, DumpToDir, Instrument, Pass, PassManager, PrintIRAfterAll, Snapshot, Snapshots,
                      TimePasses, parse_pipeline, register_pass)
from . import canonicalize, lowbit, lut  # noqa: F401  (registration)
from .canonicalize import Canonicalize
from .lowbit import Fuse, LegalizeTypes, QuantizeActivations, QuantizeWeights, default_pipeline, weight_values

__all__ = ["PASSES", "Canonicalize", "Fuse", "LegalizeTypes", "QuantizeActivations", "QuantizeWeights",
           "default_pipeline", "weight_values", "DumpToDir", "Instrument", "Pass", "PassManager", "PrintIRAfterAll",
           "Snapshot", "Snapshots", "TimePasses", "parse_pipeline", "register_pass"]
