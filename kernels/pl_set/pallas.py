"""Pallas TPU kernels for the set likelihood's quadrature, value and gradient.

`pl.pallas_call` over blocks of `_ROWS` = 8 events (one sublane tile) with
the k set items on the lanes, padded to a multiple of 128, so every block is
whole (8, 128) vreg tiles. Compiled by Mosaic TPU on a TPU
(`dimension_semantics=("parallel",)`: row blocks are independent), and run by
`interpret=True` (HLO interpreter) and `interpret="tpu"` (TPU simulator) on
any backend.

Same grid and the same float32 care as `xla.quadrature_xla`; the kernels walk
the quadrature nodes one at a time, so memory stays O(rows · k) whatever the
number of nodes (the XLA version holds rows × nodes × k). Masked and padded
slots arrive as b = `_common.NEUTRAL`, whose term and derivative are exactly
0, so the kernels read b only. Within a block the kernels step over the
lanes in 128-aligned chunks of up to 512 (`_lane_chunk`), reading b from
VMEM per node and accumulating the gradient in the output block, so the live
vector values and the code size do not grow with k.

Forward: for node x_n, v_n = (1 + m)·x_n + rest_n, rest_n = Σ_i term_i(x_n) −
e^{x_n} (terms relative to the pulled-out linear part, see `xla`). An online
log-sum-exp keeps the best node so far (index top, rest_top) and
Σ_n e^{v_n − v_top}, rescaling the sum when the best node changes;
differences v_n − v_top are formed from small pieces, never from the large
v's themselves. Output: a (rows, 128) tile per block, columns 0-2 holding
(top, rest_top, log Σ), the rest 0.

Backward: ∂ log P / ∂b_i = Σ_n p_n L'(x_n + b_i), p_n = e^{v_n − v_top} / Σ, and
L'(y) = u / (e^u − 1), u = e^y (the derivative of log(1 − exp(−e^y))). The
pulled-out linear part contributes 1 to ∂/∂b_i for b_i < 0 and its per-node
term M' = L' − 1, which add up to the same formula.

Mosaic TPU constraints kept in mind (the compiled path has not been run on a
TPU from this repository's tests, which run the two interpreters):
  - every vector value is 2-D: per-row quantities are (rows, 1) columns
    (`keepdims=True`), never 1-D vectors;
  - the node x is a scalar only in index arithmetic; exp(x) is taken on a
    (rows, 1) vector (the scalar unit has no transcendental functions);
  - the stats tile is built with lane-iota selects and stored whole, and
    read back by masked lane sums: no unaligned lane slices or concatenation;
  - no expm1/log1p (not lowered by Mosaic TPU); see `_common`;
  - no gathers: the best node is carried as an index, not looked up.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from luce import kernels
from luce.kernels.pl_set import _common
from luce.kernels.pl_set._common import grid

_ROWS = 8
_LANES = 128


def _lane_chunk(kp):
  """Lanes per inner step: 512, 256 or 128, whichever divides kp first."""
  return next(c for c in (512, 256, _LANES) if kp % c == 0)


def _chunk(ref, c, lc):
  """Columns [c·lc, (c + 1)·lc) of a block: a 128-aligned dynamic lane slice."""
  return ref[:, pl.ds(pl.multiple_of(c * lc, _LANES), lc)]


def _row_sum(ref, lc, fn, init):
  """init + Σ over lane chunks of the chunk's row sums of fn(chunk), (rows, 1)."""
  chunks = ref.shape[1] // lc
  return jax.lax.fori_loop(
      0, chunks, lambda c, acc: acc + jnp.sum(fn(_chunk(ref, c, lc)), axis=1, keepdims=True),
      init)


def _column(rows, value):
  return jnp.full((rows, 1), value, jnp.float32)


def _slope(b_ref, lc):
  """1 + the number of low (b < 0) slots per row; neutral slots are not low."""
  return _row_sum(b_ref, lc, lambda b: jnp.where(b < 0, 1.0, 0.0),
                  _column(b_ref.shape[0], 1.0))


def _rest(b_ref, lc, x):
  """rest(x) per row, (rows, 1): Σ_i term_i − e^x, for a scalar node x (e^x
  is taken on a column: the scalar unit has no exp)."""
  rows = b_ref.shape[0]
  terms = _row_sum(b_ref, lc, lambda b: _common.factor_terms(x + b, b < 0),
                   _column(rows, 0.0))
  return terms - jnp.exp(_column(rows, x))


