import functools

import chex
import jax
import jax.numpy as jnp
import pytest

from asose_jax.nn.conv import conv2d as reference_conv
from asose_jax.nn.conv import conv_matmul_grad, resolve_impl
from asose_jax.nn.depthwise import depthwise_conv


@pytest.mark.parametrize(
    "k,stride,dilation",
    [(3, 1, 1), (3, 2, 1), (5, 1, 1), (7, 2, 1), (3, 1, 2), (5, 2, 2)],
)
def test_shifted_sum_matches_grouped_values_and_gradients(k, stride, dilation):
    x = jax.random.normal(jax.random.key(0), (2, 9, 8, 3))
    kernel = jax.random.normal(jax.random.key(1), (k, k, 1, 3))
    pad = dilation * (k - 1) // 2

    def loss(x, kernel, impl):
        return jnp.sum(jnp.sin(depthwise_conv(x, kernel, stride, dilation, pad, impl)))

    shifted = depthwise_conv(x, kernel, stride, dilation, pad, "cpu")
    grouped = depthwise_conv(x, kernel, stride, dilation, pad, "xla")
    chex.assert_shape(shifted, (2, (9 - 1) // stride + 1, (8 - 1) // stride + 1, 3))
    chex.assert_trees_all_close(shifted, grouped, atol=1e-5)
    grads_shifted = jax.grad(loss, (0, 1))(x, kernel, "cpu")
    grads_grouped = jax.grad(loss, (0, 1))(x, kernel, "xla")
    chex.assert_trees_all_close(grads_shifted, grads_grouped, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("k,stride,dilation", [(3, 1, 1), (5, 2, 1), (3, 2, 2)])
def test_shifted_sum_second_order_gradients_match_grouped(k, stride, dilation):
    """Differentiates through both first-order gradients (input and kernel), as the second-order
    architecture step does through a virtual weight step: exercises the VJPs of the hand-written VJP."""
    x = jax.random.normal(jax.random.key(0), (2, 9, 8, 3))
    kernel = jax.random.normal(jax.random.key(1), (k, k, 1, 3))
    pad = dilation * (k - 1) // 2

    def gradient_energy(x, kernel, impl):
        def loss(x, kernel):
            return jnp.sum(jnp.sin(depthwise_conv(x, kernel, stride, dilation, pad, impl)))

        dx, dk = jax.grad(loss, (0, 1))(x, kernel)
        return jnp.sum(dk**2) + jnp.sum(jnp.cos(dx))

    shifted = jax.grad(gradient_energy, (0, 1))(x, kernel, "cpu")
    grouped = jax.grad(gradient_energy, (0, 1))(x, kernel, "xla")
    chex.assert_trees_all_close(shifted, grouped, atol=2e-3, rtol=1e-5)


def test_auto_picks_the_backend_implementation():
    expected = "cpu" if jax.default_backend() == "cpu" else "xla"
    assert resolve_impl("auto") == expected
    with pytest.raises(ValueError, match="unknown convolution implementation 'winograd'"):
        resolve_impl("winograd")


@pytest.mark.parametrize(
    "kernel_size,strides", [((1, 1), (1, 1)), ((1, 1), (2, 2)), ((3, 3), (2, 2)), ((1, 7), (1, 2))]
)
def test_matmul_kernel_gradient_matches_autodiff(kernel_size, strides):
    x = jax.random.normal(jax.random.key(0), (2, 8, 7, 3))
    kernel = jax.random.normal(jax.random.key(1), (*kernel_size, 3, 4))
    padding = tuple(((k - 1) // 2, (k - 1) // 2) for k in kernel_size)

    def loss(conv_fn, x, kernel):
        return jnp.sum(jnp.sin(conv_fn(x, kernel, strides, padding)))

    custom = jax.grad(functools.partial(loss, conv_matmul_grad), (0, 1))(x, kernel)
    reference = jax.grad(functools.partial(loss, reference_conv), (0, 1))(x, kernel)
    chex.assert_trees_all_close(custom, reference, atol=1e-4, rtol=1e-5)
    chex.assert_trees_all_close(
        conv_matmul_grad(x, kernel, strides, padding), reference_conv(x, kernel, strides, padding)
    )
