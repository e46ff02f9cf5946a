"""``npmobilenet profile SPEC [--batch N] [--train | --plan]``: time per graph node."""

from __future__ import annotations

from ..model import build_model
from ..profiler import format_profile, profile_model, profile_plan
from ..validate import LIMITS
from .arguments import MAX_BATCH, integer, number


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "profile", help="forward (and backward) time, MACs and GFLOP/s of every graph node",
        description="Build SPEC, run a random batch and time every node on its own (median of "
                    "--repeats after a warm-up).")
    p.add_argument("spec", help="built-in spec name or JSON path")
    p.add_argument("--batch", type=integer(1, MAX_BATCH), default=1)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--train", action="store_true", help="training mode, with backward times")
    mode.add_argument("--plan", action="store_true",
                      help="time the inference plan's compiled steps (what eval-mode model(x) runs)")
    p.add_argument("--depth-multiplier", type=number(0, LIMITS["multiplier"], low_open=True), default=None)
    p.add_argument("--input-size", type=integer(1, LIMITS["image_side"]), default=None)
    p.add_argument("--repeats", type=integer(1, 1000), default=5)
    p.set_defaults(func=run)


def run(args) -> int:
    model = build_model(args.spec, depth_multiplier=args.depth_multiplier, input_size=args.input_size, seed=0)
    if args.plan:
        print(f"{model!r}, batch {args.batch}, inference plan")
        print(format_profile(profile_plan(model, args.batch, args.repeats)))
        return 0
    print(f"{model!r}, batch {args.batch}, {'training' if args.train else 'inference'}")
    print(format_profile(profile_model(model, args.batch, args.train, args.repeats)))
    return 0
