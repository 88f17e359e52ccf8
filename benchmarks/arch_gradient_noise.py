"""Signal and noise of the architecture gradient at a search's saved state, edge by edge.

Loads the newest checkpoint of a search's run directory (weights, BatchNorm state and logits as saved) and draws
``--draws`` held-out batches from the run's own architecture split (normalised, not augmented). For every batch it
takes one architecture gradient ``g = dL_val / da`` (the loss only, no regulariser) under each sampler and
temperature asked for, with a fresh sampling key per draw; the batches are the same for every sampler, so the
softmax row (no sampling) shows the batch noise alone.

Per edge it reports, for the two ops that the mean gradient raises most (Adam descends, so the op with the most
negative mean ``g``), the difference ``d = g[runner-up] - g[favoured]`` over the draws:

* ``snr = mean(d) / std(d)``: how reliably one step's gradient orders the two ops;
* ``steps = 1 / snr**2``: how many steps must be averaged before the sum's sign is right at one standard
  deviation, against the run's own number of architecture steps;
* whether the favoured op is the one the logits' argmax chose.

Prints a table and writes JSON. Example (a finished ``gdas`` search):

    python benchmarks/arch_gradient_noise.py --workdirs runs/gdas-seed0 --data npz:data/cifar10.npz \\
        --samplers softmax gumbel_soft gumbel_hard --temperatures 5 1 0.1 --out noise.json
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from asose_jax.nn.operations import OPS  # noqa: E402
from asose_jax.runtime.checkpointing import Checkpoints, has_checkpoint  # noqa: E402
from asose_jax.runtime.input_pipeline import normalize, split_for_architecture  # noqa: E402
from asose_jax.search.driver import prepare  # noqa: E402
from asose_jax.search.run_config import RunConfig  # noqa: E402
from asose_jax.search.sampling import SAMPLERS, uses_temperature  # noqa: E402
from asose_jax.search.step_config import SearchConfig  # noqa: E402
from asose_jax.search.steps import init_search_state, make_search_steps  # noqa: E402
from benchmarks.timing import environment  # noqa: E402


def saved_state(workdir: pathlib.Path, data: str | None) -> tuple[RunConfig, object, dict, object]:
    """``(config, model, state, data arrays)`` of the newest checkpoint in ``workdir``; ``data`` replaces the
    run's data source (e.g. the same file at another path)."""
    if not (workdir / "config.json").is_file() or not has_checkpoint(workdir):
        raise SystemExit(f"error: {workdir} holds no search with a checkpoint (config.json and checkpoints/); "
                         "name the run directory of a search")  # fmt: skip
    saved = json.loads((workdir / "config.json").read_text())
    config = RunConfig.from_json(saved)
    if data is not None:
        config = dataclasses.replace(config, data=data)
    run = prepare(config, saved, exact_train_limit=False)
    like = init_search_state(run.model, run.config.search, run.data.x_train.shape[1:])
    checkpoints = Checkpoints(workdir, run.config.keep_checkpoints)
    try:
        state, _ = checkpoints.restore(like)
    except ValueError as err:
        raise SystemExit(f"error: {workdir}'s checkpoint does not fit its configured supernet ({err}); a grown "
                         "supernet is not supported: use a run without growth") from None  # fmt: skip
    finally:
        checkpoints.close()
    return run.config, run.model, state, run.data


def held_out_batches(config: RunConfig, data, draws: int) -> list[dict]:
    """``draws`` batches of the run's architecture split, in a fixed order."""
    _, arch_indices = split_for_architecture(len(data.x_train), config.arch_split, config.search.seed)
    order = np.random.default_rng(0).permutation(arch_indices)
    size = config.batch_size
    if draws * size > len(order):
        raise SystemExit(f"error: --draws {draws} needs {draws * size} held-out images, the run has {len(order)}; "
                         f"use at most {len(order) // size}")  # fmt: skip
    chunks = [order[i * size : (i + 1) * size] for i in range(draws)]
    return [{"image": normalize(data.x_train[c]), "label": jnp.asarray(data.y_train[c])} for c in chunks]


def gradient_draws(search: SearchConfig, model, state: dict, batches: list[dict], sampler: str, tau: float) -> dict:
    """``{name: [draws, E, K]}``: one loss gradient per batch (the held-out loss only), each with its own sampling
    key, under ``sampler`` at the constant temperature ``tau``."""
    search = dataclasses.replace(search, sampler=sampler, tau_max=tau, tau_min=tau, tau_schedule="constant",
                                 arch_regularizer="none", arch_reg_weight=0.0)  # fmt: skip
    steps = make_search_steps(model, search)
    base = jax.random.wrap_key_data(state["rng"], impl=search.prng_impl)

    @jax.jit
    def one(state: dict, draw: jax.Array, batch: dict) -> dict:
        key = jax.random.key_data(jax.random.fold_in(base, draw))
        return steps.arch_grad({**state, "rng": key}, batch)[0]

    grads = [one(state, jnp.int32(i), batch) for i, batch in enumerate(batches)]
    return {name: np.stack([np.asarray(g[name]) for g in grads]) for name in grads[0]}


