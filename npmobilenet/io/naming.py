"""Where each framework keeps our nodes' tensors: node name -> the framework's name prefixes.

A node kind says how its parameters are named *relative* to these prefixes and laid out
(:attr:`npmobilenet.kinds.NodeKind.sources`: ``{conv}.weight``, ``{bn}/gamma``, ...); the
functions here say where, in one framework's model of one architecture, a given node lives. A
function returns None for a node the framework does not have.
"""

from __future__ import annotations

import re


def _expanded_conv(node: str) -> tuple[int, str] | None:
    """``expanded_conv_<k>/<part>`` -> (k, part)."""
    match = re.fullmatch(r"expanded_conv(?:_(\d+))?/(expand|depthwise|squeeze_excite|project)", node)
    return None if match is None else (int(match.group(1) or 0), match.group(2))


def torchvision_v2(node: str) -> dict | None:
    if node == "Conv":
        return {"conv": "features.0.0", "bn": "features.0.1"}
    if node == "Conv_1":
        return {"conv": "features.18.0", "bn": "features.18.1"}
    if node == "Logits":
        return {"fc": "classifier.1"}
    found = _expanded_conv(node)
    if found is None:
        return None
    block, part = found[0] + 1, found[1]
    if block == 1:  # no expansion: conv.0 = depthwise ConvBNReLU, conv.1 = project, conv.2 = BN
        conv, bn = {"depthwise": ("conv.0.0", "conv.0.1"), "project": ("conv.1", "conv.2")}[part]
    else:
        conv, bn = {"expand": ("conv.0.0", "conv.0.1"), "depthwise": ("conv.1.0", "conv.1.1"),
                    "project": ("conv.2", "conv.3")}[part]
    return {"conv": f"features.{block}.{conv}", "bn": f"features.{block}.{bn}"}


def keras_v1(node: str) -> dict | None:
    if node == "Conv2d_0":
        return {"conv": "conv1", "bn": "conv1_bn"}
    if node == "Logits":
        return {"fc": "conv_preds"}
    match = re.fullmatch(r"Conv2d_(\d+)_(depthwise|pointwise)", node)
    if match is None:
        return None
    layer = f"conv_{'dw' if match.group(2) == 'depthwise' else 'pw'}_{match.group(1)}"
    return {"conv": layer, "bn": f"{layer}_bn"}


def keras_v2(node: str) -> dict | None:
    if node == "Conv":
        return {"conv": "Conv1", "bn": "bn_Conv1"}
    if node == "Conv_1":
        return {"conv": "Conv_1", "bn": "Conv_1_bn"}
    if node == "Logits":
        return {"fc": "predictions"}
    found = _expanded_conv(node)
    if found is None:
        return None
    block, part = found
    prefix = f"block_{block}_" if block else "expanded_conv_"
    return {"conv": prefix + part, "bn": f"{prefix}{part}_BN"}
