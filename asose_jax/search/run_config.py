"""The whole search run as plain, validated data, and its named presets.

``RunConfig`` adds to ``SearchConfig`` (the maths of one step) what the driver needs:
the data source and split, batch size, the four-phase cycle and the plateau stop.
Every field declared with ``setting`` is a flag of ``experiments/cifar10_search.py``. ``search.total_steps`` is
set by the driver from the data size and the cycle, so that the learning rate and temperature follow one
schedule over the whole run; it is saved apart from these settings.
"""

from __future__ import annotations

import dataclasses

from asose_jax.runtime.cli import setting
from asose_jax.runtime.input_pipeline import DATA_DIR_HELP, DATA_HELP, check_source
from asose_jax.runtime.memory import check_size_limits
from asose_jax.runtime.rundir import MAX_SKIPPED_DEFAULT, MAX_SKIPPED_HELP, NAN_POLICIES, NAN_POLICY_HELP
from asose_jax.search.growth import GROWTH_MODES, STRATEGIES
from asose_jax.search.selection import (
    ARGMAX,
    GRADIENT_SCORED,
    MEASURES,
    NTK,
    NTK_EXAMPLES,
    NWOT,
    PERTURBATION,
    REMOVAL,
    SELECTIONS,
    SHRINK_MEASURES,
    WEIGHT,
    ntk_kernel_examples,
)
from asose_jax.search.step_config import COMPUTED, SearchConfig
from asose_jax.spaces import SPACES, get_space
from asose_jax.spaces.base import GROWTH_KINDS

