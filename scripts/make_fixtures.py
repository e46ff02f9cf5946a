"""Write the small real-framework weight files that the conversion tests use.

Run by hand in an environment with torch, torchvision, tensorflow-cpu (Keras 3) and h5py:

    python scripts/make_fixtures.py [OUTDIR]        # default tests/fixtures

It writes, with randomised weights and batch-norm statistics (so a wrong eps or a transposed
layout shows in the outputs):

- ``torchvision_mobilenet_v2.pth``: ``torchvision.models.mobilenet_v2(width_mult=0.25,
  num_classes=10)`` state dict, zip format (what ``torch.save`` writes);
- ``keras_mobilenet_v1.h5`` / ``keras_mobilenet_v2.h5`` (alpha 0.25, 10 classes) in the Keras-2
  layout of the ImageNet weight files keras.applications downloads (top-level layer groups,
  ``layer_names`` / ``weight_names`` attributes, ``:0`` suffixes), and ``*_keras3.h5``: the legacy
  full-model file Keras 3 writes with ``model.save("x.h5")``;
- ``expected_<name>.npz``: for each input size, ``x_HxW`` (N, H, W, 3) float32 inputs and
  ``logits_HxW`` (N, classes) float64 logits computed by the source framework in float64 from the
  same (float32) weights. Sizes include odd and non-square ones.

MobileNetV3 / V4 (see docs/notes/v3_v4_reference.md for the architectures, names and padding):

- ``torchvision_mobilenet_v3_large.pth`` (``width_mult=0.25``) and
  ``torchvision_mobilenet_v3_small.pth`` (``width_mult=0.35``), 10 classes, zip format;
- ``keras_mobilenet_v3_{large,small}[_minimalistic].h5`` (Keras-2 layout) and ``*_keras3.h5``
  (``model.save``, legacy HDF5): ``keras.applications.MobileNetV3Large`` (alpha 0.15) /
  ``MobileNetV3Small`` (alpha 0.25), ``input_shape=(None, None, 3)``, ``include_preprocessing=True``
  (so their inputs ``x_HxW`` are in [0, 255]), ``classifier_activation=None``; plus
  ``keras_mobilenet_v3_small.weights.h5`` (``model.save_weights``) and
  ``keras_mobilenet_v3_small.keras`` (``model.save``, zip archive). Their ``logits_HxW`` come from
  the same (None, None, 3) model, whose stride-2 depthwise pads are fixed at
  ``(k//2 - 1, k//2)`` whatever the size; ``logits_static_HxW`` come from the model built at
  exactly (H, W, 3), where ``correct_pad`` sees the size (equal to TF SAME padding everywhere);
  the two agree on even sizes only;
- ``timm_mobilenet_v4_conv_small.pth`` / ``.safetensors``: timm's ``mobilenetv4_conv_small``
  builder with ``channel_multiplier=0.25`` and 10 classes (``timm.create_model`` cannot pass a
  multiplier to this model, so the script calls the builder it wraps, ``_gen_mobilenet_v4``).

Each V3/V4 fixture draws from its own generator (seeded from SEED and a fixed index), so any
subset can be made alone: ``--only NAME ...`` (``--list`` shows the names). The v1/v2 group
``v1v2`` shares one generator in a fixed order and is always made as a whole. With the pinned
versions (torch 2.14.1, torchvision 0.29.1, Keras 3.15.1 / TF 2.21, timm 1.0.31) re-running
reproduces the committed v1/v2 weight files bit for bit; Keras' float64 logits may differ in the
last bits (~1e-15) from run to run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import h5py  # noqa: E402
import numpy as np  # noqa: E402

SIZES = [(64, 64), (67, 45), (45, 70)]
BATCH = 2
NUM_CLASSES = 10
SEED = 1234


def _waves(rng: np.random.Generator, n: int, h: int, w: int) -> np.ndarray:
    """Noise over random plane waves, different per image and channel, so borders matter."""
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    freq = rng.uniform(0.05, 0.5, (n, 1, 1, 3, 2))
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1, 3))
    waves = np.sin(freq[..., 0] * i[None, :, :, None] + freq[..., 1] * j[None, :, :, None] + phase)
    return (0.7 * waves + 0.3 * rng.uniform(-1, 1, (n, h, w, 3))).astype(np.float32)


def _inputs(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {f"{h}x{w}": _waves(rng, BATCH, h, w) for h, w in SIZES}


def _affine(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Random batch-norm gamma and beta."""
    return rng.uniform(0.5, 1.5, n).astype(np.float32), rng.normal(0.0, 0.2, n).astype(np.float32)


