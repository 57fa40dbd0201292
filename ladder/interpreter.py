"""The reference interpreter: runs a graph op by op with each op's numpy semantics.

It is the living definition of what a graph means; every backend is tested against it.

It also defines what *state* means (``StateSlot``, ``State``): a graph input paired with a graph output of the
same type, whose value carries over from one call of a compiled module to the next (a decode step's KV cache:
input ``k_cache0``, output the updated cache). A call with state is the graph's plain call with the state's
buffers as those inputs, followed by storing those outputs back into the buffers: every target keeps these
semantics, whether it updates the buffers in place (cpu) or copies into them (ref, asic).
"""

from __future__ import annotations

import os
from collections.abc import Mapping as MappingABC
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import numpy as np

from . import budget as budget_mod
from . import weights as weights_mod
from .errors import LadderError, RuntimeFailure
from .ir import Graph, Value
from .ops import OPS, InferError
from .types import TensorType


def run(graph: Graph, inputs: Mapping[str, np.ndarray] | Sequence[np.ndarray] = (),
        weights: Mapping[str, np.ndarray] | None = None, *, keep: bool = False,
        memory_budget: int | float | str | None = None) -> dict[str, np.ndarray]:
    """Run ``graph``. ``inputs`` by name (without %) or in order; ``weights`` by param name.

    Returns the outputs by value name, in the graph's output order; with ``keep``, every value."""
    return Session(graph, weights, memory_budget=memory_budget).run(inputs, keep=keep)


