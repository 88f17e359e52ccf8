"""Perturbation-based selection: the cell is chosen by what the supernet does with an edge's ops perturbed, not by
the size of their logits.

After the cycles, the edges are decided one at a time in a seeded order. With the mixture weights
``w = expected(a)`` (``softmax(a)``, or the Dirichlet mean), each op ``k`` of edge ``e`` gets a *merit* from the
held-out loss ``L`` of the supernet under two perturbations (``MEASURES``):

* ``removal`` (DARTS-PT, Wang et al. 2021): ``w_ek`` set to 0, the other weights unchanged;
  ``merit_k = L(without k) - L(w)``, how much the supernet needs the op;
* ``alone``: edge ``e`` one-hot on ``k`` (the edge discretised to it); ``merit_k = L(w) - L(only k)``, how well
  the supernet does with that choice.

The op of highest merit is kept: ``a_e`` becomes one-hot on it (``DECIDED_LOGIT`` elsewhere, so ``softmax(a_e)`` is
exactly one-hot in float32 and the argmax genotype is the decision). The supernet is then tuned for a few weight
steps with the decided edges fixed, and the next edge is decided. BatchNorm runs in training mode during the
evaluation (each batch's own statistics): the running statistics describe the unperturbed mixture.

The functions here are pure and act on host arrays; ``SearchRun.run_selection`` runs the loop.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

ARGMAX, PERTURBATION = "argmax", "perturbation"
SELECTIONS = (ARGMAX, PERTURBATION)
REMOVAL, ALONE = "removal", "alone"
MEASURES = (REMOVAL, ALONE)
SELECT = "select"  # the phase name of the selection's epoch records
DECIDED_LOGIT = -1e4  # logit of the ops a decision removes: exp(-1e4) is 0 in float32


def edge_order(arch_shapes: Mapping[str, tuple[int, int]], seed: int) -> list[tuple[str, int]]:
    """Every edge ``(logit array name, row)`` once, in a random order that is a pure function of ``seed``."""
    edges = [(name, row) for name in sorted(arch_shapes) for row in range(arch_shapes[name][0])]
    order = np.random.default_rng([seed, 0x5E1EC7]).permutation(len(edges))
    return [edges[i] for i in order]


def perturbed_weights(weights: Mapping[str, np.ndarray], edge: tuple[str, int], measure: str) -> list[dict]:
    """Per op ``k`` of ``edge``, the edge weights ``{name: [E, K]}`` of ``measure``'s perturbation: ``removal``
    zeroes ``(row, k)``; ``alone`` makes the row one-hot on ``k``. The other rows keep ``weights``."""
    name, row = edge
    out = []
    for k in range(weights[name].shape[1]):
        perturbed = {n: np.array(w, np.float32) for n, w in weights.items()}
        if measure == REMOVAL:
            perturbed[name][row, k] = 0.0
        else:
            perturbed[name][row] = np.eye(weights[name].shape[1], dtype=np.float32)[k]
        out.append(perturbed)
    return out


def merits(base_loss: float, losses: list[float], measure: str) -> np.ndarray:
    """Per op the merit of ``measure`` from the held-out losses: ``losses[k] - base_loss`` for ``removal`` (the loss
    the op's removal adds), ``base_loss - losses[k]`` for ``alone`` (the loss the op alone saves)."""
    change = np.asarray(losses, np.float64) - base_loss
    return change if measure == REMOVAL else -change


def chosen_op(merit: np.ndarray) -> int:
    """The op of highest merit (the first of equals)."""
    return int(np.argmax(merit))


def decided_logits(logits: dict[str, np.ndarray], edge: tuple[str, int], op: int) -> dict[str, np.ndarray]:
    """``logits`` with ``edge``'s row fixed on ``op``: 0 there, ``DECIDED_LOGIT`` on its other ops."""
    name, row = edge
    out = {n: np.array(a) for n, a in logits.items()}
    out[name][row] = DECIDED_LOGIT
    out[name][row, op] = 0.0
    return out
