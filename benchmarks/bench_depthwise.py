"""Time the Numba depthwise kernels (forward, grad-input, grad-weight) on MobileNet layer shapes.

For every distinct 3x3 depthwise layer of MobileNet v1 and v2 at 224x224 (TF SAME padding),
prints the median time in ms over ``--repeats`` runs after a warm-up and the achieved GFLOP/s
(2 x MACs), and, when torch is importable, torch's grouped convolution (NCHW, groups=C) for the
same pass in the same run with the ratio ours / torch. Totals at the end weight each layer by how
often the network uses it. Run by hand: ``python benchmarks/bench_depthwise.py [--batch 1 16]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numba
import numpy as np

from npmobilenet.kernels import depthwise as dw
from npmobilenet.geometry import resolve_padding

# (model, H=W, C, stride, times the network uses it) for the 3x3 depthwise layers at 224x224.
LAYERS = [
    ("v2", 112, 32, 1, 1), ("v2", 112, 96, 2, 1), ("v2", 56, 144, 1, 1), ("v2", 56, 144, 2, 1),
    ("v2", 28, 192, 1, 2), ("v2", 28, 192, 2, 1), ("v2", 14, 384, 1, 4), ("v2", 14, 576, 1, 2),
    ("v2", 14, 576, 2, 1), ("v2", 7, 960, 1, 3),
    ("v1", 112, 32, 1, 1), ("v1", 112, 64, 2, 1), ("v1", 56, 128, 1, 1), ("v1", 56, 128, 2, 1),
    ("v1", 28, 256, 1, 1), ("v1", 28, 256, 2, 1), ("v1", 14, 512, 1, 5), ("v1", 14, 512, 2, 1),
    ("v1", 7, 1024, 1, 1),
]
PASSES = ("forward", "grad_input", "grad_weight")


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up (and compilation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def ours(x, w, g, stride, pads):
    """The three passes of npmobilenet's kernels as zero-argument callables."""
    s, d = (stride, stride), (1, 1)
    return {
        "forward": lambda: dw.depthwise_forward(x, w, s, d, pads),
        "grad_input": lambda: dw.depthwise_grad_input(g, w, x.shape[1:3], s, d, pads),
        "grad_weight": lambda: dw.depthwise_grad_weight(x, g, w.shape[:2], s, d, pads),
    }


def theirs(x, w, g, stride, pads):
    """The same passes in torch (NCHW, grouped conv, TF SAME pads applied with F.pad)."""
    import torch
    import torch.nn.functional as F
    top, bottom, left, right = pads
    c = x.shape[3]
    xt = F.pad(torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), (left, right, top, bottom))
    wt = torch.from_numpy(w.transpose(2, 3, 0, 1).reshape(c, 1, *w.shape[:2]).copy())
    gt = torch.from_numpy(g.transpose(0, 3, 1, 2).copy())

    def backward(mask):
        return lambda: torch.ops.aten.convolution_backward(
            gt, xt, wt, None, [stride] * 2, [0, 0], [1, 1], False, [0, 0], c, mask)
    return {
        "forward": lambda: F.conv2d(xt, wt, stride=stride, groups=c),
        "grad_input": backward([True, False, False]),
        "grad_weight": backward([False, True, False]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    try:
        import torch
        torch.set_num_threads(args.threads)
    except ImportError:
        torch = None
    rng = np.random.default_rng(0)
    print(f"threads {args.threads}, float32, median of {args.repeats}; GFLOP/s = 2 x MACs / time")
    print(f"{'layer':<22}{'pass':<13}{'ms':>9}{'GFLOP/s':>9}" + (f"{'torch ms':>10}{'ratio':>7}" if torch else ""))
    for batch in args.batch:
        totals = {}
        for model, size, c, stride, count in LAYERS:
            x = rng.standard_normal((batch, size, size, c), dtype=np.float32)
            w = rng.standard_normal((3, 3, c, 1), dtype=np.float32)
            pads = resolve_padding("SAME", (size, size), (3, 3), (stride, stride), (1, 1))
            out_size = -(-size // stride)
            g = rng.standard_normal((batch, out_size, out_size, c), dtype=np.float32)
            macs = batch * out_size * out_size * c * 9
            mine = ours(x, w, g, stride, pads)
            other = theirs(x, w, g, stride, pads) if torch else {}
            name = f"{model} b{batch} {size}x{size}x{c} s{stride}"
            for pass_name in PASSES:
                ms = median_ms(mine[pass_name], args.repeats)
                line = f"{name:<22}{pass_name:<13}{ms:9.3f}{2 * macs / ms / 1e6:9.1f}"
                key = (model, pass_name)
                mine_total, their_total = totals.get(key, (0.0, 0.0))
                their_ms = median_ms(other[pass_name], args.repeats) if torch else 0.0
                if torch:
                    line += f"{their_ms:10.3f}{ms / their_ms:7.2f}"
                totals[key] = (mine_total + count * ms, their_total + count * their_ms)
                print(line, flush=True)
        for (model, pass_name), (mine_total, their_total) in sorted(totals.items()):
            line = f"TOTAL {model} b{batch} all depthwise {pass_name:<12}{mine_total:9.3f} ms"
            if torch:
                line += f"   torch {their_total:9.3f} ms   ratio {mine_total / their_total:.2f}"
            print(line)


if __name__ == "__main__":
    main()
