"""The compile context: everything a compile depends on besides the graph and its weights, in one object.

    ctx = CompileContext.create("cpu", threads=2, tuning="tune.json", cache=tmp, memory_budget="8G")

``ladder.compile`` builds one from its arguments and hands it, explicitly, to the pass manager (a pass that
takes something from it says so in ``Pass.with_context``; the ``lut`` pass takes the tuning records read
here) and to the backend's ``compile`` (ladder.backend), as TVM hands its PassContext around. It is frozen
(a compile's settings cannot change while it runs), and besides it a compile reads only the machine (the host
CPU, its memory): no environment variable and no file of the user's, but for the default cache folder below
(the cpu backend's libgomp reads its own settings from the environment: see ladder.backends.llvm.compiler).

What it holds:

* ``target``: the target as given (``"cpu"``, ``"cpu:avx2"``, ``"asic:lut-tc"``, ``"ref"``; a ladder.target
  Target object is taken too); ``kind`` is the part before ``:``, which names the backend;
* ``threads``: the thread count a call uses unless it says otherwise (None: the backend's default);
* ``tuning``: the tuning records (ladder.tuning.TuningRecords) of the file ``tuning=`` names, read once, here;
  None when none was given (the cost model chooses);
* ``cache``: where compiled machine code is kept between runs (``cache_dir``): a folder, True for the user's
  cache folder, None for nowhere;
* ``memory_budget``: ladder.budget's budget (None: its default share of this machine's memory);
* ``jit``: False builds a module to write ahead of time only.

The one read outside the arguments: ``cache=True`` (``ladder.compile``'s default) means the user's cache
folder, ``default_cache_dir()``: ``$XDG_CACHE_HOME/ladder``, else ``~/.cache/ladder``, looked up when a
backend asks for ``cache_dir`` (the cpu backend; ref and asic keep no machine code). That is where a user's
compiled code belongs, and it cannot be known otherwise; only machine code lives there, and nothing in it
changes what a compile produces. ``cache=False`` or a folder reads neither the environment nor the home.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .target import Target
from .tuning import TuningRecords, load_records


def cache_folder_problem(folder) -> str | None:
    """Why a cache folder is not to be trusted ("" when it does not exist), or None when it is: it must be a
    directory owned by this user that no one else can write. The compiled-code cache (its CacheWarning says
    why) and the pack cache (ladder.weights.PackCache) both ask."""
    try:
        st = os.stat(folder)
    except OSError:
        return ""
    if not stat.S_ISDIR(st.st_mode):
        return f"{folder} is not a folder"
    if st.st_uid != os.getuid():
        return f"{folder} is owned by another user (uid {st.st_uid})"
    if st.st_mode & 0o022:
        return f"{folder} can be written by other users (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def cache_entry_problem(st: os.stat_result, path) -> str | None:
    """Why an opened cache entry (its fstat) is not to be trusted, or None: a regular file owned by this user
    that no one else can write."""
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file"
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        return f"{path} is owned or writable by another user"
    return None


def default_cache_dir() -> Path:
    """Where compiled machine code is kept between runs: the user's cache folder ($XDG_CACHE_HOME/ladder, else
    ~/.cache/ladder). Only compiled code lives there; nothing in it changes what a compile produces."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ladder"


@dataclass(frozen=True)
class CompileContext:
    target: "str | Target"
    threads: int | None = None
    tuning: TuningRecords | None = None
    cache: "Path | bool | None" = None  # a folder, True (the user's cache folder), None (no cache)
    memory_budget: int | float | str | None = None
    jit: bool = True

    @classmethod
    def create(cls, target: "str | Target", *, threads: int | None = None,
               tuning: "str | os.PathLike | None" = None, cache: "bool | str | os.PathLike | None" = False,
               memory_budget: int | float | str | None = None, jit: bool = True) -> "CompileContext":
        """A context from ``ladder.compile``'s arguments: ``tuning`` a file (read now), ``cache`` True (the
        user's cache folder, ``default_cache_dir``), a folder, or False/None (no cache)."""
        records = load_records(tuning) if tuning is not None else None
        folder = True if cache is True else (Path(cache) if cache else None)
        return cls(target, threads, records, folder, memory_budget, jit)

    @property
    def target_name(self) -> str:
        """The target's name: ``cpu``, ``cpu:avx2``, ``asic:lut-tc``, ``ref``."""
        return self.target if isinstance(self.target, str) else self.target.name

    @property
    def kind(self) -> str:
        """The target kind, the part of its name before ``:``: the backend that compiles for it."""
        return self.target_name.split(":")[0]

    @property
    def cache_dir(self) -> Path | None:
        """The folder where compiled machine code is kept between runs, None for none. For ``cache=True`` it is
        the user's cache folder, looked up here, when a backend asks (the cpu backend does; ref and asic keep no
        machine code)."""
        return default_cache_dir() if self.cache is True else (self.cache or None)

    @property
    def tuning_file(self) -> str | None:
        """The path of the tuning records' file, as given (None without records)."""
        return self.tuning.path if self.tuning is not None else None


__all__ = ["CompileContext", "cache_entry_problem", "cache_folder_problem", "default_cache_dir"]
