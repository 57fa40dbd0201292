"""The compiled-code cache trusts an entry only when it is a regular file of this user, in a folder only this
user can write, holding the very key it is looked up with (and a matching checksum). Anything else is skipped
with a CacheWarning, never loaded as code, and never blocks."""

from __future__ import annotations

import os
import stat
import warnings

import numpy as np
import pytest

import ladder
from ladder.backends.llvm.jit import CacheWarning, ObjectCache
from ladder.target import get_target

GRAPH = """graph @g(%x: f32[5, 33]) -> f32[5, 33] {{
  %y = {op} %x : f32[5, 33]
  return %y
}}"""
X = np.random.default_rng(0).standard_normal((5, 33)).astype(np.float32)


def _compile(op: str, folder):
    g = ladder.parse(GRAPH.format(op=op))
    return g, ladder.compile(g, "cpu", cache=folder)


def _entry(folder):
    (entry,) = [p for p in folder.iterdir() if p.suffix == ".o"]
    return entry


def _fresh(folder, op="relu2"):
    """Compiles again and checks the result; returns whether the cache was used, and the warnings."""
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        g, m = _compile(op, folder)
    assert np.array_equal(m({"x": X})["y"], ladder.run(g, {"x": X})["y"])
    return m._backend.module.from_cache, [str(w.message) for w in rec if w.category is CacheWarning]


@pytest.fixture
def cache(tmp_path):
    folder = tmp_path / "objects"
    _compile("relu2", folder)
    return folder


def test_the_folder_is_private_and_an_entry_is_reused(cache):
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert stat.S_IMODE(_entry(cache).stat().st_mode) & 0o077 == 0
    assert _fresh(cache) == (True, [])


def test_an_entry_for_another_key_is_refused_even_with_its_checksum_recomputed(cache, tmp_path):
    """A file whose checksum is right but which was stored under another key (another graph's object) is
    never run: the key inside the entry must be this compile's key."""
    entry = _entry(cache)
    other = tmp_path / "other"
    _compile("relu", other)
    entry.write_bytes(_entry(other).read_bytes())  # valid checksum, other key
    used, warned = _fresh(cache)
    assert not used and any("another key" in w for w in warned)
    # the same, packed by hand: a foreign key and an object, with the checksum computed over them
    foreign = ObjectCache(cache, "some other module", get_target("cpu"))
    entry.write_bytes(foreign.pack(_entry(other).read_bytes()))
    used, warned = _fresh(cache)
    assert not used and warned
    assert _fresh(cache) == (True, [])  # the recompile stored a good entry again


def test_a_symlinked_entry_is_not_followed(cache, tmp_path):
    entry = _entry(cache)
    target = tmp_path / "elsewhere.o"
    target.write_bytes(entry.read_bytes())  # even a correct entry: it is not ours to trust through a link
    entry.unlink()
    entry.symlink_to(target)
    used, warned = _fresh(cache)
    assert not used and any("cannot be opened safely" in w for w in warned)
    assert not entry.is_symlink()  # replaced by a real entry


def test_a_fifo_entry_does_not_block(cache):
    entry = _entry(cache)
    entry.unlink()
    os.mkfifo(entry)
    used, warned = _fresh(cache)  # would hang forever if the FIFO were read
    assert not used and any("not a regular file" in w for w in warned)


def test_a_folder_others_can_write_is_not_used(cache):
    os.chmod(cache, 0o777)
    try:
        before = sorted(p.name for p in cache.iterdir())
        used, warned = _fresh(cache)
        assert not used and any("written by other users" in w for w in warned)
        assert sorted(p.name for p in cache.iterdir()) == before  # nothing stored there either
    finally:
        os.chmod(cache, 0o700)


def test_an_entry_others_can_write_is_not_used(cache):
    os.chmod(_entry(cache), 0o666)
    used, warned = _fresh(cache)
    assert not used and any("writable by another user" in w for w in warned)