def _forward_kernel(b_ref, *refs, x_lo, dx, num, lc):
  out_ref = refs[-1]  # refs[:-1]: a poisoned initial output, if any (aliased)
  rows = b_ref.shape[0]
  slope = _slope(b_ref, lc)

  def step(i, carry):
    top, rest_top, acc = carry
    fi = i.astype(jnp.float32)
    rest = _rest(b_ref, lc, x_lo + fi * dx)
    d = slope * ((fi - top) * dx) + (rest - rest_top)
    better = d > 0
    acc = jnp.where(better, acc * jnp.exp(-jnp.maximum(d, 0.0)) + 1.0,
                    acc + jnp.exp(jnp.minimum(d, 0.0)))
    return jnp.where(better, fi, top), jnp.where(better, rest, rest_top), acc

  init = (_column(rows, 0.0), _rest(b_ref, lc, jnp.float32(x_lo)), _column(rows, 1.0))
  top, rest_top, acc = jax.lax.fori_loop(1, num, step, init)
  col = jax.lax.broadcasted_iota(jnp.int32, out_ref.shape, 1)
  out_ref[...] = jnp.where(col == 0, top, jnp.where(col == 1, rest_top,
                                                    jnp.where(col == 2, jnp.log(acc), 0.0)))


def _backward_kernel(b_ref, stats_ref, *refs, x_lo, dx, num, lc):
  grad_ref = refs[-1]
  slope = _slope(b_ref, lc)
  stats = stats_ref[...]
  col = jax.lax.broadcasted_iota(jnp.int32, stats.shape, 1)
  pick = lambda c: jnp.sum(jnp.where(col == c, stats, 0.0), axis=1, keepdims=True)
  top, rest_top, log_acc = pick(0), pick(1), pick(2)
  grad_ref[...] = jnp.zeros(grad_ref.shape, jnp.float32)

  @pl.loop(0, num)
  def _(i):
    fi = i.astype(jnp.float32)
    x = x_lo + fi * dx
    rest = _rest(b_ref, lc, x)
    p = jnp.exp(slope * ((fi - top) * dx) + (rest - rest_top) - log_acc)

    @pl.loop(0, grad_ref.shape[1] // lc)
    def _(c):
      cols = pl.ds(pl.multiple_of(c * lc, _LANES), lc)
      grad_ref[:, cols] += p * _common.factor_slope(x + b_ref[:, cols])


def _call(kernel, b, extra, out_cols, interpret, poison):
  """Run `kernel` over row blocks of the neutral-padded b [bp, kp]."""
  k = b.shape[1]
  x_lo, dx, num = grid(k)
  bsz = b.shape[0]
  bp, kp = pl.cdiv(bsz, _ROWS) * _ROWS, pl.cdiv(k, _LANES) * _LANES
  args = [_common.pad_to(b, bp, kp)]
  specs = [pl.BlockSpec((_ROWS, kp), lambda r: (r, 0))]
  if extra is not None:
    args.append(_common.pad_to(extra, bp, _LANES, 0.0))
    specs.append(pl.BlockSpec((_ROWS, _LANES), lambda r: (r, 0)))
  cols = kp if out_cols is None else out_cols
  out_spec = pl.BlockSpec((_ROWS, cols), lambda r: (r, 0))
  aliases = {}
  if poison:  # start the output as NaN so an unwritten element shows (tests)
    aliases = {len(args): 0}
    args.append(jnp.full((bp, cols), jnp.nan, jnp.float32))
    specs = specs + [out_spec]
  out = pl.pallas_call(
      functools.partial(kernel, x_lo=float(x_lo), dx=float(dx), num=int(num),
                        lc=_lane_chunk(kp)),
      out_shape=jax.ShapeDtypeStruct((bp, cols), jnp.float32),
      grid=(bp // _ROWS,),
      in_specs=specs,
      out_specs=out_spec,
      input_output_aliases=aliases,
      compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel",)),
      interpret=kernels.interpret_params(interpret),
  )(*args)
  return out[:bsz]


def node_stats(b, valid, *, interpret=False, poison=False):
  """float32[B, 128]: per row the best node's index, rest there and log Σ
  (columns 0-2; the rest 0), from the forward kernel. `poison=True` starts
  the output as NaN (tests: an unwritten element shows)."""
  return _call(_forward_kernel, _common.neutral_b(b, valid), None, _LANES, interpret, poison)


def node_grad(b, valid, stats, *, interpret=False, poison=False):
  """float32[B, k]: ∂ log P / ∂b from the backward kernel (0 at masked slots)."""
  return _call(_backward_kernel, _common.neutral_b(b, valid), stats, None, interpret,
               poison)[:, :b.shape[1]]


quadrature_pallas = _common.make_quadrature(node_stats, node_grad, "quadrature_pallas")
quadrature_pallas.__doc__ = """log P(S) for float32[B, k] b_i = s_i − log R by the TPU-layout
Pallas kernels, `quadrature_pallas(b, valid, interpret)` (see the module doc)."""