def edge_rows(grads: dict, arch: dict, op_names: tuple[str, ...]) -> list[dict]:
    """Per edge: the favoured op and runner-up of the mean gradient, the snr of their difference, the steps of
    averaging it needs, and the logits' argmax op (see the module docstring)."""
    rows = []
    for name in sorted(grads):
        for edge, (g, logits) in enumerate(zip(grads[name].transpose(1, 0, 2), np.asarray(arch[name]), strict=True)):
            favoured, runner_up = np.argsort(g.mean(axis=0))[:2]
            d = g[:, runner_up] - g[:, favoured]
            snr = float(d.mean() / max(d.std(ddof=1), 1e-30))
            rows.append({"array": name, "edge": edge, "favoured": op_names[favoured], "runner_up": op_names[runner_up],
                         "argmax": op_names[int(np.argmax(logits))], "snr": round(snr, 4),
                         "steps_needed": round(1.0 / snr**2, 1)})  # fmt: skip
    return rows


@functools.cache
def has_weights(op: str) -> bool:
    """Whether ``op`` has trainable weights on a stride-1 edge (where a cell's edges are), from its variables."""
    module = OPS[op](4, 1, False)
    images = jax.ShapeDtypeStruct((1, 8, 8, 4), jnp.float32)
    variables = jax.eval_shape(lambda x: module.init(jax.random.key(0), x, train=False), images)
    return bool(jax.tree.leaves(variables.get("params", {})))


def run_report(workdir: pathlib.Path, data: str | None, draws: int, samplers: list[str], taus: list[float]) -> dict:
    """The gradient statistics of one run directory under every sampler and temperature; prints them."""
    config, model, state, arrays = saved_state(workdir, data)
    batches = held_out_batches(config, arrays, draws)
    results = []
    print(f"{workdir}: {config.search.sampler}, arch lr {config.search.arch_lr:g}")
    for sampler in samplers:
        for tau in taus if uses_temperature(sampler) else [1.0]:
            grads = gradient_draws(config.search, model, state, batches, sampler, tau)
            rows = edge_rows(grads, state["arch"], tuple(model.op_names))
            results.append({"sampler": sampler, "temperature": tau, "edges": rows,
                            "median_snr": float(np.median([r["snr"] for r in rows])),
                            "favoured_is_argmax": sum(r["favoured"] == r["argmax"] for r in rows),
                            "favoured_has_weights": sum(has_weights(r["favoured"]) for r in rows)})  # fmt: skip
            print(f"  {sampler:12s} tau {tau:5.2f}   median snr {results[-1]['median_snr']:6.3f}   favoured = argmax "
                  f"on {results[-1]['favoured_is_argmax']} of {len(rows)} edges")  # fmt: skip
            for r in rows:
                print(f"    {r['array']}[{r['edge']}]  {r['favoured']:>13s} over {r['runner_up']:13s} snr "
                      f"{r['snr']:7.3f}  needs {r['steps_needed']:9.1f} steps  (argmax {r['argmax']})")  # fmt: skip
    return {
        "workdir": str(workdir),
        "config": config.to_json(),
        "weight_steps": int(state["step"]),
        "arch_steps": int(optax.tree.get(state["arch_opt"], "count")),  # Adam's step count
        "results": results,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdirs", type=pathlib.Path, nargs="+", required=True, help="searches' run directories")
    parser.add_argument("--data", help="the runs' data source at another path (default: each run's own)")
    parser.add_argument("--draws", type=int, default=32, help="held-out batches (gradients per sampler)")
    parser.add_argument("--samplers", nargs="+", default=["softmax", "gumbel_soft", "gumbel_hard"], choices=SAMPLERS)
    parser.add_argument("--temperatures", nargs="+", type=float, default=[1.0], help="for the Gumbel samplers")
    parser.add_argument("--out", type=pathlib.Path, required=True)
    args = parser.parse_args(argv)
    if args.draws < 2:
        parser.error(f"--draws {args.draws}: a standard deviation needs at least 2 draws")
    runs = [run_report(w, args.data, args.draws, args.samplers, args.temperatures) for w in args.workdirs]
    record = {"draws": args.draws, "environment": environment(), "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
