"""Scanned cells: repeated cells through one compiled body (``nn.scan`` over stacked variables) compute what the
unrolled cells compute: outputs, BatchNorm updates and gradients, for the NAS-Bench-201 supernet and discrete
network and DARTS's discrete network, with the same weight count; likewise the DARTS supernet's scanned edges."""

from __future__ import annotations

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import IMAGE, make_batch

from asose_jax.nn import mixed_op
from asose_jax.nn.conv import auto_impl
from asose_jax.nn.initializers import init_variables
from asose_jax.nn.operations import ACTIVATIONS
from asose_jax.search.selection import activation_codes
from asose_jax.spaces import build_supernet, count_params, uniform_arch_weights
from asose_jax.spaces.darts.genotype import darts_genotype
from asose_jax.spaces.darts.supernet import edge_groups, edge_inputs
from asose_jax.spaces.genotypes import PUBLISHED
from asose_jax.spaces.networks import build_network

CELLS = 2  # per stage
# Per-leaf errors relative to the leaf's norm: most leaves are bit-identical; the largest error measured is 1e-6 (the
# DARTS supernet's weight gradients), and 7e-5 for the rematerialised scan, whose recomputed forward pass sums in
# another order. FLOOR, absolute, admits leaves that are zero in both (gradients of the ops a single path skips).
TOLERANCE, REMAT_TOLERANCE, FLOOR = 1e-5, 1e-3, 1e-12


def assert_close(actual, expected, tolerance: float = TOLERANCE) -> None:
    """Asserts, per leaf, ``||actual - expected|| <= tolerance * max(||actual||, ||expected||) + FLOOR`` (Frobenius
    norms in float64), for trees of the same structure."""

    def check(path, a, b) -> None:
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        where = jax.tree_util.keystr(path)
        assert a.shape == b.shape, f"{where}: shapes {a.shape} and {b.shape}"
        error, scale = np.linalg.norm(a - b), max(np.linalg.norm(a), np.linalg.norm(b))
        assert error <= tolerance * scale + FLOOR, f"{where}: ||a - b|| = {error:.3g} > {tolerance:g} * {scale:.3g}"

    jax.tree_util.tree_map_with_path(check, actual, expected)


def members(scanned: str) -> list[str]:
    """The unrolled module names behind a scanned one: ``stage_1_scan`` -> ``stage_1_cell_0``, ...;
    ``cell_2_to_5_scan`` -> ``cell_2``, ..., ``cell_5``."""
    if match := re.fullmatch(r"cell_(\d+)_to_(\d+)_scan", scanned):
        return [f"cell_{i}" for i in range(int(match[1]), int(match[2]) + 1)]
    return [f"{scanned[: -len('_scan')]}_cell_{i}" for i in range(CELLS)]


def stacked(tree: dict, members: dict[str, list[str]]) -> dict:
    """Unrolled variables as scanned ones: each scanned module's ``members`` stacked on a new axis 0."""
    gone = {name for names in members.values() for name in names}
    out = {k: v for k, v in tree.items() if k not in gone}
    for scanned, names in members.items():
        out[scanned] = jax.tree.map(lambda *xs: jnp.stack(xs), *[tree[name] for name in names])
    return out


def stacked_cells(tree: dict, scanned_names: list[str]) -> dict:
    """Unrolled cells as scanned ones (top-level modules such as ``stage_1_scan``)."""
    return stacked(tree, {scanned: members(scanned) for scanned in scanned_names})


def stacked_edges(tree: dict, scanned_names: list[str] = ()) -> dict:
    """A DARTS supernet's unrolled edges ``cell_k/edge_{i}_{j}`` as ``cell_k/input_edges_scan`` and
    ``cell_k/node_edges_scan`` (every cell has both; ``scanned_names`` is not needed)."""
    names = [f"edge_{i}_{j}" for i, j in edge_inputs()]
    from_inputs, from_nodes = edge_groups()
    groups = {"input_edges_scan": [names[e] for e in from_inputs], "node_edges_scan": [names[e] for e in from_nodes]}
    return {k: stacked(v, groups) if k.startswith("cell_") else v for k, v in tree.items()}


def soft_weights(model) -> tuple[dict]:
    """Architecture weights [E, K] that differ between ops and between edges (a softmax over logits
    ``0.1 * (e + 1) * k``), so that a scan reading the wrong edge's row would change the outputs."""

    def weights(w: jax.Array) -> jax.Array:
        edges, ops = w.shape
        return jax.nn.softmax(0.1 * jnp.outer(jnp.arange(1, edges + 1), jnp.arange(ops)), -1)

    return (jax.tree.map(weights, uniform_arch_weights(model)),)


