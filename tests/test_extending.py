"""The recipes for extending the library (docs/architecture.md, "Adding something"), followed by tests.

* an op: registered in ``OPS`` and searched with, through the search driver, then trained as a discrete network;
* a sampler: registered in ``SAMPLERS`` and searched with in the same run;
* a space: every registered space implements the ``SearchSpace`` interface end to end (a new space added to
  ``SPACES`` is checked by this test without another line);
* a growth kind: every kind of every space preserves the supernet's function (likewise automatic), and a toy
  kind added by the recipe grows a supernet through ``growth.grow``.
"""

from __future__ import annotations

import chex
import flax.linen as nn
import jax
import numpy as np
import pytest
from conftest import IMAGE, TINY, make_batch

from asose_jax.nn.initializers import init_variables
from asose_jax.nn.operations import OPS, batch_norm, conv
from asose_jax.runtime.metrics_log import read_metrics
from asose_jax.search import growth
from asose_jax.search.driver import train_and_evaluate
from asose_jax.search.run_config import RunConfig
from asose_jax.search.sampling import SAMPLERS, Sampler
from asose_jax.search.step_config import SearchConfig
from asose_jax.search.steps import init_search_state, supernet_from_config
from asose_jax.spaces import SPACES, base, space_of, uniform_arch_weights
from asose_jax.spaces.base import Mutation
from asose_jax.spaces.genotypes import derive_genotype, genotype_edge_weights, genotype_from_json, genotype_to_json
from asose_jax.spaces.networks import build_network


class TanhConv(nn.Module):
    """A toy op: ``BN(conv1x1(tanh(x)))`` at ``stride``, ``features`` channels out."""

    features: int
    stride: int
    affine: bool

    @nn.compact
    def __call__(self, x, train: bool):
        return batch_norm(train, self.affine)(conv(self.features, (1, 1), (self.stride, self.stride))(jax.nn.tanh(x)))


def _sharpened(a: jax.Array) -> jax.Array:
    return jax.nn.softmax(2.0 * a, axis=-1)


def test_a_registered_op_and_sampler_are_searched_with_and_trained(monkeypatch, npz_path, tmp_path):
    monkeypatch.setitem(OPS, "tanh_conv_1x1", lambda c, s, affine, name=None: TanhConv(c, s, affine, name=name))
    monkeypatch.setitem(SAMPLERS, "sharpened", Sampler(lambda a, key, tau: _sharpened(a), _sharpened, needs_key=False))
    ops = ("skip_connect", "tanh_conv_1x1")
    search = SearchConfig(space="chain", init_channels=4, depth=2, op_names=ops, sampler="sharpened", arch_lr=0.05)
    config = RunConfig(search=search, data=f"npz:{npz_path}", batch_size=8, cycles=1, warmup_epochs=1, arch_epochs=1,
                       retrain_epochs=0, plateau_window=0, growth="off", log_every=1)  # fmt: skip
    summary = train_and_evaluate(config, tmp_path / "run")
    assert summary["val_measure"] == "supernet" and 0 <= summary["val_acc"] <= 100
    assert set(summary["genotype"]["ops"]) <= set(ops)
    epochs = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if r["event"] == "epoch"]
    assert [r["phase"] for r in epochs] == ["warmup", "arch"]
    assert np.shape(epochs[-1]["arch_weights"]["blocks"]) == (2, 2)
    warmup, arch = (np.log(np.asarray(r["arch_weights"]["blocks"])) for r in epochs)  # log-softmax of the logits
    assert np.abs(arch - warmup).max() > 0.01  # the architecture epoch moved the logits (by 0.14; the warm-up: 0)
    network = build_network(genotype_from_json(summary["genotype"]), init_channels=4, num_classes=10)
    images = np.zeros((2, IMAGE, IMAGE, 3), np.float32)
    variables = network.init(jax.random.key(0), images, train=False)
    chex.assert_shape(network.apply(variables, images, train=False)[0], (2, 10))  # (logits, auxiliary logits)


