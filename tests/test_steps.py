"""The pure steps: disjoint gradients, gradient maths, single-path execution, tracing, determinism."""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import float64, make_batch, search_setup

from asose_jax.nn import mixed_op
from asose_jax.nn.operations import ASO_SE_OPS, NB201_OPS
from asose_jax.search.regularizers import arch_regularizer
from asose_jax.search.sampling import sample_edge_weights
from asose_jax.search.steps import make_search_steps


@functools.cache
def counted_steps():
    """Jitted steps of the tiny chain that fail on a second trace."""
    _, _, state, steps = search_setup("chain", sampler="softmax")
    jitted = [jax.jit(chex.assert_max_traces(fn, n=1)) for fn in (steps.weight_step, steps.arch_step, steps.eval_step)]
    return state, *jitted


def run_alternating(n: int, seed_offset: int = 0):
    """n iterations of (arch step on a held-out batch, weight step on a training batch)."""
    state, weight_step, arch_step, eval_step = counted_steps()
    history = []
    for i in range(n):
        state, arch_metrics = arch_step(state, make_batch(1000 + i + seed_offset))
        state, weight_metrics = weight_step(state, make_batch(i + seed_offset))
        history.append((arch_metrics, weight_metrics, eval_step(state, make_batch(2000 + i))))
    return state, history


def test_ten_steps_with_new_data_trace_each_step_once():
    state, history = run_alternating(10)
    assert int(state["step"]) == 10
    assert len(history) == 10  # assert_max_traces(n=1) raised on any retrace


def test_same_key_gives_bit_identical_results():
    a, history_a = run_alternating(3)
    b, history_b = run_alternating(3)
    chex.assert_trees_all_equal(a, b)
    chex.assert_trees_all_equal(history_a, history_b)
    c, _ = run_alternating(3, seed_offset=7)
    assert not np.array_equal(a["arch"]["blocks"], c["arch"]["blocks"])


def test_gradients_are_disjoint_and_steps_touch_only_their_own_pytrees(batch):
    _, _, state, steps = search_setup("chain", sampler="softmax")
    weight_grads, _ = jax.jit(steps.weight_grad)(state, batch)
    arch_grads, _ = jax.jit(steps.arch_grad)(state, batch)
    chex.assert_trees_all_equal_structs(weight_grads, state["params"])
    chex.assert_trees_all_equal_shapes(weight_grads, state["params"])
    chex.assert_trees_all_equal_structs(arch_grads, state["arch"])
    chex.assert_trees_all_equal_shapes(arch_grads, state["arch"])

    _, weight_step, arch_step, _ = counted_steps()
    after_arch, _ = arch_step(state, batch)
    for key in ("params", "batch_stats", "weight_opt", "step"):
        chex.assert_trees_all_equal(after_arch[key], state[key])  # BN statistics are not written back
    assert not np.array_equal(after_arch["arch"]["blocks"], state["arch"]["blocks"])

    after_weight, _ = weight_step(state, batch)
    for key in ("arch", "arch_opt"):
        chex.assert_trees_all_equal(after_weight[key], state[key])
    changed = jax.tree_util.tree_map(lambda a, b: bool(jnp.any(a != b)), after_weight["params"], state["params"])
    assert all(jax.tree_util.tree_leaves(changed))
    assert int(after_weight["step"]) == 1


def _with_blocks(state, blocks):
    return {**state, "arch": {"blocks": blocks}}


@pytest.mark.parametrize("sampler", ["softmax", "gumbel_soft", "gumbel_hard", "dirichlet"])
def test_every_logit_of_every_edge_gets_a_gradient(sampler, batch):
    _, _, state, steps = search_setup("chain", sampler=sampler)
    if sampler == "gumbel_hard":  # 'none' sampled on every edge: GDAS still passes every logit a gradient
        state = _with_blocks(state, state["arch"]["blocks"].at[:, ASO_SE_OPS.index("none")].set(10.0))
    grads, _ = jax.jit(steps.arch_grad)(state, batch)
    assert jnp.all(grads["blocks"] != 0), grads["blocks"]