def _perturb(rng: np.random.Generator, mean: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, ...]:
    """Moving statistics near the calibrated ones, so activations stay alive but differ from
    batch statistics (a wrong eps or a swapped mean/variance shows)."""
    std = np.sqrt(var)
    mean = mean + rng.normal(0.0, 0.2, mean.shape) * std
    var = var * rng.uniform(0.6, 1.4, var.shape)
    return mean.astype(np.float32), var.astype(np.float32)


def _calibration_batch(rng: np.random.Generator) -> np.ndarray:
    return _waves(rng, 8, 96, 96)


def make_torchvision(out: Path, rng: np.random.Generator) -> None:
    import torch
    import torchvision

    torch.manual_seed(SEED)
    model = torchvision.models.mobilenet_v2(width_mult=0.25, num_classes=NUM_CLASSES)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for module in norms:
            gamma, beta = _affine(rng, module.num_features)
            module.weight.copy_(torch.from_numpy(gamma))
            module.bias.copy_(torch.from_numpy(beta))
            module.momentum = 1.0  # the calibration pass stores the batch statistics
        model.classifier[1].bias.copy_(torch.from_numpy(rng.normal(0, 0.1, NUM_CLASSES)))
        model.train()
        model(torch.from_numpy(_calibration_batch(rng)).permute(0, 3, 1, 2))
        for module in norms:
            mean, var = _perturb(rng, module.running_mean.numpy(), module.running_var.numpy())
            module.running_mean.copy_(torch.from_numpy(mean))
            module.running_var.copy_(torch.from_numpy(var))
            module.momentum = 0.1
            module.num_batches_tracked.fill_(1000)
    model.eval()
    torch.save(model.state_dict(), out / "torchvision_mobilenet_v2.pth")
    reference = model.double()
    arrays = {}
    with torch.no_grad():
        for key, x in _inputs(rng).items():
            logits = reference(torch.from_numpy(x.astype(np.float64)).permute(0, 3, 1, 2))
            arrays[f"x_{key}"] = x
            arrays[f"logits_{key}"] = logits.numpy()
    np.savez(out / "expected_torchvision_mobilenet_v2.npz", **arrays)


def _keras_randomise(model, rng: np.random.Generator) -> None:
    import keras

    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in model.layers:
        if layer in norms:
            gamma, beta = _affine(rng, layer.gamma.shape[0])
            _, _, mean, var = layer.get_weights()
            layer.set_weights([gamma, beta, mean, var])
            layer.momentum = 0.0  # the calibration pass stores the batch statistics
        elif layer.name in ("conv_preds", "predictions") and len(layer.get_weights()) == 2:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.1, bias.shape).astype(np.float32)])
    model(_calibration_batch(rng), training=True)
    for layer in norms:
        gamma, beta, mean, var = layer.get_weights()
        layer.set_weights([gamma, beta, *_perturb(rng, mean, var)])


def _keras2_weight_name(layer, weight) -> str:
    """The name Keras 2 gave a variable: 'layer/var:0' ('depthwise_kernel' for depthwise convs)."""
    import keras

    var = weight.path.split("/")[-1]
    if isinstance(layer, keras.layers.DepthwiseConv2D) and var == "kernel":
        var = "depthwise_kernel"
    return f"{layer.name}/{var}:0"


