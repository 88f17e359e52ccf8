"""Edge weights from architecture logits: softmax, soft Gumbel, hard Gumbel (GDAS) and Dirichlet (DrNAS).

Every function maps a logits pytree ``{name: [E, K]}`` to a weights pytree of
the same structure. Stochastic samplers draw one sample per edge (row) per call,
so a whole batch, and every cell that shares a logit array, uses one architecture.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SAMPLERS = ("softmax", "gumbel_soft", "gumbel_hard", "dirichlet")


def check_sampler(sampler: str) -> str:
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; use one of {', '.join(SAMPLERS)}")
    return sampler


def is_single_path(sampler: str) -> bool:
    """Whether the sampler's weights are one-hot, so a mixed op may run only the chosen op."""
    return check_sampler(sampler) == "gumbel_hard"


def uses_temperature(sampler: str) -> bool:
    """Whether the sampler reads the annealed temperature (the Gumbel samplers); the others use tau = 1."""
    return check_sampler(sampler) in ("gumbel_soft", "gumbel_hard")


def dirichlet_concentration(a: jax.Array) -> jax.Array:
    """DrNAS's concentration ``beta = elu(a) + 1 > 0``; increasing in ``a``, ``beta = 1`` at ``a = 0``."""
    return jax.nn.elu(a) + 1.0


def _straight_through(soft: jax.Array) -> jax.Array:
    """One-hot of ``argmax(soft)`` in value, gradient of ``soft``: ``hard + (soft - sg(soft))``."""
    hard = jax.nn.one_hot(jnp.argmax(soft, axis=-1), soft.shape[-1], dtype=soft.dtype)
    return hard + (soft - jax.lax.stop_gradient(soft))


def sample_edge_weights(logits: dict, key: jax.Array | None, sampler: str, temperature: jax.Array | float) -> dict:
    """Edge weights for one step.

    * ``softmax``:      ``w = softmax(a / tau)`` (DARTS uses tau = 1); needs no key.
    * ``gumbel_soft``:  ``w = softmax((a + g) / tau)``, ``g ~ Gumbel(0, 1)`` per edge.
    * ``gumbel_hard``:  ``w = one_hot(argmax(a + g)) + s - stop_gradient(s)`` with
      ``s = softmax((a + g) / tau)``: exactly one-hot forward, soft gradient (GDAS).
    * ``dirichlet``:    ``w ~ Dirichlet(elu(a) + 1)`` per edge, reparameterised (implicit
      gradients of the Gamma samples), so ``dw / da`` exists (DrNAS); ``tau`` is not used.
    """
    check_sampler(sampler)
    names = sorted(logits)
    keys = dict(zip(names, jax.random.split(key, len(names)), strict=True)) if sampler != "softmax" else {}

    def weights(name: str) -> jax.Array:
        a = logits[name]
        if sampler == "softmax":
            return jax.nn.softmax(a / temperature, axis=-1)
        if sampler == "dirichlet":
            return jax.random.dirichlet(keys[name], dirichlet_concentration(a), dtype=a.dtype)
        soft = jax.nn.softmax((a + jax.random.gumbel(keys[name], a.shape, a.dtype)) / temperature, axis=-1)
        return soft if sampler == "gumbel_soft" else _straight_through(soft)

    return {name: weights(name) for name in names}


def expected_edge_weights(logits: dict, sampler: str) -> dict:
    """The deterministic mixture a soft sampler trains around: ``softmax(a)`` (softmax, soft Gumbel),
    or the Dirichlet mean ``beta / sum(beta)`` with ``beta = elu(a) + 1`` (DrNAS)."""
    if check_sampler(sampler) == "dirichlet":
        return {n: (b := dirichlet_concentration(a)) / jnp.sum(b, -1, keepdims=True) for n, a in logits.items()}
    return {n: jax.nn.softmax(a, axis=-1) for n, a in logits.items()}


def argmax_edge_weights(logits: dict) -> dict:
    """One-hot weights of the strongest op per edge (``none`` included; no edge pruning)."""
    return {n: jax.nn.one_hot(jnp.argmax(a, axis=-1), a.shape[-1], dtype=a.dtype) for n, a in logits.items()}


def edge_entropy(logits: dict) -> dict:
    """Entropy (nats) of ``softmax(a)`` per edge: ``{name: [E]}``."""
    return {n: -jnp.sum(jax.nn.softmax(a, -1) * jax.nn.log_softmax(a, -1), axis=-1) for n, a in logits.items()}
