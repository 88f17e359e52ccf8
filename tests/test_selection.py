"""Perturbation-based selection: the pure pieces against hand computations, the removal evaluation against the
supernet, a tiny NAS-Bench-201 search end to end per measure (each edge keeps the op of highest merit, every
epoch record's cell is the one its own weights derive, the final weights are one-hot; the ZiCo one grows a cell
first, which keeps the function), the settings of the growth preset, and progressive shrinking (the ops of lowest
merit dropped, never trained or chosen again)."""

from __future__ import annotations

import dataclasses
import pathlib

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import float64, make_batch, search_setup

from asose_jax.nn.losses import accuracy, cross_entropy
from asose_jax.nn.operations import ACTIVATIONS
from asose_jax.runtime.metrics_log import read_metrics
from asose_jax.search.driver import selection_images, shrink_images, train_and_evaluate
from asose_jax.search.run_config import RunConfig, preset
from asose_jax.search.sampling import decisiveness
from asose_jax.search.selection import (
    ALONE,
    DECIDED_LOGIT,
    LOSS_SCORED,
    NTK,
    NTK_EXAMPLES,
    NWOT,
    REMOVAL,
    WEIGHT,
    ZICO,
    ZICO_MEAN,
    activation_codes,
    candidates,
    chosen_op,
    decided_logits,
    dropped_ops,
    edge_order,
    in_play,
    merits,
    ntk_log_condition,
    nwot_log_det,
    perturbed_weights,
    without_ops,
    zico_score,
)
from asose_jax.search.step_config import SearchConfig
from asose_jax.search.steps import supernet_from_config
from asose_jax.spaces import space_of
from asose_jax.spaces.base import Mutation
from asose_jax.spaces.genotypes import NB201Genotype, derive_genotype

TABLE = pathlib.Path(__file__).resolve().parent.parent / "benchmarks/tables/nb201_cifar10.csv.gz"
SHAPES = {"cell": (6, 5), "other": (2, 5)}


def test_edge_order_is_every_edge_once_in_a_seeded_order():
    order = edge_order(SHAPES, 0)
    assert sorted(order) == [("cell", r) for r in range(6)] + [("other", r) for r in range(2)]
    assert edge_order(SHAPES, 0) == order
    assert any(edge_order(SHAPES, seed) != order for seed in range(1, 4))


def test_each_perturbation_changes_one_edge_of_the_mixture():
    weights = {"cell": np.full((6, 5), 0.2, np.float32), "other": np.full((2, 5), 0.2, np.float32)}
    removed, alone = perturbed_weights(weights, ("cell", 3), REMOVAL), perturbed_weights(weights, ("cell", 3), ALONE)
    assert len(removed) == len(alone) == 5
    for k in range(5):
        for perturbed in (removed[k], alone[k]):
            np.testing.assert_array_equal(perturbed["other"], weights["other"])
            np.testing.assert_array_equal(np.delete(perturbed["cell"], 3, 0), np.delete(weights["cell"], 3, 0))
        expected = np.float32([0.0 if j == k else 0.2 for j in range(5)])
        np.testing.assert_array_equal(removed[k]["cell"][3], expected)
        assert alone[k]["cell"][3].tolist() == [1.0 if j == k else 0.0 for j in range(5)]
    assert weights["cell"][3, 0] == np.float32(0.2)  # copies


def test_merits_by_hand_and_the_op_of_highest_merit_is_kept():
    losses = [1.0, 1.5, 0.9, 1.5, 1.2]
    np.testing.assert_allclose(merits(1.0, losses, REMOVAL), [0.0, 0.5, -0.1, 0.5, 0.2])
    np.testing.assert_allclose(merits(1.0, losses, ALONE), [0.0, -0.5, 0.1, -0.5, -0.2])
    assert chosen_op(merits(1.0, losses, REMOVAL)) == 1  # the first of equals
    assert chosen_op(merits(1.0, losses, ALONE)) == 2