ARCH_PHASES = ("alternate", "alpha-only")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One ASO-SE search. A cycle is warm-up, architecture, mutation, re-training (epochs per phase).

    ``arch_phase``: ``alternate`` takes one architecture step on a held-out batch and one weight step
    on a training batch per iteration (first-order DARTS); ``alpha-only`` freezes the weights (the
    original's variant). ``plateau_window`` counts cycles (0 disables the stop); the run stops when
    the best cycle-final validation accuracy of the last window is less than ``plateau_threshold``
    percentage points above the best before it. A checkpoint is taken every ``checkpoint_every`` steps
    (0: only at phase boundaries), the newest ``keep_checkpoints`` kept; ``nan_policy`` ``stop`` ends
    the run at a non-finite loss or gradient, ``skip`` drops that update.

    Growth (``growth``, ``grow_at``, ``growth_window``, ``growth_threshold``, ``growth_strategy`` and the caps)
    follows the rule written in ``asose_jax.search.growth``; each space declares its kinds. The plateau stop looks
    only at the cycles since the last growth, and with ``auto`` waits while a mutation still fits the caps.
    """

    search: SearchConfig = dataclasses.field(default_factory=SearchConfig)
    data: str = setting("cifar10", DATA_HELP, metavar="SOURCE")
    data_dir: str | None = setting(None, DATA_DIR_HELP, metavar="DIR")
    train_limit: int | None = setting(None, "keep only the first N training images")
    test_limit: int | None = setting(None, "keep only the first N test images (they only report accuracies)")
    arch_split: float = setting(0.5, "fraction of the training images held out for architecture steps")
    batch_size: int = setting(64, "images per step (per split in the architecture phase)")
    cutout: int = setting(0, "cutout square side in pixels (0: off)")
    cycles: int = setting(15, "maximum number of warm-up/arch/mutation/re-train cycles")
    warmup_epochs: int = setting(5, "weight warm-up epochs per cycle (every op trained)")
    arch_epochs: int = setting(2, "architecture epochs per cycle")
    retrain_epochs: int = setting(3, "weight re-training epochs per cycle")
    arch_phase: str = setting(
        "alternate", "alternate: arch + weight step per iteration; alpha-only: weights frozen", choices=ARCH_PHASES
    )
    plateau_window: int = setting(3, "stop when the last N cycles do not improve validation (0: off)")
    plateau_threshold: float = setting(0.5, "improvement in percentage points that counts")
    log_every: int = setting(20, "steps between progress lines and metrics.jsonl step records")
    checkpoint_every: int = setting(200, "steps between checkpoints, besides phase boundaries (0: only those)")
    keep_checkpoints: int = setting(3, "how many of the newest checkpoints to keep")
    nan_policy: str = setting("stop", NAN_POLICY_HELP, choices=NAN_POLICIES)
    max_skipped_steps: int = setting(MAX_SKIPPED_DEFAULT, MAX_SKIPPED_HELP)
    growth: str = setting(
        "auto", "auto: grow the network when validation plateaus; off: never grow", choices=GROWTH_MODES
    )
    grow_at: str = setting(
        "", "force growth at cycles instead, KIND depth, width or branch", metavar="CYCLE:KIND[,...]"
    )
    growth_window: int = setting(2, "cycles since the last growth over which a plateau triggers growth")
    growth_threshold: float = setting(0.5, "validation gain in percentage points that is no plateau")
    growth_strategy: str = setting(
        "auto", "auto: rotate depth, width, branch; or always one of them", choices=STRATEGIES
    )
    width_factor: float = setting(1.5, "channel multiplier of a width growth")
    width_noise: float = setting(0.0, "relative noise on widened channels' copies (0: exact function)")
    max_depth: int = setting(8, "growth cap: blocks")
    max_width: float = setting(2.0, "growth cap: any stage's channels over its initial channels")
    max_branches: int = setting(2, "growth cap: branches per block")
    max_params: int = setting(2_000_000, "growth cap: weights of the grown network")
    selection: str = setting(
        ARGMAX, "how the cell is chosen after the cycles: argmax of the logits, or perturbation (DARTS-PT: edge by "
        "edge, the op whose removal costs the supernet most, with tuning in between)", choices=SELECTIONS,
    )  # fmt: skip
    selection_measure: str = setting(
        REMOVAL, "perturbation: keep the op whose removal raises the held-out loss most (removal, DARTS-PT), that "
        "alone on the edge gives the lowest (alone), whose removal lowers the gradients' ZiCo score most (zico; "
        "zico_mean: each layer's mean over its weights, not their sum), whose removal worsens the conditioning "
        "of the supernet's neural tangent kernel most (ntk, TE-NAS), or whose removal makes the supernet's ReLU "
        "activation patterns of different images most alike (nwot, NASWOT)",
        choices=MEASURES,
    )  # fmt: skip
    selection_images: int = setting(1024, "held-out images that score each op (perturbation)")
    selection_tune_steps: int = setting(39, "weight steps that tune the supernet after each edge's decision")
    shrink_ops: int = setting(
        0, "progressive shrinking: at the mutation phase of every cycle but the last, each edge drops this many of "
        "its candidate ops (0: off)",
    )  # fmt: skip
    shrink_measure: str = setting(
        WEIGHT, "shrinking drops the ops of lowest architecture weight (weight, P-DARTS), or whose removal raises "
        "the held-out loss least (removal) or that alone on the edge give the highest (alone), on --selection-images",
        choices=SHRINK_MEASURES,
    )  # fmt: skip
    nb201_table: str | None = setting(
        None, "NAS-Bench-201 table (CSV) that scores the derived cell every epoch", metavar="CSV"
    )

    def __post_init__(self):
        positive = ("batch_size", "cycles", "log_every", "keep_checkpoints", "growth_window", "max_depth", "max_params")
        optional = ("test_limit",)  # positive, or None for no limit
        non_negative = (
            "warmup_epochs",
            "arch_epochs",
            "retrain_epochs",
            "cutout",
            "plateau_window",
            "checkpoint_every",
            "max_branches",
            "max_skipped_steps",
            "selection_tune_steps",
            "shrink_ops",
        )
        for name in positive + optional + non_negative:
            value = getattr(self, name)
            if value is None and name in optional:
                continue
            low = 0 if name in non_negative else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                kind = "a positive" if low else "a non-negative"
                raise ValueError(f"--{_flag(name)} must be {kind} integer, got {value!r}")
        check_size_limits(self, ("batch_size", "max_depth"))
        if self.train_limit is not None and (not isinstance(self.train_limit, int) or self.train_limit < 2):
            raise ValueError(f"--train-limit must be an integer >= 2, got {self.train_limit!r}")
        if not 0 < self.arch_split < 1:
            raise ValueError(f"--arch-split must lie strictly between 0 and 1, got {self.arch_split}")
        if self.warmup_epochs + self.arch_epochs + self.retrain_epochs == 0:
            raise ValueError("every phase has 0 epochs; give --warmup-epochs, --arch-epochs or --retrain-epochs")
        if self.arch_phase not in ARCH_PHASES:
            raise ValueError(f"unknown --arch-phase {self.arch_phase!r}; use one of {', '.join(ARCH_PHASES)}")
        if self.plateau_window >= self.cycles:
            raise ValueError(
                f"--plateau-window {self.plateau_window} cycles can never fill in {self.cycles} cycles "
                f"(it needs one more cycle to compare with); use at most {self.cycles - 1}, or 0 to disable"
            )
        if not self.plateau_threshold >= 0:
            raise ValueError(f"--plateau-threshold must be >= 0 percentage points, got {self.plateau_threshold}")
        if self.nan_policy not in NAN_POLICIES:
            raise ValueError(f"unknown --nan-policy {self.nan_policy!r}; use one of {', '.join(NAN_POLICIES)}")
        self._check_growth()
        self._check_selection()
        if self.nb201_table is not None and not get_space(self.search.space).nas_bench_201:
            raise ValueError(
                f"--nb201-table scores NAS-Bench-201 cells, but this search's space is {self.search.space}; "
                "drop --nb201-table or use --space nb201"
            )
        check_source(self.data)

    def _check_growth(self) -> None:
        if self.growth not in GROWTH_MODES:
            raise ValueError(f"unknown --growth {self.growth!r}; use one of {', '.join(GROWTH_MODES)}")
        if self.growth_strategy not in STRATEGIES:
            raise ValueError(f"unknown --growth-strategy {self.growth_strategy!r}; use one of {', '.join(STRATEGIES)}")
        for name, low in (("width_factor", 1.0), ("max_width", 1.0), ("growth_threshold", 0.0), ("width_noise", 0.0)):
            value = getattr(self, name)
            if not (value > low if name == "width_factor" else value >= low):
                relation = ">" if name == "width_factor" else ">="
                raise ValueError(f"--{_flag(name)} must be {relation} {low}, got {value!r}")
        forced = self.forced_growth()
        if forced and self.growth == "off":
            raise ValueError("--grow-at forces growth, but --growth is off; drop one of them")
        supported = get_space(self.search.space).growth_kinds
        for cycle, kind in forced.items():
            if kind not in supported:
                every = "; ".join(f"{s.name}: {', '.join(s.growth_kinds)}" for s in SPACES.values() if s.growth_kinds)
                raise ValueError(
                    f"--grow-at {cycle}:{kind}: the {self.search.space} space supports "
                    f"{', '.join(supported) or 'no growth'} ({every})"
                )
        if self.growth_strategy not in ("auto", *supported) and self.growth != "off":
            raise ValueError(
                f"--growth-strategy {self.growth_strategy}: the {self.search.space} space supports "
                f"{', '.join(supported) or 'no growth'}; use auto"
            )

    def _check_selection(self) -> None:
        if self.selection not in SELECTIONS:
            raise ValueError(f"unknown --selection {self.selection!r}; use one of {', '.join(SELECTIONS)}")
        if self.selection_measure not in MEASURES:
            raise ValueError(
                f"unknown --selection-measure {self.selection_measure!r}; use one of {', '.join(MEASURES)}"
            )
        if self.shrink_measure not in SHRINK_MEASURES:
            raise ValueError(
                f"unknown --shrink-measure {self.shrink_measure!r}; use one of {', '.join(SHRINK_MEASURES)}"
            )
        one_op_per_edge = (
            (self.selection == PERTURBATION, "--selection perturbation decides one op per edge", "--selection argmax"),
            (self.shrink_ops > 0, "--shrink-ops narrows every edge toward one op", "--shrink-ops 0"),
        )
        for used, what, fix in one_op_per_edge:
            if used and not get_space(self.search.space).one_op_per_row:
                able = ", ".join(s.name for s in SPACES.values() if s.one_op_per_row)
                raise ValueError(
                    f"{what}, which the {self.search.space} space's cells do not keep; use {fix}, "
                    f"or a space with one op per edge ({able})"
                )
        if self.shrink_ops and self.search.sampler == "dirichlet":
            raise ValueError(
                "--shrink-ops with --sampler dirichlet: a dropped op's Dirichlet concentration elu(a) + 1 is 0, which "
                "the sampler cannot draw from; use another --sampler or --shrink-ops 0"
            )
        if self.shrink_ops and self.cycles < 2:
            raise ValueError(
                "--shrink-ops drops ops at the mutation phase of every cycle but the last, and --cycles is 1; use "
                "--cycles >= 2 or --shrink-ops 0"
            )
        batches = 2 if self.selection_measure in GRADIENT_SCORED else 1  # ZiCo compares gradients across batches
        if isinstance(self.selection_images, bool) or not isinstance(self.selection_images, int) or (
            self.selection_images < batches * self.batch_size
        ):  # fmt: skip
            least = f"{batches} x --batch-size" if batches > 1 else "--batch-size"
            raise ValueError(
                f"--selection-images must be an integer >= {least} ({batches * self.batch_size}) with "
                f"--selection-measure {self.selection_measure}, got {self.selection_images!r}"
            )
        if self.selection_measure == NWOT and self.batch_size < 2:
            raise ValueError(
                "--selection-measure nwot compares the activation patterns of a batch's examples: --batch-size must "
                f"be at least 2, got {self.batch_size}"
            )
        if self.selection_measure == NTK and (
            self.batch_size < 2 or self.batch_size % ntk_kernel_examples(self.batch_size)
        ):
            raise ValueError(
                f"--selection-measure ntk scores kernels of {NTK_EXAMPLES} examples of a batch (or the whole batch "
                f"if smaller): --batch-size must be a multiple of {NTK_EXAMPLES} or from 2 to {NTK_EXAMPLES}, "
                f"got {self.batch_size}"
            )

    def ops_in_play(self, ops: int, cycle: int) -> int:
        """Candidates per edge of ``ops`` after ``cycle`` cycles of shrinking (the last cycle does not shrink)."""
        return ops - self.shrink_ops * min(cycle, self.cycles - 1)

    def selection_steps(self, edges: int) -> int:
        """Weight steps of the selection's tuning for a supernet of ``edges`` logit rows (0 with argmax)."""
        return edges * self.selection_tune_steps if self.selection == PERTURBATION else 0

    def forced_growth(self) -> dict[int, str]:
        """``grow_at`` as ``{cycle: kind}``; raises ValueError naming a malformed entry."""
        forced = {}
        for entry in filter(None, (e.strip() for e in self.grow_at.split(","))):
            cycle, _, kind = entry.partition(":")
            if not cycle.strip().isdigit() or kind.strip() not in GROWTH_KINDS:
                raise ValueError(
                    f"--grow-at entry {entry!r} is not CYCLE:KIND; use e.g. 2:depth,3:width "
                    f"(KIND one of {', '.join(GROWTH_KINDS)})"
                )
            if not 1 <= int(cycle) <= self.cycles or int(cycle) in forced:
                raise ValueError(f"--grow-at cycle {cycle} must be unique and lie in 1..{self.cycles} (--cycles)")
            forced[int(cycle)] = kind.strip()
        return forced

    def to_json(self) -> dict:
        """The user's settings; the search's ``COMPUTED`` fields are left out (the driver saves them apart)."""
        data = dataclasses.asdict(self)
        data["search"] = {k: v for k, v in data["search"].items() if k not in COMPUTED}
        return data

    @classmethod
    def from_json(cls, data: dict) -> RunConfig:
        """Inverse of ``to_json`` (extra keys, such as the driver's ``computed`` values, are ignored)."""
        try:
            search = {k: v for k, v in data["search"].items() if k in _SEARCH_FIELDS}
            if search.get("op_names") is not None:
                search["op_names"] = tuple(search["op_names"])
            run = {k: v for k, v in data.items() if k in _RUN_FIELDS and k != "search"}
            return cls(search=SearchConfig(**search), **run)
        except (KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"not an asose-jax run configuration ({type(err).__name__}: {err})") from None


def _flag(name: str) -> str:
    return name.replace("_", "-")


_SEARCH_FIELDS = {f.name for f in dataclasses.fields(SearchConfig)}
_RUN_FIELDS = {f.name for f in dataclasses.fields(RunConfig)}
# Settings that may change when a run resumes: they change neither its results nor its metrics.jsonl.
RESUMABLE_CHANGES = (
    "data_dir", "checkpoint_every", "keep_checkpoints", "nan_policy", "max_skipped_steps", "weight_lr", "arch_lr",
)  # fmt: skip


# The flags of experiments/cifar10_search.py in --help, by group (field names).
HELP_GROUPS: dict[str, tuple[str, ...]] = {
    "data": ("data", "data_dir", "train_limit", "test_limit", "arch_split", "batch_size", "cutout"),
    "space": ("space", "init_channels", "depth", "scan_cells", "op_names"),
    "method": ("sampler", "tau_max", "tau_min", "tau_schedule", "arch_init_scale", "arch_lr", "arch_b1", "arch_b2",
               "arch_weight_decay", "arch_order", "arch_regularizer", "arch_reg_weight", "weight_lr", "weight_lr_min",
               "momentum", "weight_decay", "grad_clip", "seed"),
    "schedule": ("cycles", "warmup_epochs", "arch_epochs", "retrain_epochs", "arch_phase", "plateau_window",
                 "plateau_threshold"),
    "growth": ("growth", "grow_at", "growth_window", "growth_threshold", "growth_strategy", "width_factor",
               "width_noise", "max_depth", "max_width", "max_branches", "max_params"),
    "selection": ("selection", "selection_measure", "selection_images", "selection_tune_steps", "shrink_ops",
                  "shrink_measure"),
    "scoring": ("nb201_table",),
    "run directory": ("log_every", "checkpoint_every", "keep_checkpoints", "nan_policy", "max_skipped_steps"),
    "devices": (),
}  # fmt: skip


CPU_PRESETS = ("smoke", "nb201-cpu", "darts-cpu")  # sized for a 2-core CPU, one per space

PRESETS: dict[str, RunConfig] = {
    # The original ASO-SE reference script's settings (fixed.py): a chain of 4 mixed-op blocks at 32
    # channels over the 10 ASO-SE ops, soft Gumbel at tau 5 -> 0.1, batch 128, 15 cycles of 5/2/-/3
    # epochs, SGD 0.025 with coupled L2 1e-4. Its bugs are not reproduced (docs/architecture.md).
    "reference": RunConfig(
        search=SearchConfig(space="chain", init_channels=32, depth=4, sampler="gumbel_soft", weight_decay=1e-4),
        batch_size=128,
        cycles=15,
        warmup_epochs=5,
        arch_epochs=2,
        retrain_epochs=3,
    ),
    # DARTS (first order) on its 8-cell supernet: softmax relaxation, 50 epochs in all, with a weight
    # warm-up first (as PC-DARTS / P-DARTS do): 5 cycles of 2 warm-up and 8 alternating epochs.
    "darts": RunConfig(
        search=SearchConfig(space="darts", init_channels=16, depth=8, sampler="softmax"),
        batch_size=64,
        cycles=5,
        warmup_epochs=2,
        arch_epochs=8,
        retrain_epochs=0,
        plateau_window=0,
    ),
    # The darts preset cut to 10 minutes on 2 CPU cores: 8 channels, 5 cells, 2,000 training images (1,000 for
    # weights, 1,000 held out) and 1,000 test images, 1 warm-up and 1 alternating epoch, the architecture
    # learning rate 10x DARTS's for its 15 architecture steps. It checks the DARTS pipeline end to end; so few
    # steps make no search result (a DARTS search needs an accelerator, see docs/search-quality.md).
    "darts-cpu": RunConfig(
        search=SearchConfig(space="darts", init_channels=8, depth=5, sampler="softmax", arch_lr=3e-3),
        train_limit=2000,
        test_limit=1000,
        batch_size=64,
        cycles=1,
        warmup_epochs=1,
        arch_epochs=1,
        retrain_epochs=0,
        plateau_window=0,
        log_every=4,
    ),
    # beta-DARTS on NAS-Bench-201 (the best method measured on nb201-cpu, see docs/search-quality.md): softmax
    # mixture with the beta-decay regulariser ramped 0 -> 25, DARTS's 50 epochs (5 warm-up, 45 alternating), arch
    # lr 3e-4.
    "nb201": RunConfig(
        search=SearchConfig(
            space="nb201", init_channels=16, depth=5, sampler="softmax", arch_regularizer="beta", arch_reg_weight=25.0
        ),  # fmt: skip
        batch_size=64,
        cycles=1,
        warmup_epochs=5,
        arch_epochs=45,
        retrain_epochs=0,
        plateau_window=0,
        growth="off",
    ),
    # The reference search cut to fit a free Colab TPU session (one v5e chip today, or 8 cores of an older TPU:
    # batch 256, learning rate scaled with it): all 50,000 images, 4 cycles of 2/1/-/1 epochs.
    "colab": RunConfig(
        search=SearchConfig(
            space="chain", init_channels=32, depth=4, sampler="gumbel_soft", weight_decay=1e-4, weight_lr=0.05
        ),  # fmt: skip
        batch_size=256,
        cycles=4,
        warmup_epochs=2,
        arch_epochs=1,
        retrain_epochs=1,
        plateau_window=0,
    ),
    # NAS-Bench-201 cut to fit 2 CPU cores in minutes, as a proxy of the nb201 preset: 8 channels, one cell
    # per stage, 10,000 images (5,000 for weights, 5,000 held out). The cell is chosen by Zero-Cost-PT with ZiCo
    # after one warm-up epoch, without tuning: the setting of highest mean on the selection seeds of
    # benchmarks/protocol.json (docs/search-quality.md). ``--arch-epochs 8 --warmup-epochs 2`` adds the earlier
    # beta-DARTS search before it, whose settings stay here: 625 architecture steps instead of 15,600 on 3 cells
    # instead of 15, so the logits' learning rate is 10x DARTS's and beta-DARTS's coefficient 25 x 3 / 15 = 5.
    "nb201-cpu": RunConfig(
        search=SearchConfig(
            space="nb201",
            init_channels=8,
            depth=1,
            sampler="softmax",
            arch_lr=3e-3,
            arch_regularizer="beta",
            arch_reg_weight=5.0,
        ),  # fmt: skip
        train_limit=10000,
        batch_size=64,
        cycles=1,
        warmup_epochs=1,
        arch_epochs=0,
        retrain_epochs=0,
        plateau_window=0,
        growth="off",
        log_every=25,
        selection="perturbation",
        selection_measure="zico",
        selection_tune_steps=0,
    ),
    # A CPU-sized beta-DARTS search of the chain space (ASO-SE's) on 5,000 images, about 10 minutes on 2 cores: 16
    # channels, 4 of the ASO-SE ops, 6 cycles of 2/1/-/1 epochs at batch 32, larger learning rates for the short
    # schedule, softmax mixture with the beta regulariser ramped 0 -> 5 as in nb201-cpu: with the hard-Gumbel
    # single path every seed ended all parameter-free (see CHANGELOG.md).
    "smoke": RunConfig(
        search=SearchConfig(
            space="chain",
            init_channels=16,
            depth=4,
            sampler="softmax",
            arch_regularizer="beta",
            arch_reg_weight=5.0,
            weight_lr=0.08,
            arch_lr=6e-3,
            op_names=("skip_connect", "max_pool_3x3", "sep_conv_3x3", "dil_conv_3x3"),
        ),  # fmt: skip
        train_limit=5000,
        batch_size=32,
        cycles=6,
        warmup_epochs=2,
        arch_epochs=1,
        retrain_epochs=1,
        plateau_window=0,
        log_every=10,
    ),
}

# ASO-SE's growth on the nb201-cpu proxy: the same method, but the supernet starts at one cell per stage and grows a
# gated cell (function-preserving, sharing the cell's logits) after each of the first three one-epoch cycles, one
# stage at a time, so that the selection scores ops in a network of two cells per stage, closer to the 5 cells per
# stage that the table scores. Against the same method without growth at about equal wall time it found the same
# cell on every report seed run so far, in about 3x nb201-cpu's time (docs/search-quality.md#growth-on-the-proxy).
PRESETS["nb201-cpu-grow"] = dataclasses.replace(
    PRESETS["nb201-cpu"], cycles=4, growth="auto", grow_at="1:depth,2:depth,3:depth"
)


def preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; use one of {', '.join(PRESETS)}")
    return PRESETS[name]
