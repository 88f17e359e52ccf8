"""Growth: function preservation, optimiser-state surgery, training after growth, the rule, one trace per
architecture, and an end-to-end search with forced growth that is interrupted after a growth and resumed."""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import sys
import types

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import IMAGE, make_batch, search_setup
from flax.traverse_util import flatten_dict

from asose_jax.runtime.estimate import CPU_STEP_FLOPS_PER_S, training_seconds
from asose_jax.search import driver as search_driver
from asose_jax.search import growth, search_run
from asose_jax.search import iterations as search_iterations
from asose_jax.search.run_config import RunConfig
from asose_jax.search.run_state import RunProgress
from asose_jax.search.steps import make_search_steps
from asose_jax.spaces import build_supernet, space_of
from asose_jax.spaces.base import GrowthCaps, Mutation
from asose_jax.spaces.chain import CHAIN, ChainArchitecture, ChainGenotype
from asose_jax.spaces.chain.growth import mutate_architecture
from asose_jax.spaces.genotypes import genotype_edge_weights, genotype_from_json, genotype_to_json
from asose_jax.spaces.networks import build_network

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "experiments"))

import cifar10_search  # noqa: E402

OPS = ("skip_connect", "sep_conv_3x3", "max_pool_3x3")
MUTATIONS = {
    "depth": Mutation("depth", 1),  # a gated block between the stem-side block and the reduction
    "width_stage0": Mutation("width", 0, 1.5),  # the stem, block 0 and the reduction block's input
    "width_stage1": Mutation("width", 1, 1.75),  # mixed 1 and 2 copies per channel; feeds the classifier
    "branch": Mutation("branch", 1),
}


@pytest.fixture(scope="module")
def trained():
    """A tiny chain after a few weight and arch steps: non-trivial BN statistics, momentum and Adam moments."""
    config, model, state, steps = search_setup("chain", op_names=OPS, weight_lr=0.1)
    weight_step, arch_step = jax.jit(steps.weight_step), jax.jit(steps.arch_step)
    for seed in range(3):
        state, _ = weight_step(state, make_batch(seed, 8))
        state, _ = arch_step(state, make_batch(seed + 10, 8))
    return config, model, state


def logits(model, state, images, train_mode: bool, name: str = "blocks"):
    """Supernet logits with softmax edge weights (every op contributes) in training or evaluation mode."""
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    weights = {name: jax.nn.softmax(state["arch"][name], -1)}
    if train_mode:
        return model.apply(variables, images, weights, train=True, mutable=["batch_stats"])[0]
    return model.apply(variables, images, weights, train=False)


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_growth_preserves_the_function(trained, name):
    _, model, state = trained
    grown_model, grown = growth.grow(model, state, MUTATIONS[name], jax.random.key(7))
    images = make_batch(99, 8)["image"]
    for train_mode in (False, True):
        before, after = logits(model, state, images, train_mode), logits(grown_model, grown, images, train_mode)
        chex.assert_shape(after, (8, 10))
        np.testing.assert_allclose(after, before, atol=1e-5, rtol=0)
    assert grown_model.arch != model.arch


def test_nb201_depth_growth_preserves_the_function_carries_state_and_trains():
    """A gated cell appended to stage 1 of a tiny NAS-Bench-201 supernet (logits shared, so unchanged)."""
    config, model, state, _ = search_setup("nb201", weight_lr=0.1)
    batch = make_batch(3, 8)
    rng = np.random.default_rng(0)  # non-trivial BN statistics and momentum, without compiling a step
    state = {
        **state,
        "batch_stats": jax.tree.map(lambda x: 0.5 + rng.random(x.shape, np.float32), state["batch_stats"]),
        "weight_opt": jax.tree.map(lambda x: rng.standard_normal(x.shape, np.float32), state["weight_opt"]),
    }
    grown_model, grown = growth.grow(model, state, Mutation("depth", 1), jax.random.key(0))
    assert grown_model.grown_cells == (0, 1, 0)
    for train_mode in (False, True):
        before = logits(model, state, batch["image"], train_mode, "cell")
        after = logits(grown_model, grown, batch["image"], train_mode, "cell")
        np.testing.assert_allclose(after, before, atol=1e-5, rtol=0)
    np.testing.assert_array_equal(grown["arch"]["cell"], state["arch"]["cell"])
    old, new = _leaves(state["weight_opt"]), _leaves(grown["weight_opt"])
    for path, value in new.items():
        if path in old:
            np.testing.assert_array_equal(value, old[path], err_msg=path)
        else:
            assert "stage_1_grown_0" in path and not np.any(value), path
    grown_step = jax.jit(make_search_steps(grown_model, config).weight_step)
    losses = []
    for _ in range(4):
        grown, metrics = grown_step(grown, batch)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0]