def test_zico_score_by_hand():
    """Leaf ``a``: entry 0 has mean |g| 2 and std 1 over the two batches, entry 1 std 0 (left out): log(2 / 1).
    Leaf ``b`` never varies (a removed op's weights get zero gradients): it adds nothing."""
    grads = {"a": jnp.array([[1.0, 2.0], [3.0, 2.0]]), "b": jnp.zeros((2, 3))}
    np.testing.assert_allclose(zico_score(grads), np.log(2.0), rtol=1e-6)
    np.testing.assert_allclose(zico_score({"a": -grads["a"]}), np.log(2.0), rtol=1e-6)  # signs do not matter
    assert np.isfinite(float(zico_score({"b": grads["b"]}))) and float(zico_score({"b": grads["b"]})) == 0.0
    # Two cells stacked by a scan are two layers, as when unrolled: the layout does not change the score.
    cells = [jax.random.normal(jax.random.key(k), (4, 3, 2)) for k in (1, 2)]
    unrolled = {"stage_cell_0": {"conv": cells[0]}, "stage_cell_1": {"conv": cells[1]}}
    scanned = {"stage_scan": {"conv": jnp.stack(cells, axis=1)}}
    np.testing.assert_allclose(zico_score(scanned), zico_score(unrolled), rtol=1e-6)
    assert float(zico_score({"stage": {"conv": jnp.stack(cells, axis=1)}})) < float(zico_score(unrolled))  # one layer


def test_zico_mean_takes_each_layers_mean_so_a_layer_with_more_entries_of_the_same_ratio_scores_the_same():
    """Entries with ratios 2 and 0 (std 0): the sum gives log 2, the mean log 1 = 0. A layer of 9 entries of ratio
    3 (mean |g| 3, std 1) and one of a single such entry: ``zico`` tells them apart by log 9, ``zico_mean`` not."""
    grads = {"a": jnp.array([[1.0, 2.0], [3.0, 2.0]])}
    np.testing.assert_allclose(zico_score(grads, jnp.mean), np.log(1.0), atol=1e-7)
    one = jnp.array([[2.0], [4.0]])  # mean |g| 3, std 1
    layers = {"wide": jnp.tile(one, (1, 9)), "narrow": one}
    np.testing.assert_allclose(zico_score(layers), np.log(27.0) + np.log(3.0), rtol=1e-6)
    np.testing.assert_allclose(zico_score(layers, jnp.mean), 2 * np.log(3.0), rtol=1e-6)
    assert float(zico_score({"b": jnp.zeros((2, 3))}, jnp.mean)) == 0.0  # a removed op's layer adds nothing


def test_ntk_log_condition_by_hand():
    """Rows (1, 0, 0) and (1, 1, 0), split over two leaves: ``J J^T = [[1, 1], [1, 2]]``, eigenvalues
    ``(3 -+ sqrt 5) / 2``, condition number ``(3 + sqrt 5) / (3 - sqrt 5)``. Orthogonal rows of equal norm give 1
    (log 0). A zero row makes the kernel singular and a zero Jacobian makes it 0: both give the finite cap
    ``log(1 / (B eps))``."""
    jacobian = {"a": jnp.array([[1.0, 0.0], [1.0, 1.0]]), "b": {"c": jnp.zeros((2, 1, 1))}}
    np.testing.assert_allclose(ntk_log_condition(jacobian), np.log((3 + 5**0.5) / (3 - 5**0.5)), rtol=1e-5)
    np.testing.assert_allclose(ntk_log_condition({"a": 3 * jnp.eye(4)}), 0.0, atol=1e-6)
    cap = -np.log(2 * np.finfo(np.float32).eps)
    np.testing.assert_allclose(ntk_log_condition({"a": jnp.array([[2.0, 0.0], [0.0, 0.0]])}), cap, rtol=1e-6)
    np.testing.assert_allclose(ntk_log_condition({"a": jnp.zeros((2, 3))}), cap, rtol=1e-6)


