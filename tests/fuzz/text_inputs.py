""".lir fuzz inputs: the mutated programs of tests/test_fuzz.py, checked further than parsing: a program that
parses (and so passes the verifier) must also run in the reference interpreter on seeded random inputs and
weights, or be refused with a LadderError (a memory budget, an index out of range). A name that passed
``check`` and then broke ``run`` (a lone surrogate) is what this catches."""

from __future__ import annotations

import random

import numpy as np

import ladder
from ladder import budget, weights

RUN_BUDGET = "256M"
MAX_RANDOM_ELEMENTS = 1 << 21  # inputs + params drawn per program; larger programs are only checked for size


def random_inputs(graph: ladder.Graph, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for v in graph.inputs:
        t = v.type
        if t.dtype.is_float and t.dtype.bits >= 16:
            out[v.name] = rng.standard_normal(t.shape).astype(t.dtype.np_dtype)
        elif t.dtype.kind in ("int", "uint") and t.dtype.bits >= 8:  # ids and positions: small, >= 0
            out[v.name] = rng.integers(0, 4, t.shape).astype(t.dtype.np_dtype)
        else:
            out[v.name] = weights.random_tensor(rng, t)
    return out


def check_runs(text: str) -> None:
    """Parse; a program that parses runs on random inputs and weights (or raises a LadderError)."""
    g = ladder.parse(text)
    budget.check(g, RUN_BUDGET, "to run a fuzz input")
    drawn = sum(v.type.size for v in g.inputs) + sum(op.result.type.size for op in weights.params(g).values())
    if drawn > MAX_RANDOM_ELEMENTS:
        return
    ladder.run(g, random_inputs(g, 0), weights.random(g, 0), memory_budget=RUN_BUDGET)


def make_input(seed: int) -> str:
    """The fuzz input number ``seed``: a mutated seed program."""
    from test_fuzz import SEEDS, mutate  # the .lir seeds and mutators live with the parser's fuzz tests

    return mutate(random.Random(seed), SEEDS[seed % len(SEEDS)])