@pytest.mark.parametrize("name", list(SPACES))
def test_every_space_implements_the_interface(name):
    """Supernet, logits, genotype derivation, JSON, edge weights of the genotype and the discrete network."""
    space = SPACES[name]
    model = supernet_from_config(SearchConfig(space=name, **TINY[name]))
    assert space_of(model) is space
    state = init_search_state(model, SearchConfig(space=name, **TINY[name]), (IMAGE, IMAGE, 3))
    shapes = model.arch_shapes()
    assert {k: v.shape for k, v in state["arch"].items()} == shapes
    ops = tuple(model.op_names)
    genotype = derive_genotype(name, jax.device_get(state["arch"]), ops, model)
    assert space_of(genotype) is space and genotype_from_json(genotype_to_json(genotype)) == genotype
    space.check_genotype(genotype)
    one_hot = genotype_edge_weights(genotype, ops)
    assert {k: np.shape(v) for k, v in one_hot.items()} == shapes
    images = make_batch(0, 2)["image"]
    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    chex.assert_shape(model.apply(variables, images, one_hot, train=False, single_path=True), (2, 10))
    depth = None if name == "chain" else TINY[name]["depth"]  # the genotype's own / a tiny network
    network = build_network(genotype, TINY[name]["init_channels"], depth, num_classes=10)
    net_vars = network.init(jax.random.key(0), images, train=False)
    chex.assert_shape(network.apply(net_vars, images, train=False)[0], (2, 10))
    names = space.edge_names(model)
    assert names is None or {k: len(v) for k, v in names.items()} == {k: s[0] for k, s in shapes.items()}


@pytest.mark.parametrize(
    ("name", "kind"), [(name, kind) for name, space in SPACES.items() for kind in space.growth_kinds]
)
def test_every_growth_kind_preserves_the_function(name, kind):
    config = SearchConfig(space=name, **TINY[name])
    model = supernet_from_config(config)
    variables = init_variables(model, jax.random.key(0), (IMAGE, IMAGE, 3), uniform_arch_weights(model), train=False)
    state = {**init_search_state(model, config, (IMAGE, IMAGE, 3)), **variables}
    space = space_of(model)
    mutation = Mutation(kind, space.choose_target(model, kind), 1.5 if kind == "width" else 1.0)
    grown_model, grown = growth.grow(model, state, mutation, jax.random.key(1))
    images = make_batch(5, 4)["image"]

    def outputs(m, s):
        weights = {k: jax.nn.softmax(a, -1) for k, a in s["arch"].items()}
        return m.apply({"params": s["params"], "batch_stats": s["batch_stats"]}, images, weights, train=False)

    np.testing.assert_allclose(outputs(grown_model, grown), outputs(model, state), atol=1e-5, rtol=0)
    assert space.architecture_json(grown_model) != space.architecture_json(model)


def test_a_toy_growth_kind_follows_the_recipe(monkeypatch):
    """The recipe for a growth kind (docs/architecture.md, "Adding something"), followed with ``toy_deepen``: a
    gated cell at the end of the nb201 supernet's first stage. The kind is declared in ``GROWTH_KINDS`` and by
    the space, which implements ``grown_model``, ``choose_target`` and ``describe``; growth then preserves the
    function through ``growth.grow``, and a space that does not declare the kind refuses it."""
    monkeypatch.setattr(base, "GROWTH_KINDS", (*base.GROWTH_KINDS, "toy_deepen"))
    nb201 = SPACES["nb201"]

    class ToySpace(type(nb201)):
        growth_kinds = (*nb201.growth_kinds, "toy_deepen")

        def grown_model(self, model, mutation):
            if mutation.kind != "toy_deepen":
                return super().grown_model(model, mutation)
            return super().grown_model(model, Mutation("depth", 0))

        def choose_target(self, model, kind):
            return 0 if kind == "toy_deepen" else super().choose_target(model, kind)

        def describe(self, model, mutation):
            return "toy: a gated cell at the end of stage 0"

    monkeypatch.setitem(SPACES, "nb201", ToySpace())
    config = SearchConfig(space="nb201", **TINY["nb201"])
    model = supernet_from_config(config)
    state = init_search_state(model, config, (IMAGE, IMAGE, 3))
    mutation = Mutation("toy_deepen", space_of(model).choose_target(model, "toy_deepen"))
    grown_model, grown = growth.grow(model, state, mutation, jax.random.key(1))
    assert grown_model.grown_cells == (1, 0, 0)
    images = make_batch(5, 4)["image"]

    def outputs(m, s):
        weights = {k: jax.nn.softmax(a, -1) for k, a in s["arch"].items()}
        return m.apply({"params": s["params"], "batch_stats": s["batch_stats"]}, images, weights, train=False)

    np.testing.assert_allclose(outputs(grown_model, grown), outputs(model, state), atol=1e-5, rtol=0)
    chain = supernet_from_config(SearchConfig(space="chain", **TINY["chain"]))
    with pytest.raises(ValueError, match="the chain space has no 'toy_deepen' growth"):
        growth.grow(chain, init_search_state(chain, SearchConfig(space="chain", **TINY["chain"]), (IMAGE, IMAGE, 3)),
                    Mutation("toy_deepen", 0), jax.random.key(1))  # fmt: skip
