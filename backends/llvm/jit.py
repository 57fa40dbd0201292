"""LLVM through the current llvmlite API: a ladder Target's machine, code from the compiler child, MCJIT.

    module = Module.compile(ir_text, target)     # optimised (O3) and compiled for the target's CPU
    fn = module.function("kernel", ctypes.CFUNCTYPE(...))    # callable; keeps the module alive

LLVM's optimiser and code generator run in a child process (``worker.py``): an LLVM assertion ends that
child, never this process. Here the IR is only parsed, and MCJIT links the object the child returned (handed
over through MCJIT's object cache hook, so MCJIT generates no code itself). A Module owns its execution
engine; functions stay valid while it lives.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import llvmlite.binding as llvm

from ladder.errors import LadderError
from ladder.target import Target

from .worker import CompilerCrash, worker

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
    resp = worker().request({"ir": ir_text, "cpu": target.cpu_name, "features": target.cpu_features,
                             "loop_vectorize": loop_vectorize, "want": tuple(want)})
    if "error" in resp:
        raise LadderError(f"internal: LLVM rejected generated IR: {resp['error']}")
    return resp


@dataclass
class Module:
    """A compiled LLVM module: its object code, the engine that runs it, and the target it was built for."""

    target: Target
    ir_text: str  # as generated, before optimisation
    obj: bytes = field(repr=False)
    engine: "llvm.ExecutionEngine | None" = None
    ref: "llvm.ModuleRef | None" = None
    loop_vectorize: bool = True
    from_cache: bool = False
    _texts: dict = field(default_factory=dict, repr=False)

    @staticmethod
    def compile(ir_text: str, target: Target, cache_dir: str | os.PathLike | None = None,
                jit: bool = True, loop_vectorize: bool = True) -> "Module":
        """Optimise and compile ``ir_text`` (in the compiler child) and, with ``jit``, load it here. With
        ``cache_dir``, the object is kept on disk under its full key (IR, target, CPU, features, versions;
        see ObjectCache) and reused when the same module is compiled again. Without ``jit`` the module is only
        compiled (for writing it ahead of time, possibly for a CPU other than this one)."""
        _init()
        try:
            mod = llvm.parse_assembly(ir_text)
            mod.verify()
        except RuntimeError as e:  # generated IR that LLVM rejects is a bug in a kernel generator
            raise LadderError(f"internal: LLVM rejected generated IR: {e}") from None
        cache = ObjectCache(cache_dir, ir_text, target, loop_vectorize) if cache_dir is not None else None
        obj = cache.load() if cache is not None else None
        from_cache = obj is not None
        if obj is None:
            obj = compile_in_child(ir_text, target, ("obj",), loop_vectorize)["obj"]
            if cache is not None:
                cache.store(obj)
        m = Module(target, ir_text, obj, loop_vectorize=loop_vectorize, from_cache=from_cache)
        if not jit:
            return m
        tm = target_machine(target)
        mod.triple = tm.triple
        mod.data_layout = str(tm.target_data)
        engine = llvm.create_mcjit_compiler(mod, tm)
        engine.set_object_cache(notify_func=lambda m_, data: None, getbuffer_func=lambda m_: obj)
        engine.finalize_object()
        engine.run_static_constructors()
        m.engine, m.ref = engine, mod
        return m

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


class ObjectCache:
    """One compiled object on disk, ``<hash of key>.o``, trusted only when all of this holds:

    * the folder is a directory owned by this user that no one else can write (it is created 0700);
    * the entry is a regular file (opened with O_NOFOLLOW: never through a symlink; O_NONBLOCK and an fstat
      before reading: never a FIFO or a device) owned by this user and writable by no one else;
    * it holds the full key it was stored under (hash of the IR, target, CPU name and features, ladder,
      llvmlite and LLVM versions, vectorisation) and it equals this compile's key: a file copied or renamed
      from another entry, or one whose checksum was recomputed over another key, is refused;
    * its length and sha256 (over key and object) match.

    Anything else is skipped with a CacheWarning and the module is compiled afresh. Entries are written to a
    temporary file (0600) and renamed into place, so a crash mid-write never leaves an entry that loads."""

    MAGIC = b"LADDEROBJ2"
    LIMIT = 1 << 30  # no object is this large: a bigger file is not read

    def __init__(self, folder, ir_text: str, target: Target, loop_vectorize: bool = True):
        import llvmlite

        from ladder import __version__

        key = {"ir_sha256": hashlib.sha256(ir_text.encode()).hexdigest(), "target": target.name,
               "cpu": target.cpu_name, "features": target.cpu_features, "ladder": __version__,
               "llvmlite": llvmlite.__version__, "llvm": ".".join(map(str, llvm.llvm_version_info)),
               "loop_vectorize": bool(loop_vectorize)}
        self.key = json.dumps(key, sort_keys=True).encode()
        self.folder = Path(folder)
        self.path = self.folder / f"{hashlib.sha256(self.key).hexdigest()}.o"

    @staticmethod
    def _skip(why: str) -> None:
        warnings.warn(f"compiled-code cache: {why}; compiling afresh", CacheWarning, stacklevel=4)

    def _folder_ok(self) -> bool:
        try:
            st = os.stat(self.folder)
        except OSError:
            return False
        if not stat.S_ISDIR(st.st_mode):
            self._skip(f"{self.folder} is not a folder")
            return False
        if st.st_uid != os.getuid():
            self._skip(f"{self.folder} is owned by another user (uid {st.st_uid})")
            return False
        if st.st_mode & 0o022:
            self._skip(f"{self.folder} can be written by other users (mode {stat.S_IMODE(st.st_mode):o})")
            return False
        return True

    def load(self) -> bytes | None:
        if not self._folder_ok():
            return None
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path, flags)
        except FileNotFoundError:
            return None
        except OSError as e:  # ELOOP: a symlink
            self._skip(f"{self.path} cannot be opened safely ({e.strerror})")
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                self._skip(f"{self.path} is not a regular file")
                return None
            if st.st_uid != os.getuid() or st.st_mode & 0o022:
                self._skip(f"{self.path} is owned or writable by another user")
                return None
            if st.st_size > self.LIMIT:
                self._skip(f"{self.path} is too large ({st.st_size} bytes)")
                return None
            with os.fdopen(fd, "rb", closefd=False) as f:
                blob = f.read(st.st_size + 1)
        finally:
            os.close(fd)
        payload = self._unpack(blob)
        if payload is None:
            self._skip(f"{self.path} is damaged or was stored under another key")
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