def save_keras2_weights(model, path: Path) -> None:
    """Mimic Keras 2's ``save_weights_to_hdf5_group`` (the layout of the downloaded weight files)."""
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([layer.name.encode("utf8") for layer in model.layers])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for layer in sorted(model.layers, key=lambda layer: layer.name):
            group = f.create_group(layer.name)
            weights = list(layer.trainable_weights) + list(layer.non_trainable_weights)
            names = [_keras2_weight_name(layer, w).encode("utf8") for w in weights]
            group.attrs["weight_names"] = np.array(names) if names else np.array([])
            for name, weight in zip(names, weights):
                group.create_dataset(name.decode("utf8"), data=np.asarray(weight.numpy()))


def make_keras(out: Path, rng: np.random.Generator, arch: str) -> None:
    import keras

    build = {"mobilenet_v1": keras.applications.MobileNet,
             "mobilenet_v2": keras.applications.MobileNetV2}[arch]
    keras.utils.set_random_seed(SEED)
    options = dict(alpha=0.25, weights=None, classes=NUM_CLASSES, classifier_activation=None)
    model = build(input_shape=(96, 96, 3), **options)
    _keras_randomise(model, rng)
    save_keras2_weights(model, out / f"keras_{arch}.h5")
    model.save(out / f"keras_{arch}_keras3.h5")
    weights = model.get_weights()

    # Keras pads according to the static input size (MobileNetV2's correct_pad), so the reference
    # for each size is the model built at that size, in float64, with the same weights.
    keras.config.set_dtype_policy("float64")
    arrays = {}
    try:
        for key, x in _inputs(rng).items():
            h, w = x.shape[1:3]
            sized = build(input_shape=(h, w, 3), **options)
            sized.set_weights([v.astype(np.float64) for v in weights])
            arrays[f"x_{key}"] = x
            arrays[f"logits_{key}"] = np.asarray(sized(x.astype(np.float64), training=False))
    finally:
        keras.config.set_dtype_policy("float32")
    np.savez(out / f"expected_keras_{arch}.npz", **arrays)


def _torch_randomise(torch, model, rng: np.random.Generator, momentum: float) -> None:
    """Random batch-norm affine parameters, biases and (calibrated, then perturbed) moving
    statistics for a torch model; linear weights ~ N(0, 1/fan_in) so the head is not ~0."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                gamma, beta = _affine(rng, module.num_features)
                module.weight.copy_(torch.from_numpy(gamma))
                module.bias.copy_(torch.from_numpy(beta))
                module.momentum = 1.0  # the calibration pass stores the batch statistics
            elif isinstance(module, torch.nn.Linear):
                fan_in = module.weight.shape[1]
                module.weight.copy_(torch.from_numpy(
                    rng.normal(0, fan_in ** -0.5, tuple(module.weight.shape)).astype(np.float32)))
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)) and module.bias is not None:
                module.bias.copy_(torch.from_numpy(rng.normal(0, 0.1, module.bias.shape[0]).astype(np.float32)))
        model.train()
        model(torch.from_numpy(_calibration_batch(rng)).permute(0, 3, 1, 2))
        for module in norms:
            mean, var = _perturb(rng, module.running_mean.numpy(), module.running_var.numpy())
            module.running_mean.copy_(torch.from_numpy(mean))
            module.running_var.copy_(torch.from_numpy(var))
            module.momentum = momentum
            module.num_batches_tracked.fill_(1000)
    model.eval()


def _torch_expected(torch, model, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Float64 logits of (a float64 copy of) ``model`` for each size; inputs stored NHWC."""
    import copy

    reference = copy.deepcopy(model).double().eval()
    arrays = {}
    with torch.no_grad():
        for key, x in _inputs(rng).items():
            logits = reference(torch.from_numpy(x.astype(np.float64)).permute(0, 3, 1, 2))
            arrays[f"x_{key}"] = x
            arrays[f"logits_{key}"] = logits.numpy()
    return arrays


TORCHVISION_V3_WIDTHS = {"mobilenet_v3_large": 0.25, "mobilenet_v3_small": 0.35}