def test_nwot_log_det_by_hand():
    """Patterns 101 and 110 (D = 3 units) are 2 apart: ``K = [[3, 1], [1, 3]]``, ``det(K / 3) = 8 / 9``. Equal
    patterns make ``K`` singular."""
    np.testing.assert_allclose(nwot_log_det(jnp.array([[1, 0, 1], [1, 1, 0]], bool)), np.log(8 / 9), rtol=1e-6)
    np.testing.assert_allclose(nwot_log_det(jnp.eye(3, dtype=bool)), np.log(20 / 27), rtol=1e-6)  # det [[3,1,1],..]
    assert nwot_log_det(jnp.array([[1, 0], [1, 0]], bool)) == -np.inf


def test_activation_codes_join_each_examples_units_of_every_relu():
    """A leaf under a scanned module (``..._scan``) has its layer axis before the batch axis."""
    scanned = jnp.arange(2 * 3 * 2).reshape(2, 3, 2) % 3 == 0  # [L=2, B=3, 2]
    plain = jnp.arange(3 * 4).reshape(3, 2, 2) % 2 == 0  # [B=3, 2, 2]
    codes = activation_codes({"stage_0_scan": {"ReLU_0": {"code": (scanned,)}}, "z": {"code": (plain,)}})
    chex.assert_shape(codes, (3, 2 * 2 + 4))
    for b in range(3):
        expected = np.concatenate([np.asarray(scanned[:, b]).ravel(), np.asarray(plain[b]).ravel()])
        np.testing.assert_array_equal(codes[b], expected)


def test_the_mixture_nwot_is_the_mean_log_det_of_each_batchs_pattern_kernel():
    """Against float64 determinants of the Hamming kernels of the patterns the supernet sows, batch by batch,
    BatchNorm in training mode; removing an op changes the score."""
    config, model, state, steps = search_setup("nb201")
    images = jnp.stack([make_batch(seed, size=6)["image"] for seed in (1, 2)])  # [N=2, B=6, H, W, 3]
    labels = jnp.zeros(images.shape[:2], jnp.int32)
    mixture = {"cell": jax.nn.softmax(jax.random.normal(jax.random.key(1), (6, 5)), -1)}
    weights = perturbed_weights(jax.device_get(mixture), ("cell", 3), REMOVAL)[3]
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    expected = []
    for x in images:
        _, sown = model.apply(variables, x, weights, train=True, mutable=["batch_stats", ACTIVATIONS])
        c = np.asarray(activation_codes(sown[ACTIVATIONS]), np.float64)
        hamming = (c[:, None, :] != c[None, :, :]).sum(-1)
        expected.append(np.linalg.slogdet((c.shape[1] - hamming) / c.shape[1])[1])
    score = steps.mixture_nwot(state, images, labels, weights)[NWOT]
    np.testing.assert_allclose(score, np.mean(expected), rtol=1e-4)
    assert abs(float(steps.mixture_nwot(state, images, labels, mixture)[NWOT]) - float(score)) > 1e-4


def test_a_decision_makes_the_edge_one_hot_and_leaves_the_rest():
    logits = {"cell": np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32)}
    decided = decided_logits(logits, ("cell", 2), 4)
    weights = np.asarray(jax.nn.softmax(jnp.asarray(decided["cell"]), -1))
    assert weights[2].tolist() == [0.0, 0.0, 0.0, 0.0, 1.0]  # exact in float32
    np.testing.assert_array_equal(np.delete(decided["cell"], 2, 0), np.delete(logits["cell"], 2, 0))
    assert decided["cell"][2, 0] == DECIDED_LOGIT and logits["cell"][2, 0] != DECIDED_LOGIT  # a copy
    assert decisiveness({"cell": weights})["margins"]["cell"][2] == 1.0
    ops = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    assert derive_genotype("nb201", decided, ops).nodes[1][1][0] == "avg_pool_3x3"  # row 2: edge 2<-1


