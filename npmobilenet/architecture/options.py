"""Build options: a spec's defaults overridden by keyword arguments, each one validated."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from . import fields


@dataclass(frozen=True)
class Options:
    """Everything that, with a spec, determines the graph (and the initialiser of a model)."""

    input_size: tuple[int, int]
    depth_multiplier: float
    min_depth: int
    divisible_by: int | None  # v2 only
    activation: str
    padding: str
    bn_eps: float
    bn_momentum: float
    num_classes: int
    dropout: float
    global_pool: bool
    pool_features: bool  # num_classes 0: end with the global average pool, (N, C)
    hidden_layer: bool  # the head's hidden layer, when the spec has one (v3, v4)
    output_stride: int | None
    final_endpoint: str | None
    init: str

    def to_dict(self) -> dict:
        out = asdict(self)
        out["input_size"] = list(self.input_size)
        return out


def _boolean(path: str, value) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"{path}: expected true or false, got {fields.show(value)}")


def _output_stride(path: str, value) -> None:
    if value not in (8, 16, 32) or isinstance(value, bool):
        raise ValueError(f"{path}: expected one of 8, 16, 32, got {fields.show(value)}")


CHECKS = {
    "input_size": fields.image_size,
    "depth_multiplier": fields.multiplier,
    "min_depth": fields.channels,
    "divisible_by": fields.channels,
    "activation": fields.one_of(*fields.ACTIVATIONS),
    "padding": fields.one_of(*fields.PADDINGS),
    "bn_eps": fields.epsilon,
    "bn_momentum": fields.momentum,
    "num_classes": fields.classes,
    "dropout": fields.rate,
    "global_pool": _boolean,
    "pool_features": _boolean,
    "hidden_layer": _boolean,
    "output_stride": _output_stride,
    "final_endpoint": fields.string,
    "init": fields.one_of(*fields.INITS),
}

# Used when neither the spec nor the caller gives a value.
FALLBACK = {"input_size": 224, "depth_multiplier": 1.0, "min_depth": 8, "activation": "relu6",
            "padding": "SAME", "bn_eps": 1e-3, "bn_momentum": 0.1, "num_classes": 1000,
            "dropout": 0.0, "global_pool": True, "pool_features": False, "hidden_layer": True,
            "output_stride": None, "final_endpoint": None, "init": "torchvision"}


def resolve_options(spec: dict, **overrides) -> Options:
    """Merge ``spec["defaults"]``/``spec["head"]`` with ``overrides`` (None means "not given").

    Raises ValueError naming an unknown option, or an option and its bad value.
    """
    for name in overrides:
        if name not in CHECKS:
            raise ValueError(f"unknown option {name!r} (allowed: {', '.join(sorted(CHECKS))})")
    defaults = spec.get("defaults", {})
    head = spec.get("head", {})
    batch_norm = defaults.get("batch_norm", {})
    from_spec = {key: value for key, value in defaults.items() if key in CHECKS}
    from_spec.update({"bn_eps": batch_norm.get("eps"), "bn_momentum": batch_norm.get("momentum"),
                      "num_classes": head.get("num_classes"), "dropout": head.get("dropout"),
                      "global_pool": None if "pool" not in head else head["pool"] == "global"})
    if spec["family"] != "v1":
        from_spec.setdefault("divisible_by", 8)
    elif overrides.get("divisible_by") is not None:
        raise ValueError(f"divisible_by: does not apply to v1 specs (v1 rounds with "
                         f"max(int(depth * depth_multiplier), min_depth)), got "
                         f"{overrides['divisible_by']}")
    values = {}
    for name, check in CHECKS.items():
        value = overrides.get(name)
        if value is None:
            value = from_spec.get(name)
            if value is None:
                value = FALLBACK.get(name)
        if value is not None:
            check(name, value)
        values[name] = value
    size = values["input_size"]
    values["input_size"] = (size, size) if isinstance(size, int) else tuple(size)
    return Options(**values)
