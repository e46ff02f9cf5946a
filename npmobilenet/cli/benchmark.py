"""``npmobilenet bench``: npmobilenet against PyTorch (when installed) on MobileNet workloads."""

from __future__ import annotations

from .arguments import integer


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", help="time v1-v4 inference and training steps against PyTorch in the same run",
        description="Times v1, v2, v3-large and v4-conv-small inference (batch 1 and 8) and a "
                    "training step (batch 16) at "
                    "224x224 in npmobilenet and, if installed, PyTorch, alternating them; prints "
                    "ms, images/s, GFLOP/s, ratios, peak RSS and start-up times.")
    p.add_argument("--repeats", type=integer(1, 1000), default=5,
                   help="timed runs per workload (median)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-RSS subprocesses")
    p.add_argument("--no-start-up", action="store_true", help="skip the start-up subprocesses")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..benchmark import report

    print(report(args.repeats, memory=not args.no_memory, start_up=not args.no_start_up), flush=True)
    return 0
