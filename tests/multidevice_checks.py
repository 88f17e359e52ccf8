"""Data parallelism on 8 CPU devices; run by ``test_multidevice.py`` in a process started with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` (the flag must be set before JAX starts)."""

import json
import pathlib
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import IMAGE, tiny_config
from jax.sharding import PartitionSpec as P

from asose_jax.runtime import parallel
from asose_jax.search.iterations import jit_iterations, make_iterations
from asose_jax.search.run_config import RunConfig
from asose_jax.search.steps import init_search_state, make_search_steps, supernet_from_config
from asose_jax.spaces import uniform_arch_weights
from asose_jax.spaces.genotypes import ChainGenotype
from asose_jax.spaces.networks import build_network
from asose_jax.train.config import recipe
from asose_jax.train.steps import init_train_state, make_train_step, scan_steps

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))

import cifar10_search  # noqa: E402
import cifar10_train  # noqa: E402

BATCH, N_IMAGES = 16, 48


def test_eight_devices():
    assert jax.device_count() == 8, "run with XLA_FLAGS=--xla_force_host_platform_device_count=8"


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    return (jnp.asarray(rng.integers(0, 256, (N_IMAGES, IMAGE, IMAGE, 3), dtype=np.uint8)),
            jnp.asarray(rng.integers(0, 10, N_IMAGES), jnp.int32))  # fmt: skip


@pytest.fixture(scope="module", params=["gumbel_soft", "gumbel_hard"])
def search(request):
    config = RunConfig(search=tiny_config("chain", sampler=request.param, op_names=("skip_connect", "sep_conv_3x3",
                       "max_pool_3x3")), batch_size=BATCH, cutout=4)  # fmt: skip
    model = supernet_from_config(config.search)
    return config, model, init_search_state(model, config.search, (IMAGE, IMAGE, 3))


def _copy(tree):
    return jax.tree.map(jnp.copy, tree)


def test_sharded_iterations_match_one_device(search, data):
    """weight, arch and eval iterations: same losses, metrics, updated weights, BN statistics, logits and
    optimiser states on 8 devices as on one, on the same global batch."""
    config, model, state = search
    mesh = parallel.make_mesh()
    one, eight = make_iterations(model, config, None), make_iterations(model, config, mesh)
    idx_w, idx_a = np.arange(BATCH), np.arange(BATCH, 2 * BATCH)
    single_state, sharded_state = _copy(state), parallel.replicate(_copy(state), mesh)
    for uniform in (True, False):
        single_state, single_m = one.weight_step(single_state, *data, idx_w, np.bool_(uniform))
        sharded_state, sharded_m = eight.weight_step(sharded_state, *data, parallel.shard_batch(idx_w, mesh),
                                                 np.bool_(uniform))  # fmt: skip
        chex.assert_trees_all_close(sharded_m, single_m, rtol=2e-5, atol=2e-6)
    single_state, single_m = one.arch_step(single_state, *data, idx_w, idx_a)
    sharded_state, sharded_m = eight.arch_step(sharded_state, *data, parallel.shard_batch(idx_w, mesh),
                                          parallel.shard_batch(idx_a, mesh))  # fmt: skip
    chex.assert_trees_all_close(sharded_m, single_m, rtol=2e-5, atol=2e-6)
    chex.assert_trees_all_close(sharded_state, single_state, rtol=2e-5, atol=2e-6)
    mask = np.arange(BATCH) < BATCH - 3
    single_e = one.evaluate(single_state, *data, idx_a, mask, None)
    sharded_e = eight.evaluate(sharded_state, *data, parallel.shard_batch(idx_a, mesh),
                               parallel.shard_batch(mask, mesh), None)  # fmt: skip
    chex.assert_trees_all_close(sharded_e, single_e, rtol=2e-5, atol=2e-6)
    for leaf in jax.tree.leaves(sharded_state):
        assert leaf.sharding.is_fully_replicated


@pytest.mark.parametrize("measure", ["removal", "zico", "ntk", "nwot"])
def test_sharded_selection_scores_match_one_device(data, measure):
    """The perturbed supernet's scores (held-out loss, ZiCo, NTK conditioning, NASWOT's pattern kernel) on 8
    devices as on one, on two batches whose examples are sharded."""
    config = RunConfig(search=tiny_config("chain", sampler="softmax"), batch_size=BATCH, selection_measure=measure)
    model = supernet_from_config(config.search)
    state = init_search_state(model, config.search, (IMAGE, IMAGE, 3))
    mesh = parallel.make_mesh()
    one, eight = make_iterations(model, config, None), make_iterations(model, config, mesh)
    score = "mixture_eval" if measure == "removal" else "mixture_score"
    idx = np.arange(2 * BATCH).reshape(2, BATCH)
    weights = uniform_arch_weights(model)
    single = getattr(one, score)(state, *data, idx, weights)
    sharded = getattr(eight, score)(parallel.replicate(state, mesh), *data, parallel.shard_batch(idx, mesh, 1),
                                    weights)  # fmt: skip
    # ZiCo divides by a standard deviation over two batches, which magnifies the sum order's rounding (4e-5 seen).
    chex.assert_trees_all_close(sharded, single, rtol=2e-4, atol=2e-6)


