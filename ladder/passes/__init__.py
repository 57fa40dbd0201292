"""Graph passes and the pass manager. Importing this package registers the passes."""

from .manager import (PASSES, DumpToDir, Instrument, Pass, PassManager, PrintIRAfterAll, Snapshot, Snapshots,
                      TimePasses, parse_pipeline, register_pass)
from . import canonicalize  # noqa: F401  (registration)
from .canonicalize import Canonicalize

__all__ = ["PASSES", "Canonicalize", "DumpToDir", "Instrument", "Pass", "PassManager", "PrintIRAfterAll",
           "Snapshot", "Snapshots", "TimePasses", "parse_pipeline", "register_pass"]
