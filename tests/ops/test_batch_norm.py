"""Batch-norm details the op tests do not reach: running statistics and float32 accuracy."""

import numpy as np
import torch
import torch.nn.functional as TF

from npmobilenet import Tensor
from npmobilenet import functional as F


def test_running_statistics_update_like_torch():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 3, 5, 6)) * 3 + 2
    gamma, beta = rng.uniform(0.5, 2, 6), rng.standard_normal(6)
    mean, var = rng.standard_normal(6), rng.uniform(0.5, 2, 6)
    torch_mean, torch_var = torch.from_numpy(mean.copy()), torch.from_numpy(var.copy())
    F.batch_norm(x, gamma, beta, mean, var, training=True, momentum=0.1, eps=1e-5)
    TF.batch_norm(torch.from_numpy(x.reshape(-1, 6)), torch_mean, torch_var, torch.from_numpy(gamma),
                  torch.from_numpy(beta), training=True, momentum=0.1, eps=1e-5)
    np.testing.assert_allclose(mean, torch_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(var, torch_var.numpy(), rtol=1e-12)


def test_float32_statistics_stay_accurate_over_many_rows():
    # An offset much larger than the spread is where naive float32 sums lose digits.
    rng = np.random.default_rng(1)
    x64 = rng.standard_normal((8, 64, 64, 4)) * 0.1 + 100.0
    x32 = x64.astype(np.float32)
    ones, zeros = np.ones(4, np.float32), np.zeros(4, np.float32)
    mean, var = zeros.copy(), ones.copy()
    out = F.batch_norm(Tensor(x32), ones, zeros, mean, var, training=True, momentum=1.0)
    assert out.dtype == np.float32 and mean.dtype == np.float32
    x_rounded = x32.astype(np.float64).reshape(-1, 4)
    np.testing.assert_allclose(mean, x_rounded.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(var, x_rounded.var(axis=0, ddof=1), rtol=1e-4)
    expected = (x_rounded - x_rounded.mean(axis=0)) / np.sqrt(x_rounded.var(axis=0) + 1e-3)
    np.testing.assert_allclose(out.data.reshape(-1, 4), expected, atol=5e-4)
