"""Perturbation-based selection: the cell is chosen by what the supernet does with an edge's ops perturbed, not by
the size of their logits.

After the cycles, the edges are decided one at a time in a seeded order. With the mixture weights
``w = expected(a)`` (``softmax(a)``, or the Dirichlet mean), each op ``k`` of edge ``e`` gets a *merit* from a
score of the supernet under a perturbation of that edge (``MEASURES``):

* ``removal`` (DARTS-PT, Wang et al. 2021): ``w_ek`` set to 0, the other weights unchanged;
  ``merit_k = L(without k) - L(w)`` with ``L`` the held-out loss: how much the supernet needs the op;
* ``alone``: edge ``e`` one-hot on ``k`` (the edge discretised to it); ``merit_k = L(w) - L(only k)``: how well the
  supernet does with that choice;
* ``zico`` (Zero-Cost-PT with ZiCo, Xiang et al. 2023, Li et al. 2023): ``w_ek`` set to 0;
  ``merit_k = Z(w) - Z(without k)`` with ``Z`` the ZiCo score of the weight gradients (``zico_score``): how much
  the op adds to the gradients' signal-to-noise ratio;
* ``zico_mean``: as ``zico``, with each layer's sum over its entries replaced by their mean, so that a layer's term
  does not grow with its number of weights (``log`` of a sum over ``n`` entries is ``log n`` above the mean's:
  with ``zico`` a 3x3 convolution outscores a 1x1 one by ``log 9`` per layer whatever its gradients);
* ``ntk`` (the trainability score of TE-NAS, Chen et al. 2021, used as Zero-Cost-PT's measure): ``w_ek`` set to 0;
  ``merit_k = log kappa(without k) - log kappa(w)`` with ``kappa`` the condition number of the supernet's empirical
  neural tangent kernel on ``ntk_kernel_examples(B)`` held-out examples of a batch (``ntk_log_condition``, averaged
  over the held-out images' kernels): how much worse conditioned the supernet trains without the op;
* ``nwot`` (NASWOT, Mellor et al. 2021, the measure Zero-Cost-PT reports first): ``w_ek`` set to 0;
  ``merit_k = S(w) - S(without k)`` with ``S`` the log-determinant of the kernel of the supernet's binary ReLU
  activation patterns on a held-out batch (``nwot_log_det``, averaged over the batches): how much the op adds to
  how differently the supernet's units respond to different images.

The op of highest merit is kept: ``a_e`` becomes one-hot on it (``DECIDED_LOGIT`` elsewhere, so ``softmax(a_e)`` is
exactly one-hot in float32 and the argmax genotype is the decision). The supernet is then tuned for a few weight
steps with the decided edges fixed, and the next edge is decided. BatchNorm runs in training mode during the
evaluation (each batch's own statistics): the running statistics describe the unperturbed mixture.

*Progressive shrinking* (``--shrink-ops N``, as P-DARTS, Chen et al. 2019, shrinks its candidate set while the
supernet deepens) acts at the mutation phase of every cycle but the last: every edge drops the ``N`` candidates
that rank lowest by ``SHRINK_MEASURES`` (their architecture weight, or a loss-scored merit above, all edges scored
on the same supernet), and a dropped op's logit becomes ``DECIDED_LOGIT``, as a decision's losers do. Later warm-ups
train the ops still in play (``in_play``), and the argmax or the perturbation selection chooses among them.

The functions here are pure: the bookkeeping acts on host arrays, ``zico_score`` on traced gradients inside the
jitted evaluation; ``SearchRun.run_selection`` and ``SearchRun.shrink`` run the loops.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from asose_jax.nn.initializers import scan_axes

ARGMAX, PERTURBATION = "argmax", "perturbation"
SELECTIONS = (ARGMAX, PERTURBATION)
REMOVAL, ALONE, ZICO, ZICO_MEAN, NTK, NWOT = "removal", "alone", "zico", "zico_mean", "ntk", "nwot"
MEASURES = (REMOVAL, ALONE, ZICO, ZICO_MEAN, NTK, NWOT)
LOSS_SCORED = (REMOVAL, ALONE)  # scored by the held-out loss (lower is better); the others by a score (higher)
GRADIENT_SCORED = (ZICO, ZICO_MEAN)  # compare weight gradients across at least two batches
SELECT = "select"  # the phase name of the selection's epoch records
NTK_EXAMPLES = 16  # examples per kernel of ``ntk``, or the batch if smaller (a kernel's cost grows with their square)
DECIDED_LOGIT = -1e4  # logit of the ops a decision removes: exp(-1e4) is 0 in float32
WEIGHT = "weight"  # shrinking by the architecture weight (P-DARTS)
SHRINK_MEASURES = (WEIGHT, *LOSS_SCORED)


def edge_order(arch_shapes: Mapping[str, tuple[int, int]], seed: int) -> list[tuple[str, int]]:
    """Every edge ``(logit array name, row)`` once, in a random order that is a pure function of ``seed``."""
    edges = [(name, row) for name in sorted(arch_shapes) for row in range(arch_shapes[name][0])]
    order = np.random.default_rng([seed, 0x5E1EC7]).permutation(len(edges))
    return [edges[i] for i in order]


def perturbed_weights(weights: Mapping[str, np.ndarray], edge: tuple[str, int], measure: str) -> list[dict]:
    """Per op ``k`` of ``edge``, the edge weights ``{name: [E, K]}`` of ``measure``'s perturbation: ``alone`` makes
    the row one-hot on ``k``; the others zero ``(row, k)``. The other rows keep ``weights``."""
    name, row = edge
    out = []
    for k in range(weights[name].shape[1]):
        perturbed = {n: np.array(w, np.float32) for n, w in weights.items()}
        if measure == ALONE:
            perturbed[name][row] = np.eye(weights[name].shape[1], dtype=np.float32)[k]
        else:
            perturbed[name][row, k] = 0.0
        out.append(perturbed)
    return out


def merits(base: float, scores: list[float], measure: str) -> np.ndarray:
    """Per op the merit of ``measure`` from the perturbed supernet's scores (held-out losses, ZiCo scores, minus
    the NTK's log condition number, or NASWOT's log-determinant) and the unperturbed one's, ``base``:
    ``scores[k] - base`` for ``removal`` (the loss the op's removal adds), ``base - scores[k]`` for ``alone`` (the
    loss the op alone saves) and the others (the score the op's removal takes away)."""
    change = np.asarray(scores, np.float64) - base
    return change if measure == REMOVAL else -change


def candidates(logits_row: np.ndarray) -> np.ndarray:
    """Which ops of an edge are still in play (bool ``[K]``): those whose logit no decision or shrinking set to
    ``DECIDED_LOGIT``."""
    return np.asarray(logits_row) > DECIDED_LOGIT / 2


def in_play(logits: jax.Array) -> jax.Array:
    """The warm-up's logits: 0 for the ops in play, ``DECIDED_LOGIT`` for the dropped ones, so that ``softmax`` is
    uniform over the candidates (``1/K`` everywhere before any shrinking)."""
    return jnp.where(logits > DECIDED_LOGIT / 2, 0.0, DECIDED_LOGIT).astype(logits.dtype)


def chosen_op(merit: np.ndarray, in_play_ops: np.ndarray | None = None) -> int:
    """The op of highest merit among ``in_play_ops`` (bool ``[K]``, default every op; the first of equals)."""
    allowed = np.ones(len(merit), bool) if in_play_ops is None else np.asarray(in_play_ops, bool)
    return int(np.argmax(np.where(allowed, merit, -np.inf)))


def dropped_ops(merit: np.ndarray, in_play_ops: np.ndarray, n: int) -> list[int]:
    """The ``n`` ops of lowest merit among ``in_play_ops`` (bool ``[K]``; the later of equals first), in that
    order; at least one op stays in play."""
    allowed = np.flatnonzero(in_play_ops)
    order = allowed[np.lexsort((-allowed, np.asarray(merit, np.float64)[allowed]))]  # by merit, then later first
    return [int(k) for k in order[: min(n, len(allowed) - 1)]]


def without_ops(logits: dict[str, np.ndarray], edge: tuple[str, int], ops: list[int]) -> dict[str, np.ndarray]:
    """``logits`` with ``ops`` of ``edge`` dropped: their logits set to ``DECIDED_LOGIT``."""
    name, row = edge
    out = {n: np.array(a) for n, a in logits.items()}
    out[name][row, ops] = DECIDED_LOGIT
    return out


def decided_logits(logits: dict[str, np.ndarray], edge: tuple[str, int], op: int) -> dict[str, np.ndarray]:
    """``logits`` with ``edge``'s row fixed on ``op``: 0 there, ``DECIDED_LOGIT`` on its other ops."""
    name, row = edge
    out = {n: np.array(a) for n, a in logits.items()}
    out[name][row] = DECIDED_LOGIT
    out[name][row, op] = 0.0
    return out


def zico_score(grads: dict, reduce: Callable = jnp.sum) -> jax.Array:
    """ZiCo (Li et al. 2023) of per-batch weight gradients ``grads`` (a pytree, each leaf ``[N, ...]`` over N >= 2
    batches): ``sum_l log(sum_i mean_n |g_nli| / std_n g_nli)`` over the layers ``l``, the sum over the entries
    ``i`` whose gradient varies across batches (0 for the others); a layer whose entries all give 0 adds nothing.
    ``reduce=jnp.mean`` takes the mean over the layer's entries instead of the sum (``zico_mean``). A layer is a
    leaf, or one slice of a leaf stacked under a scanned module (``..._scan``, one leading axis per scan), so the
    score does not depend on whether cells are scanned."""

    def leaf(path: tuple, g: jax.Array) -> jax.Array:
        stacked = scan_axes(path)  # layer axes after N
        std = jnp.std(g, axis=0)
        ratio = jnp.where(std > 0, jnp.mean(jnp.abs(g), axis=0) / jnp.where(std > 0, std, 1.0), 0.0)
        total = reduce(ratio, axis=tuple(range(stacked, ratio.ndim)))  # one value per layer
        return jnp.sum(jnp.where(total > 0, jnp.log(jnp.where(total > 0, total, 1.0)), 0.0))

    return sum(leaf(path, g) for path, g in jax.tree_util.tree_leaves_with_path(grads))


def ntk_kernel_examples(batch_size: int) -> int:
    """Examples per NTK kernel for batches of ``batch_size``: ``NTK_EXAMPLES``, or the batch if smaller (``RunConfig``
    refuses a batch that kernels of this size do not divide)."""
    return min(batch_size, NTK_EXAMPLES)


def ntk_log_condition(jacobian: dict) -> jax.Array:
    """``log(lambda_max / lambda_min)`` of the empirical neural tangent kernel ``Theta = J J^T`` [B, B], where the
    rows of ``J`` [B, P] are the per-example gradients ``jacobian`` (a pytree, each leaf ``[B, ...]``, flattened and
    joined over the leaves). TE-NAS (Chen et al. 2021) ranks networks by it: lower trains better. ``Theta`` is
    computed at full float32 precision (not TF32 or bf16 on accelerators). Eigenvalues below ``B eps lambda_max``,
    the resolution of float32's ``eigvalsh``, count as that, so a singular kernel, and a zero one, give
    ``log(1 / (B eps))``."""
    rows = jnp.concatenate([g.reshape(g.shape[0], -1) for g in jax.tree.leaves(jacobian)], axis=1)
    eigenvalues = jnp.linalg.eigvalsh(jnp.matmul(rows, rows.T, precision=jax.lax.Precision.HIGHEST))
    smallest, largest = eigenvalues[0], eigenvalues[-1]
    ratio = jnp.where(largest > 0, smallest / jnp.where(largest > 0, largest, 1.0), 0.0)  # 1 / condition number
    return -jnp.log(jnp.maximum(ratio, rows.shape[0] * jnp.finfo(rows.dtype).eps))


def activation_codes(sown: dict) -> jax.Array:
    """The per-example activation patterns ``[B, D]`` of the ``ACTIVATIONS`` that ``ReLU`` sowed in one forward
    pass (a pytree of ``[B, ...]`` leaves, or ``[L, B, ...]`` under a scanned module, one leading axis per scan):
    each example's units of every ReLU, flattened and joined."""

    def leaf(path: tuple, code: jax.Array) -> jax.Array:
        stacked = scan_axes(path)  # layer axes before B
        return jnp.moveaxis(code, stacked, 0).reshape(code.shape[stacked], -1)

    return jnp.concatenate([leaf(path, c) for path, c in jax.tree_util.tree_leaves_with_path(sown)], axis=1)


def nwot_log_det(codes: jax.Array) -> jax.Array:
    """NASWOT's score (Mellor et al. 2021) of binary activation patterns ``codes [B, D]`` (1 where a ReLU unit is
    active, over all ``D`` units of the network): ``log det K`` with ``K = c c^T + (1 - c)(1 - c)^T`` [B, B], so
    ``K_ij`` is ``D`` minus the Hamming distance between the patterns of examples ``i`` and ``j``. Higher means the
    network separates its inputs better. ``K`` is computed at full float32 precision (its entries are counts, exact
    below 2^24 units) and divided by ``D`` before the determinant, which shifts the score by ``B log D`` (a constant
    of the network's shape, so merits do not change); two equal patterns make ``K`` singular, ``-inf``."""
    c = codes.astype(jnp.float32)
    agree = jnp.matmul(c, c.T, precision=jax.lax.Precision.HIGHEST) + jnp.matmul(
        1 - c, (1 - c).T, precision=jax.lax.Precision.HIGHEST
    )
    return jnp.linalg.slogdet(agree / codes.shape[1])[1]
