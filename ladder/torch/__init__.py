"""The PyTorch bridge, for inference (needs the ``torch`` extra; ``import ladder`` never imports torch).

    from ladder.torch import Linear, quantize
    lin = Linear.from_linear(nn.Linear(256, 512), dtype="i4", group=32)   # a drop-in module
    quantize(model, dtype="ternary")                                      # swap a model's linears in place
    torch.compile(model, backend="ladder")                                # FX graph -> ladder regions

``Linear`` runs ladder's low-bit CPU kernels through the ``ladder::linear`` custom op (one opaque call under
``torch.compile(fullgraph=True)``); the ``ladder`` backend lowers the float32 parts of a captured graph that
ladder has ops for and leaves the rest to torch. Neither computes gradients.
"""

from __future__ import annotations

try:
    import torch  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    from ..errors import LadderError

    raise LadderError("ladder.torch needs PyTorch: pip install 'ladder[torch]'") from e

from .fx_backend import RULES, LadderRegion, backend, partition, regions
from .linear import RECIPES, Linear, QuantizedWeight, Recipe, linear_op, quantize

__all__ = ["LadderRegion", "Linear", "QuantizedWeight", "RECIPES", "RULES", "Recipe", "backend", "linear_op",
           "partition", "quantize", "regions"]
