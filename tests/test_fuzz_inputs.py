"""A property test of both command-line entry points (issue 26): seeded random mutations of valid genotype files
(every space's) and of flag values. Each case runs ``main()`` in this process up to where the run would start (the
driver's ``train_and_evaluate`` is a stub that builds the network or supernet and stops), and must end either
there (a valid configuration) or with exit status 2 and exactly one ``error:`` line on stderr, never with another
exception.
"""

from __future__ import annotations

import copy
import json
import math
import pathlib
import random
import sys
from collections.abc import Callable, Iterator

import pytest

from asose_jax.nn.operations import OP_SETS, OPS
from asose_jax.runtime.cli import config_flags
from asose_jax.search import driver as search_driver
from asose_jax.search.methods import METHODS
from asose_jax.search.run_config import PRESETS, RunConfig
from asose_jax.search.steps import supernet_from_config
from asose_jax.spaces import space_of
from asose_jax.spaces.genotypes import PUBLISHED, ChainGenotype, genotype_to_json, resolve_genotype
from asose_jax.spaces.networks import build_network
from asose_jax.train import driver as train_driver
from asose_jax.train.config import RECIPE_NAMES, TrainConfig

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))

import cifar10_search  # noqa: E402
import cifar10_train  # noqa: E402

CASES = 600  # per command-line entry point
GROWN_CHAIN = ChainGenotype(("sep_conv_3x3", "skip_connect", "sep_conv_5x5"), (0, 1, 1), (False, False, True),
                            ((), ("skip_connect",), ()), (1.0, 2.0))  # fmt: skip
GENOTYPES = [genotype_to_json(g) for g in (GROWN_CHAIN, PUBLISHED["DARTS_V2"], PUBLISHED["NB201_BEST"])]
NUMBERS = [0, -1, 1, 6, 7, 2**31, 2**70, 10**400, 0.5, 1.5, -0.0, 1e308, -1e308, math.inf, -math.inf, math.nan]
ODD_VALUES = [None, True, False, *NUMBERS, "", "skip_connect", "conv_9x9", "x" * 300, [], [[]], [1, 2],
              ["skip_connect", 0], {}, {"space": "x"}]  # fmt: skip
INTS = ["0", "1", "2", "3", "4", "-1", "96", str(2**70), "9" * 5000, "1.5", "1e3", "nan", "", "abc", "0x10"]
FLOATS = ["0", "0.5", "1", "2", "-1", "1e-8", "1e308", "1e400", "inf", "-inf", "nan", "NaN", "abc", "", "0.999"]
STRINGS = ["", "x", "-3", "1.5", "tfds", "npz:", "npz:x.npz", *OP_SETS, "skip_connect,conv_9x9", ",", "1:depth",
           "2:width,3:branch", "0:depth", "1:depth,1:width", "99999999999999999999:depth", "x:y"]  # fmt: skip
RUNTIME = ["--compilation-cache", "", "--distributed", "off"]  # setup_runtime changes nothing in this process


class ReachedTheRun(Exception):
    """Raised by the stubbed drivers: the command line was valid up to the run."""


def search_stub(config: RunConfig, workdir, **kwargs) -> dict:
    supernet_from_config(config.search)
    raise ReachedTheRun


def train_stub(config: TrainConfig, workdir, **kwargs) -> dict:
    genotype = resolve_genotype(config.genotype)
    auxiliary = config.auxiliary_weight > 0 and space_of(genotype).auxiliary_head
    build_network(genotype, config.init_channels, config.layers, 10, auxiliary, config.scan_cells)
    raise ReachedTheRun


def locations(node, path: tuple = ()) -> Iterator[tuple]:
    """The path of every value in a JSON tree, the root's ``()`` first."""
    yield path
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        yield from locations(value, (*path, key))


def mutated(value, rng: random.Random):
    """``value`` with a type swapped, odd or out-of-range, wrapped, unwrapped, lengthened or renamed."""
    mutation = rng.randrange(7)
    if mutation == 0:
        return rng.choice(ODD_VALUES)
    if mutation == 1:  # another type holding the same thing
        return str(value) if not isinstance(value, str) else ([value] if rng.random() < 0.5 else len(value))
    if mutation == 2:  # wrong nesting
        return [value]
    if mutation == 3:  # unwrapped, or nested in an object
        return value[0] if isinstance(value, list) and value else {"value": value}
    if mutation == 4:  # wrong length
        return value + value[:1] if isinstance(value, list | str) else [value, value]
    if mutation == 5:
        return rng.choice([*OPS, "conv_9x9", "SEP_CONV_3X3", "none ", "skip_connect~0"])
    return rng.choice(NUMBERS)


