"""``npmobilenet bench``: npmobilenet against PyTorch and onnxruntime (when installed), each in
its own process, on MobileNet workloads."""

from __future__ import annotations

from .arguments import integer


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", help="time v1-v4 inference and training against PyTorch and onnxruntime in the same run",
        description="Times v1, v2, v3-large and v4-conv-small inference (batch 1 and 8) and a "
                    "training step (batch 16) at 224x224, v2 inference over batch sizes and input "
                    "sizes, peak memory and one-image start-up, in npmobilenet and, where "
                    "installed (pip install 'npmobilenet[bench]'), PyTorch and onnxruntime, each in "
                    "its own process, timed in turn; prints ms, images/s, GFLOP/s and ratios.")
    p.add_argument("--repeats", type=integer(1, 1000), default=5,
                   help="timed calls per workload and framework (median)")
    p.add_argument("--no-scaling", action="store_true", help="skip the batch-size and input-size sweep")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory workers")
    p.add_argument("--no-start-up", action="store_true", help="skip the new-process timings")
    p.add_argument("--under-load", action="store_true",
                   help="run a busy process beside the timings, as on a shared machine")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..benchmark import report

    print(report(args.repeats, memory=not args.no_memory, start_up=not args.no_start_up,
                 scaling=not args.no_scaling, under_load=args.under_load), flush=True)
    return 0
