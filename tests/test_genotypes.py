import re

import jax.numpy as jnp
import pytest

from asose_jax.nn.operations import ASO_SE_OPS, DARTS_OPS, NB201_OPS
from asose_jax.runtime.metrics_log import write_json
from asose_jax.spaces.genotypes import (
    PUBLISHED,
    ChainGenotype,
    DartsGenotype,
    NB201Genotype,
    derive_genotype,
    genotype_from_json,
    genotype_to_json,
    load_genotype,
)


def _one_hot_rows(op_names, choices, strength=5.0):
    logits = jnp.zeros((len(choices), len(op_names)))
    for row, name in enumerate(choices):
        logits = logits.at[row, op_names.index(name)].set(strength)
    return logits


def test_chain_takes_the_strongest_op_other_than_none():
    logits = _one_hot_rows(ASO_SE_OPS, ["none", "sep_conv_5x5", "conv_7x1_1x7"])
    logits = logits.at[0, ASO_SE_OPS.index("dil_conv_3x3")].set(1.0)  # runner-up behind 'none'
    genotype = derive_genotype("chain", {"blocks": logits}, ASO_SE_OPS)
    assert genotype == ChainGenotype(("dil_conv_3x3", "sep_conv_5x5", "conv_7x1_1x7"))


def test_darts_rule_keeps_two_strongest_inputs_per_node():
    logits = jnp.zeros((14, 8))
    # node 0 (edges 0, 1): both inputs; node 1 (edges 2-4): inputs 2 and 0 are strongest, 2 first.
    settings = {0: ("sep_conv_3x3", 3.0), 1: ("skip_connect", 2.0), 2: ("dil_conv_5x5", 4.0),
                3: ("none", 9.0), 4: ("max_pool_3x3", 6.0)}  # fmt: skip
    for edge, (op, value) in settings.items():
        logits = logits.at[edge, DARTS_OPS.index(op)].set(value)
    logits = logits.at[3, DARTS_OPS.index("sep_conv_5x5")].set(0.5)  # edge 3's best non-none op is weak
    genotype = derive_genotype("darts", {"normal": logits, "reduce": logits}, DARTS_OPS)
    assert genotype.normal[:2] == (("sep_conv_3x3", 0), ("skip_connect", 1))
    assert genotype.normal[2:4] == (("max_pool_3x3", 2), ("dil_conv_5x5", 0))  # strongest first
    assert len(genotype.normal) == 8 and genotype.normal_concat == (2, 3, 4, 5)
    assert all(op != "none" for op, _ in genotype.normal)


def test_nb201_argmax_per_edge_and_string_format():
    choices = ["nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3", "skip_connect", "nor_conv_3x3", "nor_conv_1x1"]
    genotype = derive_genotype("nb201", {"cell": _one_hot_rows(NB201_OPS, choices)}, NB201_OPS)
    expected = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
    assert genotype.to_string() == expected
    assert NB201Genotype.from_string(expected) == genotype
    none_cell = derive_genotype("nb201", {"cell": _one_hot_rows(NB201_OPS, ["none"] * 6)}, NB201_OPS)
    assert none_cell.nodes[0] == (("none", 0),)  # NAS-Bench-201 keeps 'none'


@pytest.mark.parametrize(
    "genotype",
    [
        ChainGenotype(("sep_conv_3x3", "skip_connect")),
        DartsGenotype(
            (("sep_conv_3x3", 0), ("skip_connect", 1)) * 4,
            (2, 3, 4, 5),
            (("max_pool_3x3", 0), ("dil_conv_5x5", 1)) * 4,
            (2, 3, 4, 5),
        ),
        NB201Genotype.from_string("|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|none~1|nor_conv_1x1~2|"),
    ],
)
def test_json_round_trip(genotype, tmp_path):
    assert genotype_from_json(genotype_to_json(genotype)) == genotype
    write_json(tmp_path / "genotype.json", genotype_to_json(genotype))
    assert load_genotype(tmp_path / "genotype.json") == genotype


