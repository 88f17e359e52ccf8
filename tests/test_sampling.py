import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from asose_jax.nn.schedules import learning_rate_schedule, temperature_schedule
from asose_jax.search.sampling import (
    argmax_edge_weights,
    decisiveness,
    dirichlet_concentration,
    edge_entropy,
    expected_edge_weights,
    sample_edge_weights,
)

LOGITS = {"normal": jnp.array([[0.5, -1.0, 2.0, 0.0]] * 3), "reduce": jnp.zeros((2, 4))}


@pytest.mark.parametrize("sampler", ["softmax", "gumbel_soft", "gumbel_hard", "dirichlet"])
def test_weights_are_distributions_of_the_logits_shape(sampler):
    weights = sample_edge_weights(LOGITS, jax.random.key(0), sampler, 0.7)
    chex.assert_trees_all_equal_shapes(weights, LOGITS)
    for w in weights.values():
        chex.assert_trees_all_close(jnp.sum(w, -1), jnp.ones(w.shape[0]), atol=1e-6)
        assert jnp.all(w >= 0)
    if sampler == "gumbel_hard":  # exactly one-hot in value
        for w in weights.values():
            assert set(np.unique(np.asarray(w)).tolist()) <= {0.0, 1.0}


def test_softmax_ignores_the_key_and_uses_the_temperature():
    weights = sample_edge_weights(LOGITS, None, "softmax", 2.0)
    chex.assert_trees_all_close(weights["normal"], jax.nn.softmax(LOGITS["normal"] / 2.0, -1))


def test_gumbel_samples_differ_per_edge_and_repeat_per_key():
    a = sample_edge_weights(LOGITS, jax.random.key(3), "gumbel_soft", 1.0)
    b = sample_edge_weights(LOGITS, jax.random.key(3), "gumbel_soft", 1.0)
    chex.assert_trees_all_equal(a, b)
    assert not np.allclose(a["normal"][0], a["normal"][1])  # one sample per edge, not per array


def test_gumbel_hard_frequencies_follow_the_softmax():
    logits = {"e": jnp.log(jnp.array([[0.1, 0.2, 0.7]]))}
    keys = jax.random.split(jax.random.key(0), 4000)
    hits = jax.vmap(lambda k: sample_edge_weights(logits, k, "gumbel_hard", 1.0)["e"][0])(keys)
    chex.assert_trees_all_close(jnp.mean(hits, 0), jnp.array([0.1, 0.2, 0.7]), atol=0.03)


def test_straight_through_gradient_is_the_soft_gradient():
    logits = {"e": jnp.array([[0.3, -0.2, 0.1]])}
    probe = jnp.array([1.0, 2.0, 3.0])
    key = jax.random.key(5)

    def through(sampler):
        return jax.grad(lambda a: jnp.sum(sample_edge_weights(a, key, sampler, 0.5)["e"][0] * probe))(logits)

    chex.assert_trees_all_close(through("gumbel_hard"), through("gumbel_soft"), atol=1e-6)


def test_argmax_weights_and_entropy():
    one_hot = argmax_edge_weights(LOGITS)
    chex.assert_trees_all_equal(one_hot["normal"][0], jnp.array([0.0, 0.0, 1.0, 0.0]))
    entropy = edge_entropy(LOGITS)
    chex.assert_trees_all_close(entropy["reduce"], jnp.full(2, np.log(4)), atol=1e-6)