def test_the_mixture_evaluation_is_the_training_mode_loss_with_those_weights():
    config, model, state, steps = search_setup("nb201")
    batches = [make_batch(seed, size=4) for seed in (1, 2)]
    images = jnp.stack([b["image"] for b in batches])
    labels = jnp.stack([b["label"] for b in batches])
    mixture = {"cell": jax.nn.softmax(jax.random.normal(jax.random.key(1), (6, 5)), -1)}
    weights = perturbed_weights(jax.device_get(mixture), ("cell", 3), REMOVAL)[1]
    result = steps.mixture_eval(state, images, labels, weights)
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    losses, accs = [], []
    for b in batches:
        logits, _ = model.apply(variables, b["image"], weights, train=True, mutable=["batch_stats"])
        losses.append(cross_entropy(logits, b["label"]))
        accs.append(accuracy(logits, b["label"]))
    np.testing.assert_allclose(result["loss"], np.mean(losses), rtol=1e-5)
    np.testing.assert_allclose(result["accuracy"], np.mean(accs), rtol=1e-6)
    unperturbed = steps.mixture_eval(state, images, labels, mixture)
    assert abs(float(unperturbed["loss"]) - float(result["loss"])) > 1e-6  # removing the op changed the function
    grads = [jax.grad(lambda p, b=b: cross_entropy(model.apply({**variables, "params": p}, b["image"], weights,
                                                               train=True, mutable=["batch_stats"])[0], b["label"]))(
        state["params"]) for b in batches]  # fmt: skip
    stacked = jax.tree.map(lambda *g: jnp.stack(g), *grads)
    scores = steps.mixture_zico(state, images, labels, weights)
    np.testing.assert_allclose(scores[ZICO], zico_score(stacked), rtol=1e-4)
    np.testing.assert_allclose(scores[ZICO_MEAN], zico_score(stacked, jnp.mean), rtol=1e-4)


def test_the_mixture_ntk_is_minus_the_mean_log_condition_of_each_kernels_per_example_gradients():
    """A batch of 32 is cut into two kernels of ``NTK_EXAMPLES`` (16). In float64, each kernel's rows (the gradients
    of one example's summed logits, BatchNorm in training mode over the kernel) match central differences along a
    random direction, and numpy's eigenvalues of ``J J^T`` give the reference condition numbers."""
    config, model, state, steps = search_setup("nb201")
    images = make_batch(1, size=2 * NTK_EXAMPLES)["image"][None]  # [N=1, B=32, H, W, 3]
    labels = jnp.zeros(images.shape[:2], jnp.int32)
    mixture = {"cell": jax.nn.softmax(jax.random.normal(jax.random.key(1), (6, 5)), -1)}
    weights = perturbed_weights(jax.device_get(mixture), ("cell", 3), REMOVAL)[1]
    conditions = []
    with jax.enable_x64(True):
        params, batch_stats, arch = float64((state["params"], state["batch_stats"], weights))

        def summed_logits(p, x):
            variables = {"params": p, "batch_stats": batch_stats}
            return jnp.sum(model.apply(variables, x, arch, train=True, mutable=["batch_stats"])[0], axis=-1)

        jacobian, logits = jax.jit(jax.jacrev(summed_logits)), jax.jit(summed_logits)
        direction = jax.tree.map(lambda p: jax.random.normal(jax.random.key(7), p.shape, p.dtype), params)
        norm = np.sqrt(sum(float(jnp.sum(d**2)) for d in jax.tree.leaves(direction)))
        step = 1e-7 / norm  # small enough that few ReLUs change sign
        shifted = [jax.tree.map(lambda p, d, s=s: p + s * step * d, params, direction) for s in (1, -1)]
        for x in float64(images.reshape(2, NTK_EXAMPLES, *images.shape[2:])):
            rows = jacobian(params, x)
            flat = np.concatenate([np.asarray(g).reshape(NTK_EXAMPLES, -1) for g in jax.tree.leaves(rows)], axis=1)
            numeric = (logits(shifted[0], x) - logits(shifted[1], x)) / (2 * step)
            along = flat @ np.concatenate([np.asarray(d).ravel() for d in jax.tree.leaves(direction)])
            np.testing.assert_allclose(along, numeric, rtol=1e-5, atol=1e-6 * np.abs(numeric).max())
            eigenvalues = np.linalg.eigvalsh(flat @ flat.T)
            conditions.append(np.log(eigenvalues[-1] / eigenvalues[0]))
    score = steps.mixture_ntk(state, images, labels, weights)[NTK]
    np.testing.assert_allclose(score, -np.mean(conditions), rtol=1e-3)
    assert abs(float(steps.mixture_ntk(state, images, labels, mixture)[NTK]) - float(score)) > 1e-4