def supernet_case():
    unrolled = build_supernet("nb201", 2, CELLS, scan_cells=False)
    return unrolled, build_supernet("nb201", 2, CELLS, scan_cells=True), soft_weights(unrolled), stacked_cells


DARTS_OPS_USED = ("none", "skip_connect", "sep_conv_3x3", "max_pool_3x3")  # one of each kind keeps compiling short


def darts_supernet_case(cells: int = 3):
    """At 3 cells (reductions at 1 and 2): a normal cell, a reduction cell, and one after a reduction."""
    unrolled = build_supernet("darts", 2, cells, op_names=DARTS_OPS_USED, scan_cells=False)
    scanned = build_supernet("darts", 2, cells, op_names=DARTS_OPS_USED, scan_cells=True)
    return unrolled, scanned, soft_weights(unrolled), stacked_edges


def network_case():
    unrolled = build_network(PUBLISHED["NB201_BEST"], 2, CELLS, scan_cells=False)
    return unrolled, build_network(PUBLISHED["NB201_BEST"], 2, CELLS), (), stacked_cells


def darts_case():
    """12 cells (reductions 4 and 8): cells 2 and 3 are scanned (at 20 cells, runs 2-5, 9-12 and 16-19). A cheap
    cell keeps the compilation short; which cells are scanned does not depend on it."""
    cheap = [("skip_connect", 0), ("dil_conv_3x3", 1)] * 4
    genotype = darts_genotype(cheap, [("max_pool_3x3", 0), ("skip_connect", 1)] * 4)
    unrolled = build_network(genotype, 2, 12, scan_cells=False)
    return unrolled, build_network(genotype, 2, 12), (), stacked_cells


CASES = {"nb201-supernet": supernet_case, "darts-supernet": darts_supernet_case, "nb201": network_case,
         "darts": darts_case}  # fmt: skip


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_scanned_cells_equal_unrolled_ones(case):
    unrolled, scanned, args, to_scanned = case()
    assert unrolled.scan_cells is False and scanned.scan_cells is True
    variables = init_variables(unrolled, jax.random.key(0), (IMAGE, IMAGE, 3), *args, train=False)
    expected = init_variables(scanned, jax.random.key(0), (IMAGE, IMAGE, 3), *args, train=False)
    names = [k for k in expected["params"] if k.endswith("_scan")]
    assert jax.tree.structure(expected) != jax.tree.structure(variables), "nothing was scanned"

    def stacked_like(tree: dict) -> dict:
        return to_scanned(tree, names)

    scanned_variables = {name: stacked_like(tree) for name, tree in variables.items()}
    chex.assert_trees_all_equal_shapes(scanned_variables, expected)
    assert count_params(scanned_variables["params"]) == count_params(variables["params"])
    batch = make_batch(1, 4)

    def loss(model, params, batch_stats, *extra):
        out, updates = model.apply({"params": params, "batch_stats": batch_stats}, batch["image"], *extra,
                                   train=True, mutable=["batch_stats"])  # fmt: skip
        logits = out[0] if isinstance(out, tuple) else out
        return jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), batch["label"]]), (updates["batch_stats"], logits)

    grad = jax.jit(jax.grad(loss, argnums=(1, 3) if args else 1, has_aux=True), static_argnums=0)
    (g_unrolled, (stats_unrolled, out_unrolled)) = grad(unrolled, variables["params"], variables["batch_stats"], *args)
    (g_scanned, (stats_scanned, out_scanned)) = grad(
        scanned, scanned_variables["params"], scanned_variables["batch_stats"], *args
    )
    assert_close(out_scanned, out_unrolled)
    assert_close(stats_scanned, stacked_like(stats_unrolled))
    if args:  # gradients w.r.t. the weights and the architecture weights
        assert_close(g_scanned[0], stacked_like(g_unrolled[0]))
        assert_close(g_scanned[1], g_unrolled[1])
    else:
        assert_close(g_scanned, stacked_like(g_unrolled))
    pairs = ((unrolled, variables), (scanned, scanned_variables))
    evaluated = [
        jax.jit(model.apply, static_argnames="train")(v, batch["image"], *args, train=False) for model, v in pairs
    ]
    assert_close(evaluated[1], evaluated[0])


