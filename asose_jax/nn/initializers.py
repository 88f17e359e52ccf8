"""Fast initialisation of a model's variables (search supernets and discrete networks).

``model.init`` draws every parameter with its own key, which XLA on CPU compiles
into one random-number kernel per leaf: minutes for a DARTS supernet. The search
modules use Flax's default initialisers only (kernels ``lecun_normal``, scales
one, biases and growth gates zero; BN means zero, variances one), so ``init_variables`` takes the
variable structure from ``jax.eval_shape(model.init)`` and fills all kernels
from a single truncated-normal draw: the same distribution, one kernel to compile.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# Flax's lecun_normal is variance_scaling(1, "fan_in", "truncated_normal"): a normal truncated
# to [-2, 2] rescaled by this constant (the std of the truncated unit normal) to keep the variance.
_TRUNCATED_STD = 0.87962566103423978
SCANNED = "_scan"  # modules so named hold variables stacked along a leading layer axis (``nn.scan``)
_CONSTANT_LEAVES = {("params", "scale"): 1.0, ("params", "bias"): 0.0, ("params", "gate"): 0.0,
                    ("batch_stats", "mean"): 0.0, ("batch_stats", "var"): 1.0}  # fmt: skip


def scan_axes(path: tuple) -> int:
    """How many scanned modules (``..._scan``) the pytree ``path`` of a variable, a gradient or a sown value passes
    through: the number of layer axes stacked in front of its own."""
    return sum(str(getattr(key, "key", key)).endswith(SCANNED) for key in path)


def abstract_variables(model: nn.Module, image_shape: tuple[int, ...], *args, **kwargs) -> dict:
    """The shapes and dtypes (``jax.ShapeDtypeStruct`` leaves) of ``model.init(key, images, *args, **kwargs)`` for
    one image of ``image_shape``. Traced once per model and input shapes: a run asks for them several times (its
    initialisation, weight count, FLOP and memory estimates), and each trace walks the whole model."""
    leaves, treedef = jax.tree.flatten(args)
    specs = tuple(jax.ShapeDtypeStruct(jnp.shape(x), jnp.result_type(x)) for x in leaves)
    return _abstract_variables(model, tuple(image_shape), treedef, specs, tuple(sorted(kwargs.items())))


@functools.lru_cache(maxsize=64)
def _abstract_variables(model: nn.Module, image_shape: tuple, treedef, specs: tuple, kwargs: tuple) -> dict:

    def init(images: jax.Array, *args) -> dict:
        return model.init(jax.random.key(0), images, *args, **dict(kwargs))

    images = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    return jax.eval_shape(init, images, *jax.tree.unflatten(treedef, specs))


def init_variables(model: nn.Module, key: jax.Array, image_shape: tuple[int, int, int], *args, **kwargs) -> dict:
    """``{"params", "batch_stats"}`` for ``model``, distributed as ``model.init(key, images, *args, **kwargs)``
    would draw them (``args``, ``kwargs``: the model's inputs after the images)."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract_variables(model, image_shape, *args, **kwargs))
    kinds = []
    for path, _ in leaves:
        kind = (path[0].key, path[-1].key)
        if kind != ("params", "kernel") and kind not in _CONSTANT_LEAVES:
            raise ValueError(f"init_variables has no initialiser for {jax.tree_util.keystr(path)}")
        kinds.append(kind)
    kernel_sizes = [leaf.size for (_, leaf), kind in zip(leaves, kinds, strict=True) if kind == ("params", "kernel")]
    draws = jax.random.truncated_normal(key, -2.0, 2.0, (sum(kernel_sizes),), jnp.float32)
    draws = np.asarray(draws) / _TRUNCATED_STD  # slice on the host: no per-leaf kernels to compile
    values, start = [], 0
    for (path, leaf), kind in zip(leaves, kinds, strict=True):
        if kind == ("params", "kernel"):
            stacked = scan_axes(path) > 0
            fan_in = int(np.prod(leaf.shape[1 if stacked else 0 : -1]))  # a stacked kernel's layers are apart
            values.append(draws[start : start + leaf.size].reshape(leaf.shape) / np.sqrt(fan_in))
            start += leaf.size
        else:
            values.append(np.full(leaf.shape, _CONSTANT_LEAVES[kind], leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(v, jnp.float32) for v in values])
