"""The set likelihood's quadrature written plainly, for the tests.

log P(S) = log Σ_n e^{h(x_n)} + log dx on the grid of `_common.grid` (the one
every implementation uses), with h(x) = x − e^x + Σ_i log(1 − exp(−e^{x + b_i})),
and no float32 care beyond a clipped exponent. Accurate enough to check the
fast versions when |b| and k are moderate.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from luce.kernels.pl_set._common import grid


def quadrature_reference(b, valid):
  """log P(S) for float[B, k] b_i = s_i − log R, bool[B, k] valid."""
  k = b.shape[-1]
  x_lo, dx, num = grid(k)
  x = x_lo + jnp.arange(num, dtype=b.dtype) * dx              # [N]
  y = x[None, :, None] + b[:, None, :]                          # [B, N, k]
  log_factor = jnp.log(-jnp.expm1(-jnp.exp(jnp.minimum(y, 30.0))))
  h = x - jnp.exp(x) + jnp.sum(jnp.where(valid[:, None, :], log_factor, 0.0), axis=-1)
  return jax.nn.logsumexp(h, axis=-1) + math.log(dx)