@pytest.mark.parametrize("masked", [False, True], ids=["switch", "masked"])
def test_scanned_edges_equal_unrolled_ones_on_a_single_path(monkeypatch, masked):
    """GDAS's single path through scanned DARTS edges, by ``lax.switch`` and by the masked sum that several CPU
    devices use: the same outputs, BatchNorm updates and gradients as unrolled edges (one reduction cell: both
    kinds of scanned edges)."""
    monkeypatch.setattr(mixed_op, "branches_may_deadlock", lambda: masked)
    unrolled, scanned, (soft,), _ = darts_supernet_case(cells=1)
    one_hot = jax.tree.map(lambda w: jax.nn.one_hot(jnp.arange(len(w)) % w.shape[1], w.shape[1]), soft)  # every op
    variables = init_variables(unrolled, jax.random.key(0), (IMAGE, IMAGE, 3), one_hot, train=False)
    batch = make_batch(2, 4)

    def loss(model, params, batch_stats, weights):
        logits, updates = model.apply({"params": params, "batch_stats": batch_stats}, batch["image"], weights,
                                      train=True, single_path=True, mutable=["batch_stats"])  # fmt: skip
        return jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), batch["label"]]), (updates["batch_stats"], logits)

    grad = jax.jit(jax.grad(loss, argnums=(1, 3), has_aux=True), static_argnums=0)
    g_unrolled, (stats_unrolled, out_unrolled) = grad(unrolled, variables["params"], variables["batch_stats"], one_hot)
    params, batch_stats = (stacked_edges(variables[k]) for k in ("params", "batch_stats"))
    g_scanned, (stats_scanned, out_scanned) = grad(scanned, params, batch_stats, one_hot)
    assert_close(out_scanned, out_unrolled)
    assert_close(stats_scanned, stacked_edges(stats_unrolled))
    assert_close(g_scanned, (stacked_edges(g_unrolled[0]), g_unrolled[1]))


def test_rematerialised_scan_recomputes_with_the_same_drop_path_masks():
    """On CPU a scanned body is rematerialised: its backward pass reruns the forward pass, which must draw the same
    drop-path masks. The gradients equal those of the plain scan (``auto_impl("xla")``: no remat)."""
    scanned = darts_case()[1]
    variables = init_variables(scanned, jax.random.key(0), (IMAGE, IMAGE, 3), train=False)
    batch = make_batch(1, 4)

    def loss(params):
        (logits, _), _ = scanned.apply({**variables, "params": params}, batch["image"], train=True, drop_rate=0.5,
                                       rngs={"drop_path": jax.random.key(1)}, mutable=["batch_stats"])  # fmt: skip
        return jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(4), batch["label"]])

    grads = {}
    for impl in ("cpu", "xla"):
        with auto_impl(impl):
            grads[impl] = jax.jit(jax.value_and_grad(loss))(variables["params"])
    assert_close(grads["cpu"], grads["xla"], REMAT_TOLERANCE)


def test_scanned_cells_sow_the_activation_patterns_of_unrolled_ones():
    """NASWOT's input (``--selection-measure nwot``): every ReLU's units per example, the same in both layouts up to
    their order, so the kernel ``K = c c^T + (1 - c)(1 - c)^T`` (which the order does not change) is equal. At C=2 on
    8x8 images with two cells per stage: per cell the ReLUs of 6 ``nor_conv_1x1`` and 6 ``nor_conv_3x3`` (12 x 128,
    12 x 64, 12 x 32 units in the three stages), 128 + 64 and 64 + 32 in the two residual blocks' convolutions, and
    32 before the classifier: 5,696 units. ``init`` sows nothing."""
    unrolled, scanned, args, to_scanned = supernet_case()
    variables = init_variables(unrolled, jax.random.key(0), (IMAGE, IMAGE, 3), *args, train=False)
    names = [k for k in init_variables(scanned, jax.random.key(0), (IMAGE, IMAGE, 3), *args, train=False)["params"]
             if k.endswith("_scan")]  # fmt: skip
    assert set(variables) == {"params", "batch_stats"}
    images = make_batch(1, 4)["image"]
    kernels = []
    for model, v in ((unrolled, variables), (scanned, {k: to_scanned(t, names) for k, t in variables.items()})):
        _, sown = model.apply(v, images, *args, train=True, mutable=["batch_stats", ACTIVATIONS])
        codes = np.asarray(activation_codes(sown[ACTIVATIONS]), np.float64)
        assert codes.shape == (4, 2 * 12 * (128 + 64 + 32) + 128 + 64 + 64 + 32 + 32)
        assert 0 < codes.mean() < 1
        kernels.append(codes @ codes.T + (1 - codes) @ (1 - codes).T)
    np.testing.assert_array_equal(kernels[1], kernels[0])
