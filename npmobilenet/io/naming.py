"""Where each framework keeps our nodes' tensors: node name -> the framework's name prefixes.

A node kind says how its parameters are named *relative* to these prefixes and laid out
(:attr:`npmobilenet.kinds.NodeKind.sources`: ``{conv}.weight``, ``{bn}/gamma``, ...); the
functions here say where, in one framework's model of one architecture, each node of a graph
lives: ``naming(graph) -> {node name: prefixes}``. A node left out has no counterpart.
"""

from __future__ import annotations

import re


def _expanded_conv(node: str) -> tuple[int, str] | None:
    """``expanded_conv_<k>/<part>`` -> (k, part)."""
    match = re.fullmatch(r"expanded_conv(?:_(\d+))?/(expand|depthwise|squeeze_excite|project)", node)
    return None if match is None else (int(match.group(1) or 0), match.group(2))


def by_node(prefixes_of):
    """A graph naming from a function of one node name (None: no counterpart)."""
    def naming(graph) -> dict[str, dict]:
        found = {node.name: prefixes_of(node.name) for node in graph.nodes}
        return {name: prefixes for name, prefixes in found.items() if prefixes is not None}
    return naming


def _torchvision_v2(node: str) -> dict | None:
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


def _keras_v1(node: str) -> dict | None:
    if node == "Conv2d_0":
        return {"conv": "conv1", "bn": "conv1_bn"}
    if node == "Logits":
        return {"fc": "conv_preds"}
    match = re.fullmatch(r"Conv2d_(\d+)_(depthwise|pointwise)", node)
    if match is None:
        return None
    layer = f"conv_{'dw' if match.group(2) == 'depthwise' else 'pw'}_{match.group(1)}"
    return {"conv": layer, "bn": f"{layer}_bn"}


def _keras_v2(node: str) -> dict | None:
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


def head_layers(graph) -> list[str]:
    """The nodes with parameters after the pool: the hidden layer, if any, then ``Logits``."""
    pools = [i for i, node in enumerate(graph.nodes) if node.name.startswith("AvgPool")]
    after = graph.nodes[pools[-1] + 1:] if pools else []
    return [node.name for node in after if node.layout.params]


def keras_v3(graph) -> dict[str, dict]:
    """Keras names MobileNetV3's layers as ours, lower-cased, ``/`` -> ``_``: ``conv``,
    ``expanded_conv_3_expand`` (+ ``_bn``), ``..._squeeze_excite_conv`` (+ ``_1``), ``conv_2``,
    ``logits``."""
    names, head = {}, head_layers(graph)
    for node in graph.nodes:
        if not node.layout.params:
            continue
        base = node.name.lower().replace("/", "_")
        if node.name in head:
            names[node.name] = {"fc": base}
        elif node.name.endswith("/squeeze_excite"):
            names[node.name] = {"reduce": f"{base}_conv", "expand": f"{base}_conv_1"}
        else:
            names[node.name] = {"conv": base, "bn": f"{base}_bn"}
    return names


def _block_scope(name: str) -> str:
    return name.split("/")[0]


def _head_names(graph, hidden: str, logits: str) -> dict[str, str]:
    """The head's layers by role: ``Logits`` (when the graph has a classifier) and the hidden
    layer before it (when it has one)."""
    return {name: logits if name == "Logits" else hidden for name in head_layers(graph)}


def torchvision_v3(graph) -> dict[str, dict]:
    """``features.0`` the stem, ``features.<i>.block.<j>`` the i-th bottleneck's j-th layer
    (expand, depthwise, squeeze-excite (fc1, fc2), project), then the last conv;
    ``classifier.0`` the hidden layer, ``classifier.3`` the logits."""
    names, blocks, layer = {}, [], 0
    head = _head_names(graph, "classifier.0", "classifier.3")
    for node in graph.nodes:
        scope = _block_scope(node.name)
        if not node.layout.params:
            continue
        if node.name in head:
            names[node.name] = {"fc": head[node.name]}
        elif node.name == "Conv":
            names[node.name] = {"conv": "features.0.0", "bn": "features.0.1"}
        elif scope.startswith("expanded_conv"):
            if not blocks or blocks[-1] != scope:
                blocks.append(scope)
                layer = 0
            prefix = f"features.{len(blocks)}.block.{layer}"
            layer += 1
            names[node.name] = ({"reduce": f"{prefix}.fc1", "expand": f"{prefix}.fc2"}
                                if node.name.endswith("/squeeze_excite") else
                                {"conv": f"{prefix}.0", "bn": f"{prefix}.1"})
        elif node.name == "Conv_1":
            last = len(blocks) + 1
            names[node.name] = {"conv": f"features.{last}.0", "bn": f"features.{last}.1"}
    return names


TIMM_UIB_PARTS = {"dw_start": "dw_start", "expand": "pw_exp", "dw_mid": "dw_mid",
                  "project": "pw_proj"}


def timm_v4(stages: tuple[int, ...]):
    """timm's MobileNetV4: ``conv_stem``/``bn1``, then ``blocks.<stage>.<index>`` (``conv``/``bn1``
    for a conv block; ``dw_start``, ``pw_exp``, ``dw_mid``, ``pw_proj`` (``.conv``/``.bn``) for a
    UIB), ``conv_head``/``norm_head`` and ``classifier``. ``stages`` gives the blocks per stage."""
    places = [(stage, index) for stage, count in enumerate(stages) for index in range(count)]

    def naming(graph) -> dict[str, dict]:
        names, scopes = {}, []
        head = head_layers(graph)
        for name in head:
            names[name] = {"fc": "classifier"} if name == "Logits" else {"fc": "conv_head", "bn": "norm_head"}
        for node in graph.nodes:
            scope, _, part = node.name.partition("/")
            if node.name == "Conv":
                names[node.name] = {"conv": "conv_stem", "bn": "bn1"}
            elif node.layout.params and node.name not in head:
                if not scopes or scopes[-1] != scope:
                    scopes.append(scope)
                if len(scopes) > len(places):
                    continue  # more blocks than the framework's model has: reported as missing
                stage, index = places[len(scopes) - 1]
                block = f"blocks.{stage}.{index}"
                names[node.name] = ({"conv": f"{block}.conv", "bn": f"{block}.bn1"} if not part else
                                    {"conv": f"{block}.{TIMM_UIB_PARTS[part]}.conv",
                                     "bn": f"{block}.{TIMM_UIB_PARTS[part]}.bn"})
        return names
    return naming


torchvision_v2 = by_node(_torchvision_v2)
keras_v1 = by_node(_keras_v1)
keras_v2 = by_node(_keras_v2)


def slim(scope: str):
    """TF-slim's own names, which ours copy (``Conv2d_3_pointwise``, ``expanded_conv_4/expand``,
    ...) under the model's variable scope (``MobilenetV1``, ``MobilenetV2``); the classifier is
    ``Logits/Conv2d_1c_1x1``."""
    return by_node(lambda node: {"scope": f"{scope}/Logits/Conv2d_1c_1x1" if node == "Logits"
                                 else f"{scope}/{node}"})
