"""Pallas kernels for the pl_nll op's two scans (see `_common`).

Each kernel takes a block of `_ROWS` lists and walks along the row in chunks of
`_CHUNK` lanes with a carry, so rows of any length stream through a fixed
amount of on-chip memory:

  - `_masked_logsumexp_kernel`: log Σ_{u ∈ U} e^{s_u} over the n items, an
    online log-sum-exp (running max m and sum l rescaled when m grows).
  - `_log_cumsum_kernel`: the log-space cumulative sum over the k stages,
    forward (the backward's prefix C) or in reverse (the forward's suffix D),
    started from an initial value (log E_U for D). The chunks are visited back
    to front for the reverse scan, by index arithmetic rather than a flipped
    array. Inside a chunk the sums are one matmul with a 0/1 triangular matrix
    after shifting each row by its chunk max; a chunk holding values more than
    SAFE_RANGE nats below that max would underflow, and takes an exact
    Hillis-Steele scan of log-add-exps instead. The carry joins chunks in log
    space, so the result is exact for any finite scores.

The id handling (positions, gathers) stays in XLA (`_common`), where every
backend has fast gathers; the kernels see only dense float blocks.

`interpret=True` runs the same kernels on CPU through Pallas' interpreter;
that is how the tests check them without an accelerator. On GPU and TPU the
kernels compile through `pallas_call`'s lowering for that backend.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from luce.kernels.pl_nll._common import SAFE_RANGE, make_pl_nll

_ROWS = 8      # rows per program: a TPU sublane tile
_CHUNK = 128   # lanes per step: a TPU lane tile


def _pad_to(x, rows, cols, value):
  b, c = x.shape
  return jnp.pad(x, ((0, rows - b), (0, cols - c)), constant_values=value)


def _masked_logsumexp_kernel(s_ref, keep_ref, *refs, n_chunks):
  out_ref = refs[-1]  # refs[:-1]: poisoned initial outputs, if any (aliased)
  rows = s_ref.shape[0]

  def step(c, carry):
    m, l = carry
    lanes = pl.ds(pl.multiple_of(c * _CHUNK, _CHUNK), _CHUNK)
    x = jnp.where(keep_ref[:, lanes] > 0, s_ref[:, lanes], -jnp.inf)
    new_m = jnp.maximum(m, jnp.max(x, axis=1))
    ref = jnp.where(jnp.isfinite(new_m), new_m, 0.0)
    l = l * jnp.exp(m - ref) + jnp.sum(jnp.exp(x - ref[:, None]), axis=1)
    return new_m, l

  init = (jnp.full((rows,), -jnp.inf, jnp.float32), jnp.zeros((rows,), jnp.float32))
  m, l = jax.lax.fori_loop(0, n_chunks, step, init)
  out = jnp.where(l > 0, m + jnp.log(jnp.where(l > 0, l, 1.0)), -jnp.inf)
  out_ref[...] = jnp.broadcast_to(out[:, None], out_ref.shape)


def _hillis_steele(x, reverse):
  """Inclusive log-cumsum-exp along axis 1 by log2(width) shifted log-add-exps."""
  rows, width = x.shape
  d = 1
  while d < width:
    fill = jnp.full((rows, d), -jnp.inf, x.dtype)
    if reverse:
      shifted = jnp.concatenate([x[:, d:], fill], axis=1)
    else:
      shifted = jnp.concatenate([fill, x[:, :-d]], axis=1)
    x = jnp.logaddexp(x, shifted)
    d *= 2
  return x


def _log_cumsum_kernel(x_ref, init_ref, *refs, n_chunks, reverse):
  out_ref, last_ref = refs[-2:]  # refs[:-2]: poisoned initial outputs, if any
  i = jax.lax.broadcasted_iota(jnp.int32, (_CHUNK, _CHUNK), 0)
  j = jax.lax.broadcasted_iota(jnp.int32, (_CHUNK, _CHUNK), 1)
  # x @ tri: out_j = Σ_{i ≥ j} x_i (reverse) or Σ_{i ≤ j} x_i (forward).
  tri = ((i >= j) if reverse else (i <= j)).astype(jnp.float32)

  def step(t, carry):
    c = (n_chunks - 1 - t) if reverse else t
    lanes = pl.ds(pl.multiple_of(c * _CHUNK, _CHUNK), _CHUNK)
    x = x_ref[:, lanes]
    top = jnp.max(x, axis=1, keepdims=True)
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    in_range = jnp.all((x - top >= -SAFE_RANGE) | (x == -jnp.inf))

    def by_matmul():
      sums = jnp.dot(jnp.exp(x - top), tri, preferred_element_type=jnp.float32,
                     precision=jax.lax.Precision.HIGHEST)
      return top + jnp.log(sums)

    within = jax.lax.cond(in_range, by_matmul, lambda: _hillis_steele(x, reverse))
    out = jnp.logaddexp(carry[:, None], within)
    out_ref[:, lanes] = out
    return out[:, 0] if reverse else out[:, -1]

  last = jax.lax.fori_loop(0, n_chunks, step, init_ref[:, 0])
  last_ref[...] = jnp.broadcast_to(last[:, None], last_ref.shape)


def _poisoned(shapes, poison):
  """NaN-filled buffers to alias as the outputs' initial contents (tests)."""
  if not poison:
    return [], {}
  bufs = [jnp.full(s.shape, jnp.nan, s.dtype) for s in shapes]
  return bufs, {2 + i: i for i in range(len(bufs))}


