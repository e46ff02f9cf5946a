"""Whole-model inference: the inference plan against the op-by-op path, in the same run.

For v1 and v2 at 224x224, batch 1 and 8, float32: median ms of a forward under ``no_grad`` in
eval mode through the plan (batch norm folded, fused epilogues, reused buffers; what
``model(x)`` runs) and through the ordinary ops (``model.fast_inference = False``), alternating.
The comparison with PyTorch and onnxruntime is ``npmobilenet bench``.
Run by hand: ``python benchmarks/bench_models.py [--repeats 9]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from npmobilenet import build_model, no_grad


def _forward(model, x):
    def run():
        with no_grad():
            model(x)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    print(f"{'model':14s} {'batch':>5s} {'plan ms':>8s} {'ops ms':>8s} {'speed-up':>8s}")
    for arch in ("mobilenet_v1", "mobilenet_v2"):
        model = build_model(arch, seed=0).eval()
        for batch in (1, 8):
            x = np.random.default_rng(0).standard_normal((batch, 224, 224, 3)).astype(np.float32)
            times = {True: [], False: []}
            for fast in (True, False):  # warm-up: compilation, the plan's buffers
                model.fast_inference = fast
                _forward(model, x)()
            for _ in range(args.repeats):
                for fast in (True, False):
                    model.fast_inference = fast
                    start = time.perf_counter()
                    _forward(model, x)()
                    times[fast].append(1e3 * (time.perf_counter() - start))
            plan, ops = statistics.median(times[True]), statistics.median(times[False])
            print(f"{arch:14s} {batch:5d} {plan:8.1f} {ops:8.1f} {ops / plan:7.2f}x")
        model.fast_inference = True


if __name__ == "__main__":
    main()
