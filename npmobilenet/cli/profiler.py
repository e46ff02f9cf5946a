"""``npmobilenet profile SPEC [--batch N] [--train]``: time per graph node."""

from __future__ import annotations

from ..model import build_model
from ..profiler import format_profile, profile_model


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "profile", help="forward (and backward) time, MACs and GFLOP/s of every graph node",
        description="Build SPEC, run a random batch and time every node on its own (median of "
                    "--repeats after a warm-up).")
    p.add_argument("spec", help="built-in spec name or JSON path")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--train", action="store_true", help="training mode, with backward times")
    p.add_argument("--depth-multiplier", type=float, default=None)
    p.add_argument("--input-size", type=int, default=None)
    p.add_argument("--repeats", type=int, default=5)
    p.set_defaults(func=run)


def run(args) -> int:
    if args.batch < 1 or args.repeats < 1:
        raise ValueError("--batch and --repeats must be positive integers")
    model = build_model(args.spec, depth_multiplier=args.depth_multiplier, input_size=args.input_size, seed=0)
    print(f"{model!r}, batch {args.batch}, {'training' if args.train else 'inference'}")
    print(format_profile(profile_model(model, args.batch, args.train, args.repeats)))
    return 0