class Session:
    """A graph bound to its weights. Everything computed from params and consts alone (packing weights,
    quantizing them) is computed once, here; ``run`` computes the rest for each set of inputs, dropping each
    value after its last use.

    ``memory_budget`` (ladder.budget; default: a share of this machine's memory): a graph that needs more is
    refused with a MemoryBudgetError before anything is allocated. ``pack_cache``: a folder where weights a
    file stores in another layout are kept packed between runs (ladder.weights.PackCache; None: not kept)."""

    def __init__(self, graph: Graph, weights: Mapping[str, np.ndarray] | None = None, *,
                 memory_budget: int | float | str | None = None, pack_cache=None):
        self.graph = graph
        self.pack_cache = None if pack_cache is None else weights_mod.PackCache(pack_cache)
        self.memory = budget_mod.check(graph, memory_budget, "to run in the reference interpreter")
        bound = weights_mod.bind(graph, weights or {})
        self.fixed: dict[str, np.ndarray] = {}
        self._rest = []
        pool, self._ahead = self._pack_ahead(graph, bound)
        try:
            for op in graph.ops():
                if op.kind == "param":
                    v = bound[op.attr["ref"]]
                    if isinstance(v, weights_mod.BlockPart):  # a file's blocks, decoded only if some op needs it
                        self.fixed[op.result.name] = v
                    else:
                        self._store(self.fixed, op, [v])
                elif op.operands and all(o in self.fixed for o in op.operands) or op.kind == "const":
                    self._store(self.fixed, op, self._fixed_result(op, graph))
                else:
                    self._rest.append(op)
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
            self._ahead = {}
        read = [o for op in self._rest for o in op.operands] + list(graph.outputs)
        self._decode_parts(read)
        # what run may drop after each op: values read for the last time (outputs and fixed values stay)
        last_use = {o: i for i, op in enumerate(self._rest) for o in op.operands}
        stay = set(graph.outputs) | set(self.fixed)
        self._drop: list[list[str]] = [[] for _ in self._rest]
        for i, op in enumerate(self._rest):
            self._drop[i] += [r.name for r in op.results if r.name not in last_use and r.name not in stay]
        for name, i in last_use.items():
            if name not in stay:
                self._drop[i].append(name)

    def _decode_parts(self, read) -> None:
        """Runtime ops and callers read arrays: the file blocks they read, decoded (or mapped from the pack
        cache), a weight's parts one after the other and the weights on a thread per core (numpy lets go of the
        GIL while it decodes: a 2B Q4_K_M file's 29 Q6_K code tensors, ~4 s on one core)."""
        by_weight: dict[int, list[str]] = {}
        for o in dict.fromkeys(read):
            v = self.fixed.get(o)
            if isinstance(v, weights_mod.BlockPart):
                by_weight.setdefault(id(v.blocks), []).append(o)

        def decode(names):
            return [(o, weights_mod.decoded_part(self.pack_cache, self.fixed[o])) for o in names]

        jobs = list(by_weight.values())
        workers = min(len(jobs), os.cpu_count() or 1)
        if workers < 2:
            done = [decode(names) for names in jobs]
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(workers, thread_name_prefix="ladder-decode") as pool:
                done = list(pool.map(decode, jobs))
        for pairs in done:
            self.fixed.update(pairs)

    def _pack_ahead(self, graph: Graph, bound) -> tuple:
        """Packs of a file's blocks into a layout computed here (neither the file's own nor in the pack cache),
        started on a thread per core: numpy lets go of the GIL while it decodes and packs (a 2B TQ1_0 model's
        repacking, ~4 s on one core). (the pool or None, result name -> Future); _fixed_result takes them."""
        blocks = {op.result.name: bound[op.attr["ref"]] for op in graph.ops()
                  if op.kind == "param" and isinstance(bound[op.attr["ref"]], weights_mod.BlockPart)}
        jobs, seen = [], set()
        for op in graph.ops():
            if op.kind != "pack" or not op.operands or not all(o in blocks for o in op.operands):
                continue
            args = [blocks[o] for o in op.operands]
            b = weights_mod._one_weight(args)
            if b is None or id(b) in seen or weights_mod.stored_pack(op.attr["layout"], args) is not None:
                continue
            seen.add(id(b))  # one job a weight: its decode is not shared between threads
            jobs.append((op, args))
        workers = min(len(jobs), os.cpu_count() or 1)
        if workers < 2:
            return None, {}
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(workers, thread_name_prefix="ladder-pack")
        return pool, {op.results[0].name: pool.submit(self._pack_blocks, op, graph, args) for op, args in jobs}

    def _pack_blocks(self, op, graph: Graph, args) -> list[np.ndarray]:
        """pack of a file's blocks: from the pack cache, else computed (and kept there, and on the weight). One
        thread at a time a weight: a module compiled beside this one takes the pack this one made."""
        b = weights_mod._one_weight(args)
        if b is None:
            return self._pack_blocks_now(op, graph, args)
        with b.lock:
            stored = weights_mod.stored_pack(op.attr["layout"], args)
            return [stored] if stored is not None else self._pack_blocks_now(op, graph, args)

    def _pack_blocks_now(self, op, graph: Graph, args) -> list[np.ndarray]:
        layout = op.attr["layout"]
        got = weights_mod.cached_pack(self.pack_cache, layout, args, op.results[0].type.storage_shape)
        if got is not None:
            return [got]
        rows = weights_mod.repack_rows(layout, args, op.results[0].type.storage_shape)
        out = [rows] if rows is not None else _compute(op, graph, {o: np.asarray(a) for o, a in zip(op.operands, args)})
        weights_mod.store_pack(self.pack_cache, layout, args, out[0])
        # the entry just written, mapped: the same bytes as pages of a file (as a cached compile gets them), not
        # a copy in this process's own memory
        got = weights_mod.cached_pack(self.pack_cache, layout, args, op.results[0].type.storage_shape)
        if got is not None:
            out = [got]
        else:
            weights_mod.keep_pack(layout, args, out[0])
        return out

    def _fixed_result(self, op, graph: Graph) -> list[np.ndarray]:
        """An op of params and consts alone, computed once. Packing a file's blocks into the packing the file
        stores them in is the file's bytes, and into another one is computed once for every module compiled
        from those weights (ladder.weights.Blocks); any other op decodes them first."""
        args = [self.fixed[o] for o in op.operands]
        if not any(isinstance(a, weights_mod.BlockPart) for a in args):
            return _compute(op, graph, self.fixed)
        if op.kind == "pack":
            ahead = self._ahead.pop(op.results[0].name, None)
            if ahead is not None:
                return ahead.result()
            stored = weights_mod.stored_pack(op.attr["layout"], args)
            if stored is not None:
                return [stored]
            return self._pack_blocks(op, graph, args)
        return _compute(op, graph, {o: np.asarray(a) for o, a in zip(op.operands, args)})

    @property
    def runtime_ops(self) -> tuple:
        """The ops ``run`` computes on each call, in graph order: every op not computed from params and consts
        alone (those values are in ``fixed``). A backend compiles these."""
        return tuple(self._rest)

    def run(self, inputs: Mapping[str, np.ndarray] | Sequence[np.ndarray] = (), *,
            keep: bool = False) -> dict[str, np.ndarray]:
        env = dict(self.fixed)
        env.update(bind_inputs(self.graph, inputs))
        for op, drop in zip(self._rest, self._drop):
            self._store(env, op, _compute(op, self.graph, env))
            if not keep:
                for name in drop:
                    env.pop(name, None)
        if keep:
            return env
        return {name: env[name] for name in self.graph.outputs}

    @staticmethod
    def _store(env: dict, op, results) -> None:
        for r, arr in zip(op.results, results):
            arr = np.asarray(arr)
            if arr.shape != r.type.storage_shape or arr.dtype != r.type.storage_np_dtype:
                raise RuntimeFailure(  # a bug in an op's semantics, not in the user's graph
                    f"internal: {op.describe()} produced {arr.dtype}{list(arr.shape)} for %{r.name} : {r.type}",
                    op.loc)
            env[r.name] = arr