def test_gdas_gives_every_logit_of_an_nb201_edge_a_gradient_when_none_is_sampled_there(batch):
    """Each edge in turn samples ``none`` (the others ``skip_connect``, so that the zero node still reaches the
    loss: a ReLU-first convolution passes no gradient at an all-zero input, in GDAS too): all K logits of that
    edge get a gradient, through ``sum_{k != i} h_k``, which is zero in value."""
    _, model, state, steps = search_setup("nb201", sampler="gumbel_hard")
    none, skip = NB201_OPS.index("none"), NB201_OPS.index("skip_connect")
    arch_grad = jax.jit(steps.arch_grad)
    for edge in range(6):
        # A margin of 10 decides each sample: a Gumbel difference above 10 has probability about 5e-5.
        logits = jnp.zeros((6, 5)).at[:, skip].set(10.0).at[edge].set(0.0).at[edge, none].set(10.0)
        grads, _ = arch_grad({**state, "arch": {"cell": logits}}, batch)
        assert jnp.all(grads["cell"][edge] != 0), (edge, grads["cell"][edge])
    # Forward values are those of the chosen ops alone: the added scalars are exactly zero.
    weights = sample_edge_weights(state["arch"], jax.random.key(3), "gumbel_hard", 1.0)
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    apply = jax.jit(lambda w, single: model.apply(variables, batch["image"], w, train=False, single_path=single),
                    static_argnums=1)  # fmt: skip
    chex.assert_trees_all_close(apply(weights, True), apply(weights, False), atol=1e-6)


def test_recalibrated_batch_norm_statistics_are_the_path_s_batch_statistics(batch):
    """With one batch, evaluating the path on re-estimated statistics equals a training-mode pass on that
    batch (batch statistics); with two, the statistics are the mean of the two batches'."""
    _, model, state, steps = search_setup("nb201", sampler="gumbel_hard")
    path = {"cell": jax.nn.one_hot(jnp.array([3, 2, 1, 3, 4, 1]), 5)}
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    recalibrate = jax.jit(steps.recalibrated_batch_stats)
    stats = recalibrate(state, batch["image"][None], path)
    evaluated = model.apply({**variables, "batch_stats": stats}, batch["image"], path, train=False, single_path=True)
    trained, _ = model.apply(variables, batch["image"], path, train=True, single_path=True, mutable=["batch_stats"])
    chex.assert_trees_all_close(evaluated, trained, atol=1e-4, rtol=1e-4)
    other = make_batch(1)["image"]
    both = recalibrate(state, jnp.stack([batch["image"], other]), path)
    alone = recalibrate(state, other[None], path)
    chex.assert_trees_all_close(both, jax.tree.map(lambda a, b: (a + b) / 2, stats, alone), atol=1e-5)


@pytest.mark.parametrize("regularizer, weight", [("beta", 2.0), ("dirichlet_kl", 0.5)])
def test_the_arch_step_adds_the_regularizer_to_the_held_out_loss(regularizer, batch, weight):
    sampler = "dirichlet" if regularizer == "dirichlet_kl" else "softmax"
    _, _, plain_state, plain = search_setup("nb201", sampler=sampler, total_steps=10)
    _, _, state, steps = search_setup("nb201", sampler=sampler, total_steps=10, arch_regularizer=regularizer,
                                      arch_reg_weight=weight)  # fmt: skip
    state = {**state, "step": jnp.int32(5)}
    reg = arch_regularizer(regularizer, weight, 10)
    grads, aux = steps.arch_grad(state, batch)
    plain_grads, plain_aux = plain.arch_grad({**plain_state, "step": jnp.int32(5)}, batch)
    np.testing.assert_allclose(aux["reg"], reg(state["arch"], 5), rtol=1e-6)
    np.testing.assert_allclose(aux["loss"], plain_aux["loss"], rtol=1e-6)
    reg_grad = jax.grad(reg)(state["arch"], 5)
    chex.assert_trees_all_close(grads, jax.tree.map(jnp.add, plain_grads, reg_grad), atol=1e-6)