def test_width_noise_breaks_symmetry_and_changes_the_function_only_slightly(trained):
    _, model, state = trained
    images = make_batch(99, 8)["image"]
    grown_model, grown = growth.grow(model, state, MUTATIONS["width_stage1"], jax.random.key(7), noise=0.05)
    diff = np.abs(logits(grown_model, grown, images, False) - logits(model, state, images, False))
    assert 1e-6 < diff.max() < 0.5


def _leaves(tree) -> dict:
    return {jax.tree_util.keystr(path): np.asarray(x) for path, x in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_old_optimizer_state_is_carried_bit_for_bit_and_new_state_is_zero(trained, name):
    _, model, state = trained
    mutation = MUTATIONS[name]
    grown_model, grown = growth.grow(model, state, mutation, jax.random.key(7))
    assert int(grown["step"]) == int(state["step"]) and np.array_equal(grown["rng"], state["rng"])
    # Momentum of the weights: old entries at their old (leading) positions, the rest zero.
    old, new = _leaves(state["weight_opt"]), _leaves(grown["weight_opt"])
    assert set(old) <= set(new)
    assert any(np.any(v != 0) for v in old.values())
    for path, value in new.items():
        if path not in old:
            assert not np.any(value), path  # a new parameter
            continue
        region = tuple(slice(0, n) for n in old[path].shape)
        np.testing.assert_array_equal(value[region], old[path], err_msg=path)
        rest = value.copy()
        rest[region] = 0
        assert not np.any(rest), path  # widened channels start without momentum
    # Logits and Adam moments: old rows moved to the old edges' rows, new rows zero (moments) or drawn (logits).
    rows = space_of(model).logit_rows(model, grown_model)[("blocks",)]
    np.testing.assert_array_equal(np.asarray(grown["arch"]["blocks"])[rows], state["arch"]["blocks"])
    adam_old, adam_new = state["arch_opt"][1][0], grown["arch_opt"][1][0]
    assert int(adam_new.count) == int(adam_old.count) > 0
    for moment in ("mu", "nu"):
        new_moment = np.asarray(getattr(adam_new, moment)["blocks"])
        np.testing.assert_array_equal(new_moment[rows], getattr(adam_old, moment)["blocks"])
        assert not np.any(np.delete(new_moment, rows, axis=0))
    new_rows = np.delete(np.asarray(grown["arch"]["blocks"]), rows, axis=0)
    assert new_rows.shape[0] == (mutation.kind in ("depth", "branch"))
    assert np.all(new_rows != 0) and np.all(np.abs(new_rows) < 0.01)  # drawn like the initial logits


def test_mutated_architectures_and_gates():
    arch = ChainArchitecture.initial(4, 2)
    deeper = mutate_architecture(arch, Mutation("depth", 1))
    assert [(b.name, b.stage, b.gated) for b in deeper.blocks] == [
        ("block_0", 0, False), ("block_2", 0, True), ("block_1", 1, False)]  # fmt: skip
    assert deeper.edge_rows() == [("block_0", 0), ("block_2", 0), ("block_1", 0)]
    wider = mutate_architecture(arch, Mutation("width", 1, 1.5))
    assert wider.stage_channels == (4, 12)
    branched = mutate_architecture(mutate_architecture(arch, Mutation("branch", 0)), Mutation("branch", 0))
    assert branched.edge_rows() == [("block_0", 0), ("block_0", 1), ("block_0", 2), ("block_1", 0)]
    assert json.loads(json.dumps(branched.to_json())) == branched.to_json()  # saved copies compare equal
    assert ChainArchitecture.from_json(branched.to_json()) == branched
    with pytest.raises(ValueError, match="stride 1"):  # a gated block cannot start the reduction stage
        ChainArchitecture(4, (4, 8), (deeper.blocks[0], dataclasses.replace(deeper.blocks[2], gated=True)))


def test_the_rule_chooses_targets_rotates_kinds_and_respects_caps():
    model = build_supernet("chain", 4, 4, op_names=OPS)  # two blocks per stage
    assert CHAIN.choose_target(model, "depth") == 4  # tie: the later stage, after its last block
    assert CHAIN.choose_target(CHAIN.grown_model(model, Mutation("depth", 4)), "depth") == 2  # stage 0 now
    assert CHAIN.choose_target(model, "width") == 1
    assert CHAIN.choose_target(CHAIN.grown_model(model, Mutation("width", 1, 1.5)), "width") == 0
    assert CHAIN.choose_target(model, "branch") == 3
    assert growth.kinds_to_try("auto", None) == ("depth", "width", "branch")
    assert growth.kinds_to_try("auto", "width") == ("branch", "depth", "width")
    assert growth.kinds_to_try("width", "width") == ("width",)
    caps = GrowthCaps(max_depth=4, max_width=2.0, max_branches=1, max_params=10**9)
    mutation, refused = growth.next_mutation(model, ("depth", "width"), caps, lambda m: 0, 1.5)
    assert mutation == Mutation("width", 1, 1.5) and refused == ["depth: --max-depth 4"]
    too_deep = GrowthCaps(max_depth=2, max_width=2.0, max_branches=1, max_params=10**9)  # only caps depth growth
    assert growth.next_mutation(model, ("width",), too_deep, lambda m: 0, 1.5)[0] == Mutation("width", 1, 1.5)
    tight = GrowthCaps(max_depth=8, max_width=1.2, max_branches=0, max_params=10)
    mutation, refused = growth.next_mutation(model, ("width", "branch", "depth"), tight, lambda m: 11, 1.5)
    assert mutation is None and [r.split(":")[0] for r in refused] == ["width", "branch", "depth"]
    assert "--max-params 10" in refused[-1]
    nb201 = build_supernet("nb201", 2, 1)
    assert space_of(nb201).growth_kinds == ("depth",) and space_of(build_supernet("darts", 2, 3)).growth_kinds == ()
    assert space_of(nb201).choose_target(nb201, "depth") == 2
    assert space_of(nb201).choose_target(nb201.clone(grown_cells=(0, 1, 1)), "depth") == 0
    mutation, refused = growth.next_mutation(nb201, ("width", "depth"), caps, lambda m: 0, 1.5)
    assert mutation == Mutation("depth", 2) and refused[0].startswith("width: not a mutation")


def _fake_run(config: RunConfig, accuracies: list[float], history: list[dict]):
    """What ``SearchRun.decide_growth`` reads, without data or compilation."""
    writer = types.SimpleNamespace(records=[])
    writer.write = writer.records.append
    progress = RunProgress(growth=history, cycle_accuracies=accuracies)
    model = search_setup("chain", op_names=OPS)[1]
    fake = types.SimpleNamespace(config=config, model=model, writer=writer, progress=progress, state={"step": 0})
    fake.accuracies_since_growth = lambda: search_run.SearchRun.accuracies_since_growth(fake)
    fake.count_weights = lambda arch: 0
    fake.next_mutation = lambda kinds: search_run.SearchRun.next_mutation(fake, kinds)
    return fake


def test_growth_is_triggered_by_a_plateau_since_the_last_growth_or_forced():
    auto = RunConfig(growth_window=2, growth_threshold=1.0, cycles=10)
    flat = [30.0, 30.5, 30.8]
    assert search_run.SearchRun.decide_growth(_fake_run(auto, flat, []), 4) == (
        Mutation("depth", 2),
        "plateau over 2 cycles",
    )
    assert search_run.SearchRun.decide_growth(_fake_run(auto, [30.0, 33.0, 36.0], []), 4) is None  # still improving
    after_depth = [{"cycle": 3, "kind": "depth"}]  # the window restarts at the growth
    assert search_run.SearchRun.decide_growth(_fake_run(auto, flat + [31.0], after_depth), 5) is None
    decision = search_run.SearchRun.decide_growth(_fake_run(auto, flat + [31.0, 31.2], after_depth), 6)
    assert decision[0].kind == "width"  # the rotation after depth
    off = RunConfig(growth="off", cycles=10)
    assert search_run.SearchRun.decide_growth(_fake_run(off, flat, []), 4) is None
    forced = RunConfig(grow_at="2:branch", cycles=10)
    assert search_run.SearchRun.decide_growth(_fake_run(forced, flat, []), 4) is None  # --grow-at replaces the plateau
    assert search_run.SearchRun.decide_growth(_fake_run(forced, [], []), 2) == (
        Mutation("branch", 1),
        "forced (--grow-at)",
    )
    capped = _fake_run(RunConfig(grow_at="2:depth", cycles=10, max_depth=2), [], [])
    assert search_run.SearchRun.decide_growth(capped, 2) is None
    assert capped.writer.records[0]["event"] == "growth_skipped"


def test_grown_models_train_and_each_architecture_is_traced_once():
    """Two growths: the weight iteration is traced exactly three times, and the loss on a fixed batch still
    decreases after each growth (the architecture iteration's traces are counted end to end, below)."""
    config = RunConfig(search=search_setup("chain", op_names=OPS, weight_lr=0.1)[0], batch_size=8)
    _, model, state, _ = search_setup("chain", op_names=OPS, weight_lr=0.1)
    chex.clear_trace_counter()

    def counted(fn, *args, **kwargs):
        return real_jit(chex.assert_max_traces(fn, n=3), *args, **kwargs)

    real_jit = search_iterations.jit_data_parallel
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(search_iterations, "jit_data_parallel", counted)
        jitted = search_iterations.jit_iterations(config, None)
    rng = np.random.default_rng(0)
    images, labels = (
        jnp.asarray(rng.integers(0, 256, (16, IMAGE, IMAGE, 3), np.uint8)),
        jnp.asarray(rng.integers(0, 10, 16)),
    )
    idx = np.arange(8)
    state = jax.tree.map(jnp.copy, state)
    for step, mutation in enumerate((None, Mutation("depth", 1), Mutation("width", 1, 1.5))):
        if mutation is not None:
            model, state = growth.grow(model, jax.device_get(state), mutation, jax.random.key(step))
        iterations = search_run.make_iterations(model, config, None, jitted)
        losses = []
        for _ in range(6):
            state, metrics = iterations.weight_step(state, images, labels, idx, np.bool_(False))
            losses.append(float(metrics["loss"]))
        assert losses[-1] < losses[0], (mutation, losses)
        if mutation is not None and mutation.kind == "depth":
            assert float(state["params"]["block_2"]["gate"]["gate"]) != 0  # the new block's gate learns
    # Exactly three: at most three (no AssertionError so far), and a fourth architecture is one too many.
    with pytest.raises(AssertionError, match="traced > 3 times"):
        model, state = growth.grow(model, jax.device_get(state), Mutation("branch", 0), jax.random.key(9))
        search_run.make_iterations(model, config, None, jitted).weight_step(state, images, labels, idx, np.bool_(False))


def test_a_grown_branch_trains(trained):
    config, model, state = trained
    grown_model, grown = growth.grow(model, state, MUTATIONS["branch"], jax.random.key(3))
    weight_step = jax.jit(make_search_steps(grown_model, config).weight_step)
    batch, losses = make_batch(5, 8), []
    for _ in range(4):
        grown, metrics = weight_step(grown, batch)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < losses[0]
    assert float(grown["params"]["block_1"]["branch_0_gate"]["gate"]) != 0  # the branch's gate learns


def test_grown_genotypes_build_discrete_networks_with_gates_and_branches():
    genotype = ChainGenotype(
        ("sep_conv_3x3", "skip_connect", "max_pool_3x3"), (0, 0, 1), (False, True, False),
        ((), ("max_pool_3x3",), ()), (1.5, 2.0),
    )  # fmt: skip
    assert genotype_from_json(json.loads(json.dumps(genotype_to_json(genotype)))) == genotype
    assert ChainGenotype(("skip_connect", "sep_conv_3x3")).stages == (0, 1)  # ungrown defaults
    np.testing.assert_array_equal(genotype_edge_weights(genotype, OPS)["blocks"].argmax(1), [1, 0, 2, 2])
    net = build_network(genotype, init_channels=4)
    shapes = jax.eval_shape(lambda: net.init(jax.random.key(0), jnp.zeros((2, IMAGE, IMAGE, 3)), train=False))
    params = {"/".join(path): x.shape for path, x in flatten_dict(shapes["params"]).items()}
    assert params["block_1/gate/gate"] == () and params["block_1/branch_0_gate/gate"] == ()
    assert params["stem_conv/kernel"] == (3, 3, 3, 6) and params["classifier/kernel"] == (8, 10)
    with pytest.raises(ValueError, match="stride 1"):
        build_network(ChainGenotype(("skip_connect", "skip_connect"), (0, 1), (False, True)), init_channels=4)


def test_search_with_forced_growth_interrupted_after_a_growth_and_resumed(npz_path, tmp_path):
    """``--grow-at 1:depth,2:branch`` on tiny synthetic data, stopped by SIGTERM right after the first growth
    (its checkpoint holds the grown network) and resumed: each step function is traced exactly three times
    over the two growths (across both halves of the run), every growth is recorded once with the accuracy
    unchanged by it, and the final genotype is the grown one."""
    workdir = tmp_path / "run"
    flags = [
        "--preset", "smoke", "--data", f"npz:{npz_path}", "--workdir", str(workdir), "--compilation-cache", "",
        "--init-channels", "4", "--depth", "2", "--ops", ",".join(OPS), "--batch-size", "8", "--cycles", "3",
        "--warmup-epochs", "1", "--log-every", "1", "--grow-at", "1:depth,2:branch",
    ]  # fmt: skip
    real_grow, real_jit, traces = (
        search_run.SearchRun.grow,
        search_iterations.jit_data_parallel,
        {"weight_step": 0, "arch_step": 0},
    )

    def grow_then_stop(run, *args):
        event = real_grow(run, *args)
        run.signal = 15  # as SIGTERM would: checkpoint at the next boundary and stop
        return event

    def counting_jit(fn, *args, **kwargs):
        if fn.__name__ not in traces:  # the evaluation function is traced per edge-weight structure too
            return real_jit(fn, *args, **kwargs)

        @functools.wraps(fn)
        def traced(*a, **k):  # the Python body runs only while jax traces
            traces[fn.__name__] += 1
            return fn(*a, **k)

        return real_jit(chex.assert_max_traces(traced, n=3), *args, **kwargs)

    chex.clear_trace_counter()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(search_iterations, "jit_data_parallel", counting_jit)
        patch.setattr(search_run.SearchRun, "grow", grow_then_stop)
        assert cifar10_search.main(flags) == 128 + 15
        patch.setattr(search_run.SearchRun, "grow", real_grow)
        assert cifar10_search.main([*flags, "--resume"]) == 0
    assert traces == {"weight_step": 3, "arch_step": 3}  # two growths, three architectures, one trace each
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    events = [r for r in records if r["event"] == "growth"]
    assert [(e["cycle"], e["kind"], e["where"]) for e in events] == [
        (1, "depth", "block_2 (gated) after block_1"), (2, "branch", "block_2: branch_0")]  # fmt: skip
    for event in events:
        assert event["val_acc_after"] == pytest.approx(event["val_acc_before"], abs=1e-9)
        assert event["params_after"] > event["params_before"]
    assert events[1]["params_before"] == events[0]["params_after"]
    epochs = [r for r in records if r["event"] == "epoch"]
    assert [len(r["edge_names"]["blocks"]) for r in epochs] == [2, 2, 3, 3, 3, 4, 4, 4, 4]
    genotype = json.loads((workdir / "genotype.json").read_text())
    assert genotype["gated"] == [False, False, True] and len(genotype["branches"][2]) == 1
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["resumed"] and [g["kind"] for g in summary["growth"]] == ["depth", "branch"]
    assert summary["params_final"]["weights"] == events[1]["params_after"]
    assert summary["params_final"]["arch"] == 4 * len(OPS)
    build_network(genotype_from_json(genotype), init_channels=4)  # retrainable
    assert (workdir / "curves.png").stat().st_size > 0


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--grow-at", "2"], "'2' is not CYCLE:KIND"),
        (["--grow-at", "2:deeper"], "'2:deeper' is not CYCLE:KIND"),
        (["--grow-at", "9:depth"], "must be unique and lie in 1..3"),
        (["--grow-at", "1:depth", "--growth", "off"], "--growth is off"),
        (["--grow-at", "1:width", "--space", "nb201"], "the nb201 space supports depth"),
        (["--grow-at", "1:depth", "--space", "darts"], "the darts space supports no growth"),
        (["--growth", "sometimes"], "unknown --growth 'sometimes'"),
        (["--width-factor", "1"], "--width-factor must be > 1.0"),
        (["--growth-strategy", "branch", "--space", "nb201"], "--growth-strategy branch"),
    ],
)
def test_bad_growth_flags_fail_in_one_line(flags, message, tmp_path, capsys):
    workdir = tmp_path / "run"
    assert cifar10_search.main(["--preset", "smoke", "--cycles", "3", "--workdir", str(workdir), *flags]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not workdir.exists()


def test_the_plateau_stop_waits_while_the_network_can_still_grow():
    can_grow = search_run.SearchRun.can_still_grow
    assert can_grow(_fake_run(RunConfig(cycles=10), [], []))
    assert not can_grow(_fake_run(RunConfig(cycles=10, growth="off"), [], []))
    assert not can_grow(_fake_run(RunConfig(cycles=10, grow_at="2:depth"), [], []))  # forced growth only
    capped = RunConfig(cycles=10, max_depth=2, max_width=1.0, max_branches=0)
    assert not can_grow(_fake_run(capped, [], []))


def test_the_time_estimate_counts_each_phase_at_the_size_that_trains_in_it(npz_path):
    """Warm-up and architecture steps at the cycle's starting size, re-training after its growth (``--grow-at``);
    every step and evaluation counted once."""
    search = dataclasses.replace(search_setup("nb201")[0], op_names=("none", "skip_connect", "nor_conv_3x3"))
    plain = RunConfig(search=search, data=f"npz:{npz_path}", batch_size=8, cycles=3, warmup_epochs=1, arch_epochs=1,
                      retrain_epochs=1, plateau_window=0, growth="off")  # fmt: skip
    grown = dataclasses.replace(plain, growth="auto", grow_at="1:depth,2:depth")
    runs = {name: search_driver.prepare(config, None, False) for name, config in (("plain", plain), ("grown", grown))}
    models = search_driver.cycle_supernets(grown, runs["grown"].model)
    assert [m.grown_cells for m in models] == [(0, 0, 0), (0, 0, 1), (0, 1, 1), (0, 1, 1)]
    flops = [search_driver.supernet_flops(m, (IMAGE, IMAGE, 3)) for m in models]
    assert flops[0] < flops[1] < flops[2] == flops[3]
    warmup, arch, _, retrain = runs["plain"].phases
    held_out = runs["plain"].summary["data"]["arch_split"]
    before = (warmup.steps + 2 * arch.steps) * 8 + 2 * held_out / 3  # images: warm-up, arch (two halves), 2 evaluations
    after = retrain.steps * 8 + held_out / 3
    steps = 3 * (warmup.steps + 2 * arch.steps + retrain.steps)
    assert search_driver.estimated_seconds(runs["plain"]) == pytest.approx(
        training_seconds(flops[0], 3 * (before + after), steps)
    )
    extra = sum((flops[c] - flops[0]) * before + (flops[c + 1] - flops[0]) * after for c in range(3))
    difference = search_driver.estimated_seconds(runs["grown"]) - search_driver.estimated_seconds(runs["plain"])
    assert difference == pytest.approx(3 * extra / CPU_STEP_FLOPS_PER_S)
