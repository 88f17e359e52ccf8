"""One training run in progress (``TrainRun``): the network's state, data on the device, the epochs, evaluation
with flip test-time augmentation and the EMA weights; the run directory side is the ``RunSession``'s."""

from __future__ import annotations

import dataclasses
import pathlib
import time

import flax.linen as nn
import jax
import numpy as np

from asose_jax.runtime.faults import fault_point
from asose_jax.runtime.input_pipeline import ImageArrays, epoch_batches
from asose_jax.runtime.parallel import jit_data_parallel, make_mesh, replicate, shard_batch
from asose_jax.runtime.session import RunSession, SessionProgress, SessionSettings, StepLoop, epoch_means
from asose_jax.train.config import TrainConfig
from asose_jax.train.steps import make_eval_step, make_train_step, scan_steps

_CHECKED = ("loss", "grad_norm")  # must stay finite with --nan-policy stop
_SHOWN = (("loss", "loss", 1), ("accuracy", "acc%", 100), ("lr", "lr", 1))
NAN_FIX = (
    "rerun the same command with a lower --lr (it continues from the last checkpoint, if any), "
    "or with --nan-policy skip"
)


@dataclasses.dataclass
class TrainProgress(SessionProgress):
    """The JSON half of a training checkpoint: where to continue (``epoch``, ``dispatch`` within it), the fetched
    per-step metrics of the unfinished epoch and its seconds so far, the training time before this session and
    the per-epoch rates; the session's fields are ``SessionProgress``'s."""

    epoch: int = 1
    dispatch: int = 0
    fetched: list[dict] = dataclasses.field(default_factory=list)
    epoch_seconds: float = 0.0
    train_seconds: float = 0.0
    rates: list[float] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Steps of a training run: ``steps_per_dispatch`` (K) steps per jitted call, ``dispatches`` calls per epoch
    (the last may take a few extra batches), so ``steps_per_epoch = dispatches * K``."""

    epochs: int
    batch_size: int
    steps_per_dispatch: int
    dispatches: int

    @classmethod
    def of(cls, config: TrainConfig, n_train: int) -> Schedule:
        k = config.steps_per_dispatch
        return cls(config.epochs, config.batch_size, k, -(-(n_train // config.batch_size) // k))

    @property
    def steps_per_epoch(self) -> int:
        return self.dispatches * self.steps_per_dispatch

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


class TrainRun(RunSession):
    """Training ``net`` from scratch under ``config``, from its initial ``state``: data on the device, the jitted
    iteration (K steps per dispatch) and evaluation."""

    def __init__(self, config: TrainConfig, workdir: pathlib.Path, data: ImageArrays,
                 net: nn.Module, state: dict):  # fmt: skip
        self.config, self.net = config, net
        self.schedule = schedule = Schedule.of(config, len(data.x_train))
        self.mesh = mesh = make_mesh()
        self.n_train, self.n_test = len(data.x_train), len(data.x_test)
        self.images, self.labels, self.test_images, self.test_labels = replicate(
            (data.x_train, data.y_train, data.x_test, data.y_test), mesh
        )
        self.state = replicate(state, mesh)
        train_step = make_train_step(net, config, schedule.total_steps, schedule.steps_per_epoch, mesh)
        self.iteration = jit_data_parallel(scan_steps(train_step), mesh, {"idx": 1})
        self.eval_step = jit_data_parallel(make_eval_step(net, config, mesh), mesh, {"idx": 0, "mask": 0},
                                           donate_state=False)  # fmt: skip
        self.eval_batch = min(schedule.batch_size, 1000) // mesh.devices.size * mesh.devices.size
        self.progress = TrainProgress()
        settings = SessionSettings(
            log_every=config.log_every, checkpoint_every=config.checkpoint_every, keep_checkpoints=3,
            nan_policy=config.nan_policy, max_skipped=config.max_skipped_steps, checked=_CHECKED, fix=NAN_FIX,
            total_steps=schedule.total_steps,
        )  # fmt: skip
        self.open_session(workdir, settings)

    def resume(self) -> bool:
        """Continues an interrupted run from its newest checkpoint, if any."""
        restored = self.restore(self.state)
        if restored is None:
            return False
        self.progress = TrainProgress(**restored)
        self.say(f"resumed {self.workdir} at epoch {self.progress.epoch}, step {int(self.state['step'])}")
        return True

    def save(self, epoch: int, dispatch: int, fetched: list[dict], epoch_seconds: float) -> None:
        def progress_json() -> dict:
            progress = self.progress
            progress.epoch, progress.dispatch, progress.fetched = epoch, dispatch, list(fetched)
            progress.epoch_seconds = epoch_seconds
            return dataclasses.asdict(progress)

        self.checkpoint(progress_json)

    def evaluate(self, variables: dict) -> dict:
        """Test loss and accuracy (percent) of ``variables``, without and with flip test-time augmentation."""

        def call(idx: jax.Array, mask: jax.Array) -> dict:
            return self.eval_step(variables, self.test_images, self.test_labels, idx, mask)

        sums = self.evaluate_sums(self.n_test, self.eval_batch, self.mesh, call)
        n = sums["count"]
        return {"loss": sums["loss"] / n, "acc": 100 * sums["correct"] / n, "acc_tta": 100 * sums["correct_tta"] / n}

    def evaluated_weights(self) -> dict:
        """The EMA copy of the weights when the recipe keeps one, else the weights themselves."""
        state = self.state
        return state["ema"] if "ema" in state else {"params": state["params"], "batch_stats": state["batch_stats"]}

    def run_epoch(self, epoch: int) -> dict:
        """One epoch from the saved position; returns its record (training means, test accuracy, rate)."""
        schedule, progress = self.schedule, self.progress
        order = epoch_batches((self.config.seed, epoch), np.arange(self.n_train), schedule.batch_size,
                              schedule.steps_per_epoch)  # fmt: skip
        order = order.reshape(schedule.dispatches, schedule.steps_per_dispatch, schedule.batch_size)
        first = progress.dispatch if epoch == progress.epoch else 0
        epoch_start = time.perf_counter() - (progress.epoch_seconds if first else 0.0)

        def take(d: int) -> dict:
            self.state, metrics = self.iteration(
                self.state, self.images, self.labels, shard_batch(order[d], self.mesh, 1)
            )
            return metrics

        fetched = self.run_steps(StepLoop(
            program="the training step", take=take, calls=schedule.dispatches, start=first,
            fetched=list(progress.fetched) if first else [], first_step=(epoch - 1) * schedule.steps_per_epoch,
            steps_per_call=schedule.steps_per_dispatch,
            images_per_call=schedule.steps_per_dispatch * schedule.batch_size, label=f"epoch {epoch}/{schedule.epochs}",
            where=f" (epoch {epoch})", record={"epoch": epoch}, shown=_SHOWN,
            save=lambda d, done: self.save(epoch, d, done, time.perf_counter() - epoch_start),
        ))  # fmt: skip
        jax.block_until_ready(self.state)
        epoch_seconds = time.perf_counter() - epoch_start
        progress.train_seconds += epoch_seconds
        progress.rates.append(schedule.steps_per_epoch * schedule.batch_size / epoch_seconds)
        test, means = self.evaluate(self.evaluated_weights()), epoch_means(fetched, ("lr",))
        return {
            "event": "epoch", "epoch": epoch, "step": epoch * schedule.steps_per_epoch,
            "train_loss": means["loss"], "train_acc": None if means["accuracy"] is None else 100 * means["accuracy"],
            "test_loss": test["loss"], "test_acc": test["acc"], "epoch_seconds": epoch_seconds,
            "images_per_s": progress.rates[-1], "wall_time_s": self.wall_time(),
            **({"skipped_steps": means["skipped_steps"]} if "skipped_steps" in means else {}),
        }  # fmt: skip

    def run(self) -> None:
        """The epochs from the saved position on, each with its record, console line and checkpoint."""
        for epoch in range(self.progress.epoch, self.schedule.epochs + 1):
            record = self.run_epoch(epoch)
            self.writer.write(record)
            fault_point("epoch_end")
            train = "(every step skipped)" if record["train_loss"] is None else (
                f"{record['train_loss']:.4f} acc {record['train_acc']:.2f}%")  # fmt: skip
            self.say(f"epoch {epoch}: train loss {train} | test acc {record['test_acc']:.2f}% | "
                     f"{record['images_per_s']:.0f} img/s")  # fmt: skip
            self.save(epoch + 1, 0, [], 0.0)

    def final_summary(self) -> dict:
        """Test accuracy with and without flip TTA (EMA and raw weights), the steady rate and the times."""
        state, rates = self.state, self.progress.rates
        final = self.evaluate(self.evaluated_weights())
        raw = (
            self.evaluate({"params": state["params"], "batch_stats": state["batch_stats"]}) if "ema" in state else final
        )
        return {
            "test_acc": final["acc_tta"], "test_acc_no_tta": final["acc"], "test_loss": final["loss"],
            "evaluated_weights": "ema" if "ema" in state else "raw",
            "test_acc_raw_weights": raw["acc"], "test_acc_raw_weights_tta": raw["acc_tta"],
            # The first epoch includes compilation; the steady rate is the median of the others.
            "train_images_per_s": float(np.median(rates[1:] if len(rates) > 1 else rates)),
            "train_time_s": self.progress.train_seconds, "wall_time_s": self.wall_time(),
        }  # fmt: skip