# DARTS with 4 of its 8 ops (one of each kind: zero, identity, convolution, pooling): every edge of both cell
# types is covered at a fraction of the full op set's compile time.
CELL_OPS = {"darts": ("none", "skip_connect", "sep_conv_3x3", "max_pool_3x3"), "nb201": None}


@pytest.mark.parametrize("space", ["darts", "nb201"])
def test_every_logit_gets_a_gradient_in_cell_spaces(space, batch):
    _, _, state, steps = search_setup(space, sampler="softmax", op_names=CELL_OPS[space])
    grads, _ = jax.jit(steps.arch_grad)(state, batch)
    chex.assert_trees_all_equal_shapes(grads, state["arch"])
    for name, g in grads.items():
        assert jnp.all(g != 0), (name, g)


def _check_directional_derivatives(grad_fn, loss_fn, arch, eps=1e-5, rtol=1e-5):
    """grad . d against central differences (L(a + eps d) - L(a - eps d)) / 2 eps, in float64.

    Random unit directions and two coordinate directions; a small eps keeps the
    differences away from the ReLU / max-pool kinks of the piecewise-smooth loss.
    """
    grads = grad_fn(arch)["blocks"]
    keys = jax.random.split(jax.random.key(42), 3)
    directions = [jax.random.normal(k, grads.shape, jnp.float64) for k in keys]
    directions += [jnp.zeros_like(grads).at[idx].set(1.0) for idx in [(0, 0), (1, 5)]]
    for d in directions:
        d = d / jnp.linalg.norm(d)
        analytic = float(jnp.vdot(grads, d))
        plus, minus = loss_fn({"blocks": arch["blocks"] + eps * d}), loss_fn({"blocks": arch["blocks"] - eps * d})
        numeric = float(plus - minus) / (2 * eps)
        assert abs(analytic - numeric) <= rtol * abs(numeric) + 1e-9, (analytic, numeric)


def _random_arch(state, seed):
    return {"blocks": jax.random.normal(jax.random.key(seed), state["arch"]["blocks"].shape, jnp.float64)}


def test_softmax_logit_gradient_matches_central_differences(batch):
    _, _, state, steps = search_setup("chain", sampler="softmax")
    with jax.enable_x64(True):
        state, batch = float64(state), float64(batch)
        arch_grad = jax.jit(steps.arch_grad)
        _check_directional_derivatives(
            lambda a: arch_grad({**state, "arch": a}, batch)[0],
            lambda a: arch_grad({**state, "arch": a}, batch)[1]["loss"],
            _random_arch(state, 1),
        )


def test_second_order_gradient_matches_differences_of_the_unrolled_loss():
    _, _, state, steps = search_setup("chain", sampler="softmax", arch_order=2, weight_lr=0.5)
    _, _, _, first_order_steps = search_setup("chain", sampler="softmax", weight_lr=0.5)
    with jax.enable_x64(True):
        state = float64(state)
        train_batch, val_batch = float64(make_batch(1)), float64(make_batch(2))
        arch_grad = jax.jit(steps.arch_grad)
        unrolled = jax.jit(steps.unrolled_arch_loss)
        arch = _random_arch(state, 2)
        _check_directional_derivatives(
            lambda a: arch_grad({**state, "arch": a}, val_batch, train_batch)[0],
            lambda a: unrolled(a, state, train_batch, val_batch),
            arch,
        )
        # The second-order term matters: it differs from the first-order gradient.
        first = jax.jit(first_order_steps.arch_grad)({**state, "arch": arch}, val_batch)[0]
        second = arch_grad({**state, "arch": arch}, val_batch, train_batch)[0]
        assert not np.allclose(first["blocks"], second["blocks"], rtol=1e-3)
    with pytest.raises(ValueError, match="needs a training batch"):
        steps.arch_step(state, val_batch)


