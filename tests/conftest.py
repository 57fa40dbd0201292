"""Tests never read or write the user's cache folders: the whole session gets fresh ones.

ladder keeps compiled machine code in $XDG_CACHE_HOME/ladder (ladder.compile.default_cache_dir). The folder is
set here for the session (and for the subprocesses tests start), before any test runs; a test that needs an
empty cache of its own sets XDG_CACHE_HOME again with monkeypatch.

The ``small`` fixture is the model the generation tests share: examples/bitnet_small.lir, loaded once per module.
"""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def _private_cache_folders(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg-cache")))
        yield os.environ["XDG_CACHE_HOME"]


@pytest.fixture(scope="module")
def small():
    """examples/bitnet_small.lir loaded for generation (ladder.generate.load_model), with random weights (seed 0)."""
    from ladder.generate import load_model
    from small_programs import BITNET_SMALL

    return load_model(BITNET_SMALL, random_weights=0)
