import chex
import jax
import jax.numpy as jnp
import pytest
from conftest import IMAGE, TINY

from asose_jax.nn.initializers import init_variables
from asose_jax.spaces import build_supernet, count_params, init_arch_logits, uniform_arch_weights


def test_chain_reference_parameter_count():
    """C=32, D=4 has the original's 278,058 weights and 40 architecture logits."""
    model = build_supernet("chain", init_channels=32, depth=4)
    images = jnp.zeros((1, 32, 32, 3))
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), images, uniform_arch_weights(model), train=False))
    assert count_params(shapes["params"]) == 278_058
    assert count_params(init_arch_logits(model, jax.random.key(0))) == 40
    arch = model.arch
    assert [arch.stage_channels[b.stage] for b in arch.blocks] == [32, 32, 64, 64]
    assert [arch.stride(i) for i in range(4)] == [1, 1, 2, 1]


@pytest.mark.parametrize(
    "space,arch_shapes",
    [("chain", {"blocks": (2, 10)}), ("darts", {"normal": (14, 8), "reduce": (14, 8)}), ("nb201", {"cell": (6, 5)})],
)
def test_space_output_shapes_and_arch_shapes(space, arch_shapes):
    model = build_supernet(space, **TINY[space])
    assert model.arch_shapes() == arch_shapes
    images = jax.ShapeDtypeStruct((3, IMAGE, IMAGE, 3), jnp.float32)
    weights = uniform_arch_weights(model)
    variables = init_variables(model, jax.random.key(1), (IMAGE, IMAGE, 3), uniform_arch_weights(model), train=False)
    assert set(variables) == {"params", "batch_stats"}  # nothing architecture-related is a Flax variable
    for single_path in (False, True):
        logits, updates = jax.eval_shape(
            lambda v, x, sp=single_path: model.apply(
                v, x, weights, train=True, single_path=sp, mutable=["batch_stats"]
            ),
            variables,
            images,
        )
        chex.assert_shape(logits, (3, 10))
        chex.assert_trees_all_equal_structs(updates["batch_stats"], variables["batch_stats"])


def test_default_space_sizes():
    assert build_supernet("darts").reduction_layers() == (2, 5)
    assert build_supernet("darts").init_channels == 16
    assert build_supernet("nb201").cells_per_stage == 5


def test_arch_logits_init_scale():
    model = build_supernet("darts")
    logits = init_arch_logits(model, jax.random.key(0), scale=1e-3)
    chex.assert_shape([logits["normal"], logits["reduce"]], (14, 8))
    std = float(jnp.std(jnp.concatenate([logits["normal"], logits["reduce"]])))
    assert 0.5e-3 < std < 2e-3


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"space": "resnet"}, "unknown search space 'resnet'"),
        ({"space": "chain", "depth": 0}, "depth must be a positive integer"),
        ({"space": "chain", "op_names": ("none", "conv_9x9")}, "unknown op name"),
    ],
)
def test_bad_model_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_supernet(**kwargs)


def test_init_variables_matches_flax_init():
    """Same structure, shapes and initial distribution as ``model.init``."""
    model = build_supernet("chain", init_channels=16, depth=2)
    images = jnp.zeros((1, IMAGE, IMAGE, 3))
    reference = model.init(jax.random.key(0), images, uniform_arch_weights(model), train=False)
    variables = init_variables(model, jax.random.key(1), (IMAGE, IMAGE, 3), uniform_arch_weights(model), train=False)
    chex.assert_trees_all_equal_shapes_and_dtypes(variables, reference)
    kernel = variables["params"]["block_1"]["mixed_op"]["conv_7x1_1x7"]["Conv_0"]["kernel"]  # [1, 7, 32, 32]
    assert abs(float(jnp.std(kernel)) * (7 * 32) ** 0.5 - 1.0) < 0.05  # lecun_normal: std = 1/sqrt(fan_in)
    assert float(jnp.max(jnp.abs(kernel))) <= 2.0 / 0.8796 / (7 * 32) ** 0.5 + 1e-6  # truncated at 2 sigma
    chex.assert_trees_all_equal(variables["batch_stats"], reference["batch_stats"])
    assert not jnp.any(variables["params"]["classifier"]["bias"])


def test_darts_supernet_parameter_count():
    """C=16, L=8 with the 8 DARTS ops: 1,930,618 weights, DARTS' own "param size = 1.930618MB"."""
    model = build_supernet("darts")
    images = jnp.zeros((1, 32, 32, 3))
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), images, uniform_arch_weights(model), train=False))
    assert count_params(shapes["params"]) == 1_930_618
