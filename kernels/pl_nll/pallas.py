"""Pallas TPU kernels for the pl_nll op's two scans (see `_common`).

Both kernels tile a [B, L] array into (8, 128) blocks, a TPU vreg tile: the
grid is (row blocks, column chunks), the row axis "parallel" (split across
TensorCores) and the chunk axis "arbitrary" (sequential, so a carry in VMEM
scratch joins the chunks of a row). Rows of any length stream through a fixed
amount of VMEM.

  - `masked_logsumexp`: log Σ_{u ∈ U} e^{s_u} over the n items, an online
    log-sum-exp (running max m and sum l, the sum rescaled by e^{m_old − m}
    when the max grows).
  - `log_cumsum`: the log-space cumulative sum over the k stages, forward (the
    backward's prefix C) or in reverse (the forward's suffix D), started from
    an initial value (log E_U for D). The reverse scan visits the chunks back
    to front through its index map, not a flipped copy. Inside a chunk the
    sums are one matmul with a 0/1 triangular matrix after shifting each row
    by its max; a row holding values more than SAFE_RANGE nats below that max
    would underflow and takes an exact Hillis-Steele scan of log-add-exps
    instead. Both are computed and selected per row (a vector predicate cannot
    steer a scalar branch on the TPU). The Hillis-Steele shifts are lane
    rotations (`pltpu.roll`, the XLU's native op) with an iota mask, not
    unaligned concatenations. The carry joins chunks in log space, so the
    result is exact for any finite scores.

Mosaic TPU constraints respected: every value is 2-D with (8, 128)-aligned
block shapes (the row vectors are (8, 1) columns, never 1-D), every ref
access is a whole block, and no value moves from the vector to the scalar
unit.

The id handling (positions, gathers) stays in XLA (`_common`); the kernels
see only dense float blocks.

`interpret=` follows `luce.kernels`: True runs these kernels in Pallas' HLO
interpreter, "tpu" in the TPU simulator (`pltpu.InterpretParams`), False
compiles them with Mosaic TPU.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from luce import kernels
from luce.kernels.pl_nll._common import SAFE_RANGE, make_pl_nll

_ROWS = 8      # rows per block: a TPU sublane tile
_CHUNK = 128   # lanes per block: a TPU lane tile


def _pad_to(x, rows, cols, value):
  b, c = x.shape
  return jnp.pad(x, ((0, rows - b), (0, cols - c)), constant_values=value)


def _params():
  return pltpu.CompilerParams(dimension_semantics=("parallel", "arbitrary"))


def _masked_logsumexp_kernel(s_ref, keep_ref, *refs):
  out_ref, m_ref, l_ref = refs[-3:]  # refs[:-3]: poisoned initial outputs, if any (aliased)
  c = pl.program_id(1)

  @pl.when(c == 0)
  def _():
    m_ref[...] = jnp.full(m_ref.shape, -jnp.inf, jnp.float32)
    l_ref[...] = jnp.zeros(l_ref.shape, jnp.float32)

  x = jnp.where(keep_ref[...] > 0, s_ref[...], -jnp.inf)
  m = m_ref[...]
  new_m = jnp.maximum(m, jnp.max(x, axis=1, keepdims=True))
  ref = jnp.where(new_m > -jnp.inf, new_m, 0.0)
  l_ref[...] = l_ref[...] * jnp.exp(m - ref) + jnp.sum(jnp.exp(x - ref), axis=1, keepdims=True)
  m_ref[...] = new_m

  @pl.when(c == pl.num_programs(1) - 1)
  def _():
    l = l_ref[...]
    out = jnp.where(l > 0, m_ref[...] + jnp.log(jnp.where(l > 0, l, 1.0)), -jnp.inf)
    out_ref[...] = jnp.broadcast_to(out, out_ref.shape)


def _hillis_steele(x, reverse):
  """Inclusive log-cumsum-exp along axis 1 by log2(width) shifted log-add-exps."""
  width = x.shape[1]
  lane = jax.lax.broadcasted_iota(jnp.int32, x.shape, 1)
  d = 1
  while d < width:
    if reverse:   # shifted[j] = x[j + d], −inf past the end
      shifted = jnp.where(lane < width - d, pltpu.roll(x, width - d, 1), -jnp.inf)
    else:         # shifted[j] = x[j − d], −inf before the start
      shifted = jnp.where(lane >= d, pltpu.roll(x, d, 1), -jnp.inf)
    x = _logaddexp(x, shifted)
    d *= 2
  return x


def _logaddexp(a, b):
  """log(e^a + e^b) with −inf handled, in ops Mosaic TPU lowers."""
  hi = jnp.maximum(a, b)
  lo = jnp.minimum(a, b)
  safe = jnp.where(hi > -jnp.inf, hi, 0.0)
  return jnp.where(hi > -jnp.inf, hi + jnp.log1p(jnp.exp(lo - safe)), -jnp.inf)


def _log_cumsum_kernel(x_ref, init_ref, *refs, reverse):
  out_ref, last_ref, carry_ref = refs[-3:]  # refs[:-3]: poisoned initial outputs, if any
  t = pl.program_id(1)

  @pl.when(t == 0)
  def _():
    carry_ref[...] = init_ref[:, 0:1]

  i = jax.lax.broadcasted_iota(jnp.int32, (_CHUNK, _CHUNK), 0)
  j = jax.lax.broadcasted_iota(jnp.int32, (_CHUNK, _CHUNK), 1)
  # x @ tri: out_j = Σ_{i ≥ j} x_i (reverse) or Σ_{i ≤ j} x_i (forward).
  tri = jnp.where((i >= j) if reverse else (i <= j), 1.0, 0.0).astype(jnp.float32)
  x = x_ref[...]
  top = jnp.max(x, axis=1, keepdims=True)
  top = jnp.where(top > -jnp.inf, top, 0.0)
  in_range = jnp.min(jnp.where((x - top >= -SAFE_RANGE) | (x == -jnp.inf), 1.0, 0.0),
                     axis=1, keepdims=True) > 0
  sums = jnp.dot(jnp.exp(x - top), tri, preferred_element_type=jnp.float32,
                 precision=jax.lax.Precision.HIGHEST)
  by_matmul = jnp.where(sums > 0, top + jnp.log(jnp.where(sums > 0, sums, 1.0)), -jnp.inf)
  within = jnp.where(in_range, by_matmul, _hillis_steele(x, reverse))
  out = _logaddexp(carry_ref[...], within)
  out_ref[...] = out
  carry = out[:, 0:1] if reverse else out[:, _CHUNK - 1:_CHUNK]
  carry_ref[...] = carry

  @pl.when(t == pl.num_programs(1) - 1)
  def _():
    last_ref[...] = jnp.broadcast_to(carry, last_ref.shape)


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
  out_spec = pl.BlockSpec((_ROWS, _CHUNK), lambda r, c: (r, 0))
  in_spec = pl.BlockSpec((_ROWS, _CHUNK), lambda r, c: (r, c))
  bufs, aliases = _poisoned([out_shape], poison)
  out = pl.pallas_call(
      _masked_logsumexp_kernel,
      out_shape=out_shape,
      grid=(bp // _ROWS, npad // _CHUNK),
      in_specs=[in_spec, in_spec] + [out_spec] * len(bufs),
      out_specs=out_spec,
      scratch_shapes=[pltpu.VMEM((_ROWS, 1), jnp.float32)] * 2,
      input_output_aliases=aliases,
      compiler_params=_params(),
      interpret=kernels.interpret_params(interpret),
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
  n_chunks = kp // _CHUNK
  x = _pad_to(x.astype(jnp.float32), bp, kp, -jnp.inf)
  init = _pad_to(jnp.broadcast_to(init.astype(jnp.float32)[:, None], (b, _CHUNK)), bp, _CHUNK,
                 -jnp.inf)
  out_shapes = (jax.ShapeDtypeStruct((bp, kp), jnp.float32),
                jax.ShapeDtypeStruct((bp, _CHUNK), jnp.float32))
  chunk = (lambda r, t: (r, n_chunks - 1 - t)) if reverse else (lambda r, t: (r, t))
  specs = [pl.BlockSpec((_ROWS, _CHUNK), chunk),
           pl.BlockSpec((_ROWS, _CHUNK), lambda r, t: (r, 0))]
  bufs, aliases = _poisoned(out_shapes, poison)
  out, last = pl.pallas_call(
      functools.partial(_log_cumsum_kernel, reverse=reverse),
      out_shape=out_shapes,
      grid=(bp // _ROWS, n_chunks),
      in_specs=specs + specs[:len(bufs)],
      out_specs=tuple(specs),
      scratch_shapes=[pltpu.VMEM((_ROWS, 1), jnp.float32)],
      input_output_aliases=aliases,
      compiler_params=_params(),
      interpret=kernels.interpret_params(interpret),
  )(x, init, *bufs)
  return out[:b, :k], last[:b, 0]


@functools.cache
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


def pl_nll_pallas(scores, ranking, where=None, weights=None, *, interpret=False):
  """−log P(ranking) per row by the Pallas TPU scans; arguments as `pl_nll_xla`,
  `interpret` as in `luce.kernels` (False, True or "tpu")."""
  return _make(kernels.interpret_mode(interpret))(scores, ranking, where, weights)
