"""benchmarks/arch_gradient_noise.py: the per-edge signal-to-noise maths, and sampling noise only where sampled."""

import pathlib
import sys

import numpy as np
import pytest
from conftest import make_batch, search_setup

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from benchmarks.arch_gradient_noise import edge_rows, gradient_draws, has_weights  # noqa: E402


def test_edge_rows_against_a_hand_computation():
    # 3 draws, 1 edge, 3 ops: mean gradient (-2, 1, -1): op 0 favoured (most negative), op 2 the runner-up.
    g = np.array([[[-3.0, 1.0, -1.0]], [[-2.0, 0.0, -2.0]], [[-1.0, 2.0, 0.0]]])
    (row,) = edge_rows({"cell": g}, {"cell": np.array([[0.0, 0.0, 5.0]])}, ("a", "b", "c"))
    d = g[:, 0, 2] - g[:, 0, 0]  # (2, 0, 1): mean 1, sample std 1
    assert (row["favoured"], row["runner_up"], row["argmax"]) == ("a", "c", "c")
    assert row["snr"] == pytest.approx(d.mean() / d.std(ddof=1)) == pytest.approx(1.0)
    assert row["steps_needed"] == pytest.approx(1.0)


def test_only_sampled_gradients_vary_over_draws_of_one_batch():
    config, model, state, steps = search_setup("nb201", sampler="softmax", arch_regularizer="none")
    batches = [make_batch(0)] * 3
    softmax = gradient_draws(config, model, state, batches, "softmax", 1.0)
    hard = gradient_draws(config, model, state, batches, "gumbel_hard", 1.0)
    expected = np.asarray(steps.arch_grad(state, batches[0])[0]["cell"])
    for draw in softmax["cell"]:
        np.testing.assert_allclose(draw, expected, rtol=1e-5, atol=1e-7)
    assert softmax["cell"].shape == hard["cell"].shape == (3, *expected.shape)
    assert not np.allclose(hard["cell"][0], hard["cell"][1])  # a new Gumbel draw per batch


def test_an_op_has_weights_when_its_stride_one_module_has_parameters():
    assert [has_weights(op) for op in ("nor_conv_1x1", "sep_conv_3x3", "conv_7x1_1x7")] == [True] * 3
    assert [has_weights(op) for op in ("none", "skip_connect", "avg_pool_3x3", "max_pool_3x3")] == [False] * 4
