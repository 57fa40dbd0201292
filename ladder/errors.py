"""ladder's error types and source locations.

Every error a user can cause is a ``LadderError``: it renders as one paragraph that says where
(``file:line:col`` with the source line and a caret, or the op and tensor) and what was expected.
Nothing else should escape to a user; the CLI turns these into a message and a non-zero exit code.
"""

from __future__ import annotations

import functools
import inspect
import linecache
import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Location:
    """Where something came from: a text file position, or a Python call site for built graphs."""

    file: str = "<unknown>"
    line: int = 0
    col: int = 0
    # The text of the line, kept for carets in messages; not part of identity.
    text: str = field(default="", compare=False, repr=False)

    def __str__(self) -> str:
        if self.line <= 0:
            return self.file
        if self.col <= 0:
            return f"{self.file}:{self.line}"
        return f"{self.file}:{self.line}:{self.col}"

    def excerpt(self) -> str:
        """The source line with a caret under the column, or '' when the text is unknown."""
        if not self.text or self.col <= 0:
            return ""
        line = self.text.rstrip("\n")
        col = self.col
        if len(line) > 100:  # show a window of a long line around the column
            start = max(0, col - 60)
            line = ("..." if start else "") + line[start:start + 100] + ("..." if start + 100 < len(line) else "")
            col = col - start + (3 if start else 0)
        # Keep tabs so the caret lines up with the line as a terminal shows it.
        pad = "".join(ch if ch == "\t" else " " for ch in line[: col - 1])
        return f"    {line}\n    {pad}^"

    @staticmethod
    def of_caller() -> "Location":
        """The location of the Python code that called into the graph builder: the first frame outside
        ladder's builder machinery."""
        frame = inspect.currentframe()
        try:
            while frame is not None and _is_builder(frame.f_code.co_filename):
                frame = frame.f_back
            if frame is None:
                return Location("<python>")
            # the line through linecache (inspect.getframeinfo also works out the column span of the
            # instruction: a tenth of a millisecond per op, most of a 2B model's graph building)
            filename, lineno = frame.f_code.co_filename, frame.f_lineno
            text = linecache.getline(filename, lineno, frame.f_globals)
            col = len(text) - len(text.lstrip()) + 1 if text else 0
            return Location(filename, lineno, col, text)
        finally:
            del frame


_HERE = os.path.dirname(os.path.abspath(__file__))
_BUILDER_FILES = {os.path.join(_HERE, f) for f in ("errors.py", "builder.py")}


@functools.lru_cache(maxsize=4096)
def _is_builder(filename: str) -> bool:
    return os.path.abspath(filename) in _BUILDER_FILES


UNKNOWN = Location()


class LadderError(Exception):
    """Base of every error ladder reports to a user."""

    kind = "error"

    def __init__(self, message: str, loc: Location | None = None, *, notes: tuple[str, ...] = ()):
        super().__init__(message)
        self.message = message
        self.loc = loc
        self.notes = tuple(notes)

    def __str__(self) -> str:
        return self.render(self.kind)

    def render(self, kind: str) -> str:
        head = f"{self.loc}: {kind}: {self.message}" if self.loc else f"{kind}: {self.message}"
        parts = [head]
        if self.loc is not None and self.loc.excerpt():
            parts.append(self.loc.excerpt())
        parts.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(parts)


class ParseError(LadderError):
    """The text of a program (or a pipeline string) is not well formed."""

    kind = "parse error"


class VerifyError(LadderError):
    """A graph's types, shapes or attributes are inconsistent. Holds every problem found."""

    kind = "verify error"

    def __init__(self, diagnostics: list[LadderError]):
        self.diagnostics = list(diagnostics)
        first = self.diagnostics[0]
        super().__init__(first.message, first.loc, notes=first.notes)

    def __str__(self) -> str:
        body = "\n".join(d.render(self.kind) for d in self.diagnostics)
        more = len(self.diagnostics)
        return body if more == 1 else f"{body}\n{more} errors"


class TypeRangeError(LadderError):
    """A tensor holds a value its element type cannot encode (a 2 in a ternary tensor)."""

    kind = "value error"


class WeightsError(LadderError):
    """A weight is missing, has the wrong type or shape, or the weights file is unreadable."""

    kind = "weights error"


class PipelineError(LadderError):
    """A pass pipeline string names an unknown pass or option, or a pass failed."""

    kind = "pipeline error"


class RuntimeFailure(LadderError):
    """Running a graph failed on its inputs (wrong input shape, index out of range, ...)."""

    kind = "runtime error"