def _search(npz_path, workdir, **overrides) -> RunConfig:
    ops = ("none", "skip_connect", "nor_conv_3x3")
    search = SearchConfig(space="nb201", init_channels=2, depth=1, op_names=ops, sampler="softmax", arch_lr=0.05)
    settings = {"data": f"npz:{npz_path}", "batch_size": 8, "cycles": 1, "warmup_epochs": 1, "arch_epochs": 1,
                "retrain_epochs": 0, "plateau_window": 0, "growth": "off", "log_every": 1, "nb201_table": str(TABLE),
                "selection": "perturbation", "selection_images": 16, "selection_tune_steps": 2,
                **overrides}  # fmt: skip
    return RunConfig(**{"search": search, **settings})


def _check_decisions(workdir: pathlib.Path, summary: dict, measure: str) -> tuple[list[dict], list[dict]]:
    """Every edge decided once, on the op of highest merit, the merits as the recorded scores give them; every epoch
    record's cell the one its own weights derive; one-hot at the end. Returns (records, epoch records)."""
    records = list(read_metrics(workdir / "metrics.jsonl"))
    decisions = [r for r in records if r["event"] == "selection"]
    epochs = [r for r in records if r["event"] == "epoch"]
    assert sorted(d["row"] for d in decisions) == list(range(6)) and summary["selection_decisions"] == [
        {k: v for k, v in d.items() if k not in ("event", "cycle", "index")} for d in decisions
    ]
    score = "loss" if measure in LOSS_SCORED else measure
    for d in decisions:  # the op of highest merit in play (a shrunk op has none), the merit as the scores say
        scored = {op: m for op, m in d["merit"].items() if m is not None}
        assert d["op"] == max(scored, key=scored.get) and d["measure"] == measure
        base, perturbed = d[f"base_{score}"], d[f"perturbed_{score}"]
        assert [op for op, m in perturbed.items() if m is not None] == list(scored)
        expected = merits(base, [perturbed[op] for op in scored], measure)
        np.testing.assert_allclose(list(scored.values()), expected, atol=2e-6)
        second = sorted(scored.values())[-2]
        np.testing.assert_allclose(d["merit_margin"], d["merit"][d["op"]] - second, atol=2e-6)
    assert summary["val_measure"] == "derived_path_bn_recalibrated" and summary["val_acc_supernet"] is None
    ops = ("none", "skip_connect", "nor_conv_3x3")
    for r in epochs:  # every record's cell is the argmax of its own weights (log of softmax = logits + const)
        logits = {name: np.log(np.maximum(np.asarray(w), 1e-30)) for name, w in r["arch_weights"].items()}
        assert r["arch_str"] == derive_genotype("nb201", logits, ops).to_string()
    final = [op for node in NB201Genotype.from_string(summary["arch_str"]).nodes for op, _ in node]  # by row
    assert [final[d["row"]] for d in decisions] == [d["op"] for d in decisions]
    assert {d["edge"] for d in decisions} == {"1<-0", "2<-0", "2<-1", "3<-0", "3<-1", "3<-2"}
    assert summary["decisiveness"]["min_margin"] == 1.0 == epochs[-1]["decisiveness"]["min_margin"]
    assert epochs[-2]["decisiveness"]["min_margin"] < 1.0  # one edge still undecided
    return records, epochs