def test_nb201_json_carries_the_benchmark_string():
    genotype = NB201Genotype.from_string("|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    assert genotype_to_json(genotype)["arch_str"] == genotype.to_string()
    assert genotype_from_json({"space": "nb201", "arch_str": genotype.to_string()}) == genotype


@pytest.mark.parametrize(
    "data,message",
    [
        ({"ops": ["skip_connect"]}, "'space' key"),
        ({"space": "chain"}, "lacks the key 'ops'"),
        ({"space": "chain", "ops": ["conv_9x9"]}, "unknown op name"),
        ({"space": "vit", "ops": []}, "field 'space' must be one of chain, darts, nb201, got 'vit'"),
        ({"space": "nb201", "arch_str": "|nor_conv_3x3|"}, "malformed NAS-Bench-201 string"),
        ({"space": "nb201", "arch_str": "|skip_connect~5|"}, "node i read nodes 0..i-1"),
        (
            {
                "space": "darts",
                "normal": [["skip_connect", 0]] * 3,
                "normal_concat": [2],
                "reduce": [],
                "reduce_concat": [2],
            },
            "needs 8",
        ),  # fmt: skip
        (
            {
                "space": "darts",
                "normal": [["skip_connect", 4]] * 8,
                "normal_concat": [2, 3, 4, 5],
                "reduce": [["skip_connect", 0]] * 8,
                "reduce_concat": [2, 3, 4, 5],
            },
            "pair 0 \\(node 0\\) reads state 4",
        ),  # fmt: skip
    ],
)
def test_bad_genotype_json(data, message):
    with pytest.raises(ValueError, match=message):
        genotype_from_json(data)


DARTS_JSON = genotype_to_json(PUBLISHED["DARTS_V2"])
CHAIN_JSON = {"space": "chain", "ops": ["skip_connect"]}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({**DARTS_JSON, "normal": [*DARTS_JSON["normal"][:3], [7, 1], *DARTS_JSON["normal"][4:]]},
         "field 'normal[3][0]' must be an op name (one of none, "),
        ({**DARTS_JSON, "reduce": [["max_pool_3x3", 0]] * 7 + [["max_pool_3x3"]]},
         "field 'reduce[7]' must be an [op name, input] pair, got ['max_pool_3x3']"),
        ({**DARTS_JSON, "normal": [["skip_connect", 1.5]] * 8},
         "field 'normal[0][1]' must be an integer >= 0, got 1.5"),
        ({**DARTS_JSON, "normal": [["skip_connect", True]] * 8}, "field 'normal[0][1]' must be an integer >= 0"),
        ({**DARTS_JSON, "normal_concat": 2}, "field 'normal_concat' must be a list, got 2"),
        ({**DARTS_JSON, "reduce_concat": [2, 6]}, "field 'reduce_concat[1]' must be an integer in 2..5, got 6"),
        ({**DARTS_JSON, "reduce_concat": []}, "DARTS concat () must list nodes"),
        ({"space": "chain", "ops": "skip_connect"}, "field 'ops' must be a list, got 'skip_connect'"),
        ({"space": "chain", "ops": [["skip_connect"]]}, "field 'ops[0]' must be an op name"),
        ({**CHAIN_JSON, "widths": [1, float("inf")]},
         "field 'widths[1]' must be a finite number, got inf"),
        ({**CHAIN_JSON, "widths": [float("nan")]}, "field 'widths[0]' must be a finite"),
        ({**CHAIN_JSON, "widths": [10**400]}, "field 'widths[0]' must be a finite"),
        ({**CHAIN_JSON, "widths": [1e300]}, "widths must lie in (0, 1024]"),
        ({**CHAIN_JSON, "widths": ["2"]}, "field 'widths[0]' must be a finite number"),
        ({**CHAIN_JSON, "gated": [1]}, "field 'gated[0]' must be true or false, got 1"),
        ({**CHAIN_JSON, "stages": [-1]}, "field 'stages[0]' must be an integer >= 0"),
        ({**CHAIN_JSON, "branches": ["skip_connect"]}, "field 'branches[0]' must be a list, got 'skip_connect'"),
        ({"space": "nb201"}, "lacks the key 'nodes' (or 'arch_str')"),
        ({"space": "nb201", "arch_str": ["|none~0|"]}, "field 'arch_str' must be a string"),
        ({"space": "nb201", "nodes": [[["none", 0]], [["none", 0], "none"]]}, "field 'nodes[1][1]' must be an [op"),
        ({"space": ["chain"]}, "field 'space' must be one of chain, darts, nb201, got ['chain']"),
    ],
)  # fmt: skip
def test_bad_genotype_json_names_the_field(data, message):
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        genotype_from_json(data)
    assert "\n" not in str(err.value)


def test_unreadable_genotype_file(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read genotype file"):
        load_genotype(tmp_path / "bad.json")
