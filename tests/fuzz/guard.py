"""Run one fuzz input under a time limit and sort its outcome: it worked, it raised a LadderError, or
something else escaped."""

from __future__ import annotations

import signal
from contextlib import contextmanager

import ladder


class Hang(BaseException):
    """Raised by the alarm. A BaseException, so that no ``except Exception`` in the code under test can turn
    a hang into an ordinary error."""


@contextmanager
def time_limit(seconds: float):
    """SIGALRM after ``seconds`` (main thread only, as pytest and the driver run)."""
    def ring(signum, frame):
        raise Hang(f"no answer after {seconds} s")

    old = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def outcome(fn, *args, seconds: float = 10.0) -> tuple[str, BaseException | None]:
    """("ok", None), ("ladder", the LadderError), ("hang", Hang) or ("other", the exception)."""
    try:
        with time_limit(seconds):
            fn(*args)
    except ladder.LadderError as e:
        str(e)  # its message must render, too
        return "ladder", e
    except Hang as e:
        return "hang", e
    except Exception as e:  # noqa: BLE001 - sorting these is the point
        return "other", e
    return "ok", None


def expect_ok_or_ladder_error(fn, *args, seconds: float = 10.0, describe=lambda: "") -> str:
    """Assert that ``fn(*args)`` works or raises a LadderError within ``seconds``; returns the outcome."""
    kind, err = outcome(fn, *args, seconds=seconds)
    if kind in ("hang", "other"):
        raise AssertionError(f"{type(err).__name__}: {err} escaped for the input {describe()}") from err
    return kind
