"""Small programs that more than one test file runs."""

from __future__ import annotations

from pathlib import Path

# Work for canonicalize: a duplicate relu (for CSE) and an unused exp (for DCE).
SMALL = """graph @small(%x: f32[2, 3]) -> f32[2, 3] {
  %a = relu %x : f32[2, 3]
  %b = relu %x : f32[2, 3]
  %s = add %a, %b : f32[2, 3]
  %dead = exp %x : f32[2, 3]
  return %s
}
"""

# The decode step the generation tests load (the `small` fixture in conftest.py), and the prompt they feed it.
BITNET_SMALL = Path(__file__).resolve().parent.parent / "examples" / "bitnet_small.lir"
PROMPT = [1, 2, 3, 4, 5]
