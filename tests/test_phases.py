"""What each phase's jitted iteration trains, on which data, and that warm-up trains every candidate op."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import IMAGE, make_batch, search_setup, tiny_config

from asose_jax.search.iterations import make_iterations
from asose_jax.search.run_config import RunConfig
from asose_jax.search.selection import DECIDED_LOGIT
from asose_jax.search.steps import supernet_from_config

N_IMAGES = 16


@functools.cache
def phase_setup(arch_phase: str):
    """Tiny chain, its jitted iterations and device data (16 random 8x8 images)."""
    config = RunConfig(search=tiny_config("chain", sampler="softmax"), batch_size=4, arch_phase=arch_phase)
    _, _, state, _ = search_setup("chain", sampler="softmax")
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (N_IMAGES, IMAGE, IMAGE, 3), dtype=np.uint8))
    labels = jnp.asarray(rng.integers(0, 10, N_IMAGES), jnp.int32)
    return state, make_iterations(supernet_from_config(config.search), config, None), images, labels


def fresh(state):
    """A copy: the iterations donate their input state."""
    return jax.tree.map(jnp.copy, state)


def changed(before, after) -> bool:
    return any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True))


IDX_A, IDX_B = np.array([0, 1, 2, 3], np.int32), np.array([8, 9, 10, 11], np.int32)


@pytest.mark.parametrize("uniform", [True, False], ids=["warmup", "retrain"])
def test_weight_iteration_trains_weights_only(uniform):
    state, iterations, images, labels = phase_setup("alternate")
    new, metrics = iterations.weight_step(fresh(state), images, labels, IDX_A, np.bool_(uniform))
    assert changed(state["params"], new["params"]) and changed(state["batch_stats"], new["batch_stats"])
    assert not changed(state["arch"], new["arch"]) and not changed(state["arch_opt"], new["arch_opt"])
    assert int(new["step"]) == int(state["step"]) + 1 and np.isfinite(metrics["loss"])


@pytest.mark.parametrize("arch_phase", ["alternate", "alpha-only"])
def test_arch_iteration_trains_logits_only(arch_phase):
    state, iterations, images, labels = phase_setup(arch_phase)
    new, metrics = iterations.arch_step(fresh(state), images, labels, IDX_A, IDX_B)
    assert changed(state["arch"], new["arch"]) and np.isfinite(metrics["arch_loss"])
    for frozen in ("params", "batch_stats", "weight_opt"):
        assert not changed(state[frozen], new[frozen]), frozen
    # alpha-only has no weight half, so it advances the global schedule itself.
    assert int(new["step"]) == int(state["step"]) + (arch_phase == "alpha-only")


def test_arch_step_learns_from_the_held_out_batch_only():
    state, iterations, images, labels = phase_setup("alternate")
    base, _ = iterations.arch_step(fresh(state), images, labels, IDX_A, IDX_B)
    other_train, _ = iterations.arch_step(fresh(state), images, labels, IDX_A + 4, IDX_B)
    other_held_out, _ = iterations.arch_step(fresh(state), images, labels, IDX_A, IDX_B + 4)
    assert not changed(base["arch"], other_train["arch"])  # first order: the training batch is not used
    assert changed(base["arch"], other_held_out["arch"])


def _per_op(tree: dict, ops: tuple[str, ...], measure) -> np.ndarray:
    """``measure(leaf)`` summed over each candidate op's parameters (``.../mixed_op/<op>/...``), all edges."""
    totals = np.zeros(len(ops))
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        keys = [str(getattr(p, "key", "")) for p in path]
        if "mixed_op" in keys:
            totals[ops.index(keys[keys.index("mixed_op") + 1])] += float(measure(leaf))
    return totals


def test_warmup_trains_every_op_even_when_the_logits_favour_one():
    """The original warmed up a skip-only path; here warm-up samples from zero logits."""
    config, _, state, steps = search_setup("chain", sampler="gumbel_hard")
    ops = tuple(supernet_from_config(config).op_names)
    skip = list(ops).index("skip_connect")
    state = {**state, "arch": {"blocks": jnp.zeros_like(state["arch"]["blocks"]).at[:, skip].set(20.0)}}
    weight_grad = jax.jit(steps.weight_grad)
    batch = make_batch(0)
    trained = {True: np.zeros(len(ops)), False: np.zeros(len(ops))}
    for step in range(40):
        for uniform in (True, False):
            grads, _ = weight_grad({**state, "step": jnp.int32(step)}, batch, np.bool_(uniform))
            trained[uniform] += _per_op(grads, ops, lambda g: jnp.sum(jnp.abs(g)))
    with_params = np.flatnonzero(_per_op(state["params"], ops, jnp.size))
    assert {ops[k] for k in with_params} >= {"sep_conv_3x3", "sep_conv_5x5", "dil_conv_3x3", "conv_7x1_1x7"}
    assert all(trained[True][with_params] > 0), trained[True]  # warm-up reached every op
    assert all(trained[False][with_params] == 0), trained[False]  # sampling by the logits: skip only


@pytest.mark.parametrize("sampler", ["softmax", "gumbel_hard"])
def test_warmup_never_trains_an_op_that_shrinking_dropped(sampler):
    """Warm-up is uniform over the ops in play: an op whose logit shrinking set to ``DECIDED_LOGIT`` gets no
    gradient (weight 0 in the mixture, never sampled on a path); the other ops with weights get one."""
    config, _, state, steps = search_setup("chain", sampler=sampler)
    ops = tuple(supernet_from_config(config).op_names)
    dropped = list(ops).index("sep_conv_3x3")
    state = {**state, "arch": {"blocks": state["arch"]["blocks"].at[:, dropped].set(DECIDED_LOGIT)}}
    weight_grad = jax.jit(steps.weight_grad)
    trained = np.zeros(len(ops))
    for step in range(20):
        grads, _ = weight_grad({**state, "step": jnp.int32(step)}, make_batch(step), np.bool_(True))
        trained += _per_op(grads, ops, lambda g: jnp.sum(jnp.abs(g)))
    with_params = np.flatnonzero(_per_op(state["params"], ops, jnp.size))
    assert trained[dropped] == 0.0, trained
    assert all(trained[k] > 0 for k in with_params if k != dropped), trained