def _compute(op, graph: Graph, env: dict) -> list[np.ndarray]:
    opdef = OPS[op.kind]
    ins = [graph.type_of(o) for o in op.operands]
    try:
        with np.errstate(all="ignore"):
            return opdef.compute([env[o] for o in op.operands], opdef.full_attrs(op.attr),
                                 [r.type for r in op.results], ins)
    except InferError as e:
        raise RuntimeFailure(f"{op.describe()}: {e}", op.loc) from None


def bind_inputs(graph: Graph, inputs, state: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """The inputs by name, converted to their types. ``state``: names of inputs that may be left out (a
    module's state); a sequence of inputs then lists either every input or every other one, in order."""
    if not isinstance(inputs, Mapping):
        inputs = list(inputs)
        values = graph.inputs
        if state and len(inputs) != len(values):
            values = [v for v in graph.inputs if v.name not in state]
        if len(inputs) != len(values):
            raise RuntimeFailure(f"graph @{graph.name} takes {len(graph.inputs)} input(s) "
                                 f"({_sig(graph.inputs)}), got {len(inputs)}", graph.loc)
        inputs = {v.name: a for v, a in zip(values, inputs)}
    unknown = [k for k in inputs if k.lstrip("%") not in {v.name for v in graph.inputs}]
    if unknown:
        raise RuntimeFailure(f"graph @{graph.name} has no input {', '.join('%' + k.lstrip('%') for k in unknown)}; "
                             f"its inputs: {_sig(graph.inputs)}", graph.loc)
    given = {k.lstrip("%"): v for k, v in inputs.items()}
    env = {}
    for v in graph.inputs:
        if v.name in given:
            env[v.name] = convert_input(v, given[v.name])
        elif v.name not in state:
            raise RuntimeFailure(f"input %{v.name} : {v.type} is missing", graph.loc)
    return env


def convert_input(v: Value, arr) -> np.ndarray:
    arr = np.asarray(arr)
    t = v.type
    if t.layout:
        if arr.dtype != np.uint8 or arr.shape != t.storage_shape:
            raise RuntimeFailure(f"input %{v.name} : {t} should be its packed storage "
                                 f"uint8{list(t.storage_shape)}, got {arr.dtype}{list(arr.shape)}")
        return arr
    if arr.shape != t.shape:
        raise RuntimeFailure(f"input %{v.name} should be {t} but has shape {list(arr.shape)}")
    dt = t.dtype
    if arr.dtype == dt.np_dtype:
        dt.check(arr, f"input %{v.name}")
        return arr
    if dt.is_float and arr.dtype.kind in "fiu":
        return arr.astype(dt.np_dtype)
    if dt.is_integer and arr.dtype.kind in "iub":
        dt.check(arr, f"input %{v.name}")
        return arr.astype(dt.np_dtype)
    raise RuntimeFailure(f"input %{v.name} should be {t} but is {arr.dtype}")


def _sig(values) -> str:
    return ", ".join(f"%{v.name} : {v.type}" for v in values) or "none"


# -- state -------------------------------------------------------------------------------------------------

class StateError(LadderError):
    """A state that does not fit the graph or the module it is used with."""

    kind = "state error"


@dataclass(frozen=True)
class StateSlot:
    """Graph input ``name`` holds state: after each call it takes the value of the graph's output number
    ``output`` (an index into ``graph.outputs``), which has the same ``type``."""

    name: str
    output: int
    type: TensorType


def state_slots(graph: Graph, state: Mapping[str, int | str] | None) -> tuple[StateSlot, ...]:
    """The slots of ``state`` (input name -> the output that updates it, by index or by value name), checked
    against ``graph``: every input exists, every output exists and updates one input only, types agree."""
    if not state:
        return ()
    inputs = {v.name: v.type for v in graph.inputs}
    types = graph.output_types()
    slots, taken = [], {}
    for name, out in state.items():
        name = name.lstrip("%")
        if name not in inputs:
            raise StateError(f"graph @{graph.name} has no input %{name} to hold as state; its inputs: "
                             f"{_sig(graph.inputs)}", graph.loc)
        if isinstance(out, str):
            at = [i for i, o in enumerate(graph.outputs) if o == out.lstrip("%")]
            if len(at) != 1:
                raise StateError(f"graph @{graph.name} returns %{out.lstrip('%')} {len(at)} times; name the "
                                 f"output that updates %{name} by its index", graph.loc)
            out = at[0]
        if not isinstance(out, (int, np.integer)) or not 0 <= out < len(types):
            raise StateError(f"graph @{graph.name} has {len(types)} outputs; output {out!r} cannot update %{name}",
                             graph.loc)
        out = int(out)
        if out in taken:
            raise StateError(f"output {out} of graph @{graph.name} already updates %{taken[out]}; it cannot "
                             f"update %{name} too", graph.loc)
        if types[out] != inputs[name]:
            raise StateError(f"state %{name} : {inputs[name]} cannot take output {out} of graph @{graph.name}, "
                             f"a {types[out]}: an input and the output that updates it have one type", graph.loc)
        taken[out] = name
        slots.append(StateSlot(name, out, inputs[name]))
    return tuple(slots)


def _zeros(t: TensorType) -> np.ndarray:
    """A zeroed buffer of ``t``'s storage, 64-byte aligned (kernels read it with full-width vectors)."""
    dtype = t.storage_np_dtype
    nbytes = int(np.prod(t.storage_shape, dtype=np.int64)) * dtype.itemsize
    raw = np.zeros(nbytes + 64, np.uint8)
    skip = -raw.ctypes.data % 64
    return raw[skip:skip + nbytes].view(dtype).reshape(t.storage_shape)


class State(MappingABC):
    """The buffers of a module's state, one per slot, allocated (zeroed) once and then only written into:
    their addresses never change. ``state[name]`` is a read-only view of the live buffer (it changes as the
    module runs: copy it to keep a value); ``reset()`` zeroes every buffer or loads given values.

    One State can serve several modules whose slots have the same names and types, e.g. a prefill and a
    decode step sharing one KV cache: pass it as ``state=`` to their calls."""

    def __init__(self, slots: Sequence[StateSlot]):
        self.types = {s.name: s.type for s in slots}
        self.buffers = {s.name: _zeros(s.type) for s in slots}  # the live buffers, writable: for backends

    def __getitem__(self, name: str) -> np.ndarray:
        view = self.buffers[name.lstrip("%")].view()
        view.flags.writeable = False
        return view

    def __iter__(self) -> Iterator[str]:
        return iter(self.buffers)

    def __len__(self) -> int:
        return len(self.buffers)

    def reset(self, values: Mapping[str, np.ndarray] | None = None) -> None:
        """Zero every buffer, then copy in ``values`` (by state name, converted and checked as inputs are)."""
        values = self._checked(values or {})
        for name, buf in self.buffers.items():
            if name not in values:
                buf.fill(0)
        self.load(values)

    def load(self, values: Mapping[str, np.ndarray]) -> None:
        """Copy ``values`` (by state name) into their buffers; the other buffers keep theirs."""
        for name, v in self._checked(values).items():
            np.copyto(self.buffers[name], convert_input(Value(name, self.types[name]), v))

    def _checked(self, values: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        values = {k.lstrip("%"): v for k, v in values.items()}
        unknown = sorted(set(values) - set(self.buffers))
        if unknown:
            raise StateError(f"no state %{unknown[0]}; the state holds {self._names()}")
        return values

    def check_fits(self, slots: Sequence[StateSlot], who: str) -> None:
        """Raise unless this state has exactly ``slots``'s names and types."""
        want = {s.name: s.type for s in slots}
        if want != self.types:
            missing = sorted(set(want) - set(self.types))
            extra = sorted(set(self.types) - set(want))
            differ = sorted(n for n in set(want) & set(self.types) if want[n] != self.types[n])
            why = (f"it lacks %{missing[0]}" if missing else f"it has %{extra[0]} too" if extra else
                   f"%{differ[0]} is {self.types[differ[0]]}, not {want[differ[0]]}")
            raise StateError(f"this state ({self._names()}) does not fit {who}: {why}")

    def _names(self) -> str:
        return ", ".join(f"%{n}" for n in self.buffers) or "nothing"


def run_with_state(run, graph: Graph, slots: Sequence[StateSlot], state: State, inputs: Mapping[str, np.ndarray]
                   ) -> dict[str, np.ndarray]:
    """A call with state on a target that keeps none: ``run`` (the plain call: every input -> every output by
    name) on ``inputs`` plus the state's buffers, then each slot's output copied into its buffer. Returns the
    outputs that are not state. Every new value is read before any buffer is written, so a step may hand one
    state's old value to another."""
    outs = run({**inputs, **state.buffers})
    new = []
    for s in slots:
        v = np.asarray(outs[graph.outputs[s.output]])
        if any(np.may_share_memory(v, b) for b in state.buffers.values()):
            v = v.copy()
        new.append(v)
    result = {n: outs[n] for i, n in enumerate(graph.outputs) if i not in {s.output for s in slots}}
    for n, v in result.items():  # an output that is a state input is its value before the call
        if any(np.may_share_memory(v, b) for b in state.buffers.values()):
            result[n] = v.copy()
    for s, v in zip(slots, new):
        np.copyto(state.buffers[s.name], v)
    return result
