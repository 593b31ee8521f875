"""Pallas TPU kernel for topk_sample: k passes of a chunked masked argmax.

This is the Mosaic TPU flavour (`pl.pallas_call` over (8, 128)-tiled VMEM
blocks, `pltpu.CompilerParams`, the row blocks "parallel" so the two
TensorCores of a v4/v5p chip split them). It is also what `interpret=True`
runs in Pallas' HLO interpreter and `interpret="tpu"` in the TPU simulator;
the Mosaic GPU flavour of the same algorithm is `mosaic_gpu.py`.

One program takes a block of `_ROWS` rows and fills their k slots in order.
Slot j is one pass over the row in chunks of `_CHUNK` lanes, keeping a running
(max, argmax) per row. Why k passes rather than a streaming top-k merge:

  - with quotas the eligible set changes after every pick, so slot j needs
    the picks before it: a top-k merged in one pass would be wrong (a group
    at its max, or the tight rule, can exclude any number of the leaders);
    the k-pass form serves both cases with one kernel;
  - "not picked yet" needs no mask: slots take items in decreasing order of
    (z, −id) (eligibility only shrinks, so no later pick can beat an earlier
    one), hence item i is still in the race iff (z_i, −i) < (z_last, −last)
    lexicographically, and an item passed over for its group stays out for
    good. The carry is two numbers per row;
  - no sort network, no gather, no dynamic lane index: every access is an
    aligned (8, 128) tile at a 128-multiple offset, and the pick is written
    by a select into its output tile;
  - the shapes that matter (lotteries: 5 of 69, 20 of 80; a diffusion step:
    u of r ≤ 20 slots) hold a row in one or a few tiles, so a pass is a
    handful of vector ops. The cost is O(k·n/128) tile steps per block, so
    for large k without quotas `lax.top_k` ("xla") wins; the dispatcher
    still lets the caller choose.

With quotas the kernel keeps, per item, lo_left / hi_left: the min / max of
its group minus the picks from that group so far (initialised from the
per-item bounds computed in XLA, `_common.item_bounds`) and updates them on
the next pass, fused with that pass's reads: items of the group just picked
lose one from each. The deficit D per row drops by one when the picked
item's lo_left was positive. The state lives in two extra outputs (written
once from the inputs, then read and written in place in VMEM).

top-u: each row fills only its first u[b] slots; a block stops after
max(u) over its rows, computed in XLA and read as a scalar from SMEM.

Written for what Mosaic TPU lowers: every per-row value is a (rows, 1)
column (no 1-D vectors), every block access a static-shaped (8k, 128)
window at a 128-aligned lane offset (no unaligned lane slices or
concatenations, no dynamic gathers), and the argmax is a float max followed
by an int32 min over the lane iota among the maxima. VMEM per block is
about 4·rows·n_pad bytes for the scores plus 16·rows·n_pad with quotas
(inputs and in-place state, double-buffered by the pipeline): a very wide
row with quotas (n in the tens of thousands) needs `vmem_limit_bytes`
raised or smaller blocks.

Blocks are 8 rows (one sublane tile; `block_rows` may ask for any multiple
of 8) by the whole padded row, walked in 128-lane tiles. The row-level feasibility mask is applied in XLA.

`interpret=True` runs the kernel on CPU through Pallas' HLO interpreter,
`interpret="tpu"` through the TPU simulator (`pltpu.InterpretParams`);
`kernels.interpret_params` maps the mode to the `pallas_call` argument.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from luce import kernels
from luce.kernels.topk_sample import _common

_ROWS = 8      # rows per program: a TPU sublane tile
_CHUNK = 128   # lanes per step: a TPU lane tile
_BIG = 2**30   # larger than any item id


def _topk_kernel(slots_ref, z_ref, u_ref, *refs, k, n_chunks, k_chunks, quotas, n_poison):
  rows = z_ref.shape[0]
  if quotas:
    g_ref, lo_in, hi_in, d_ref = refs[:4]
    refs = refs[4:]
  refs = refs[n_poison:]  # poisoned initial outputs, if any (aliased)
  out_ref = refs[0]
  lane = jax.lax.broadcasted_iota(jnp.int32, (rows, _CHUNK), 1)
  # Per-row values are (rows, 1) columns throughout: Mosaic lays 2-D values
  # out in (8, 128) tiles, while 1-D vectors have poor or no support.
  col = lambda value, dtype: jnp.full((rows, 1), value, dtype)

  def tile(c):
    return pl.ds(pl.multiple_of(c * _CHUNK, _CHUNK), _CHUNK)

  def clear(c, carry):
    out_ref[:, tile(c)] = jnp.full((rows, _CHUNK), -1, jnp.int32)
    return carry

  jax.lax.fori_loop(0, k_chunks, clear, 0)
  if quotas:
    lo_ref, hi_ref = refs[1], refs[2]

    def copy(c, carry):
      lo_ref[:, tile(c)] = lo_in[:, tile(c)]
      hi_ref[:, tile(c)] = hi_in[:, tile(c)]
      return carry

    jax.lax.fori_loop(0, n_chunks, copy, 0)

  take_u = u_ref[:, 0:1]
  n_slots = slots_ref[pl.program_id(0)]  # max u over the block (SMEM scalar)

  def slot(j, carry):
    last_z, last_i, prev_g, deficit = carry
    tight = deficit >= k - j

    def chunk(c, acc):
      best_z, best_i, best_g, best_lo = acc
      lanes = tile(c)
      z = z_ref[:, lanes]
      idx = lane + c * _CHUNK
      ok = (z < last_z) | ((z == last_z) & (idx > last_i))
      if quotas:
        g = jnp.broadcast_to(g_ref[:, lanes], (rows, _CHUNK))
        same = (g == prev_g).astype(jnp.int32)
        lo = lo_ref[:, lanes] - same
        hi = hi_ref[:, lanes] - same
        lo_ref[:, lanes] = lo
        hi_ref[:, lanes] = hi
        ok &= (hi > 0) & (~tight | (lo > 0))
      zc = jnp.where(ok, z, -jnp.inf)
      # int32 argmax as max, then the least lane iota among the maxima.
      m = jnp.max(zc, axis=1, keepdims=True)
      i = jnp.min(jnp.where((zc == m) & ok, idx, _BIG), axis=1, keepdims=True)
      better = m > best_z  # ties keep the earlier chunk: the lower id
      if quotas:
        at = idx == i
        cg = jnp.sum(jnp.where(at, g, 0), axis=1, keepdims=True)
        clo = jnp.sum(jnp.where(at, lo, 0), axis=1, keepdims=True)
        best_g = jnp.where(better, cg, best_g)
        best_lo = jnp.where(better, clo, best_lo)
      return (jnp.where(better, m, best_z), jnp.where(better, i, best_i), best_g, best_lo)

    init = (col(-jnp.inf, jnp.float32), col(-1, jnp.int32), col(-1, jnp.int32),
            col(0, jnp.int32))
    best_z, best_i, best_g, best_lo = jax.lax.fori_loop(0, n_chunks, chunk, init)
    found = (best_z > -jnp.inf) & (j < take_u)
    pick = jnp.where(found, best_i, -1)
    oc = jax.lax.div(j, _CHUNK)  # j >= 0: truncation is floor (`//` lowers through sign)
    lanes = tile(oc)
    out_ref[:, lanes] = jnp.where(lane == (j - oc * _CHUNK), pick, out_ref[:, lanes])
    return (jnp.where(found, best_z, last_z), jnp.where(found, best_i, last_i),
            jnp.where(found, best_g, -1),
            deficit - (found & (best_lo > 0)).astype(jnp.int32))

  init = (col(jnp.inf, jnp.float32), col(-1, jnp.int32), col(-1, jnp.int32),
          d_ref[:, 0:1] if quotas else col(0, jnp.int32))
  jax.lax.fori_loop(0, n_slots, slot, init)


def _pad(x, rows, cols, value):
  b, c = x.shape
  return jnp.pad(x, ((0, rows - b), (0, cols - c)), constant_values=value)


def _block_rows(b, interpret):
  """Rows per program: 8 (a sublane tile) when compiled. The interpreter runs
  the grid steps one after another at about a millisecond each whatever their
  size, so large interpreted batches take 256-row blocks (same kernel code)."""
  return 256 if interpret and b > 1024 else _ROWS


def topk_ids(z, k, take_u, lo=None, hi=None, d0=None, groups=None, *,
             interpret=False, poison=None, block_rows=None):
  """The kernel on canonical inputs: int32[B, k] ids, no row-level mask.

  z float32[B, n] with −inf for unavailable items; take_u int32[B] in [0, k];
  with quotas, lo / hi int32[B, n] per-item group bounds, d0 int32[B] and
  groups int32[n]. `poison`: an int; the ids output starts filled with it
  (through `input_output_aliases`), so an element the kernel fails to write
  shows up (the tests use it). `block_rows`: rows per program, a multiple
  of 8 (default `_block_rows`).
  """
  b, n = z.shape
  rb = block_rows or _block_rows(b, interpret)
  bp = pl.cdiv(max(b, 1), rb) * rb
  npad = pl.cdiv(n, _CHUNK) * _CHUNK
  kpad = pl.cdiv(k, _CHUNK) * _CHUNK
  quotas = lo is not None
  row_spec = lambda w: pl.BlockSpec((rb, w), lambda r: (r, 0))
  up = jnp.pad(take_u.astype(jnp.int32), (0, bp - b))
  args = [jnp.max(up.reshape(bp // rb, rb), axis=1),
          _pad(z.astype(jnp.float32), bp, npad, -jnp.inf),
          jnp.broadcast_to(up[:, None], (bp, _CHUNK))]
  in_specs = [pl.BlockSpec(memory_space=pltpu.SMEM), row_spec(npad), row_spec(_CHUNK)]
  out_shapes = [jax.ShapeDtypeStruct((bp, kpad), jnp.int32)]
  out_specs = [row_spec(kpad)]
  if quotas:
    args += [_pad(groups.astype(jnp.int32)[None, :], 1, npad, -1),
             _pad(lo, bp, npad, 0), _pad(hi, bp, npad, 0),
             _pad(jnp.broadcast_to(d0[:, None], (b, _CHUNK)), bp, _CHUNK, 0)]
    in_specs += [pl.BlockSpec((1, npad), lambda r: (0, 0)), row_spec(npad),
                 row_spec(npad), row_spec(_CHUNK)]
    out_shapes += [jax.ShapeDtypeStruct((bp, npad), jnp.int32)] * 2
    out_specs += [row_spec(npad)] * 2
  aliases = {}
  n_poison = 0
  if poison is not None:
    aliases = {len(args): 0}
    args.append(jnp.full((bp, kpad), poison, jnp.int32))
    in_specs.append(row_spec(kpad))
    n_poison = 1
  kernel = functools.partial(_topk_kernel, k=k, n_chunks=npad // _CHUNK,
                             k_chunks=kpad // _CHUNK, quotas=quotas, n_poison=n_poison)
  outs = pl.pallas_call(
      kernel,
      out_shape=tuple(out_shapes),
      grid=(bp // rb,),
      in_specs=in_specs,
      out_specs=tuple(out_specs),
      input_output_aliases=aliases,
      compiler_params=pltpu.CompilerParams(dimension_semantics=("parallel",)),
      interpret=kernels.interpret_params(interpret),
  )(*args)
  return outs[0][:b, :k]


def topk_sample_pallas(perturbed, k, u=None, forbidden=None, groups=None, quotas=None,
                       *, interpret=False, poison=None, block_rows=None):
  """Arguments and result as `reference.topk_sample_reference`."""
  z = _common.available(perturbed, forbidden)
  rows, _ = z.shape
  take_u = _common.slots_per_row(u, rows, k)
  if quotas is None:
    return topk_ids(z, k, take_u, interpret=interpret, poison=poison, block_rows=block_rows)
  groups = groups.astype(jnp.int32)
  q = _common.row_quotas(quotas, rows)
  lo, hi, d0 = _common.item_bounds(groups, q)
  ids = topk_ids(z, k, take_u, lo, hi, d0, jnp.clip(groups, 0, q.shape[1] - 1),
                 interpret=interpret, poison=poison, block_rows=block_rows)
  return _common.finish(ids, _common.feasible(z, groups, q, k))
