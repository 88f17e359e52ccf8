"""asose-jax: ASO-SE neural architecture search in JAX/Flax.

Module map:
  operations     candidate ops, registered by name; the ASO-SE, DARTS and NAS-Bench-201 op sets
  depthwise      depthwise convolution (shifted sum with a custom VJP on CPU, grouped conv elsewhere)
  conv           full convolution (kernel gradient as one im2col matmul on CPU)
  mixed_op       one edge: weighted sum of ops, or the single sampled op via lax.switch
  spaces         the search networks: chain (ASO-SE, growable architecture), darts (cells), nb201 (NAS-Bench-201)
  initializers   fast variable initialisation (one random draw for all kernels)
  sampling       edge weights from logits: softmax, soft Gumbel, straight-through hard Gumbel
  schedules      learning-rate and temperature schedules of the global step
  genotypes      discrete architectures derived from logits, JSON round trip
  config         SearchConfig: plain, validated data
  optimizers     SGD (weights) and Adam (logits) as optax chains with coupled L2
  steps          the pure weight_step, arch_step (first/second order) and eval_step
  input_pipeline tfds / .npz sources, validation, held-out architecture split, on-device augmentation
  run_config     RunConfig (data, batch, cycle, plateau stop) and the named presets
  cycle          the phases of one cycle, the global schedule length, the plateau rule
  growth         function-preserving depth / width / branch mutations, optimiser-state surgery, the growth rule
  train          train_and_evaluate(config, workdir): the search driver and its run directory
  checkpointing  orbax checkpoints of the state and the run's position (exact resume)
  networks       discrete networks from genotypes (chain, DARTS NetworkCIFAR, NAS-Bench-201) for retraining
  retrain_config TrainConfig and the standard / fast recipes
  retrain        train_and_evaluate(config, workdir): training a genotype from scratch
  parallel       the device mesh, shardings, multi-host initialisation (data parallelism)
  cli            what the command-line entry points share
  metrics_log    JSON-lines metrics
  progress       the progress line
  plots          PNG plots from metrics.jsonl
"""

from asose_jax.search.config import SearchConfig
from asose_jax.search.steps import build_model, init_search_state, make_search_steps
from asose_jax.spaces import build_search_model, count_params, init_arch_logits
from asose_jax.spaces.genotypes import derive_genotype, genotype_from_json, genotype_to_json

__all__ = [
    "SearchConfig",
    "build_model",
    "build_search_model",
    "count_params",
    "derive_genotype",
    "genotype_from_json",
    "genotype_to_json",
    "init_arch_logits",
    "init_search_state",
    "make_search_steps",
]
