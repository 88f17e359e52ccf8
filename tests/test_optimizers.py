"""The optimisers follow PyTorch semantics: clip, then coupled L2, then momentum; Adam with coupled L2."""

import chex
import jax.numpy as jnp
import numpy as np

from asose_jax.nn.optimizers import arch_optimizer, descend, weight_optimizer


def test_sgd_clips_then_adds_weight_decay_then_momentum():
    tx = weight_optimizer(grad_clip=1.0, weight_decay=0.1, momentum=0.9)
    params = {"w": jnp.array([1.0, -2.0])}
    grads = {"w": jnp.array([3.0, 4.0])}  # norm 5 -> clipped to norm 1
    state = tx.init(params)
    updates, state = tx.update(grads, state, params)
    first = np.array([0.6, 0.8]) + 0.1 * np.array([1.0, -2.0])  # buf = clip(g) + wd * w
    chex.assert_trees_all_close(updates["w"], first, rtol=1e-6)
    new_params = descend(params, updates, 0.5)
    chex.assert_trees_all_close(new_params["w"], np.array([1.0, -2.0]) - 0.5 * first, rtol=1e-6)
    updates, _ = tx.update({"w": jnp.array([0.3, 0.0])}, state, new_params)  # norm < 1: not clipped
    second = 0.9 * first + np.array([0.3, 0.0]) + 0.1 * np.asarray(new_params["w"])
    chex.assert_trees_all_close(updates["w"], second, rtol=1e-6)


def test_adam_adds_weight_decay_to_the_gradient():
    tx = arch_optimizer(lr=0.01, b1=0.5, b2=0.999, weight_decay=0.1)
    params = {"a": jnp.array([2.0])}
    updates, _ = tx.update({"a": jnp.array([0.0])}, tx.init(params), params)
    # First Adam step moves by -lr * sign(g + wd * p) (bias-corrected m / sqrt(v)).
    chex.assert_trees_all_close(updates["a"], jnp.array([-0.01]), rtol=1e-4)
