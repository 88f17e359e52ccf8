import chex
import jax
import jax.numpy as jnp
import pytest

from asose_jax.nn.mixed_op import MixedOp
from asose_jax.nn.operations import ASO_SE_OPS, DARTS_OPS, NB201_OPS, OP_SETS, OPS, check_op_names, make_op

ALL_OPS = sorted(OPS)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("name", ALL_OPS)
def test_op_output_shape(name, stride):
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 4))
    op = make_op(name, 4, stride)
    variables = op.init(jax.random.key(1), x, train=False)
    y, _ = op.apply(variables, x, train=True, mutable=["batch_stats"])
    chex.assert_shape(y, (2, 8 // stride, 8 // stride, 4))
    chex.assert_tree_all_finite(y)
    if name == "none":
        assert not jnp.any(y)
    # Inside mixed ops BatchNorm has no affine parameters.
    for path, _ in jax.tree_util.tree_leaves_with_path(variables.get("params", {})):
        assert "BatchNorm" not in jax.tree_util.keystr(path)


def test_op_sets_are_in_the_documented_order():
    assert ASO_SE_OPS == (
        "none", "avg_pool_3x3", "max_pool_3x3", "skip_connect", "sep_conv_3x3",
        "sep_conv_5x5", "sep_conv_7x7", "dil_conv_3x3", "dil_conv_5x5", "conv_7x1_1x7",
    )  # fmt: skip
    assert DARTS_OPS[:4] == ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect")
    assert NB201_OPS == ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    assert set(OP_SETS) == {"aso_se", "darts", "nb201"}


def test_unknown_op_name_lists_the_valid_names():
    with pytest.raises(ValueError, match="sep_conv_9x9.*valid names are: none, avg_pool_3x3"):
        check_op_names(["skip_connect", "sep_conv_9x9"])
    with pytest.raises(ValueError, match="unknown op"):
        MixedOp(4, 1, ("none", "bogus")).init(jax.random.key(0), jnp.ones((1, 4, 4, 4)), jnp.ones(2), False)


def test_avg_pool_excludes_padding():
    x = jnp.ones((1, 4, 4, 1))
    op = make_op("avg_pool_3x3", 1, 1)
    variables = op.init(jax.random.key(0), x, train=False)
    y = op.apply(variables, x, train=False)  # running stats: mean 0, var 1 -> BN is ~identity
    chex.assert_trees_all_close(y, x / jnp.sqrt(1 + 1e-5), atol=1e-6)


def test_factorized_reduce_reads_both_pixel_phases():
    op = make_op("skip_connect", 4, 2)
    x = jnp.zeros((1, 4, 4, 4)).at[0, 1, 1, :].set(1.0)  # only the odd phase is non-zero
    variables = op.init(jax.random.key(0), x, train=False)
    y = op.apply(variables, x, train=False)
    assert not jnp.any(y[..., :2])  # the unshifted conv samples even pixels only: all zero
    assert jnp.all(y[0, 0, 0, 2:] != 0)  # the shifted conv brings pixel (1, 1) to output (0, 0)