def make_torchvision_v3(out: Path, rng: np.random.Generator, arch: str) -> None:
    import torch
    import torchvision

    torch.manual_seed(SEED)
    build = getattr(torchvision.models, arch)
    model = build(width_mult=TORCHVISION_V3_WIDTHS[arch], num_classes=NUM_CLASSES)
    _torch_randomise(torch, model, rng, momentum=0.01)  # torchvision's v3 BatchNorm2d momentum
    torch.save(model.state_dict(), out / f"torchvision_{arch}.pth")
    np.savez(out / f"expected_torchvision_{arch}.npz", **_torch_expected(torch, model, rng))


TIMM_V4_MULTIPLIER = 0.25


def make_timm_v4(out: Path, rng: np.random.Generator) -> None:
    import torch
    from safetensors.torch import save_file
    from timm.models.mobilenetv3 import _gen_mobilenet_v4

    torch.manual_seed(SEED)
    # timm.create_model("mobilenetv4_conv_small", ...) hard-codes channel_multiplier=1.0 (passing
    # one raises "got multiple values"); _gen_mobilenet_v4 is the builder that entry point calls.
    model = _gen_mobilenet_v4("mobilenetv4_conv_small", channel_multiplier=TIMM_V4_MULTIPLIER,
                              pretrained=False, num_classes=NUM_CLASSES)
    _torch_randomise(torch, model, rng, momentum=0.1)  # timm's v4 uses nn.BatchNorm2d defaults
    state = model.state_dict()
    torch.save(state, out / "timm_mobilenet_v4_conv_small.pth")
    # One metadata entry only: safetensors writes a multi-key metadata map in hash order, which
    # would make the file differ from run to run.
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "timm_mobilenet_v4_conv_small.safetensors"),
              metadata={"format": "pt"})
    np.savez(out / "expected_timm_mobilenet_v4_conv_small.npz", **_torch_expected(torch, model, rng))


KERAS_V3 = {  # fixture arch -> (builder name, minimalistic, alpha)
    "mobilenet_v3_large": ("MobileNetV3Large", False, 0.15),
    "mobilenet_v3_small": ("MobileNetV3Small", False, 0.25),
    "mobilenet_v3_large_minimalistic": ("MobileNetV3Large", True, 0.15),
    "mobilenet_v3_small_minimalistic": ("MobileNetV3Small", True, 0.25),
}


def _pixels(x: np.ndarray) -> np.ndarray:
    """[-1, 1] -> [0, 255], the range Keras' MobileNetV3 expects with include_preprocessing."""
    return ((x + 1.0) * 127.5).clip(0.0, 255.0).astype(np.float32)


def _keras_v3_randomise(model, rng: np.random.Generator) -> None:
    """As _keras_randomise, for v3: every conv bias (SE convs, conv_2, logits) randomised too,
    calibration on pixels in [0, 255], and the batch-norm momentum restored afterwards."""
    import keras

    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = {layer.name: layer.momentum for layer in norms}
    for layer in model.layers:
        if layer in norms:
            gamma, beta = _affine(rng, layer.gamma.shape[0])
            _, _, mean, var = layer.get_weights()
            layer.set_weights([gamma, beta, mean, var])
            layer.momentum = 0.0  # the calibration pass stores the batch statistics
        elif isinstance(layer, keras.layers.Conv2D) and layer.use_bias:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.1, bias.shape).astype(np.float32)])
    model(_pixels(_calibration_batch(rng)), training=True)
    for layer in norms:
        gamma, beta, mean, var = layer.get_weights()
        layer.set_weights([gamma, beta, *_perturb(rng, mean, var)])
        layer.momentum = momenta[layer.name]


