"""Keras HDF5 reading: both layouts, chunked attributes, and clear errors."""

import h5py
import numpy as np
import pytest

from npmobilenet.io.keras_h5 import read_keras_h5

from .conftest import FIXTURES


@pytest.mark.parametrize("arch", ["mobilenet_v1", "mobilenet_v2"])
def test_both_layouts_hold_the_same_weights(arch):
    keras2 = read_keras_h5(FIXTURES / f"keras_{arch}.h5")
    keras3 = read_keras_h5(FIXTURES / f"keras_{arch}_keras3.h5")
    assert sorted(keras2) == sorted(keras3)
    depthwise = "conv_dw_1" if arch == "mobilenet_v1" else "expanded_conv_depthwise"
    assert list(keras2[depthwise]) == ["depthwise_kernel"]  # Keras 2's name
    assert list(keras3[depthwise]) == ["kernel"]  # Keras 3's name
    for layer, variables in keras2.items():
        for name, value in variables.items():
            other = keras3[layer]["kernel" if name == "depthwise_kernel" else name]
            np.testing.assert_array_equal(value, other, err_msg=f"{layer}/{name}")
    with h5py.File(FIXTURES / f"keras_{arch}.h5") as f:  # read straight from the file
        layer = "conv1_bn" if arch == "mobilenet_v1" else "bn_Conv1"
        np.testing.assert_array_equal(keras2[layer]["moving_variance"],
                                      f[layer][f"{layer}/moving_variance:0"][()])


def test_chunked_attributes(tmp_path):
    path = tmp_path / "chunked.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names0"] = np.array([b"a"])
        f.attrs["layer_names1"] = np.array([b"b"])
        f.create_group("a").attrs["weight_names"] = np.array([b"a/kernel:0"])
        f["a"].create_dataset("a/kernel:0", data=np.ones((1, 1, 2, 3), np.float32))
        group = f.create_group("b")
        group.attrs["weight_names0"] = np.array([b"b/gamma:0"])
        group.create_dataset("b/gamma:0", data=np.arange(3, dtype=np.float32))
    layers = read_keras_h5(path)
    assert layers["a"]["kernel"].shape == (1, 1, 2, 3)
    np.testing.assert_array_equal(layers["b"]["gamma"], [0, 1, 2])


def test_not_keras_and_truncated_files(tmp_path):
    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(ValueError, match="layer_names"):
        read_keras_h5(plain)
    cut = tmp_path / "cut.h5"
    cut.write_bytes((FIXTURES / "keras_mobilenet_v1.h5").read_bytes()[:300_000])
    with pytest.raises(ValueError, match="truncated"):
        read_keras_h5(cut)


def test_listed_tensor_missing(tmp_path):
    path = tmp_path / "missing.h5"
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([b"conv1"])
        f.create_group("conv1").attrs["weight_names"] = np.array([b"conv1/kernel:0"])
    with pytest.raises(ValueError, match="conv1/conv1/kernel:0 is listed but missing"):
        read_keras_h5(path)
