"""End to end: ``experiments/cifar10_search.py`` on tiny synthetic data, every run-directory file, bad input."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from asose_jax.runtime.metrics_log import read_metrics
from asose_jax.search import search_run
from asose_jax.spaces.genotypes import load_genotype

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "experiments"))

import cifar10_search  # noqa: E402
import cifar10_train  # noqa: E402
import plot_run  # noqa: E402
from run_files import check_against_committed, run_files  # noqa: E402

N_TRAIN, N_TEST, BATCH = 48, 16, 8


def tiny_args(npz_path, workdir, *extra) -> list[str]:
    return [
        "--preset", "smoke", "--data", f"npz:{npz_path}", "--workdir", str(workdir), "--compilation-cache", "",
        "--init-channels", "4", "--depth", "2", "--ops", "skip_connect,sep_conv_3x3,max_pool_3x3",
        "--batch-size", str(BATCH), "--cycles", "2", "--warmup-epochs", "1", "--log-every", "1", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def finished_run(npz_path, tmp_path_factory):
    """One tiny search (1/1/-/1 epochs of 3 steps per cycle, stopped by the plateau rule after 2 of 3 cycles),
    with every iteration's indices recorded."""
    workdir = tmp_path_factory.mktemp("runs") / "run"
    seen = {"weights": [], "arch": [], "arch_train": []}
    make_iterations = search_run.make_iterations

    def recording(model, config, mesh, jitted=None):
        inner = make_iterations(model, config, mesh, jitted)

        def weight_step(state, images, labels, idx, uniform):
            seen["weights"].append(np.asarray(idx))
            return inner.weight_step(state, images, labels, idx, uniform)

        def arch_step(state, images, labels, weight_idx, arch_idx):
            seen["arch"].append(np.asarray(arch_idx))
            seen["arch_train"].append(np.asarray(weight_idx))
            return inner.arch_step(state, images, labels, weight_idx, arch_idx)

        return inner._replace(weight_step=weight_step, arch_step=arch_step)

    draw = search_run.plots.plot_run

    def drawing(run_dir):
        seen["plots"].append(json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])["event"])
        return draw(run_dir)

    seen["plots"] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(search_run, "make_iterations", recording)
        patch.setattr(search_run.plots, "plot_run", drawing)
        patch.setattr(search_run, "PLOT_INTERVAL_S", 0.0)  # every cycle end redraws (default: at most once a minute)
        # 3 cycles planned; a plateau window of 1 with an unreachable threshold stops after cycle 2.
        flags = (
            "--sampler",
            "gumbel_soft",
            "--cycles",
            "3",
            "--plateau-window",
            "1",
            "--plateau-threshold",
            "1000",
            "--growth",
            "off",
        )  # with growth on, a plateau grows the network before it stops the run
        assert cifar10_search.main(tiny_args(npz_path, workdir, *flags)) == 0
    return workdir, seen


def test_run_directory_holds_every_file(finished_run):
    workdir, seen = finished_run
    for name in ("config.json", "metrics.jsonl", "genotype.json", "summary.json", "arch_weights.png", "curves.png",
                 "schedules.png"):  # fmt: skip
        assert (workdir / name).stat().st_size > 0, name
    for png in workdir.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert seen["plots"] == ["phase", "phase", "early_stop"]  # both cycle ends, then the finished run
    config = json.loads((workdir / "config.json").read_text())
    computed = config["computed"]  # kept apart from the settings the user gave
    assert computed["total_steps"] == 3 * 3 * 3  # cycles x phases x steps: one global schedule
    assert computed["op_names"] == ["skip_connect", "sep_conv_3x3", "max_pool_3x3"] and computed["num_classes"] == 10
    assert "total_steps" not in config["search"] and "op_names" not in config
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["params"]["arch"] == 2 * 3 and summary["params"]["weights"] > 0
    for key in ("val_acc", "test_acc", "val_acc_supernet", "test_acc_supernet"):
        assert 0 <= summary[key] <= 100, key
    assert summary["steps"] == 18 and summary["cycles_completed"] == 2 and summary["stopped_early"] is True
    assert summary["wall_time_s"] > 0
    assert summary["device"].startswith("cpu")
    assert load_genotype(workdir / "genotype.json").ops == tuple(summary["genotype"]["ops"])


def test_run_directory_keys_are_the_committed_ones(finished_run):
    check_against_committed("search run", run_files(finished_run[0]))


