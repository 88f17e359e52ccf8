"""Regularisers of the architecture logits against DARTS's collapse, added to the held-out loss.

Each maps a logits pytree ``{name: [E, K]}`` to a scalar; ``arch_regularizer`` adds the
schedule of its coefficient over the global step ``t`` of a run of ``T`` steps.

* ``beta`` (beta-DARTS, Ye et al. 2022): ``R(a) = mean over edges e of logsumexp_k(a_ek)``,
  coefficient ``lambda * min(t / T, 1)`` (linearly increasing from 0). Its gradient
  ``softmax(a_e) / E`` pushes each edge's strong ops down hardest, keeping the logits
  small and the mixture from sliding to parameter-free ops.
* ``dirichlet_kl`` (DrNAS, Chen et al. 2021): ``R(a) = sum over edges of
  KL(Dir(beta_e) || Dir(1))`` with ``beta = elu(a) + 1``, constant coefficient ``lambda``;
  it keeps the Dirichlet concentrations near the uniform prior, i.e. keeps exploring.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.scipy.special import digamma, gammaln

from asose_jax.search.sampling import dirichlet_concentration

ARCH_REGULARIZERS = ("none", "beta", "dirichlet_kl")


def beta_regularizer(logits: dict) -> jax.Array:
    """``mean_e logsumexp_k(a_ek)`` over the rows of every logit array."""
    rows = jnp.concatenate([jax.nn.logsumexp(a, axis=-1) for _, a in sorted(logits.items())])
    return jnp.mean(rows)


def dirichlet_kl(concentration: jax.Array, prior: float = 1.0) -> jax.Array:
    """``KL(Dir(c) || Dir(prior * 1))`` per row of ``c`` [..., K]:

    ``lnG(c0) - sum lnG(c_k) - lnG(K p) + K lnG(p) + sum (c_k - p)(psi(c_k) - psi(c0))``, ``c0 = sum c_k``.
    """
    k = concentration.shape[-1]
    c0 = jnp.sum(concentration, axis=-1)
    return (
        gammaln(c0)
        - jnp.sum(gammaln(concentration), axis=-1)
        - gammaln(k * prior)
        + k * gammaln(prior)
        + jnp.sum((concentration - prior) * (digamma(concentration) - digamma(c0)[..., None]), axis=-1)
    )


def dirichlet_kl_regularizer(logits: dict) -> jax.Array:
    """``sum_e KL(Dir(elu(a_e) + 1) || Dir(1))`` over the rows of every logit array."""
    return sum(jnp.sum(dirichlet_kl(dirichlet_concentration(a))) for _, a in sorted(logits.items()))


def arch_regularizer(name: str, weight: float, total_steps: int) -> Callable[[dict, jax.Array], jax.Array]:
    """``(logits, global step) -> coefficient * R(logits)`` for regulariser ``name`` (0 for ``none``)."""
    if name not in ARCH_REGULARIZERS:
        raise ValueError(f"unknown arch regularizer {name!r}; use one of {', '.join(ARCH_REGULARIZERS)}")

    def regularizer(logits: dict, step: jax.Array) -> jax.Array:
        if name == "none":
            return jnp.zeros((), jnp.float32)
        if name == "beta":
            ramp = jnp.clip(jnp.asarray(step, jnp.float32) / total_steps, 0.0, 1.0)
            return weight * ramp * beta_regularizer(logits)
        return weight * dirichlet_kl_regularizer(logits)

    return regularizer
