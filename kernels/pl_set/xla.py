"""The set likelihood's quadrature in XLA.

P(S) = ∫_0^∞ e^{−t} Π_{i∈S} (1 − e^{−t a_i}) dt, a_i = e^{b_i}, b_i = s_i − log R,
taken on x = log t by the trapezoid rule on a fixed grid (see `_common.grid`).
Differentiable through a closed-form custom VJP (see `quadrature_xla`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from luce.kernels.pl_set._common import grid  # the grid every implementation shares


def log_factors(y):
  """(M(y), L(y)) with L(y) = log(1 - exp(-e^y)) and M(y) = L(y) - y.

  Each is computed where it has no cancellation: M(y) = log((1 - e^-u) / u),
  u = e^y, is small for y < 0 (-u/2 + u^2/24 - ...; below y = -20 the
  second term is under 1e-18, so -u/2 is used) and L(y) is small for y >= 0;
  the other of the two is then y plus or minus it. One exp, one expm1 and one log per element.
  Inputs are clipped so that no branch, or its gradient, overflows: beyond
  y = 6, exp(-e^y) < 1e-170 and L is 0 to float64.
  """
  u = jnp.exp(jnp.minimum(y, 6.0))
  tiny = y < -20.0
  neg = y < 0.0
  u_safe = jnp.where(tiny, 1.0, u)
  one_minus = -jnp.expm1(-u_safe)
  r = jnp.log(jnp.where(neg, one_minus / u_safe, one_minus))
  m = jnp.where(tiny, -0.5 * u, jnp.where(neg, r, r - y))
  l = jnp.where(tiny, y - 0.5 * u, jnp.where(neg, y + r, r))
  return m, l


def _node_stats(b, valid):
  """Per row: the best node's index and rest there, log Σ_n e^{v_n − v_top},
  and the node weights p_n = e^{v_n − v_top} / Σ (the backward's residual).

  With t = e^x the integrand is e^h(x),
    h(x) = x - e^x + sum_i L(x + b_i),  L(y) = log(1 - exp(-e^y)).
  h' = 0 only where e^x is in (1, k + 1], so the mass sits in
  [0, log(k + 1)]; see the grid notes in `_common`.

  Float32 care: an item with b_i < 0 has L(x + b_i) = x + b_i + M(x + b_i)
  with M small, so C = sum of those b_i and the linear part (1 + m) x are
  kept out of the per-node sums (v_n = (1 + m) x_n + rest_n), and every node
  is taken relative to the highest one, x_top, so that the large parts are
  added once, at the end (`_value`).
  """
  k = b.shape[-1]
  x_lo, dx, num = grid(k)
  dtype = b.dtype
  steps = jnp.arange(num)
  x = (x_lo + steps * dx).astype(dtype)  # [N]
  low = valid & (b < 0)
  high = valid & ~(b < 0)
  # One fused pass over [B, N, k]: XLA reduces over k as it goes.
  shifted, plain = log_factors(x[None, :, None] + b[:, None, :])
  terms = jnp.where(low[:, None, :], shifted, jnp.where(high[:, None, :], plain, 0.0))
  rest = jnp.sum(terms, axis=-1) - jnp.exp(x)[None, :]  # [B, N]
  slope = 1.0 + jnp.sum(low, axis=-1).astype(dtype)  # [B]
  top = jnp.argmax(slope[:, None] * x[None, :] + rest, axis=-1)
  rest_top = jnp.take_along_axis(rest, top[:, None], axis=-1)[:, 0]
  offset = ((steps[None, :] - top[:, None]) * dx).astype(dtype)  # x - x_top
  rel = slope[:, None] * offset + (rest - rest_top[:, None])
  lse = jax.nn.logsumexp(rel, axis=-1)
  return top, rest_top, lse, jnp.exp(rel - lse[:, None])


def _value(b, valid, top, rest_top, lse):
  x_lo, dx, _ = grid(b.shape[-1])
  x_top = (x_lo + top * dx).astype(b.dtype)
  # C + (1 + m) x_top summed item by item: C and (1 + m) x_top are both large
  # (hundreds for many weak items) and nearly cancel; b_i + x_top is small.
  low = valid & (b < 0)
  linear = jnp.sum(jnp.where(low, b + x_top[:, None], 0.0), axis=-1) + x_top
  return linear + rest_top + lse + math.log(dx)


def factor_slope(y):
  """L'(y) = u / (e^u − 1), u = e^y: the derivative of log(1 − exp(−e^y)),
  → 1 as u → 0 and 0 (not NaN) once e^u overflows."""
  u = jnp.exp(jnp.minimum(y, 6.0))
  small = u < 1e-30
  u_safe = jnp.where(small, 1.0, u)
  return jnp.where(small, 1.0, u_safe / jnp.expm1(u_safe))


@jax.custom_vjp
def quadrature_xla(b, valid):
  """log P(S) by the trapezoid rule, for float[B, k] b_i = s_i − log R (any
  float dtype, kept), bool[B, k] valid.

  Closed-form gradient (the same as the Pallas kernels')::

    ∂ log P / ∂b_i = Σ_n p_n L'(x_n + b_i),  p_n = e^{v_n} / Σ_m e^{v_m}

  (the pulled-out linear part's 1 for b_i < 0 and its per-node M' = L' − 1
  add up to L'). Its residual is p [B, N], and each direction is one fused
  pass over [B, N, k], where autodiff of the branches kept several
  [B, N, k] arrays alive (2-3× slower, and gigabytes at k in the hundreds).
  """
  top, rest_top, lse, _ = _node_stats(b, valid)
  return _value(b, valid, top, rest_top, lse)


def _fwd(b, valid):
  top, rest_top, lse, p = _node_stats(b, valid)
  return _value(b, valid, top, rest_top, lse), (b, valid, p)


def _bwd(saved, g):
  b, valid, p = saved
  x_lo, dx, num = grid(b.shape[-1])
  x = (x_lo + jnp.arange(num) * dx).astype(b.dtype)
  slopes = factor_slope(x[None, :, None] + b[:, None, :])  # [B, N, k], fused into the sum
  grad = jnp.sum(p[:, :, None] * slopes, axis=1)
  return jnp.where(valid, grad, 0.0) * g[:, None], None


quadrature_xla.defvjp(_fwd, _bwd)
