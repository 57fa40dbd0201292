"""LLVM's optimiser and code generator, run in a child process so that an LLVM abort never kills the caller.

The LLVM inside llvmlite is built with assertions: a bad decision deep in a pass ends the process with
``abort()``. A Jupyter kernel or a server must survive that, so ladder never optimises or generates code in
its own process. One long-lived child (started on first use, restarted after it dies) takes a request

    {"ir": text, "cpu": name, "features": "+avx2,...", "loop_vectorize": True, "want": ("obj", "ir", "asm")}

and answers ``{"obj": bytes, "ir": optimised text, "asm": text}`` (what was asked), or ``{"error": text}``
when LLVM reported an error it survived. When the child dies instead, ``request`` raises ``CompilerCrash``
holding LLVM's last words (the assertion text) from the child's stderr. The parent only links the returned
object into MCJIT (``jit.Module``): it neither parses nor optimises IR.

Messages are length-prefixed pickles between this process and its own child over pipes. This file runs as
a script in the child (``python worker.py``) and imports nothing from ladder there, so the child starts in
the time it takes to import llvmlite.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import tempfile
import threading

_LEN = struct.Struct("<Q")

# Test hook: (function name, also without loop vectorisation). When set, requests carry it, and the child
# calls abort() on a module that defines that function, as an LLVM assertion would. Only tests set it.
CRASH_TEST: tuple[str, bool] | None = None


def _send(stream, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_LEN.pack(len(data)))
    stream.write(data)
    stream.flush()


def _receive(stream):
    head = stream.read(_LEN.size)
    if len(head) < _LEN.size:
        return None
    (n,) = _LEN.unpack(head)
    data = stream.read(n)
    if len(data) < n:
        return None
    return pickle.loads(data)


# -- the child ----------------------------------------------------------------------------------------------

def _compile(llvm, req: dict) -> dict:
    triple = llvm.get_process_triple()
    tm = llvm.Target.from_triple(triple).create_target_machine(
        cpu=req["cpu"], features=req["features"], opt=3, reloc="pic", codemodel="jitdefault")
    try:
        mod = llvm.parse_assembly(req["ir"])
        mod.verify()
    except RuntimeError as e:
        return {"error": f"LLVM rejected the IR: {e}"}
    mod.triple = tm.triple
    mod.data_layout = str(tm.target_data)
    crash = req.get("crash_test")
    if crash and f'@"{crash[0]}"(' in req["ir"] and (req["loop_vectorize"] or crash[1]):
        sys.stderr.write(f"ladder test hook: abort while compiling {crash[0]}\n")
        sys.stderr.flush()
        os.abort()
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pto.loop_vectorization = bool(req["loop_vectorize"])
    pto.slp_vectorization = True
    pto.loop_unrolling = True
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    out: dict = {}
    want = req.get("want", ("obj",))
    if "obj" in want:
        out["obj"] = tm.emit_object(mod)
    if "ir" in want:
        out["ir"] = str(mod)
    if "asm" in want:
        out["asm"] = tm.emit_assembly(mod)
    return out


def _serve() -> None:
    import llvmlite.binding as llvm

    # The protocol owns the real stdout; anything LLVM prints goes to stderr (the parent's log file).
    proto_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    proto_in = os.fdopen(os.dup(0), "rb")
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    while True:
        req = _receive(proto_in)
        if req is None:
            return
        try:
            resp = _compile(llvm, req)
        except Exception as e:  # an error LLVM survived: report it, keep serving
            resp = {"error": f"{type(e).__name__}: {e}"}
        _send(proto_out, resp)


# -- the parent ---------------------------------------------------------------------------------------------

class CompilerCrash(Exception):
    """The compiler child died while compiling (an LLVM assertion or fatal error)."""

    def __init__(self, message: str, returncode: int | None):
        super().__init__(message)
        self.message = message
        self.returncode = returncode


def llvm_message(log: str) -> str:
    """LLVM's last words in a child's stderr: the assertion or fatal-error line, else the last line."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Assertion" in ln or "LLVM ERROR" in ln or "ladder test hook" in ln:
            return ln[:2000]
    return lines[-1][:2000] if lines else "no message"


class CompileWorker:
    """The compiler child, started on first use and again after it dies. Requests from several threads
    take turns."""

    def __init__(self):
        self._proc: subprocess.Popen | None = None
        self._log = None
        self._lock = threading.Lock()
        self.started = 0  # how many children were started (a restart after a crash counts)

    @property
    def busy(self) -> bool:
        """Whether a request is being answered now."""
        return self._lock.locked()

    def _start(self) -> None:
        if self._log is None:
            self._log = tempfile.TemporaryFile()
        self._proc = subprocess.Popen([sys.executable, os.path.abspath(__file__)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=self._log, close_fds=True)
        self.started += 1

    def request(self, req: dict) -> dict:
        if CRASH_TEST is not None:
            req = {**req, "crash_test": CRASH_TEST}
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            proc = self._proc
            # the child writes its stderr through the same file offset: start each request on an empty log
            self._log.seek(0)
            self._log.truncate()
            try:
                _send(proc.stdin, req)
                resp = _receive(proc.stdout)
            except (BrokenPipeError, ConnectionResetError):
                resp = None
            if resp is not None:
                return resp
            code = proc.wait()
            self._proc = None
            for pipe in (proc.stdin, proc.stdout):
                try:
                    pipe.close()
                except OSError:
                    pass
            self._log.seek(0)
            log = self._log.read().decode(errors="replace")
            raise CompilerCrash(llvm_message(log), code)

    def close(self) -> None:
        with self._lock:
            proc, self._proc = self._proc, None
            log, self._log = self._log, None
            if log is not None:
                log.close()
            if proc is not None and proc.poll() is None:
                proc.stdin.close()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                proc.stdout.close()


_WORKER: CompileWorker | None = None
_WORKER_LOCK = threading.Lock()


def _shut_at_exit() -> CompileWorker:
    import atexit

    w = CompileWorker()
    atexit.register(w.close)
    return w


def worker() -> CompileWorker:
    """This process's compiler child (one per process, shut down at exit)."""
    global _WORKER
    with _WORKER_LOCK:
        if _WORKER is None:
            _WORKER = _shut_at_exit()
        return _WORKER


_MORE: list[CompileWorker] = []  # more children, for requests made while the first is busy


def idle_worker() -> CompileWorker:
    """A compiler child no other thread's request is holding: the first (``worker()``) when it is idle, else one
    of the others, started on first use up to one per core; when all are busy, the first (the request then waits
    its turn). Two modules compiled from two threads (a prefill and a decode step) are optimised side by side."""
    first = worker()
    if not first.busy:
        return first
    with _WORKER_LOCK:
        for w in _MORE:
            if not w.busy:
                return w
        from ladder.tuning import host_threads  # not at the top: the compiler child imports this module

        if len(_MORE) + 1 < host_threads():
            _MORE.append(_shut_at_exit())
            return _MORE[-1]
    return first


if __name__ == "__main__":
    _serve()
