"""Expand a validated spec and its options into a :class:`~.graph.Graph`.

Each body row is expanded by its block type (:data:`.blocks.BLOCKS`), then the head: a pool to
one vector per image, an optional hidden linear layer (v3, v4), dropout, and the ``Logits``
linear layer (when ``num_classes`` > 0). A headless graph (``num_classes`` 0) ends with the last
feature map, or with ``pool_features`` with the global average pool (and the hidden layer, if
any and ``hidden_layer``): the features Keras' ``pooling="avg"`` and timm's ``num_classes=0``
return.
"""

from __future__ import annotations

from .blocks import BLOCKS
from .builder import Builder
from .graph import INPUT_CHANNELS, Graph
from .options import Options

SLIM_POOL_KERNEL = 7
SLIM_POOL_STRIDE = 2  # slim.avg_pool2d's default stride


def expand(spec: dict, options: Options) -> Graph:
    """Expand a validated ``spec`` under resolved ``options`` into a :class:`Graph`.

    Raises ValueError for an unknown ``final_endpoint``, an input smaller than the network's
    total stride, or a slim pool that does not reduce the features to 1x1.
    """
    b = Builder(spec["family"], options)
    for b.row, row in enumerate(spec["body"]):
        BLOCKS[row["type"]].expand(row, b)
        if _reached(b, options.final_endpoint):
            break
    else:
        if options.num_classes > 0 or options.pool_features:
            _head(spec.get("head", {}), b)
    if options.final_endpoint is not None:
        names = [node.name for node in b.nodes]
        if options.final_endpoint not in names:
            raise ValueError(f"final_endpoint: unknown endpoint {options.final_endpoint!r} "
                             f"(one of {', '.join(names)})")
        del b.nodes[names.index(options.final_endpoint) + 1:]
    b.check_input_size()
    return Graph(spec["name"], spec["family"], options, (*options.input_size, INPUT_CHANNELS),
                 (b.current_stride, b.current_stride), b.nodes)


def _reached(b: Builder, endpoint: str | None) -> bool:
    return endpoint is not None and any(node.name == endpoint for node in b.nodes)


def _head(head: dict, b: Builder) -> None:
    o = b.options
    b.check_input_size()
    h, w, c = b.shape
    if o.global_pool or o.num_classes == 0:
        attrs = {"mode": "global"}
    else:
        kernel = [min(h, SLIM_POOL_KERNEL), min(w, SLIM_POOL_KERNEL)]
        out_hw = [(h - kernel[0]) // SLIM_POOL_STRIDE + 1, (w - kernel[1]) // SLIM_POOL_STRIDE + 1]
        if out_hw != [1, 1]:
            raise ValueError(
                f"global_pool: slim's 7x7 average pool leaves a {out_hw[0]}x{out_hw[1]} map on the "
                f"{h}x{w} features of input_size {o.input_size[0]}x{o.input_size[1]}"
                f"{'' if o.output_stride is None else f' with output_stride {o.output_stride}'}; "
                f"use global_pool=True (--global-pool) or num_classes=0")
        attrs = {"mode": "slim", "kernel": kernel, "stride": SLIM_POOL_STRIDE}
    b.node(b.family.pool, "pool", **attrs)
    hidden = head.get("hidden")
    if hidden is not None and o.hidden_layer:
        batch_norm = {"eps": o.bn_eps, "momentum": o.bn_momentum} if hidden.get("batch_norm") else None
        b.node(b.scope("Conv"), "linear", in_features=b.shape[0],
               out_features=b.depth(hidden["depth"], hidden.get("min_multiplier"),
                                    hidden.get("scaled", True)),
               bias=hidden.get("bias", True), batch_norm=batch_norm,
               activation=hidden.get("activation", o.activation))
    if o.num_classes == 0:
        return
    if o.dropout > 0:
        b.node(b.family.dropout, "dropout", rate=o.dropout)
    b.node("Logits", "linear", in_features=b.shape[0], out_features=o.num_classes, bias=True,
           batch_norm=None, activation=None)