def test_flags_come_from_the_configs_with_readable_metavars():
    """Both CLIs keep their committed flags; each setting shows its type or choices, never a dest."""
    for name, cli in (("search flags", cifar10_search), ("train flags", cifar10_train)):
        parser = cli.build_parser()
        parser.prog = "cli"  # not __main__ under pytest
        check_against_committed(name, sorted(o for action in parser._actions for o in action.option_strings))
        assert "__" not in parser.format_usage() and "SEARCH" not in parser.format_usage()
    usage = " ".join(cifar10_search.build_parser().format_usage().split())
    assert "[--sampler {softmax,gumbel_soft,gumbel_hard,dirichlet}]" in usage and "[--batch-size N]" in usage
    args = cifar10_search.parse_args(["--ops", "darts", "--layers", "3", "--nan-policy", "skip", "--seed", "4"])
    config = cifar10_search.build_config(args)
    assert config.search.op_names[0] == "none" and config.search.depth == 3 and config.search.seed == 4
    assert config.nan_policy == "skip" and config.batch_size == 128  # the rest from the reference preset
    train = cifar10_train.build_config(cifar10_train.parse_args(["--recipe", "fast", "--no-nesterov", "--lr", "0.1"]))
    assert (train.nesterov, train.lr, train.epochs) == (False, 0.1, 30)


def test_metrics_follow_one_global_schedule(finished_run):
    workdir, _ = finished_run
    records = list(read_metrics(workdir / "metrics.jsonl"))
    steps = [r for r in records if r["event"] == "step"]
    assert [r["step"] for r in steps] == list(range(1, 19))  # log-every 1: no gap, no duplicate
    for key in ("temperature", "lr"):
        values = [r[key] for r in steps]
        assert all(b <= a for a, b in zip(values, values[1:], strict=False)), key  # never restarted
    assert all(r["images_per_s"] > 0 and {"loss", "accuracy"} <= set(r) for r in steps)
    assert all("arch_loss" in r for r in steps if r["phase"] == "arch")
    phases = [(r["cycle"], r["phase"], r["step_start"], r["step_end"]) for r in records if r["event"] == "phase"]
    assert phases == [(1, "warmup", 0, 3), (1, "arch", 3, 6), (1, "retrain", 6, 9),
                      (2, "warmup", 9, 12), (2, "arch", 12, 15), (2, "retrain", 15, 18)]  # fmt: skip
    stops = [r for r in records if r["event"] == "early_stop"]
    assert len(stops) == 1 and stops[0]["cycle"] == 2 and records[-1] is stops[0]
    mutations = [r for r in records if r["event"] == "mutation"]
    assert [(r["cycle"], r["growth"]) for r in mutations] == [(1, "none"), (2, "none")]
    epochs = [r for r in records if r["event"] == "epoch"]
    assert len(epochs) == 6
    for r in epochs:
        assert 0 <= r["val_acc"] <= 100 and np.isfinite(r["train_loss"])
        weights = np.asarray(r["arch_weights"]["blocks"])
        assert weights.shape == (2, 3) and np.allclose(weights.sum(-1), 1.0, atol=1e-5)
        assert np.asarray(r["entropy"]["blocks"]).shape == (2,)


def test_each_phase_reads_its_own_split(finished_run):
    _, seen = finished_run
    weights, arch = np.concatenate(seen["weights"]), np.concatenate(seen["arch"])
    assert len(seen["weights"]) == 18 and len(seen["arch"]) == 6  # alternate: a weight half per arch step
    assert set(weights.tolist()).isdisjoint(arch.tolist())
    assert set(np.concatenate(seen["arch_train"]).tolist()) <= set(weights.tolist())
    assert max(weights.max(), arch.max()) < N_TRAIN  # the test split is never trained on


