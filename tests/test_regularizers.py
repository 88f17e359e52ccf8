"""The anti-collapse regularisers (beta-DARTS, DrNAS's KL) against hand computations, values and gradients."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import digamma, gammaln

from asose_jax.search.regularizers import arch_regularizer, beta_regularizer, dirichlet_kl, dirichlet_kl_regularizer

LOGITS = {"cell": jnp.array([[0.2, -0.3, 1.0, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0, 0.0]]), "x": jnp.array([[2.0, -1.0]])}


def test_beta_regularizer_is_the_mean_logsumexp_per_edge_and_its_gradient_softmax_over_edges():
    rows = [np.log(np.exp(np.asarray(r, np.float64)).sum()) for a in LOGITS.values() for r in a]
    np.testing.assert_allclose(beta_regularizer(LOGITS), np.mean(rows), rtol=1e-6)
    grads = jax.grad(beta_regularizer)(LOGITS)
    for name, a in LOGITS.items():
        chex.assert_trees_all_close(grads[name], jax.nn.softmax(a, -1) / 3, atol=1e-7)  # 3 edges in all


def _kl_by_hand(c: np.ndarray, p: float = 1.0) -> float:
    c0, k = c.sum(), len(c)
    return float(gammaln(c0) - gammaln(c).sum() - gammaln(k * p) + k * gammaln(p)
                 + ((c - p) * (digamma(c) - digamma(c0))).sum())  # fmt: skip


def test_dirichlet_kl_matches_the_closed_form_and_vanishes_at_the_prior():
    c = np.array([0.5, 2.0, 1.0, 3.5])
    np.testing.assert_allclose(dirichlet_kl(jnp.asarray(c)), _kl_by_hand(c), rtol=1e-5)
    assert float(dirichlet_kl(jnp.ones(5))) == pytest.approx(0.0, abs=1e-6)
    # Monte-Carlo check of the closed form: E_q[log q(w) - log p(w)], p = Dir(1) has density Gamma(K).
    samples = np.random.default_rng(0).dirichlet(c, 200000)
    log_q = gammaln(c.sum()) - gammaln(c).sum() + ((c - 1) * np.log(samples)).sum(-1)
    assert np.mean(log_q - gammaln(4)) == pytest.approx(_kl_by_hand(c), rel=2e-2)
    concentration = jax.nn.elu(LOGITS["cell"]) + 1
    np.testing.assert_allclose(
        dirichlet_kl_regularizer({"cell": LOGITS["cell"]}), sum(_kl_by_hand(np.asarray(r)) for r in concentration),
        rtol=1e-5,
    )  # fmt: skip


def test_dirichlet_kl_gradient_matches_finite_differences():
    with jax.enable_x64():
        a = jnp.asarray(LOGITS["cell"], jnp.float64)

        def regularizer(x):
            return dirichlet_kl_regularizer({"cell": x})

        grad = jax.grad(regularizer)(a)
        eps = 1e-6
        for idx in [(0, 0), (0, 2), (1, 4)]:
            d = jnp.zeros_like(a).at[idx].set(eps)
            numeric = (regularizer(a + d) - regularizer(a - d)) / (2 * eps)
            assert float(grad[idx]) == pytest.approx(float(numeric), rel=1e-6, abs=1e-9)


def test_coefficients_ramp_for_beta_and_stay_constant_for_the_kl():
    beta = arch_regularizer("beta", 4.0, total_steps=100)
    assert float(beta(LOGITS, jnp.int32(0))) == 0.0
    np.testing.assert_allclose(beta(LOGITS, jnp.int32(25)), 1.0 * beta_regularizer(LOGITS), rtol=1e-6)
    np.testing.assert_allclose(beta(LOGITS, jnp.int32(400)), 4.0 * beta_regularizer(LOGITS), rtol=1e-6)
    kl = arch_regularizer("dirichlet_kl", 1e-3, total_steps=100)
    np.testing.assert_allclose(kl(LOGITS, jnp.int32(7)), 1e-3 * dirichlet_kl_regularizer(LOGITS), rtol=1e-6)
    assert float(arch_regularizer("none", 5.0, 100)(LOGITS, jnp.int32(50))) == 0.0
    with pytest.raises(ValueError, match="unknown arch regularizer 'l3'"):
        arch_regularizer("l3", 1.0, 100)