def mutated_genotype(rng: random.Random):
    """A valid genotype's JSON after zero to three mutations (of a value, or deleting it) anywhere in it."""
    data = copy.deepcopy(rng.choice(GENOTYPES))
    for _ in range(rng.randrange(4)):
        path = rng.choice(list(locations(data)))
        if not path:
            data = mutated(data, rng)
            continue
        node = data
        for key in path[:-1]:
            node = node[key]
        if rng.random() < 0.2:
            del node[path[-1]]
        else:
            node[path[-1]] = mutated(node[path[-1]], rng)
    return data


def genotype_file(rng: random.Random) -> bytes:
    """A mutated genotype's file; now and then no JSON at all (cut short, nested too deep, or not UTF-8)."""
    text = json.dumps(mutated_genotype(rng)).encode()
    kind = rng.random()
    if kind < 0.03:
        return text[: rng.randrange(len(text))]
    if kind < 0.05:
        return b"[" * 100_000 + b"]" * 100_000
    if kind < 0.07:
        return rng.randbytes(64)
    return text


def flag_arguments(cls: type) -> dict[str, list[list[str]]]:
    """Per flag of ``cls``, the argument lists to give it: values valid and not, of its type and of others."""
    pools = {int: INTS, float: FLOATS}
    arguments = {}
    for flag in config_flags(cls):
        name, choices = flag.names[0], list(flag.field.metadata["choices"])
        if flag.kind is bool:
            arguments[name] = [[name], ["--no-" + name[2:]]]
        else:
            values = choices + ["bogus", ""] if choices else pools.get(flag.kind, STRINGS)
            arguments[name] = [[f"{name}={value}"] for value in values]  # "=": a value may start with "-"
    return arguments


def random_flags(pools: dict[str, list[list[str]]], rng: random.Random) -> list[str]:
    return [arg for name in rng.sample(sorted(pools), rng.randrange(4)) for arg in rng.choice(pools[name])]


def run_case(main: Callable[[list[str]], int], argv: list[str], capsys) -> str:
    """``valid`` or ``refused``; fails unless a refusal is exit status 2 with one ``error:`` line."""
    try:
        code = main(argv)
    except ReachedTheRun:
        capsys.readouterr()
        return "valid"
    except SystemExit as stop:  # argparse's own errors
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, (argv, code, err)
    return "refused"


def test_search_cli_survives_fuzzed_flags(monkeypatch, capsys):
    monkeypatch.setattr(search_driver, "train_and_evaluate", search_stub)
    pools = flag_arguments(RunConfig)
    pools["--preset"] = [[f"--preset={name}"] for name in (*PRESETS, "bogus", "")]
    pools["--method"] = [[f"--method={name}"] for name in (*METHODS, "bogus", "")]
    rng = random.Random(26)
    outcomes = [run_case(cifar10_search.main, [*random_flags(pools, rng), *RUNTIME], capsys) for _ in range(CASES)]
    assert min(outcomes.count("valid"), outcomes.count("refused")) > CASES // 10


def test_train_cli_survives_fuzzed_genotype_files_and_flags(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(train_driver, "train_and_evaluate", train_stub)
    pools = flag_arguments(TrainConfig)
    del pools["--genotype"]  # each case's own file
    pools["--recipe"] = [[f"--recipe={name}"] for name in (*RECIPE_NAMES, "bogus", "")]
    rng = random.Random(27)
    outcomes = []
    for i in range(CASES):
        path = tmp_path / f"genotype_{i}.json"
        path.write_bytes(genotype_file(rng))
        flags = random_flags(pools, rng) if rng.random() < 0.5 else []
        outcomes.append(run_case(cifar10_train.main, ["--genotype", str(path), *flags, *RUNTIME], capsys))
    assert min(outcomes.count("valid"), outcomes.count("refused")) > CASES // 10


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e400"])
def test_float_flags_refuse_non_finite_values(value, capsys):
    with pytest.raises(SystemExit) as stop:
        cifar10_train.build_parser().parse_args([f"--lr={value}"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err == f"error: argument --lr: must be a finite number, got {value!r}; see --help\n"
