"""The ASO-SE cycle as data: which phase trains what, on which split, for how many steps; and the plateau stop.

=========  ===================================  ========================  ==========================
phase      weights                              architecture logits       data
=========  ===================================  ========================  ==========================
warmup     trained, ops sampled from *zero*     frozen                    weight split
           logits (every op in play trained)
arch       trained (``alternate``) or frozen    trained                   held-out split (logits),
           (``alpha-only``)                                               weight split (weights)
mutation   growth decision; derive genotype     shrinking drops ops       held-out split (shrinking
                                                (``--shrink-ops``)        by a perturbation merit)
retrain    trained, ops sampled from the        frozen                    weight split
           current logits
=========  ===================================  ========================  ==========================

Every iteration of every phase advances the global step by one, so learning rate and temperature
follow one schedule over the run. An epoch is one pass over the split the phase learns from: the
weight split for warm-up and re-training, the held-out split for the architecture phase.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from asose_jax.search.run_config import RunConfig

WARMUP, ARCH, MUTATION, RETRAIN = "warmup", "arch", "mutation", "retrain"
PHASES = (WARMUP, ARCH, MUTATION, RETRAIN)


@dataclasses.dataclass(frozen=True)
class Phase:
    name: str
    epochs: int
    steps_per_epoch: int

    @property
    def steps(self) -> int:
        return self.epochs * self.steps_per_epoch


def cycle_phases(config: RunConfig, n_weight: int, n_arch: int) -> tuple[Phase, ...]:
    """The phases of one cycle, given ``n_weight`` / ``n_arch`` images in the two splits."""
    for split, n in (("weight", n_weight), ("held-out architecture", n_arch)):
        if config.batch_size > n:
            raise ValueError(
                f"--batch-size {config.batch_size} is larger than the {n} images of the {split} split; "
                f"use --batch-size <= {n} or more data (--train-limit, --arch-split)"
            )
    weight_steps, arch_steps = n_weight // config.batch_size, n_arch // config.batch_size
    return (
        Phase(WARMUP, config.warmup_epochs, weight_steps),
        Phase(ARCH, config.arch_epochs, arch_steps),
        Phase(MUTATION, 0, 0),
        Phase(RETRAIN, config.retrain_epochs, weight_steps),
    )


def total_steps(config: RunConfig, n_weight: int, n_arch: int, edges: int = 0) -> int:
    """Global steps of the whole run (all cycles, then the tuning of perturbation selection over ``edges`` logit
    rows): the length of the LR and temperature schedules."""
    return config.cycles * sum(p.steps for p in cycle_phases(config, n_weight, n_arch)) + config.selection_steps(edges)


def plateaued(history: Sequence[float], window: int, threshold: float) -> bool:
    """Whether the best of the last ``window`` values beats the best before them by less than ``threshold``.

    ``history`` holds one validation accuracy (percent) per finished cycle; needs ``window + 1``
    values, so a window of ``w`` can stop the run after cycle ``w + 1`` at the earliest. ``window`` 0
    never stops.
    """
    if window < 1 or len(history) <= window:
        return False
    return max(history[-window:]) - max(history[:-window]) < threshold
