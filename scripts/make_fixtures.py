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


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "tests" / "fixtures")
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    make_torchvision(out, rng)
    make_keras(out, rng, "mobilenet_v1")
    make_keras(out, rng, "mobilenet_v2")
    for path in sorted(out.iterdir()):
        print(f"{path.stat().st_size:>9}  {path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