def test_decisiveness_is_the_margin_between_the_two_strongest_weights():
    # By hand: softmax(log [6, 3, 1]) = [0.6, 0.3, 0.1], margin 0.3; softmax(log [1, 1, 2]) = [0.25, 0.25, 0.5],
    # margin 0.25; equal logits tie, margin 0.
    logits = {"normal": jnp.log(jnp.array([[6.0, 3.0, 1.0], [1.0, 1.0, 2.0]])), "reduce": jnp.zeros((1, 3))}
    weights = {n: jax.nn.softmax(a, -1) for n, a in logits.items()}
    got = decisiveness(weights)
    assert set(got) == {"margins", "min_margin"} and set(got["margins"]) == {"normal", "reduce"}
    chex.assert_trees_all_close(got["margins"]["normal"], [0.6 - 0.3, 0.5 - 0.25], atol=1e-6)
    chex.assert_trees_all_close(got["margins"]["reduce"], [0.0], atol=1e-6)
    assert got["min_margin"] == pytest.approx(0.0, abs=1e-6)
    as_recorded = decisiveness({"e": [[0.1, 0.7, 0.2]], "one_op": [[1.0]]})  # JSON lists; a lone op keeps its weight
    assert as_recorded == {"margins": {"e": [pytest.approx(0.5)], "one_op": [1.0]}, "min_margin": pytest.approx(0.5)}
    json.dumps(got)  # JSON-ready: plain floats


@pytest.mark.parametrize("kind", ["exponential", "linear"])
def test_temperature_schedule_ends(kind):
    tau = temperature_schedule(kind, 5.0, 0.1, 100)
    chex.assert_trees_all_close(
        [tau(0), tau(100), tau(1000)], [jnp.float32(5.0), jnp.float32(0.1), jnp.float32(0.1)], rtol=1e-5
    )
    assert 0.1 < float(tau(50)) < 5.0
    values = jax.vmap(tau)(jnp.arange(101))
    assert jnp.all(jnp.diff(values) < 0)
    if kind == "exponential":
        chex.assert_trees_all_close(tau(50), jnp.float32(np.sqrt(5.0 * 0.1)), rtol=1e-5)


def test_schedules_reject_bad_values():
    with pytest.raises(ValueError, match="tau_min <= tau_max"):
        temperature_schedule("linear", 0.1, 5.0, 10)
    with pytest.raises(ValueError, match="unknown temperature schedule"):
        temperature_schedule("cosine", 5.0, 0.1, 10)
    with pytest.raises(ValueError, match="lr_min"):
        learning_rate_schedule(0.025, 0.1, 10)


def test_learning_rate_is_cosine_in_the_global_step():
    lr = learning_rate_schedule(0.025, 0.001, 100)
    chex.assert_trees_all_close([lr(0), lr(50), lr(100)], [0.025, 0.013, 0.001], rtol=1e-5)


def test_dirichlet_samples_average_to_the_mean_and_their_gradients_to_its_gradient():
    """Reparameterised Dirichlet (DrNAS): E[w] = beta / sum(beta), beta = elu(a) + 1, and, because the samples
    are differentiable functions of the logits, E[dw/da] = d E[w] / da."""
    a = jnp.array([[0.3, -0.5, 1.2, 0.0]])
    keys = jax.random.split(jax.random.key(1), 20000)

    def sample(logits, k):
        return sample_edge_weights({"e": logits}, k, "dirichlet", 1.0)["e"][0]

    def mean(logits):
        return expected_edge_weights({"e": logits}, "dirichlet")["e"][0]

    beta = np.asarray(dirichlet_concentration(a))[0]
    chex.assert_trees_all_close(mean(a), beta / beta.sum(), atol=1e-6)
    chex.assert_trees_all_close(jnp.mean(jax.vmap(lambda k: sample(a, k))(keys), 0), mean(a), atol=5e-3)
    for op in range(4):  # Monte-Carlo Jacobian row vs the analytic one
        sampled = jnp.mean(jax.vmap(lambda k, op=op: jax.grad(lambda x: sample(x, k)[op])(a))(keys), 0)
        chex.assert_trees_all_close(sampled, jax.grad(lambda x, op=op: mean(x)[op])(a), atol=1e-2)


def test_expected_weights_of_mixture_samplers():
    chex.assert_trees_all_close(expected_edge_weights(LOGITS, "softmax")["normal"], jax.nn.softmax(LOGITS["normal"]))
    chex.assert_trees_all_close(expected_edge_weights(LOGITS, "gumbel_soft"), expected_edge_weights(LOGITS, "softmax"))
    uniform = expected_edge_weights({"e": jnp.zeros((1, 5))}, "dirichlet")["e"]
    chex.assert_trees_all_close(uniform, jnp.full((1, 5), 0.2))
