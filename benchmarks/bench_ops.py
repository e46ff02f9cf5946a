"""Time conv2d and depthwise_conv2d forward + backward on MobileNet layer shapes.

Prints ms and achieved GFLOP/s (2 x MACs per pass; backward counts both input and weight
gradients) for npmobilenet and, when torch is installed, torch's time for the same work in the
same run, with the ratio. Run by hand: ``python benchmarks/bench_ops.py [--batch 16]``.
"""

from __future__ import annotations

import argparse

import numpy as np
from bench_depthwise import median_ms  # this folder is on sys.path when run as a script

from npmobilenet import Tensor
from npmobilenet import functional as F

# (name, op, H=W, Cin, Cout or multiplier, kernel, stride) from MobileNet v1/v2 at 224.
LAYERS = [
    ("v1 Conv2d_0", "conv2d", 224, 3, 32, 3, 2),
    ("v1 Conv2d_1_pointwise", "conv2d", 112, 32, 64, 1, 1),
    ("v1 Conv2d_7_pointwise", "conv2d", 14, 512, 512, 1, 1),
    ("v2 expand 56x56 24->144", "conv2d", 56, 24, 144, 1, 1),
    ("v2 Conv_1 7x7 320->1280", "conv2d", 7, 320, 1280, 1, 1),
    ("v1 Conv2d_1_depthwise", "depthwise_conv2d", 112, 32, 1, 3, 1),
    ("v1 Conv2d_2_depthwise", "depthwise_conv2d", 112, 64, 1, 3, 2),
    ("v2 56x56x144 s1", "depthwise_conv2d", 56, 144, 1, 3, 1),
    ("v2 14x14x576 s1", "depthwise_conv2d", 14, 576, 1, 3, 1),
]


def ours(op, x, w, stride):
    def run():
        xt, wt = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)
        out = getattr(F, op)(xt, wt, stride=stride, padding="SAME")
        out.backward(np.ones(out.shape, np.float32))
    return run


def theirs(op, x, w, stride):
    import torch
    import torch.nn.functional as TF
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    if op == "conv2d":
        wt, groups = torch.from_numpy(w.transpose(3, 2, 0, 1).copy()), 1
    else:
        kh, kw, c, m = w.shape
        wt, groups = torch.from_numpy(w.transpose(2, 3, 0, 1).reshape(c * m, 1, kh, kw).copy()), c
    pad = (w.shape[0] - 1) // 2

    def run():
        xg, wg = xt.detach().requires_grad_(), wt.detach().requires_grad_()
        out = TF.conv2d(xg, wg, stride=stride, padding=pad, groups=groups)
        out.backward(torch.ones_like(out))
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    try:
        import torch
        torch.set_num_threads(2)
    except ImportError:
        torch = None
    rng = np.random.default_rng(0)
    print(f"batch {args.batch}, float32, forward + backward, median of {args.repeats}")
    print(f"{'layer':28s} {'ms':>9s} {'GFLOP/s':>8s} {'torch ms':>9s} {'ratio':>6s}")
    for name, op, size, cin, cout, k, stride in LAYERS:
        x = rng.standard_normal((args.batch, size, size, cin)).astype(np.float32)
        w = rng.standard_normal((k, k, cin, cout)).astype(np.float32)
        out_size = -(-size // stride)
        channels_out = cin * cout if op == "depthwise_conv2d" else cout
        macs = args.batch * out_size * out_size * channels_out * k * k * (1 if op == "depthwise_conv2d" else cin)
        flops = 2 * macs * 3  # forward, grad-input, grad-weight
        ms = median_ms(ours(op, x, w, stride), args.repeats)
        line = f"{name:28s} {ms:9.2f} {flops / ms / 1e6:8.1f}"
        if torch is not None:
            torch_ms = median_ms(theirs(op, x, w, stride), args.repeats)
            line += f" {torch_ms:9.2f} {ms / torch_ms:6.2f}"
        print(line)


if __name__ == "__main__":
    main()
