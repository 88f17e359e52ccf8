"""Named search methods: the sampler, temperature and logit regulariser that make up each published method.

A method is a set of ``SearchConfig`` fields; ``--method NAME`` applies them and any flag given
alongside overrides them. The NAS-Bench-201 CIFAR-10 numbers are the published search results each
method is compared against (optimum 94.37).

=============  =====================================================  ==================================
method         what                                                   published NAS-Bench-201 (C10 test)
=============  =====================================================  ==================================
darts          softmax relaxation, first order (Liu et al. 2019)      54.30 (collapse to skip_connect)
gdas           hard Gumbel, straight-through, tau 10 -> 0.1 linear    93.61
               (Dong & Yang 2019)
aso_se         soft Gumbel, tau 5 -> 0.1 exponential (the original)   none published
beta_darts     softmax + beta-decay regulariser, lambda ramped        94.36
               0 -> 25 (Ye et al. 2022)
drnas          Dirichlet mixing weights + KL to Dir(1), 1e-3          94.36 (with progressive
               (Chen et al. 2021)                                     learning, which is not here)
=============  =====================================================  ==================================
"""

from __future__ import annotations

import dataclasses

from asose_jax.search.step_config import SearchConfig

METHODS: dict[str, dict[str, object]] = {
    "darts": {"sampler": "softmax", "arch_regularizer": "none", "arch_reg_weight": 0.0},
    "gdas": {"sampler": "gumbel_hard", "tau_max": 10.0, "tau_min": 0.1, "tau_schedule": "linear",
             "arch_regularizer": "none", "arch_reg_weight": 0.0},
    "aso_se": {"sampler": "gumbel_soft", "tau_max": 5.0, "tau_min": 0.1, "tau_schedule": "exponential",
               "arch_regularizer": "none", "arch_reg_weight": 0.0},
    "beta_darts": {"sampler": "softmax", "arch_regularizer": "beta", "arch_reg_weight": 25.0},
    "drnas": {"sampler": "dirichlet", "arch_regularizer": "dirichlet_kl", "arch_reg_weight": 1e-3},
}  # fmt: skip


def check_method(name: str) -> str:
    if name not in METHODS:
        raise ValueError(f"unknown --method {name!r}; use one of {', '.join(METHODS)}")
    return name


def with_method(search: SearchConfig, name: str) -> SearchConfig:
    """``search`` with method ``name``'s sampler, temperatures and regulariser."""
    return dataclasses.replace(search, **METHODS[check_method(name)])


def method_of(search: SearchConfig) -> str | None:
    """The name of the method whose sampler, temperatures and regulariser ``search`` has (with any
    regulariser coefficient, which presets scale to their network), or None for a combination of its own."""
    for name, fields in METHODS.items():
        if all(getattr(search, k) == v for k, v in fields.items() if k != "arch_reg_weight"):
            return name
    return None