def test_plot_run_redraws_the_plots(finished_run, capsys):
    workdir, _ = finished_run
    (workdir / "curves.png").unlink()
    assert plot_run.main([str(workdir)]) == 0
    assert (workdir / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert plot_run.main([str(workdir / "nothing")]) == 2
    assert "has no metrics.jsonl" in capsys.readouterr().err


def test_the_done_line_leads_with_the_measure_that_scores_the_cell(finished_run):
    workdir, _ = finished_run
    summary = json.loads((workdir / "summary.json").read_text())
    line = cifar10_search.done_line(summary, workdir)
    assert line == (f"done in {summary['wall_time_s']:.0f} s: val {summary['val_acc']:.2f}% test "
                    f"{summary['test_acc']:.2f}% (supernet); genotype in {workdir}/genotype.json")  # fmt: skip
    # After a perturbation selection the table's score comes first, the supernet path's accuracies after it.
    decided = {**summary, "selection": "perturbation", "val_acc": 9.96, "test_acc": 9.9, "table_acc": 93.76,
               "table_rank": 167, "growth": [{"kind": "depth", "cycle": 1, "where": "stage 2"}]}  # fmt: skip
    assert cifar10_search.done_line(decided, "runs/x") == (
        f"done in {summary['wall_time_s']:.0f} s: NAS-Bench-201 table 93.76% (rank 167); the cell's path through "
        "the supernet (weights trained as a mixture): val 9.96% test 9.90%; grew depth at cycle 1 (stage 2); "
        "genotype in runs/x/genotype.json"
    )


def test_an_existing_run_is_never_overwritten(finished_run, npz_path, capsys):
    workdir, _ = finished_run
    before = (workdir / "metrics.jsonl").read_bytes()
    assert cifar10_search.main(tiny_args(npz_path, workdir)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --workdir") and "holds a finished run" in err and "\n" not in err
    assert (workdir / "metrics.jsonl").read_bytes() == before


def test_dry_run_writes_config_parameter_counts_and_data_sizes(npz_path, tmp_path):
    from asose_jax.search.steps import init_search_state, supernet_from_config
    from asose_jax.spaces import count_params

    assert cifar10_search.main(tiny_args(npz_path, tmp_path, "--dry-run", "--test-limit", "5")) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["data"]["test"] == 5  # of the 16 test images
    config = cifar10_search.build_config(cifar10_search.parse_args(tiny_args(npz_path, tmp_path)))
    state = init_search_state(supernet_from_config(config.search), config.search, (8, 8, 3))
    assert summary["params"] == {"weights": count_params(state["params"]), "arch": count_params(state["arch"])}
    assert summary["dry_run"] is True and not (tmp_path / "metrics.jsonl").exists()


def test_a_new_space_takes_its_own_model_defaults():
    config = cifar10_search.build_config(cifar10_search.parse_args(["--space", "nb201"]))
    assert (config.search.space, config.search.init_channels, config.search.depth) == ("nb201", None, None)
    config = cifar10_search.build_config(cifar10_search.parse_args(["--space", "darts", "--layers", "5"]))
    assert config.search.depth == 5 and config.cycles == 15  # the rest of the reference preset stays


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--preset", "huge"], "unknown preset 'huge'"),
        (["--space", "resnet"], "unknown search space 'resnet'"),
        (["--sampler", "gumbel"], "unknown sampler 'gumbel'"),
        (["--ops", "conv_9x9"], "unknown op"),
        (["--arch-split", "1.5"], "--arch-split must lie strictly between 0 and 1"),
        (["--tau-min", "6"], "0 < tau_min <= tau_max"),
        (["--cycles", "0"], "--cycles must be a positive integer"),
        (["--data", "npz:/no/such.npz"], "no data file at /no/such.npz"),
        (["--batch-size", "64"], "--batch-size 64 is larger than the 24 images"),
    ],
)
def test_bad_input_gives_one_line(flags, message, npz_path, tmp_path, capsys):
    args = tiny_args(npz_path, tmp_path / "run")
    for flag, value in zip(flags[::2], flags[1::2], strict=True):
        position = args.index(flag) + 1 if flag in args else None
        args = args[:position] + [value] + args[position + 1 :] if position else args + [flag, value]
    assert cifar10_search.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err, err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_the_script_exits_2_without_a_traceback(tmp_path):
    run = subprocess.run(
        [sys.executable, str(ROOT / "experiments" / "cifar10_search.py"), "--data", f"npz:{tmp_path}/missing.npz",
         "--workdir", str(tmp_path / "run"), "--compilation-cache", ""],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1].startswith("error: no data file at")
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(("flag", "value"), [("--cycles", "1.5"), ("--batch-size", "many"), ("--arch-split", "half")])
def test_malformed_flag_values_give_one_line(flag, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cifar10_search.parse_args([flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"error: argument {flag}")
        and f"invalid {'float' if flag == '--arch-split' else 'int'} value" in err
    )
    assert err.count("\n") == 1
