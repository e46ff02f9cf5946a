"""``cross_entropy`` takes class indices, one-hot rows and soft rows (the registry-walking
gradient and torch tests draw all three); these pin the agreements between the forms, the
dtype, and the one-line refusals of bad probabilities."""

import numpy as np
import pytest

from npmobilenet import Tensor
from npmobilenet import functional as F


def _loss_and_grad(logits, labels, smoothing=0.0):
    x = Tensor(logits.copy(), requires_grad=True)
    loss = F.cross_entropy(x, labels, label_smoothing=smoothing)
    loss.backward()
    return loss, x.grad


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_one_hot_rows_give_what_class_indices_give(smoothing):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, 4)).astype(np.float32)
    indices = rng.integers(0, 4, 6)
    by_index, grad_index = _loss_and_grad(logits, indices, smoothing)
    # float64 one-hot rows (np.eye's dtype) are cast to the logits' float32: nothing promotes.
    by_row, grad_row = _loss_and_grad(logits, np.eye(4)[indices], smoothing)
    assert by_row.dtype == grad_row.dtype == np.float32
    np.testing.assert_allclose(by_row.item(), by_index.item(), rtol=1e-6)
    np.testing.assert_allclose(grad_row, grad_index, rtol=1e-6, atol=1e-7)


def test_soft_labels_are_the_expected_log_likelihood():
    logits = np.array([[2.0, 0.0, -1.0]], np.float64)
    soft = np.array([[0.5, 0.25, 0.25]])
    loss, grad = _loss_and_grad(logits, soft)
    log_probs = logits - np.log(np.exp(logits).sum())
    assert loss.item() == pytest.approx(-(soft * log_probs).sum(), rel=1e-12)
    np.testing.assert_allclose(grad, np.exp(log_probs) - soft, rtol=1e-12)


@pytest.mark.parametrize("labels, message", [
    (np.array([[0.5, 0.6, 0.0]] * 2), r"must sum to 1 in each row; row 0 sums to 1.1"),
    (np.array([[1.5, -0.5, 0.0]] * 2), r"finite numbers in \[0, 1\]"),
    (np.array([[np.nan, 1.0, 0.0]] * 2), r"finite numbers in \[0, 1\]"),
    (np.ones((2, 4)) / 4, r"must have the logits' shape \(2, 3\), got \(2, 4\)"),
    (np.array([0.0, 1.0]), r"integer class indices \(N,\) or class probabilities \(N, K\)"),
])
def test_bad_probabilities_are_refused_naming_the_problem(labels, message):
    with pytest.raises(ValueError, match=message):
        F.cross_entropy(np.zeros((2, 3), np.float32), labels)
