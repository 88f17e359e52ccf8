"""The cycle as data: phase lengths, the global schedule length, the plateau stop, run-config validation."""

import dataclasses

import pytest

from asose_jax.search import cycle
from asose_jax.search.run_config import PRESETS, RunConfig, preset
from asose_jax.search.step_config import SearchConfig


def test_phases_count_epochs_over_their_own_split():
    config = RunConfig(batch_size=10, warmup_epochs=2, arch_epochs=3, retrain_epochs=1, cycles=4)
    phases = cycle.cycle_phases(config, n_weight=105, n_arch=51)
    assert [p.name for p in phases] == ["warmup", "arch", "mutation", "retrain"]
    assert [p.steps_per_epoch for p in phases] == [10, 5, 0, 10]  # partial batches dropped
    assert [p.steps for p in phases] == [20, 15, 0, 10]
    assert cycle.total_steps(config, 105, 51) == 4 * 45


def test_batch_larger_than_a_split_names_the_split_and_fix():
    with pytest.raises(ValueError, match="held-out architecture split; use --batch-size <= 9"):
        cycle.cycle_phases(RunConfig(batch_size=10), n_weight=100, n_arch=9)


@pytest.mark.parametrize(
    ("history", "window", "stop"),
    [
        ([50.0, 50.2, 50.3], 2, True),  # best of the last 2 is 0.3 above the best before: < 0.5
        ([50.0, 51.0, 50.3], 2, False),  # 1.0 above
        ([50.0, 50.1], 2, False),  # the window has nothing before it yet
        ([60.0, 50.0, 55.0], 2, True),  # a falling run has plateaued too
        ([50.0, 50.0, 50.0], 0, False),  # window 0 never stops
    ],
)
def test_plateau_rule(history, window, stop):
    assert cycle.plateaued(history, window, threshold=0.5) is stop


def test_plateau_window_must_be_able_to_fill():
    RunConfig(cycles=4, plateau_window=3)
    with pytest.raises(ValueError, match="--plateau-window 4 cycles can never fill in 4 cycles"):
        RunConfig(cycles=4, plateau_window=4)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"batch_size": 0}, "--batch-size must be a positive integer"),
        ({"cycles": 2.5}, "--cycles must be a positive integer"),
        ({"warmup_epochs": -1}, "--warmup-epochs must be a non-negative integer"),
        ({"warmup_epochs": 0, "arch_epochs": 0, "retrain_epochs": 0}, "every phase has 0 epochs"),
        ({"arch_split": 1.0}, "--arch-split must lie strictly between 0 and 1"),
        ({"arch_phase": "frozen"}, "unknown --arch-phase 'frozen'"),
        ({"plateau_threshold": -1.0}, "--plateau-threshold must be >= 0"),
        ({"data": "csv:x"}, "unknown --data 'csv:x'; use cifar10, npz:PATH or tfds"),
        ({"train_limit": 1}, "--train-limit must be an integer >= 2"),
        ({"test_limit": 0}, "--test-limit must be a positive integer"),
        ({"test_limit": True}, "--test-limit must be a positive integer"),
    ],
)
def test_bad_run_config_values_name_the_flag(fields, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(**fields)


def test_presets_are_valid_and_named():
    assert set(PRESETS) == {"reference", "darts", "darts-cpu", "nb201", "colab", "smoke", "nb201-cpu", "nb201-cpu-grow"}
    reference = preset("reference")
    assert (reference.search.space, reference.search.init_channels, reference.search.depth) == ("chain", 32, 4)
    assert (reference.cycles, reference.warmup_epochs, reference.arch_epochs, reference.retrain_epochs) == (15, 5, 2, 3)
    assert preset("darts").search.space == "darts" and preset("nb201").search.space == "nb201"
    names = "reference, darts, darts-cpu, nb201, colab, nb201-cpu, smoke, nb201-cpu-grow"
    with pytest.raises(ValueError, match=f"unknown preset 'fast'; use one of {names}"):
        preset("fast")
    assert dataclasses.replace(reference, search=SearchConfig(space="nb201")).search.space == "nb201"
