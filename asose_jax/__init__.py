"""asose-jax: ASO-SE neural architecture search in JAX/Flax.

Layers (each imports only from the ones before it; see docs/architecture.md):
  nn/        ops, the mixed op, convolution kernels, initialisers, optimisers, schedules
  spaces/    the SearchSpace interface and one package per space (chain, darts, nb201); genotypes, networks
  runtime/   data, devices and shardings, checkpoints, the run directory, metrics, plots, progress, CLI helpers
  search/    configs and presets, methods, samplers, regularisers, pure steps, jitted iterations, the cycle,
             growth, the NAS-Bench-201 table, the search run and its driver
  train/     training a genotype from scratch: its config and driver
"""

from asose_jax.search.step_config import SearchConfig
from asose_jax.search.steps import init_search_state, make_search_steps, supernet_from_config
from asose_jax.spaces import build_supernet, count_params, init_arch_logits
from asose_jax.spaces.genotypes import derive_genotype, genotype_from_json, genotype_to_json

__all__ = [
    "SearchConfig",
    "supernet_from_config",
    "build_supernet",
    "count_params",
    "derive_genotype",
    "genotype_from_json",
    "genotype_to_json",
    "init_arch_logits",
    "init_search_state",
    "make_search_steps",
]
