"""Pallas kernels for the set likelihood's quadrature, value and gradient.

Same grid and the same float32 care as `xla.quadrature_xla`; the kernels take a
block of `_ROWS` events with their k set items on the lanes and walk the
quadrature nodes one at a time, so memory stays O(rows · k) whatever the
number of nodes (the XLA version holds rows × nodes × k).

Forward: for node x_n, v_n = (1 + m)·x_n + rest_n, rest_n = Σ_i term_i(x_n) −
e^{x_n} (terms relative to the pulled-out linear part, see `xla`). An online
log-sum-exp keeps the best node so far (x_top, rest_top) and Σ_n e^{v_n − v_top},
rescaling the sum when the best node changes; differences v_n − v_top are
formed from small pieces, never from the large v's themselves.

Backward: ∂ log P / ∂b_i = Σ_n p_n L'(x_n + b_i), p_n = e^{v_n − v_top} / Σ, and
L'(y) = u / (e^u − 1), u = e^y (the derivative of log(1 − exp(−e^y))). The
pulled-out linear part contributes 1 to ∂/∂b_i for b_i < 0 and its per-node
term M' = L' − 1, which add up to the same formula.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from luce.kernels.pl_set.xla import grid, log_factors

_ROWS = 8
_LANES = 128


def _pad(x, rows, cols, value):
  return jnp.pad(x, ((0, rows - x.shape[0]), (0, cols - x.shape[1])), constant_values=value)


def _node_terms(x, b, low, high):
  """rest(x) per row: Σ_i term_i − e^x, for a scalar node x."""
  m_part, l_part = log_factors(x + b)
  terms = jnp.where(low, m_part, jnp.where(high, l_part, 0.0))
  return jnp.sum(terms, axis=1) - jnp.exp(x)


def _forward_kernel(b_ref, valid_ref, *refs, x_lo, dx, num):
  out_ref = refs[-1]  # refs[:-1]: a poisoned initial output, if any (aliased)
  b = b_ref[...]
  valid = valid_ref[...] > 0
  low, high = valid & (b < 0), valid & (b >= 0)
  slope = 1.0 + jnp.sum(low.astype(jnp.float32), axis=1)
  rows = b.shape[0]

  def step(i, carry):
    top, rest_top, acc = carry
    x = x_lo + i.astype(jnp.float32) * dx
    rest = _node_terms(x, b, low, high)
    d = slope * (i.astype(jnp.float32) - top) * dx + (rest - rest_top)
    better = d > 0
    acc = jnp.where(better, acc * jnp.exp(-d) + 1.0, acc + jnp.exp(jnp.minimum(d, 0.0)))
    return (jnp.where(better, i.astype(jnp.float32), top),
            jnp.where(better, rest, rest_top), acc)

  rest0 = _node_terms(jnp.float32(x_lo), b, low, high)
  init = (jnp.zeros((rows,), jnp.float32), rest0, jnp.ones((rows,), jnp.float32))
  top, rest_top, acc = jax.lax.fori_loop(1, num, step, init)
  out_ref[:, 0:1] = top[:, None]
  out_ref[:, 1:2] = rest_top[:, None]
  out_ref[:, 2:3] = jnp.log(acc)[:, None]
  out_ref[:, 3:] = jnp.zeros((rows, out_ref.shape[1] - 3), jnp.float32)


def _backward_kernel(b_ref, valid_ref, stats_ref, *refs, x_lo, dx, num):
  grad_ref = refs[-1]
  b = b_ref[...]
  valid = valid_ref[...] > 0
  low, high = valid & (b < 0), valid & (b >= 0)
  slope = 1.0 + jnp.sum(low.astype(jnp.float32), axis=1)
  top, rest_top, log_acc = stats_ref[:, 0], stats_ref[:, 1], stats_ref[:, 2]

  def step(i, g):
    x = x_lo + i.astype(jnp.float32) * dx
    rest = _node_terms(x, b, low, high)
    p = jnp.exp(slope * (i.astype(jnp.float32) - top) * dx + (rest - rest_top) - log_acc)
    u = jnp.exp(jnp.minimum(x + b, 6.0))
    # u / expm1(u) → 1 as u → 0 (expm1 keeps it exact there).
    dl = jnp.where(u < 1e-30, 1.0, u / jnp.expm1(jnp.maximum(u, 1e-30)))
    return g + p[:, None] * dl

  g = jax.lax.fori_loop(0, num, step, jnp.zeros(b.shape, jnp.float32))
  grad_ref[...] = jnp.where(valid, g, 0.0)


def _call(kernel, b, valid, extra, out_cols, interpret, poison=False):
  k = b.shape[1]
  x_lo, dx, num = grid(k)
  bsz = b.shape[0]
  bp, kp = pl.cdiv(bsz, _ROWS) * _ROWS, pl.cdiv(k, _LANES) * _LANES
  args = [_pad(b.astype(jnp.float32), bp, kp, 0.0),
          _pad(valid.astype(jnp.float32), bp, kp, 0.0)]
  specs = [pl.BlockSpec((_ROWS, kp), lambda r: (r, 0))] * 2
  if extra is not None:
    args.append(_pad(extra, bp, _LANES, 0.0))
    specs.append(pl.BlockSpec((_ROWS, _LANES), lambda r: (r, 0)))
  cols = kp if out_cols is None else out_cols
  out_spec = pl.BlockSpec((_ROWS, cols), lambda r: (r, 0))
  aliases = {}
  if poison:  # start the output as NaN so an unwritten element shows (tests)
    aliases = {len(args): 0}
    args.append(jnp.full((bp, cols), jnp.nan, jnp.float32))
    specs = specs + [out_spec]
  out = pl.pallas_call(
      functools.partial(kernel, x_lo=float(x_lo), dx=float(dx), num=int(num)),
      out_shape=jax.ShapeDtypeStruct((bp, cols), jnp.float32),
      grid=(bp // _ROWS,),
      in_specs=specs,
      out_specs=out_spec,
      input_output_aliases=aliases,
      interpret=interpret,
  )(*args)
  return out[:bsz]


def node_stats(b, valid, *, interpret=False, poison=False):
  """float32[B, 128]: per row the best node's index, rest there and log Σ
  (columns 0-2; the rest 0), from the forward kernel."""
  return _call(_forward_kernel, b.astype(jnp.float32), valid, None, _LANES, interpret, poison)


def node_grad(b, valid, stats, *, interpret=False, poison=False):
  """float32[B, k]: ∂ log P / ∂b from the backward kernel."""
  return _call(_backward_kernel, b.astype(jnp.float32), valid, stats, None, interpret,
               poison)[:, :b.shape[1]]


def _value(b, valid, stats):
  """log P from the kernel's (top node, rest there, log Σ) per row."""
  k = b.shape[1]
  x_lo, dx, _ = grid(k)
  low = valid & (b < 0)
  x_top = x_lo + stats[:, 0] * dx
  linear = jnp.sum(jnp.where(low, b + x_top[:, None], 0.0), axis=1) + x_top
  return linear + stats[:, 1] + stats[:, 2] + math.log(dx)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def quadrature_pallas(b, valid, interpret=False):
  """log P(S) for float32[B, k] b_i = s_i − log R (see the module doc)."""
  b = b.astype(jnp.float32)
  return _value(b, valid, node_stats(b, valid, interpret=interpret))


def _fwd(b, valid, interpret):
  b = b.astype(jnp.float32)
  stats = node_stats(b, valid, interpret=interpret)
  return _value(b, valid, stats), (b, valid, stats)


def _bwd(interpret, saved, g):
  b, valid, stats = saved
  grad = node_grad(b, valid, stats, interpret=interpret)
  return grad * g[:, None], None


quadrature_pallas.defvjp(_fwd, _bwd)