def test_sharded_gradients_match_one_device(search, data):
    config, model, state = search
    steps = make_search_steps(model, config.search)
    mesh = parallel.make_mesh()
    batch = {"image": jnp.asarray(data[0][:BATCH], jnp.float32) / 255.0, "label": data[1][:BATCH]}
    sharded_batch = jax.device_put(batch, parallel.batch_sharding(mesh))
    for grad_fn in (steps.weight_grad, steps.arch_grad):
        single = jax.jit(grad_fn)(state, batch)[0]
        sharded = jax.jit(grad_fn, in_shardings=(parallel.replicated(mesh), parallel.batch_sharding(mesh)))(
            parallel.replicate(state, mesh), sharded_batch
        )[0]
        chex.assert_trees_all_close(sharded, single, rtol=2e-5, atol=2e-6)


def test_batches_really_are_sharded(search, data):
    config, model, state = search
    mesh = parallel.make_mesh()
    idx = parallel.shard_batch(np.arange(BATCH), mesh)
    assert idx.sharding.spec == P("data")
    assert sorted(len(s.data) for s in idx.addressable_shards) == [BATCH // 8] * 8
    stacked = parallel.shard_batch(np.arange(2 * BATCH).reshape(2, BATCH), mesh, leading=1)
    assert {s.data.shape for s in stacked.addressable_shards} == {(2, BATCH // 8)}
    weights = jit_iterations(config, mesh).weight_step
    hlo = weights.lower(model, parallel.replicate(state, mesh), *data, idx, np.bool_(False)).compile().as_text()
    assert "all-reduce" in hlo  # batch statistics and gradients are reduced across the devices


def test_steps_are_traced_once(search, data):
    config, model, state = search
    mesh = parallel.make_mesh()
    iterations = make_iterations(model, config, mesh)
    state = parallel.replicate(_copy(state), mesh)
    for seed in range(3):
        idx = parallel.shard_batch(np.random.default_rng(seed).permutation(N_IMAGES)[:BATCH], mesh)
        state, _ = iterations.weight_step(state, *data, idx, np.bool_(seed == 0))
        state, _ = iterations.arch_step(state, *data, idx, idx)
    assert iterations.weight_step.func._cache_size() == 1 and iterations.arch_step.func._cache_size() == 1


def test_train_iteration_is_traced_once(data):
    chex.clear_trace_counter()
    mesh = parallel.make_mesh()
    train_config = recipe("fast")
    net = build_network(ChainGenotype(("sep_conv_3x3", "skip_connect")), init_channels=4)
    step = make_train_step(net, train_config, 100, 10, mesh)
    iteration = parallel.jit_data_parallel(chex.assert_max_traces(scan_steps(step), n=1), mesh, {"idx": 1})
    train_state = parallel.replicate(init_train_state(net, train_config, (IMAGE, IMAGE, 3)), mesh)
    for seed in range(3):
        idx = np.random.default_rng(seed).permutation(N_IMAGES)[: 2 * BATCH].reshape(2, BATCH)
        train_state, _ = iteration(train_state, *data, parallel.shard_batch(idx, mesh, leading=1))


def test_retrain_iteration_matches_one_device(data):
    config = recipe("fast")
    net = build_network(ChainGenotype(("sep_conv_3x3", "skip_connect")), init_channels=4)
    mesh = parallel.make_mesh()
    state = init_train_state(net, config, (IMAGE, IMAGE, 3))
    idx = np.arange(2 * BATCH).reshape(2, BATCH)
    single = jax.jit(scan_steps(make_train_step(net, config, 100, 10)))(_copy(state), *data, idx)
    sharded = parallel.jit_data_parallel(scan_steps(make_train_step(net, config, 100, 10, mesh)), mesh, {"idx": 1})(
        parallel.replicate(_copy(state), mesh), *data, parallel.shard_batch(idx, mesh, leading=1)
    )
    chex.assert_trees_all_close(sharded, single, rtol=2e-5, atol=2e-6)


def _search_args(npz_path, workdir, batch):
    return ["--preset", "smoke", "--data", f"npz:{npz_path}", "--workdir", str(workdir), "--compilation-cache", "",
            "--init-channels", "4", "--depth", "2", "--ops", "skip_connect,sep_conv_3x3", "--batch-size", str(batch),
            "--cycles", "1", "--plateau-window", "0", "--log-every", "1"]  # fmt: skip


def test_search_cli_on_eight_devices(tmp_path, npz_path):
    assert cifar10_search.main(_search_args(npz_path, tmp_path / "run", 8)) == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["device"].endswith("x8") and 0 <= summary["test_acc"] <= 100


def test_train_cli_on_eight_devices(tmp_path, npz_path):
    args = ["--genotype", "NB201_BEST", "--data", f"npz:{npz_path}", "--workdir", str(tmp_path / "run"),
            "--compilation-cache", "", "--recipe", "fast", "--epochs", "1", "--warmup-epochs", "0",
            "--batch-size", "16", "--init-channels", "2", "--layers", "1"]  # fmt: skip
    assert cifar10_train.main(args) == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["device"].endswith("x8")


def test_indivisible_batch_is_one_line(tmp_path, npz_path, capsys):
    assert cifar10_search.main(_search_args(npz_path, tmp_path / "run", 12)) == 2
    err = capsys.readouterr().err
    assert "--batch-size 12 does not divide by the 8 devices" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()