@pytest.mark.parametrize(("measure", "tune_steps"), [(REMOVAL, 2), (ALONE, 2), (NTK, 0), (NWOT, 0)])
def test_a_perturbation_search_keeps_the_op_of_highest_merit_on_every_edge(
    npz_path, tmp_path, capsys, measure, tune_steps
):
    """With tuning steps every decision's epoch is validated; without, none is (nothing trained since the cycles)."""
    config = _search(npz_path, tmp_path / "run", selection_measure=measure, selection_tune_steps=tune_steps)
    summary = train_and_evaluate(config, tmp_path / "run")
    _, epochs = _check_decisions(tmp_path / "run", summary, measure)
    assert [r["phase"] for r in epochs] == ["warmup", "arch"] + ["select"] * 6
    assert summary["steps"] == 3 + 3 + 6 * tune_steps  # warm-up, arch (weight halves), tuning
    validated = [r["val_acc"] is not None for r in epochs]
    assert validated == [True, True] + [tune_steps > 0] * 6
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("after selection ")]
    assert len(lines) == 6 and all(("val acc" in line) == (tune_steps > 0) for line in lines)
    assert ["no weight steps" in line for line in lines] == [tune_steps == 0] * 6
    assert [line.split(":")[0] for line in lines] == [f"after selection {i}" for i in range(1, 7)]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"selection": "best"}, "unknown --selection 'best'"),
        ({"selection_measure": "gain"}, "unknown --selection-measure 'gain'"),
        ({"selection_images": 4}, "--selection-images must be an integer >= --batch-size (8) with --selection-measure"),
        ({"selection_images": 8, "selection_measure": "zico"}, "must be an integer >= 2 x --batch-size (16) with"),
        ({"selection_tune_steps": -1}, "--selection-tune-steps must be a non-negative integer"),
        (
            {"selection_measure": "ntk", "batch_size": 24, "selection_images": 48},
            "--batch-size must be a multiple of 16 or from 2 to 16, got 24",
        ),
        (
            {"selection_measure": "nwot", "batch_size": 1, "selection_images": 4},
            "--selection-measure nwot compares the activation patterns of a batch's examples: --batch-size must",
        ),
    ],
)
def test_bad_selection_settings_are_refused(npz_path, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _search(npz_path, tmp_path, **overrides)


def test_the_time_estimate_counts_each_measures_cost_per_image(npz_path, tmp_path):
    """In training images: per edge (6 edges of 3 ops), 4 scorings of 16 images, at a third of an image per image for
    a loss or NASWOT's patterns (a forward pass), one for ZiCo's gradients, a kernel's examples (8 at batch 8) for
    the NTK; with tuning steps, a forward pass over the 100 held-out images as well."""
    shapes = {"cell": (6, 3)}
    for measure, per_image in ((REMOVAL, 1 / 3), (NWOT, 1 / 3), (ZICO, 1.0), (NTK, 8.0)):
        for tune_steps, evaluation in ((0, 0.0), (2, 100 / 3)):
            config = _search(npz_path, tmp_path, selection_measure=measure, selection_tune_steps=tune_steps)
            assert selection_images(config, shapes, 100) == pytest.approx(6 * (4 * 16 * per_image + evaluation))


def test_perturbation_selection_is_refused_where_cells_do_not_keep_one_op_per_edge():
    with pytest.raises(ValueError, match="the chain space's cells do not keep; use --selection argmax, or .*nb201"):
        RunConfig(search=SearchConfig(space="chain"), selection="perturbation")


def test_more_selection_images_than_held_out_images_are_refused_before_the_run(npz_path, tmp_path):
    with pytest.raises(ValueError, match="--selection-images 32 is more than the 24 held-out images; use at most 24"):
        train_and_evaluate(_search(npz_path, tmp_path / "run", selection_images=32), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_the_growth_preset_grows_every_stage_once_before_the_selection():
    config = preset("nb201-cpu-grow")
    plain = preset("nb201-cpu")
    assert config.forced_growth() == {1: "depth", 2: "depth", 3: "depth"} and config.cycles == 4
    assert dataclasses.replace(config, cycles=1, growth="off", grow_at="") == plain  # otherwise the same search
    model = supernet_from_config(config.search)
    space = space_of(model)
    for _ in config.forced_growth():
        model = space.grown_model(model, Mutation("depth", space.choose_target(model, "depth")))
    assert model.grown_cells == (1, 1, 1) and space.depth_of(model) == 2  # two cells in every stage


def test_a_growth_search_preserves_the_function_at_the_growth_and_selects_by_zico_on_the_grown_supernet(
    npz_path, tmp_path
):
    config = _search(npz_path, tmp_path / "run", cycles=2, growth="auto", grow_at="1:depth", selection_measure=ZICO)
    summary = train_and_evaluate(config, tmp_path / "run")
    records, epochs = _check_decisions(tmp_path / "run", summary, ZICO)
    (growth,) = [r for r in records if r["event"] == "growth"]
    assert (growth["cycle"], growth["kind"], growth["architecture"]) == (1, "depth", {"grown_cells": [0, 0, 1]})
    assert growth["params_after"] > growth["params_before"]
    assert growth["val_loss_after"] == pytest.approx(growth["val_loss_before"], rel=1e-6)  # the gate starts at 0
    assert growth["val_acc_after"] == growth["val_acc_before"]
    assert all(r["step"] > growth["step"] for r in records if r["event"] == "selection")  # on the grown supernet
    assert summary["architecture"] == {"grown_cells": [0, 0, 1]}
    assert [r["phase"] for r in epochs] == ["warmup", "arch"] * 2 + ["select"] * 6
    assert summary["steps"] == 2 * (3 + 3) + 6 * 2  # two cycles of warm-up and arch, tuning


def test_shrinking_drops_the_ops_of_lowest_merit_in_play_and_keeps_one():
    merit = np.array([0.3, np.nan, 0.1, 0.1, 0.5])
    allowed = np.array([True, False, True, True, True])
    assert dropped_ops(merit, allowed, 1) == [3]  # of equal merits the later goes first
    assert dropped_ops(merit, allowed, 2) == [3, 2]
    assert dropped_ops(merit, allowed, 9) == [3, 2, 0]  # the op of highest merit stays
    assert chosen_op(np.array([5.0, 1.0, 2.0]), np.array([False, True, True])) == 2
    logits = {"cell": np.zeros((2, 5), np.float32)}
    shrunk = without_ops(logits, ("cell", 1), [3, 2])
    assert candidates(shrunk["cell"][1]).tolist() == [True, True, False, False, True]
    assert candidates(shrunk["cell"][0]).all() and candidates(logits["cell"][1]).all()  # the rest, and the input
    np.testing.assert_array_equal(in_play(jnp.asarray(shrunk["cell"]))[1], [0, 0, DECIDED_LOGIT, DECIDED_LOGIT, 0])
    np.testing.assert_allclose(
        jax.nn.softmax(in_play(jnp.asarray(shrunk["cell"] + 3.0)))[1], [1 / 3, 1 / 3, 0, 0, 1 / 3]
    )


@pytest.mark.parametrize("measure", [REMOVAL, WEIGHT])
def test_a_shrinking_search_drops_the_weakest_op_per_edge_which_then_never_trains_or_wins(npz_path, tmp_path, measure):
    """Two cycles of 3 ops: after cycle 1 every edge drops its op of lowest merit (removal: the held-out loss its
    removal adds; weight: its softmax weight at the end of cycle 1); cycle 2 and the selection see two ops."""
    config = _search(npz_path, tmp_path / "run", cycles=2, shrink_ops=1, shrink_measure=measure,
                     selection_measure=REMOVAL, selection_tune_steps=0)  # fmt: skip
    summary = train_and_evaluate(config, tmp_path / "run")
    records, epochs = _check_decisions(tmp_path / "run", summary, REMOVAL)
    (shrink,) = [r for r in records if r["event"] == "shrink"]
    assert (shrink["cycle"], shrink["measure"], len(shrink["edges"])) == (1, measure, 6)
    dropped_by_edge = {edge["edge"]: edge["dropped"] for edge in shrink["edges"]}
    assert summary["shrinking"] == [{"cycle": 1, "measure": measure, "dropped": dropped_by_edge}]
    cycle_1_end = [r for r in epochs if r["cycle"] == 1][-1]
    for edge in shrink["edges"]:
        (dropped,) = edge["dropped"]
        assert dropped == min(reversed(edge["merit"]), key=edge["merit"].get)  # lowest, the later of equals
        assert edge["in_play"] == [op for op in edge["merit"] if op != dropped]
        if measure == WEIGHT:
            np.testing.assert_allclose(list(edge["merit"].values()), cycle_1_end["arch_weights"]["cell"][edge["row"]],
                                       atol=1e-6)  # fmt: skip
        ops = list(edge["merit"])
        for r in [r for r in epochs if r["cycle"] > 1]:  # dropped for good: weight exactly 0
            assert r["arch_weights"]["cell"][edge["row"]][ops.index(dropped)] == 0.0
        (decision,) = [d for d in summary["selection_decisions"] if d["row"] == edge["row"]]
        assert decision["merit"][dropped] is None and decision["op"] != dropped
    assert [r["phase"] for r in epochs] == ["warmup", "arch"] * 2 + ["select"] * 6


def test_the_time_estimate_counts_the_shrinking_and_a_selection_among_fewer_ops(npz_path, tmp_path):
    """6 edges of 3 ops, 16 images scored at a third of an image each: shrinking after cycle 1 scores 3 ops per edge
    and the unperturbed supernet once, after cycle 2 two ops per edge; the selection after 3 cycles one op and the
    unperturbed supernet per edge (each decision changes it)."""
    shapes = {"cell": (6, 3)}
    config = _search(npz_path, tmp_path, cycles=3, shrink_ops=1, shrink_measure=REMOVAL, selection_tune_steps=0)
    assert shrink_images(config, shapes, 1) == pytest.approx((6 * 3 + 1) * 16 / 3)
    assert shrink_images(config, shapes, 2) == pytest.approx((6 * 2 + 1) * 16 / 3)
    assert selection_images(config, shapes, 100) == pytest.approx(6 * 2 * 16 / 3)
    assert shrink_images(dataclasses.replace(config, shrink_measure=WEIGHT), shapes, 1) == 0.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"shrink_measure": "gain", "cycles": 2}, "unknown --shrink-measure 'gain'; use one of weight, removal, alone"),
        ({"shrink_ops": 1}, "--shrink-ops drops ops at the mutation phase of every cycle but the last, and --cycles"),
        ({"shrink_ops": -1}, "--shrink-ops must be a non-negative integer, got -1"),
        ({"shrink_ops": 1, "cycles": 2, "search": SearchConfig(space="nb201", sampler="dirichlet")},
         "--shrink-ops with --sampler dirichlet: a dropped op's Dirichlet concentration"),
    ],
)  # fmt: skip
def test_bad_shrink_settings_are_refused(npz_path, tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("+", r"\+")):
        _search(npz_path, tmp_path, **overrides)


def test_shrinking_is_refused_where_cells_do_not_keep_one_op_per_edge():
    with pytest.raises(ValueError, match="--shrink-ops narrows every edge toward one op, which the chain space's"):
        RunConfig(search=SearchConfig(space="chain"), cycles=2, plateau_window=0, shrink_ops=1)


def test_shrinking_that_would_leave_an_edge_without_ops_is_refused_before_the_run(npz_path, tmp_path):
    config = _search(npz_path, tmp_path / "run", cycles=3, shrink_ops=2)
    message = "--shrink-ops 2 over the 2 cycles before the last drops 4 of each edge's 3 ops, but one must stay; use "
    with pytest.raises(ValueError, match=message + "--shrink-ops <= 1 or fewer --cycles"):
        train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