def test_gumbel_hard_runs_only_the_sampled_op(batch):
    _, model, state, steps = search_setup("chain", sampler="gumbel_hard")
    weights = sample_edge_weights(state["arch"], jax.random.key(7), "gumbel_hard", 1.0)
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}

    def forward(single_path):
        return jax.jit(lambda v, x, w: model.apply(v, x, w, train=False, single_path=single_path))(
            variables, batch["image"], weights
        )

    # Soft path with exactly one-hot weights = the sampled op alone (the others add exact zeros).
    chex.assert_trees_all_close(forward(True), forward(False), atol=1e-6)
    hard_jaxpr = str(jax.make_jaxpr(steps.weight_step)(state, batch))
    assert " cond[" in hard_jaxpr
    _, _, soft_state, soft_steps = search_setup("chain", sampler="softmax")
    assert " cond[" not in str(jax.make_jaxpr(soft_steps.weight_step)(soft_state, batch))


def test_weight_steps_reduce_the_training_loss():
    _, _, state, steps = search_setup("chain", sampler="softmax")
    _, weight_step, _, eval_step = counted_steps()
    batch = make_batch(0)
    losses = []
    for _ in range(8):
        state, metrics = weight_step(state, batch)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0] - 0.1, losses
    assert jnp.isfinite(eval_step(state, batch)["loss"])


def test_eval_step_masks_padding():
    _, _, state, steps = search_setup("chain", sampler="softmax")
    eval_step = jax.jit(steps.eval_step)
    batch = {**make_batch(0), "mask": jnp.array([1.0, 1.0, 0.0, 0.0])}
    masked = eval_step(state, batch)
    assert int(masked["count"]) == 2
    per_example = [eval_step(state, {**batch, "mask": jnp.eye(4)[i]})["loss"] for i in range(2)]
    chex.assert_trees_all_close(masked["loss"], (per_example[0] + per_example[1]) / 2, atol=1e-6)
    unmasked = eval_step(state, {**batch, "mask": jnp.ones(4)})
    assert not np.isclose(float(unmasked["loss"]), float(masked["loss"]))


def test_softmax_sampler_mixes_at_temperature_one(batch):
    _, _, state, steps = search_setup("chain", sampler="softmax")
    _, metrics = jax.jit(steps.weight_step)(state, batch)
    assert float(metrics["temperature"]) == 1.0


def test_gumbel_runs_depend_on_the_seed_and_repeat_with_it(batch):
    def run(seed):
        _, _, state, steps = search_setup("chain", sampler="gumbel_hard", seed=seed)
        arch_step = jax.jit(steps.arch_step)
        for _ in range(2):
            state, _ = arch_step(state, batch)
        return state["arch"]["blocks"]

    first, again, other = run(0), run(0), run(1)
    chex.assert_trees_all_equal(first, again)
    assert not np.array_equal(first, other)


def test_the_masked_single_path_equals_the_switch(monkeypatch):
    """Several CPU devices run a single path as a masked sum over every op instead of ``lax.switch`` (whose
    collectives can deadlock there): the same loss, weights, BatchNorm statistics and logit gradients."""
    ops = ("skip_connect", "sep_conv_3x3", "max_pool_3x3")
    _, _, state, switch = search_setup("chain", sampler="gumbel_hard", op_names=ops)
    batch = make_batch(0, 8)
    expected = jax.jit(switch.weight_step)(state, batch), jax.jit(switch.arch_grad)(state, batch)
    calls = []
    monkeypatch.setattr(mixed_op, "branches_may_deadlock", lambda: calls.append(1) or True)
    config, model, _, _ = search_setup("chain", sampler="gumbel_hard", op_names=ops)
    masked = make_search_steps(model, config)
    actual = jax.jit(masked.weight_step)(state, batch), jax.jit(masked.arch_grad)(state, batch)
    assert calls  # the masked path was traced
    chex.assert_trees_all_close(actual, expected, atol=1e-6)
