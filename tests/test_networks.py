"""Discrete networks from genotypes: sizes, shapes, drop-path and the auxiliary head, published cells."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import IMAGE

from asose_jax.nn.initializers import init_variables
from asose_jax.runtime.metrics_log import write_json
from asose_jax.spaces import count_params
from asose_jax.spaces.darts import drop_path
from asose_jax.spaces.genotypes import (
    PUBLISHED,
    ChainGenotype,
    DartsGenotype,
    check_genotype,
    derive_genotype,
    genotype_to_json,
    resolve_genotype,
)
from asose_jax.spaces.networks import build_network

TINY_NETS = {
    "chain": (ChainGenotype(("sep_conv_3x3", "skip_connect", "max_pool_3x3")), {"init_channels": 4}),
    "darts": (PUBLISHED["DARTS_V2"], {"init_channels": 2, "depth": 3}),
    "nb201": (PUBLISHED["NB201_BEST"], {"init_channels": 2, "depth": 1}),
}


def _params(name: str, auxiliary: bool = False) -> tuple[int, int]:
    """(parameters without the auxiliary head, the head's) of a published genotype at its evaluation size."""
    net = build_network(PUBLISHED[name], auxiliary=auxiliary)
    shapes = jax.eval_shape(lambda x: net.init(jax.random.key(0), x, train=False), jnp.zeros((1, 32, 32, 3)))
    aux = count_params(shapes["params"].get("auxiliary_head", {}))
    return count_params(shapes["params"]) - aux, aux


def _darts_reference_count(genotype, c: int = 36, layers: int = 20, classes: int = 10) -> int:
    """Weights of DARTS's PyTorch ``NetworkCIFAR`` (no auxiliary head), counted from its code rather than from
    our network: stem conv + BN; per cell two 1x1 preprocessing convs + BN (a factorized reduce has as many),
    the cell's ops, and 4 concatenated nodes; a linear classifier. BN is affine (2 per channel); pools have none."""

    def op(name: str, ch: int, stride: int) -> int:
        k = int(name[-1]) if name[-1].isdigit() else 0
        return {"sep": 2 * (k * k * ch + ch * ch + 2 * ch), "dil": k * k * ch + ch * ch + 2 * ch,
                "ski": 0 if stride == 1 else ch * ch + 2 * ch, "max": 0, "avg": 0}[name[:3]]  # fmt: skip

    total, (c_pp, c_p, c_cur) = 27 * 3 * c + 2 * 3 * c, (3 * c, 3 * c, c)
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        c_cur *= 2 if reduction else 1
        total += (c_pp + c_p) * c_cur + 4 * c_cur
        pairs = genotype.reduce if reduction else genotype.normal
        total += sum(op(name, c_cur, 2 if reduction and j < 2 else 1) for name, j in pairs)
        c_pp, c_p = c_p, 4 * c_cur
    return total + c_p * classes + classes


# Exact weights at C=36, 20 cells, without the auxiliary head. DARTS_V2's is the count of DARTS's released model
# (quark0/darts: 3,349,342); the others are what DARTS's code gives for their cells, and round to the papers'
# 3.4M (GDAS) and 3.6M (PC-DARTS). DARTS_V1 (first order) is 3.17M: DARTS's paper lists 3.3M for both orders.
PUBLISHED_WEIGHTS = {"DARTS_V1": 3_169_414, "DARTS_V2": 3_349_342, "GDAS": 3_368_782, "PC_DARTS": 3_634_678}


@pytest.mark.parametrize("name", sorted(PUBLISHED_WEIGHTS))
def test_published_darts_cells_have_their_exact_weight_counts(name):
    main, aux = _params(name, auxiliary=True)
    assert main == PUBLISHED_WEIGHTS[name] == _darts_reference_count(PUBLISHED[name])
    assert aux == 576 * 128 + 2 * 128 + 128 * 768 * 4 + 2 * 768 + 768 * 10 + 10  # DARTS's AuxiliaryHeadCIFAR


def test_published_nb201_size_matches_the_paper():
    assert 1.05e6 <= _params("NB201_BEST")[0] <= 1.1e6  # NAS-Bench-201's best cell: 1.07M


def test_published_genotypes_are_valid():
    assert set(PUBLISHED) == {"DARTS_V1", "DARTS_V2", "GDAS", "PC_DARTS", "NB201_BEST"}
    for genotype in PUBLISHED.values():
        check_genotype(genotype)
    assert PUBLISHED["NB201_BEST"].to_string() == (
        "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
    )


@pytest.mark.parametrize("space", sorted(TINY_NETS))
def test_output_shapes(space):
    genotype, sizes = TINY_NETS[space]
    net = build_network(genotype, **sizes)
    variables = init_variables(net, jax.random.key(0), (IMAGE, IMAGE, 3), train=False)
    images = jax.random.normal(jax.random.key(1), (3, IMAGE, IMAGE, 3))
    logits, aux = net.apply(variables, images, train=False)
    chex.assert_shape(logits, (3, 10))
    assert aux is None
    (logits, aux), updates = net.apply(variables, images, train=True, mutable=["batch_stats"])
    chex.assert_shape(logits, (3, 10))
    chex.assert_trees_all_equal_structs(updates["batch_stats"], variables["batch_stats"])


def test_drop_path_and_auxiliary_head_act_only_in_training():
    net = build_network(PUBLISHED["DARTS_V2"], init_channels=2, depth=3, auxiliary=True)
    variables = init_variables(net, jax.random.key(0), (32, 32, 3), train=False)
    images = jax.random.normal(jax.random.key(1), (2, 32, 32, 3))

    @jax.jit  # one compilation; the rate is traced, as in the training step
    def train_logits(rate, seed):
        (logits, aux), _ = net.apply(variables, images, train=True, drop_rate=rate,
                                     rngs={"drop_path": jax.random.key(seed)}, mutable=["batch_stats"])  # fmt: skip
        return logits, aux

    logits, aux = train_logits(0.5, 0)
    chex.assert_shape(aux, (2, 10))
    assert not np.allclose(logits, train_logits(0.5, 1)[0])  # different paths dropped
    chex.assert_trees_all_close(train_logits(0.0, 0)[0], train_logits(0.0, 1)[0])  # rate 0: nothing dropped
    evaluate = jax.jit(lambda rate: net.apply(variables, images, train=False, drop_rate=rate))
    logits, aux = evaluate(0.5)
    chex.assert_trees_all_close(logits, evaluate(0.0)[0])  # the rate has no effect in evaluation
    assert aux is None


def test_drop_path_maths():
    x = jnp.ones((4000, 2, 2, 3))
    y = drop_path(x, 0.25, jax.random.key(0))
    per_example = np.asarray(y).reshape(4000, -1)
    assert np.all(per_example.min(1) == per_example.max(1))  # whole examples kept or dropped
    np.testing.assert_allclose(np.unique(per_example), [0.0, 1 / 0.75], rtol=1e-6)
    assert abs(per_example.mean() - 1.0) < 0.05  # the expectation is preserved
    chex.assert_trees_all_equal(drop_path(x, 0.0, jax.random.key(0)), x)


def test_search_genotype_files_load_and_build(tmp_path):
    genotype = derive_genotype("darts", {"normal": np.eye(14, 8), "reduce": np.eye(14, 8)[::-1]}, PUBLISHED_OPS)
    write_json(tmp_path / "genotype.json", genotype_to_json(genotype))
    for source in (tmp_path, tmp_path / "genotype.json"):  # a run directory or its file
        loaded = resolve_genotype(str(source))
        assert loaded == genotype
        assert isinstance(build_network(loaded, init_channels=2, depth=3).genotype, DartsGenotype)


PUBLISHED_OPS = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
                 "dil_conv_3x3", "dil_conv_5x5")  # fmt: skip


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "cannot read genotype file"),
        ('{"ops": ["skip_connect"]}', "'space' key"),
        ('{"space": "chain", "ops": ["conv_9x9"]}', "unknown op name"),
        ('{"space": "darts", "normal": [["skip_connect", 0]], "normal_concat": [2], "reduce": [], '
         '"reduce_concat": [2]}', "needs 8 (op, input) pairs"),
        ('{"space": "nb201", "arch_str": "|skip_connect~1|"}', "node i read nodes"),
    ],
)  # fmt: skip
def test_bad_genotype_files_name_the_problem(tmp_path, content, message):
    path = tmp_path / "genotype.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        resolve_genotype(str(path))
    assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_unknown_genotype_name():
    with pytest.raises(ValueError, match="DARTS_V2"):
        resolve_genotype("DARTS_V3")


def test_bad_network_sizes():
    with pytest.raises(ValueError, match="auxiliary head exists only for darts"):
        build_network(PUBLISHED["NB201_BEST"], auxiliary=True)
    with pytest.raises(ValueError, match="depth is its genotype's"):
        build_network(ChainGenotype(("skip_connect",)), depth=3)
    with pytest.raises(ValueError, match="init_channels"):
        build_network(PUBLISHED["DARTS_V2"], init_channels=0)
