"""Perturbation-based selection (DARTS-PT, Wang et al. 2021): the cell is chosen by what removing an op costs the
supernet, not by the size of its logit.

After the cycles, the edges are decided one at a time in a seeded order. For edge ``e`` with mixture weights
``w_e = expected(a_e)`` (``softmax(a_e)``, or the Dirichlet mean) and each op ``k``, the supernet is evaluated on
held-out images with ``w_ek`` set to 0 (the op removed, the others unchanged)::

    cost_k = L_val(w with w_ek = 0) - L_val(w)

and the op with the largest cost is kept: ``a_e`` becomes one-hot on it (``DECIDED_LOGIT`` elsewhere, so
``softmax(a_e)`` is exactly one-hot in float32 and the argmax genotype is the decision). The supernet is then
tuned for a few weight steps with the decided edges fixed, and the next edge is decided. BatchNorm runs in
training mode during the evaluation (each batch's own statistics): the running statistics describe the full
mixture, not the network without the op.

The functions here are pure and act on host arrays; ``SearchRun.run_selection`` runs the loop.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

ARGMAX, PERTURBATION = "argmax", "perturbation"
SELECTIONS = (ARGMAX, PERTURBATION)
SELECT = "select"  # the phase name of the selection's epoch records
DECIDED_LOGIT = -1e4  # logit of the ops a decision removes: exp(-1e4) is 0 in float32


def edge_order(arch_shapes: Mapping[str, tuple[int, int]], seed: int) -> list[tuple[str, int]]:
    """Every edge ``(logit array name, row)`` once, in a random order that is a pure function of ``seed``."""
    edges = [(name, row) for name in sorted(arch_shapes) for row in range(arch_shapes[name][0])]
    order = np.random.default_rng([seed, 0x5E1EC7]).permutation(len(edges))
    return [edges[i] for i in order]


def removal_masks(arch_shapes: Mapping[str, tuple[int, int]], edge: tuple[str, int]) -> list[dict[str, np.ndarray]]:
    """Per op ``k`` of ``edge``, a keep-mask ``{name: [E, K] float32}``: 1 everywhere but 0 at ``(row, k)``."""
    name, row = edge
    masks = []
    for k in range(arch_shapes[name][1]):
        keep = {n: np.ones(shape, np.float32) for n, shape in arch_shapes.items()}
        keep[name][row, k] = 0.0
        masks.append(keep)
    return masks


def removal_costs(base_loss: float, losses: list[float]) -> np.ndarray:
    """``cost_k = losses[k] - base_loss``: how much the held-out loss rises without op ``k``."""
    return np.asarray(losses, np.float64) - base_loss


def chosen_op(costs: np.ndarray) -> int:
    """The op whose removal costs most (the first of equals)."""
    return int(np.argmax(costs))


def decided_logits(logits: dict[str, np.ndarray], edge: tuple[str, int], op: int) -> dict[str, np.ndarray]:
    """``logits`` with ``edge``'s row fixed on ``op``: 0 there, ``DECIDED_LOGIT`` on its other ops."""
    name, row = edge
    out = {n: np.array(a) for n, a in logits.items()}
    out[name][row] = DECIDED_LOGIT
    out[name][row, op] = 0.0
    return out