def masked_logsumexp(s, keep, *, interpret=False, poison=False):
  """float32[B]: log Σ_i keep[b, i] e^{s[b, i]} (−inf where nothing is kept).

  `poison=True` starts the output as NaN, so an element the kernel fails to
  write shows up (the tests use it).
  """
  b, n = s.shape
  bp, npad = pl.cdiv(b, _ROWS) * _ROWS, pl.cdiv(n, _CHUNK) * _CHUNK
  s = _pad_to(s.astype(jnp.float32), bp, npad, -jnp.inf)
  keep = _pad_to(keep.astype(jnp.float32), bp, npad, 0.0)
  out_shape = jax.ShapeDtypeStruct((bp, _CHUNK), jnp.float32)
  out_spec = pl.BlockSpec((_ROWS, _CHUNK), lambda r: (r, 0))
  bufs, aliases = _poisoned([out_shape], poison)
  out = pl.pallas_call(
      functools.partial(_masked_logsumexp_kernel, n_chunks=npad // _CHUNK),
      out_shape=out_shape,
      grid=(bp // _ROWS,),
      in_specs=[pl.BlockSpec((_ROWS, npad), lambda r: (r, 0))] * 2 + [out_spec] * len(bufs),
      out_specs=out_spec,
      input_output_aliases=aliases,
      interpret=interpret,
  )(s, keep, *bufs)
  return out[:b, 0]


def log_cumsum(x, init, *, reverse, interpret=False, poison=False):
  """Log-space cumulative sum along axis 1 started from `init`.

  Returns (out float32[B, k], last float32[B]): out_j = log(e^{init} +
  Σ e^{x_i} over i ≥ j (reverse) or i ≤ j (forward)); `last` is the value at
  the far end (j = 0 for reverse, j = k − 1 for forward). `poison` as in
  `masked_logsumexp`.
  """
  b, k = x.shape
  bp, kp = pl.cdiv(b, _ROWS) * _ROWS, pl.cdiv(k, _CHUNK) * _CHUNK
  x = _pad_to(x.astype(jnp.float32), bp, kp, -jnp.inf)
  init = _pad_to(jnp.broadcast_to(init.astype(jnp.float32)[:, None], (b, _CHUNK)), bp, _CHUNK,
                 -jnp.inf)
  out_shapes = (jax.ShapeDtypeStruct((bp, kp), jnp.float32),
                jax.ShapeDtypeStruct((bp, _CHUNK), jnp.float32))
  specs = [pl.BlockSpec((_ROWS, kp), lambda r: (r, 0)),
           pl.BlockSpec((_ROWS, _CHUNK), lambda r: (r, 0))]
  bufs, aliases = _poisoned(out_shapes, poison)
  out, last = pl.pallas_call(
      functools.partial(_log_cumsum_kernel, n_chunks=kp // _CHUNK, reverse=reverse),
      out_shape=out_shapes,
      grid=(bp // _ROWS,),
      in_specs=specs + specs[:len(bufs)],
      out_specs=tuple(specs),
      input_output_aliases=aliases,
      interpret=interpret,
  )(x, init, *bufs)
  return out[:b, :k], last[:b, 0]


def _make(interpret):
  def denominators(s, picked, valid, unpicked, fast_ok):
    del fast_ok  # the kernels are exact for any finite scores
    log_eu = masked_logsumexp(s, unpicked, interpret=interpret)
    return log_cumsum(jnp.where(valid, picked, -jnp.inf), log_eu, reverse=True,
                      interpret=interpret)[0]

  def prefix(log_terms):
    init = jnp.full(log_terms.shape[:1], -jnp.inf, jnp.float32)
    return log_cumsum(log_terms, init, reverse=False, interpret=interpret)[0]

  return make_pl_nll(denominators, prefix)


_COMPILED = _make(interpret=False)
_INTERPRETED = _make(interpret=True)


def pl_nll_pallas(scores, ranking, where=None, weights=None, *, interpret=False):
  """−log P(ranking) per row by the Pallas scans; arguments as `pl_nll_xla`."""
  fn = _INTERPRETED if interpret else _COMPILED
  return fn(scores, ranking, where, weights)
