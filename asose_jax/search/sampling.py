"""Edge weights from architecture logits: softmax, soft Gumbel, hard Gumbel (GDAS) and Dirichlet (DrNAS).

Every function maps a logits pytree ``{name: [E, K]}`` to a weights pytree of
the same structure. Stochastic samplers draw one sample per edge (row) per call,
so a whole batch, and every cell that shares a logit array, uses one architecture.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


def _softmax(a: jax.Array) -> jax.Array:
    return jax.nn.softmax(a, axis=-1)


@dataclasses.dataclass(frozen=True)
class Sampler:
    """How a sampler turns one logit array ``a: [E, K]`` into edge weights ``[E, K]``.

    ``sample(a, key, tau)`` draws the weights of one step (``key`` is None when ``needs_key`` is false; ``tau``
    is the annealed temperature when ``uses_temperature``, else 1); ``expected(a)`` is the deterministic mixture
    the sampler trains around (evaluation of the supernet); ``single_path`` says the weights are one-hot, so a
    mixed op may run only the chosen op.
    """

    sample: Callable[[jax.Array, jax.Array | None, jax.Array], jax.Array]
    expected: Callable[[jax.Array], jax.Array] = _softmax
    single_path: bool = False
    uses_temperature: bool = False
    needs_key: bool = True


def dirichlet_concentration(a: jax.Array) -> jax.Array:
    """DrNAS's concentration ``beta = elu(a) + 1 > 0``; increasing in ``a``, ``beta = 1`` at ``a = 0``."""
    return jax.nn.elu(a) + 1.0


def _straight_through(soft: jax.Array) -> jax.Array:
    """One-hot of ``argmax(soft)`` in value, gradient of ``soft``: ``hard + (soft - sg(soft))``."""
    hard = jax.nn.one_hot(jnp.argmax(soft, axis=-1), soft.shape[-1], dtype=soft.dtype)
    return hard + (soft - jax.lax.stop_gradient(soft))


def _gumbel_soft(a: jax.Array, key: jax.Array, tau: jax.Array) -> jax.Array:
    return jax.nn.softmax((a + jax.random.gumbel(key, a.shape, a.dtype)) / tau, axis=-1)


def _dirichlet_mean(a: jax.Array) -> jax.Array:
    beta = dirichlet_concentration(a)
    return beta / jnp.sum(beta, -1, keepdims=True)


# Registered samplers by name; a new one is one entry here (see docs/architecture.md, "Adding something").
SAMPLERS: dict[str, Sampler] = {
    "softmax": Sampler(lambda a, key, tau: jax.nn.softmax(a / tau, axis=-1), needs_key=False),
    "gumbel_soft": Sampler(_gumbel_soft, uses_temperature=True),
    "gumbel_hard": Sampler(
        lambda a, key, tau: _straight_through(_gumbel_soft(a, key, tau)), single_path=True, uses_temperature=True
    ),  # fmt: skip
    "dirichlet": Sampler(
        lambda a, key, tau: jax.random.dirichlet(key, dirichlet_concentration(a), dtype=a.dtype),
        expected=_dirichlet_mean,
    ),
}


def check_sampler(sampler: str) -> str:
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; use one of {', '.join(SAMPLERS)}")
    return sampler


def is_single_path(sampler: str) -> bool:
    """Whether the sampler's weights are one-hot, so a mixed op may run only the chosen op."""
    return SAMPLERS[check_sampler(sampler)].single_path


def uses_temperature(sampler: str) -> bool:
    """Whether the sampler reads the annealed temperature (the Gumbel samplers); the others use tau = 1."""
    return SAMPLERS[check_sampler(sampler)].uses_temperature


def sample_edge_weights(logits: dict, key: jax.Array | None, sampler: str, temperature: jax.Array | float) -> dict:
    """Edge weights for one step, one sample per logit array (keys split in sorted-name order).

    * ``softmax``:      ``w = softmax(a / tau)`` (DARTS uses tau = 1); needs no key.
    * ``gumbel_soft``:  ``w = softmax((a + g) / tau)``, ``g ~ Gumbel(0, 1)`` per edge.
    * ``gumbel_hard``:  ``w = one_hot(argmax(a + g)) + s - stop_gradient(s)`` with
      ``s = softmax((a + g) / tau)``: exactly one-hot forward, soft gradient (GDAS).
    * ``dirichlet``:    ``w ~ Dirichlet(elu(a) + 1)`` per edge, reparameterised (implicit
      gradients of the Gamma samples), so ``dw / da`` exists (DrNAS); ``tau`` is not used.
    """
    spec = SAMPLERS[check_sampler(sampler)]
    names = sorted(logits)
    keys = jax.random.split(key, len(names)) if spec.needs_key else [None] * len(names)
    return {name: spec.sample(logits[name], k, temperature) for name, k in zip(names, keys, strict=True)}


def expected_edge_weights(logits: dict, sampler: str) -> dict:
    """The deterministic mixture a soft sampler trains around: ``softmax(a)`` (softmax, soft Gumbel),
    or the Dirichlet mean ``beta / sum(beta)`` with ``beta = elu(a) + 1`` (DrNAS)."""
    spec = SAMPLERS[check_sampler(sampler)]
    return {n: spec.expected(a) for n, a in logits.items()}


def argmax_edge_weights(logits: dict) -> dict:
    """One-hot weights of the strongest op per edge (``none`` included; no edge pruning)."""
    return {n: jax.nn.one_hot(jnp.argmax(a, axis=-1), a.shape[-1], dtype=a.dtype) for n, a in logits.items()}


def edge_entropy(logits: dict) -> dict:
    """Entropy (nats) of ``softmax(a)`` per edge: ``{name: [E]}``."""
    return {n: -jnp.sum(jax.nn.softmax(a, -1) * jax.nn.log_softmax(a, -1), axis=-1) for n, a in logits.items()}


def decisiveness(arch_weights: dict) -> dict:
    """How decisively each edge has chosen its op, from its weights ``{name: [E, K]}`` (``softmax(a)``, as epoch
    records hold them; arrays or nested lists).

    Per edge the margin ``w_(1) - w_(2)`` between the strongest and the second-strongest op's weight (0: a tie,
    where the derived cell is a coin toss; 1: one-hot; with a single op, its weight), and the smallest margin over
    all edges. JSON-ready: ``{"margins": {name: [E floats]}, "min_margin": float}``.
    """
    margins = {}
    for name, w in arch_weights.items():
        w = np.asarray(w, np.float64)
        top = np.sort(np.concatenate([w, np.zeros_like(w[:, :1])], axis=-1), axis=-1)  # 0: a single op's runner-up
        margins[name] = (top[:, -1] - top[:, -2]).tolist()
    return {"margins": margins, "min_margin": min(min(m) for m in margins.values())}