def make_keras_v3(out: Path, rng: np.random.Generator, arch: str) -> None:
    import keras

    name, minimalistic, alpha = KERAS_V3[arch]
    build = getattr(keras.applications, name)
    keras.backend.clear_session()  # fresh automatic layer names ("re_lu", "activation", ...)
    keras.utils.set_random_seed(SEED)
    options = dict(alpha=alpha, minimalistic=minimalistic, weights=None, classes=NUM_CLASSES,
                   classifier_activation=None, include_preprocessing=True)
    model = build(input_shape=(None, None, 3), **options)
    _keras_v3_randomise(model, rng)
    save_keras2_weights(model, out / f"keras_{arch}.h5")
    model.save(out / f"keras_{arch}_keras3.h5")
    if arch == "mobilenet_v3_small":
        model.save_weights(out / f"keras_{arch}.weights.h5")
        model.save(out / f"keras_{arch}.keras")
    weights = model.get_weights()

    # logits_*: the (None, None, 3) model itself (its correct_pad cannot see the size, so every
    # stride-2 depthwise pads (k//2 - 1, k//2)); logits_static_*: the model built at that size.
    keras.config.set_dtype_policy("float64")
    arrays = {}
    try:
        dynamic = build(input_shape=(None, None, 3), **options)
        dynamic.set_weights([v.astype(np.float64) for v in weights])
        for key, x in _inputs(rng).items():
            x = _pixels(x)
            h, w = x.shape[1:3]
            sized = build(input_shape=(h, w, 3), **options)
            sized.set_weights([v.astype(np.float64) for v in weights])
            arrays[f"x_{key}"] = x
            arrays[f"logits_{key}"] = np.asarray(dynamic(x.astype(np.float64), training=False))
            arrays[f"logits_static_{key}"] = np.asarray(sized(x.astype(np.float64), training=False))
    finally:
        keras.config.set_dtype_policy("float32")
    np.savez(out / f"expected_keras_{arch}.npz", **arrays)


def _make_v1v2(out: Path) -> None:
    rng = np.random.default_rng(SEED)  # one stream for the three, in this order
    make_torchvision(out, rng)
    make_keras(out, rng, "mobilenet_v1")
    make_keras(out, rng, "mobilenet_v2")


# name -> (maker, index of its own generator); the indices are fixed so each fixture's random
# numbers do not depend on which others are made.
FIXTURES = {
    "v1v2": (lambda out, rng: _make_v1v2(out), 0),
    "torchvision_mobilenet_v3_large": (lambda out, rng: make_torchvision_v3(out, rng, "mobilenet_v3_large"), 1),
    "torchvision_mobilenet_v3_small": (lambda out, rng: make_torchvision_v3(out, rng, "mobilenet_v3_small"), 2),
    "keras_mobilenet_v3_large": (lambda out, rng: make_keras_v3(out, rng, "mobilenet_v3_large"), 3),
    "keras_mobilenet_v3_small": (lambda out, rng: make_keras_v3(out, rng, "mobilenet_v3_small"), 4),
    "keras_mobilenet_v3_large_minimalistic":
        (lambda out, rng: make_keras_v3(out, rng, "mobilenet_v3_large_minimalistic"), 5),
    "keras_mobilenet_v3_small_minimalistic":
        (lambda out, rng: make_keras_v3(out, rng, "mobilenet_v3_small_minimalistic"), 6),
    "timm_mobilenet_v4_conv_small": (lambda out, rng: make_timm_v4(out, rng), 7),
}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Write the conversion-test fixtures.")
    parser.add_argument("outdir", nargs="?", type=Path,
                        default=Path(__file__).resolve().parents[1] / "tests" / "fixtures")
    parser.add_argument("--only", nargs="+", choices=sorted(FIXTURES), metavar="NAME",
                        help="make only these (default: all)")
    parser.add_argument("--list", action="store_true", help="print the fixture names and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(FIXTURES))
        return 0
    # The torch side first: importing timm after TensorFlow crashes the interpreter (segfault).
    import torch  # noqa: F401
    import torchvision  # noqa: F401
    if args.only is None or "timm_mobilenet_v4_conv_small" in args.only:
        import timm  # noqa: F401

    out = args.outdir
    out.mkdir(parents=True, exist_ok=True)
    for name, (make, index) in FIXTURES.items():
        if args.only is None or name in args.only:
            make(out, np.random.default_rng([SEED, index]))
    for path in sorted(out.iterdir()):
        print(f"{path.stat().st_size:>9}  {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
