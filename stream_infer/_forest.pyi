"""Types of the compiled scorer built from ``_forest.c`` (C-contiguous buffers)."""

from typing import Any

import numpy.typing as npt

def score(x: npt.NDArray[Any], cols: int, feature: npt.NDArray[Any],
          threshold: npt.NDArray[Any], leaf: npt.NDArray[Any], depth: int, base: float,
          out: npt.NDArray[Any], logistic: bool, simd: bool) -> None: ...
def contributions(x: npt.NDArray[Any], cols: int, feature: npt.NDArray[Any],
                  threshold: npt.NDArray[Any], stop: npt.NDArray[Any], mean: npt.NDArray[Any],
                  depth: int, base: float, out: npt.NDArray[Any]) -> None: ...
def simd_available() -> bool: ...
