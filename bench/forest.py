"""The compiled forest against bare ``inplace_predict`` on the reference rows, one thread each.

Batches of ``--batch`` rows of the reference workload (``bench/reference.py``: 300 trees of
depth 6 over 17 features), timed in turns so both see the same machine; the best of
``--repeat`` passes is kept. Every score is checked bit for bit against XGBoost.
``--kernel PATH`` adds another build of the kernel (for example the previous commit's) to the
same run, for before/after ratios:

    python bench/forest.py --json
    git show HEAD~1:stream_infer/_forest.c > /tmp/old.c
    gcc -shared -fPIC -O3 -fno-fast-math -ffp-contract=off \\
        -I"$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" \\
        /tmp/old.c -o /tmp/old.so
    python bench/forest.py --kernel /tmp/old.so --json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import reference

from stream_infer.adapters.forest import Forest
from stream_infer.adapters.xgboost import XGBoostModel


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--kernel", type=Path, action="append", default=[],
                        help="another build of stream_infer/_forest.c to time alongside")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    rows = reference.feature_rows(reference.encoded_events(args.rows))
    batches = [np.ascontiguousarray(rows[i:i + args.batch])
               for i in range(0, len(rows), args.batch)]
    booster = XGBoostModel.load(reference.model_dir(), nthread=1, backend="xgboost")
    compiled = XGBoostModel.load(reference.model_dir(), nthread=1, backend="compiled")
    forest = compiled.forest
    assert forest is not None, "the compiled forest is not available here"
    expected = [booster.predict(b).view(np.uint32) for b in batches]
    runs: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "inplace_predict": booster.predict, "forest": forest.predict}
    for path in args.kernel:
        runs[f"forest {path}"] = kernel_scorer(load_kernel(path), forest)
    for name, scorer in runs.items():
        if any(not np.array_equal(scorer(b).view(np.uint32), e)
               for b, e in zip(batches, expected, strict=True)):
            raise SystemExit(f"{name}: scores differ from inplace_predict")
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(args.repeat):
        for name, scorer in runs.items():
            started = time.perf_counter()
            for chunk in batches:
                scorer(chunk)
            best[name] = min(best[name], time.perf_counter() - started)
    result = {f"{name}_rows_per_s": round(len(rows) / seconds) for name, seconds in best.items()}
    result |= {f"{name}_vs_inplace_predict": round(best["inplace_predict"] / seconds, 2)
               for name, seconds in best.items() if name != "inplace_predict"}
    result |= {"rows": len(rows), "batch": args.batch, "bit_equal": True,
               "machine": f"{platform.machine()} python {platform.python_version()}"}
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:>40}  {value}")


def load_kernel(path: Path) -> ModuleType:
    """Another build of the kernel, imported under its own file name."""
    spec = importlib.util.spec_from_file_location("stream_infer._forest", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def kernel_scorer(kernel: ModuleType, forest: Forest) -> Callable[[np.ndarray], np.ndarray]:
    def score(rows: np.ndarray) -> np.ndarray:
        out = np.empty(len(rows), dtype=np.float32)
        kernel.score(rows, forest.columns, forest.feature, forest.threshold, forest.leaf,
                     forest.depth, forest.base, out, forest.logistic, forest.simd)
        return out
    return score


if __name__ == "__main__":
    main()
