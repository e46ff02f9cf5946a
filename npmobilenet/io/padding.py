"""Padding variants that the graph builder's ``padding`` option does not express.

``"keras_v1"``: Keras's MobileNet (v1) pads every stride-2 depthwise convolution with a fixed
``ZeroPadding2D(((0, 1), (0, 1)))`` and then runs it VALID; elsewhere it uses TF SAME. That equals
SAME on even sizes only, so odd input sizes need the explicit pads to match Keras.
"""

from __future__ import annotations

VARIANTS = (None, "keras_v1")
_KERAS_V1_PADS = [[0, 1], [0, 1]]


def apply_padding_variant(model, variant: str | None) -> None:
    """Rewrite the padding attrs of ``model``'s graph nodes for ``variant`` (None: leave as built)."""
    if variant not in VARIANTS:
        raise ValueError(f"padding_variant: expected one of {VARIANTS}, got {variant!r}")
    if variant == "keras_v1":
        if model.graph.family != "v1":
            raise ValueError(f"padding_variant: 'keras_v1' applies to v1 models, not {model.graph.name}")
        for node in model.graph.nodes:
            if node.op == "depthwise" and node.attrs["stride"] == 2:
                node.attrs["padding"] = _KERAS_V1_PADS
    model.padding_variant = variant
