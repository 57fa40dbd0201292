"""Where a decode step's time goes (``ladder generate --profile``).

Two measurements, both on a compiled cpu module:

* per op: every kernel of the decode step called alone over its whole range on one thread, in the entry's
  order and on the entry's buffers (``CompiledModule.time_steps``), then summed by op kind. The kernels' sum
  is set against the entry function's own time at 1 thread: the difference is what the entry adds (calls,
  nothing else), so the two agree to a few percent.
* the generate loop: the wall time per token of ``ladder.generate``'s decode loop at the runner's threads,
  against the entry's time at those threads (called through ctypes from Python, as the loop calls it, on a
  cache filled to the loop's middle position: attention's share grows with the filled rows). The difference
  is the Python work per token (writing the step's inputs, picking the token, the loop itself).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from .errors import LadderError


@dataclass
class OpTime:
    kind: str
    count: int
    seconds: float


@dataclass
class StepProfile:
    ops: list[OpTime]                 # by op kind, slowest first
    kernel_seconds: float             # the kernels' sum, 1 thread
    entry_seconds: float              # the whole step at 1 thread
    loop_seconds: float               # generate's decode loop per token, at ``threads``
    step_seconds: float               # the entry alone at ``threads``
    threads: int
    per_op: list[tuple[str, str, float]] = field(default_factory=list)  # (op name, kind, seconds)

    @property
    def python_seconds(self) -> float:
        """The generate loop's own work per token."""
        return max(self.loop_seconds - self.step_seconds, 0.0)


def decode_inputs(sig, token: int, at: int, caches: bool = True) -> dict[str, np.ndarray]:
    """The inputs of a decode step of ``sig`` (a ``generate.StepSignature``) feeding ``token`` at position
    ``at``; with ``caches``, zeroed caches too (a kernel's time does not depend on their values; a module
    holding its caches as state takes the step's four inputs only)."""
    cache = {f"{kv}_cache{i}": np.zeros(sig.cache.shape, sig.cache.dtype.np_dtype)
             for i in range(sig.layers) for kv in "kv"} if caches else {}
    return {"tokens": np.full(sig.seq, token, np.int32), "pos": np.arange(at, at + sig.seq, dtype=np.int32),
            "start": np.array([at], np.int32), "kv_len": np.array([at + sig.seq], np.int32), **cache}


def profile_decode(prefill, decode, prompt, runner, tokens: int = 8, repeat: int = 5) -> StepProfile:
    """Profile ``decode`` (compiled by ``runner``, a ``generate.ModuleRunner`` of a cpu target) after ``prompt``."""
    from .generate import generate, signature

    if not runner.target.startswith("cpu"):
        raise LadderError(f"--profile times cpu kernels; target '{runner.target}' has none")
    if tokens < 2:
        raise LadderError(f"a profile needs at least 2 new tokens (1 decode step), got {tokens}")
    module = runner.module(decode)
    sig = signature(decode)
    # the loop's steps run at positions len(prompt) .. len(prompt) + tokens - 2: time the middle one
    inputs = decode_inputs(sig, int(prompt[-1]), len(prompt) + (tokens - 2) // 2, caches=not module.state_slots)
    state = module.new_state() if module.state_slots else None  # a scratch cache: the runner's stay untouched
    steps, entry = module.time_steps(inputs, repeat, state=state)
    by_kind: dict[str, list] = defaultdict(lambda: [0, 0.0])
    for op, t in steps:
        by_kind[op.kind][0] += 1
        by_kind[op.kind][1] += t
    ops = sorted((OpTime(k, n, t) for k, (n, t) in by_kind.items()), key=lambda o: -o.seconds)
    threads = int(runner.threads or 1)
    step = entry if threads == 1 else module.time_steps(inputs, repeat, threads, state=state)[1]
    generate(prefill, decode, prompt, 2, runner)  # warm up the loop's own code paths
    gen = generate(prefill, decode, prompt, tokens, runner)
    loop = gen.decode_seconds / (len(gen.ids) - 1)
    return StepProfile(ops, sum(t for _, t in steps), entry, loop, step, threads,
                       [(op.name, op.kind, t) for op, t in steps])


def format_profile(p: StepProfile) -> str:
    lines = [f"decode step profile: kernels called one by one at 1 thread, summed by op kind",
             f"{'op':<20}{'count':>6}{'ms':>10}{'share':>8}"]
    total = p.kernel_seconds or 1.0
    for o in p.ops:
        lines.append(f"{o.kind:<20}{o.count:>6}{o.seconds * 1e3:>10.3f}{o.seconds / total:>8.1%}")
    lines.append(f"{'kernels':<20}{sum(o.count for o in p.ops):>6}{p.kernel_seconds * 1e3:>10.3f}"
                 f"{'100.0%':>8}")
    lines.append(f"step (entry, 1 thread): {p.entry_seconds * 1e3:.3f} ms; the kernels' sum is "
                 f"{p.kernel_seconds / p.entry_seconds:.1%} of it" if p.entry_seconds else "step: 0 ms")
    lines.append(f"generate loop at {p.threads} thread(s): {p.loop_seconds * 1e3:.3f} ms per token, of which the "
                 f"module call is {p.step_seconds * 1e3:.3f} ms and Python {p.python_seconds * 1e3:.3f} ms "
                 f"({p.python_seconds / p.loop_seconds:.1%})")
    return "\n".join(lines)
