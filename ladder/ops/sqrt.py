"""Square root: what ONNX Sqrt (and Pow x^0.5) means; no composition of the other ops computes it."""

from __future__ import annotations

import numpy as np

from .base import register
from .elementwise import _Unary


@register
class Sqrt(_Unary):
    """sqrt(x), computed in float64 and rounded once to the result type (correctly rounded for f32);
    NaN for negative x."""

    name = "sqrt"

    @staticmethod
    def f(x, attrs):
        return np.sqrt(x)
