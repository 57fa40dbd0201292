"""LLVM through the current llvmlite API: a ladder Target's machine, code from the compiler child, MCJIT.

    module = Module.compile(ir_text, target)     # optimised (O3) and compiled for the target's CPU
    fn = module.function("kernel", ctypes.CFUNCTYPE(...))    # callable; keeps the module alive

LLVM's optimiser and code generator run in a child process (``worker.py``): an LLVM assertion ends that
child, never this process. Here MCJIT only links the object the child returned (added to an engine made
from an empty module, so MCJIT generates no code itself, and the IR is not even parsed in this process). A
Module owns its execution engine; functions stay valid while it lives.

The compiled-code cache (``ObjectCache``) is keyed on what the code is made *from*, given by the caller
(the backend gives its graph, before any kernel is generated), plus the target, the versions and a hash of
ladder's own source: a cache hit (``Module.cached``) needs neither the IR nor LLVM, and the entry carries the
caller's own description of the code (``meta``: the backend's kernel table) beside the object.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import llvmlite.binding as llvm

from ladder.context import cache_entry_problem, cache_folder_problem
from ladder.errors import LadderError
from ladder.target import Target

from .worker import CompilerCrash, idle_worker

_INIT_LOCK = threading.Lock()
_INITIALISED = False


class CacheWarning(UserWarning):
    """A compiled-code cache entry or folder was not trusted; the module was compiled afresh."""


def _init() -> None:
    global _INITIALISED
    with _INIT_LOCK:
        if not _INITIALISED:
            llvm.initialize_native_target()
            llvm.initialize_native_asmprinter()
            _INITIALISED = True


def target_machine(target: Target, opt: int = 3) -> "llvm.TargetMachine":
    """A TargetMachine for the host triple with the target's CPU name and features (for MCJIT and the data
    layout; no code is generated with it in this process)."""
    _init()
    triple = llvm.get_process_triple()
    t = llvm.Target.from_triple(triple)
    return t.create_target_machine(cpu=target.cpu_name, features=target.cpu_features, opt=opt,
                                   reloc="pic", codemodel="jitdefault")


def compile_in_child(ir_text: str, target: Target, want=("obj",), loop_vectorize: bool = True) -> dict:
    """Optimise and compile ``ir_text`` for ``target`` in the compiler child. Raises ``CompilerCrash``
    (worker.py) when LLVM aborts, LadderError when LLVM rejects the IR."""
    resp = idle_worker().request({"ir": ir_text, "cpu": target.cpu_name, "features": target.cpu_features,
                                  "loop_vectorize": loop_vectorize, "want": tuple(want)})
    if "error" in resp:
        raise LadderError(f"internal: LLVM rejected generated IR: {resp['error']}")
    return resp


_LOAD_LOCK = threading.Lock()


class Module:
    """A compiled LLVM module: its object code, the engine that runs it, and the target it was built for.

    ``ir_text``, the IR as generated (before optimisation), is made on first use when the module came from
    the cache (``regenerate``): a cache hit generates no IR."""

    def __init__(self, target: Target, ir_text: "str | Callable[[], str]", obj: bytes, *,
                 loop_vectorize: bool = True, from_cache: bool = False):
        self.target, self.obj = target, obj
        self.loop_vectorize, self.from_cache = loop_vectorize, from_cache
        self._ir = ir_text
        self.engine: "llvm.ExecutionEngine | None" = None
        self._texts: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"Module({self.target.name}, {len(self.obj):,} bytes{', from the cache' if self.from_cache else ''})"

    @property
    def ir_text(self) -> str:
        if callable(self._ir):
            self._ir = self._ir()
        return self._ir

    @staticmethod
    def compile(ir_text: str, target: Target, cache: "ObjectCache | None" = None, jit: bool = True,
                loop_vectorize: bool = True, meta: dict | None = None) -> "Module":
        """Optimise and compile ``ir_text`` (in the compiler child) and, with ``jit``, load it here. With
        ``cache`` (made with the same ``loop_vectorize``), the object is stored there with ``meta`` beside it.
        Without ``jit`` the module is only compiled (for writing it ahead of time, possibly for a CPU other
        than this one)."""
        obj = compile_in_child(ir_text, target, ("obj",), loop_vectorize)["obj"]
        if cache is not None:
            cache.store(pack_entry(obj, meta or {}))
        return Module(target, ir_text, obj, loop_vectorize=loop_vectorize)._load(jit)

    @staticmethod
    def cached(cache: "ObjectCache", regenerate: Callable[[], str], jit: bool = True
               ) -> "tuple[Module, dict] | None":
        """The module stored under ``cache``'s key and the ``meta`` stored with it, or None (nothing there, or
        an entry not trusted: see ObjectCache). ``regenerate`` makes the IR text if it is ever asked for."""
        blob = cache.load()
        entry = unpack_entry(blob) if blob is not None else None
        if entry is None:
            if blob is not None:
                cache.skip(f"{cache.path} holds no object and kernel table")
            return None
        obj, meta = entry
        m = Module(cache.target, regenerate, obj, loop_vectorize=cache.loop_vectorize, from_cache=True)
        return m._load(jit), meta

    def _load(self, jit: bool) -> "Module":
        if not jit:
            return self
        with _LOAD_LOCK:  # LLVM's global context: one thread at a time (modules compiled side by side)
            tm = target_machine(self.target)
            empty = llvm.parse_assembly("")
            empty.triple, empty.data_layout = tm.triple, str(tm.target_data)
            engine = llvm.create_mcjit_compiler(empty, tm)
            engine.add_object_file(llvm.ObjectFileRef.from_data(self.obj))  # the engine takes the object over
            engine.finalize_object()
            engine.run_static_constructors()
        self.engine = engine
        return self

    def function(self, name: str, ctype) -> "Function":
        if self.engine is None:
            raise LadderError("this module was compiled ahead of time only; it cannot run here")
        addr = self.engine.get_function_address(name)
        if not addr:
            raise LadderError(f"internal: no function '{name}' in the compiled module")
        return Function(self, name, ctype(addr))

    def _text(self, kind: str) -> str:
        if kind not in self._texts:  # asked of the child again: most compiles never need the text
            try:
                resp = compile_in_child(self.ir_text, self.target, (kind,), self.loop_vectorize)
            except CompilerCrash as crash:
                raise LadderError(f"LLVM crashed writing the module's {kind} for {self.target.name}: "
                                  f"{crash.message}") from None
            self._texts[kind] = resp[kind]
        return self._texts[kind]

    def ir(self) -> str:
        """The optimised LLVM IR."""
        return self._text("ir")

    def asm(self) -> str:
        return self._text("asm")


def pack_entry(obj: bytes, meta: dict) -> bytes:
    """A cache entry's payload: the caller's description of the code (JSON), then the object."""
    text = json.dumps(meta, sort_keys=True).encode()
    return len(text).to_bytes(8, "little") + text + obj


def unpack_entry(payload: bytes) -> "tuple[bytes, dict] | None":
    n = int.from_bytes(payload[:8], "little") if len(payload) >= 8 else -1
    if n < 0 or 8 + n > len(payload):
        return None
    try:
        meta = json.loads(payload[8:8 + n])
    except ValueError:
        return None
    return (payload[8 + n:], meta) if isinstance(meta, dict) else None


@functools.lru_cache(maxsize=None)
def code_version() -> str:
    """sha256 over ladder's own Python source (the core package and this backend, lowerings included): a
    change to any of it misses the compiled-code cache, whatever the version number says."""
    import ladder

    h = hashlib.sha256()
    for root in (Path(ladder.__file__).parent, Path(__file__).parent):
        for f in sorted(root.rglob("*.py")):
            h.update(f.relative_to(root).as_posix().encode() + b"\0")
            h.update(f.read_bytes() + b"\0")
    return h.hexdigest()


class ObjectCache:
    """One compiled object on disk, ``<hash of key>.o``, trusted only when all of this holds:

    * the folder is a directory owned by this user that no one else can write (it is created 0700);
    * the entry is a regular file (opened with O_NOFOLLOW: never through a symlink; O_NONBLOCK and an fstat
      before reading: never a FIFO or a device) owned by this user and writable by no one else;
    * it holds the full key it was stored under (hash of the ``source``, the text the code is made from;
      the target's every field, CPU name and features among them; ladder's version and a hash of its source
      code, ``code_version``; llvmlite and LLVM versions; vectorisation) and it equals this compile's key: a
      file copied or renamed from another entry, or one whose checksum was recomputed over another key, is
      refused;
    * its length and sha256 (over key and object) match.

    Anything else is skipped with a CacheWarning and the module is compiled afresh. Entries are written to a
    temporary file (0600) and renamed into place, so a crash mid-write never leaves an entry that loads."""

    MAGIC = b"LADDEROBJ3"
    LIMIT = 1 << 30  # no object is this large: a bigger file is not read

    def __init__(self, folder, source: str, target: Target, loop_vectorize: bool = True):
        import llvmlite

        from ladder import __version__

        key = {"source_sha256": hashlib.sha256(source.encode()).hexdigest(), "target": target.name,
               "cpu": target.cpu_name, "features": target.cpu_features, "vector_bits": target.vector_bits,
               "capabilities": sorted(target.capabilities), "packings": target.packings,
               "ladder": __version__, "ladder_code": code_version(),
               "llvmlite": llvmlite.__version__, "llvm": ".".join(map(str, llvm.llvm_version_info)),
               "loop_vectorize": bool(loop_vectorize)}
        self.target, self.loop_vectorize = target, bool(loop_vectorize)
        self.key = json.dumps(key, sort_keys=True).encode()
        self.folder = Path(folder)
        self.path = self.folder / f"{hashlib.sha256(self.key).hexdigest()}.o"

    @staticmethod
    def skip(why: str) -> None:
        warnings.warn(f"compiled-code cache: {why}; compiling afresh", CacheWarning, stacklevel=4)

    def _folder_ok(self) -> bool:
        why = cache_folder_problem(self.folder)
        if why:
            self.skip(why)
        return why is None

    def load(self) -> bytes | None:
        if not self._folder_ok():
            return None
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags)
        except FileNotFoundError:
            return None
        except OSError as e:  # ELOOP: a symlink
            self.skip(f"{self.path} cannot be opened safely ({e.strerror})")
            return None
        try:
            st = os.fstat(fd)
            why = cache_entry_problem(st, self.path)
            if why:
                self.skip(why)
                return None
            if st.st_size > self.LIMIT:
                self.skip(f"{self.path} is too large ({st.st_size} bytes)")
                return None
            with os.fdopen(fd, "rb", closefd=False) as f:
                blob = f.read(st.st_size + 1)
        finally:
            os.close(fd)
        payload = self._unpack(blob)
        if payload is None:
            self.skip(f"{self.path} is damaged or was stored under another key")
        return payload

    def _unpack(self, blob: bytes) -> bytes | None:
        m = len(self.MAGIC)
        if len(blob) < m + 8 or not blob.startswith(self.MAGIC):
            return None
        nkey = int.from_bytes(blob[m:m + 8], "little")
        key = blob[m + 8:m + 8 + nkey]
        rest = blob[m + 8 + nkey:]
        if key != self.key or len(rest) < 8 + 32:
            return None
        n = int.from_bytes(rest[:8], "little")
        digest, payload = rest[8:40], rest[40:]
        if len(payload) != n or hashlib.sha256(key + payload).digest() != digest:
            return None
        return payload

    def pack(self, data: bytes) -> bytes:
        return (self.MAGIC + len(self.key).to_bytes(8, "little") + self.key + len(data).to_bytes(8, "little")
                + hashlib.sha256(self.key + data).digest() + data)

    def store(self, data: bytes) -> None:
        try:
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError:
            return  # a cache that cannot be written only costs the next compile its time
        if not self._folder_ok():
            return
        try:
            fd, tmp = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(self.pack(data))
            os.replace(tmp, self.path)
        except OSError:
            pass


@dataclass(frozen=True)
class Function:
    """A compiled function. It holds its Module: the machine code lives as long as the engine does."""

    module: Module
    name: str
    cfunc: object

    def __call__(self, *args):
        return self.cfunc(*args)
