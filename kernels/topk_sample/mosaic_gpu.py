"""Mosaic GPU kernel for topk_sample: k passes of a chunked masked argmax.

STATUS: this kernel has run only under Pallas' GPU simulator
(`interpret="gpu"`, where it is tested against the reference); the compiled
path (`interpret=False` on a GPU) has not yet run on hardware. It is written
to Mosaic GPU's constraints as the JAX kernels in
`jax/experimental/pallas/ops/gpu/*_mgpu.py` use them, but layout inference,
TMA box limits and SMEM budgets are only checked by a real compile.

The algorithm is the TPU kernel's (`pallas.py`): slot j of a row is one pass
over its items, keeping a running (max, argmax); an item is still in the
race iff (z_i, −i) < (z_last, −last) lexicographically, so "not picked yet"
needs no mask and the carry is two numbers per row. What changes is how the
work maps onto a Hopper SM:

  - one program is one warpgroup (128 threads) on a block of 64 rows, the
    row count of a WGMMA tile. Every (64, 128) chunk of scores is a value in
    `plgpu.Layout.WGMMA`; its row reductions (max, and min over the lane
    iota for the lowest id among the maxima: the int32 argmax) come out as
    `WGMMA.reduce(1)` row vectors (64,), which is the layout of every
    per-row carry (last pick, deficit, group counts, the running best).
    Under compilation those carries are cast to that layout up front
    (`_hint`): an `scf.for` carry must keep one layout across iterations.
    The simulator does not implement `layout_cast`, so there the hints are
    skipped (they change no value);
  - the scores reach shared memory by TMA, in (64, 128) f32 tiles with the
    (8, 32) tiling and 128-byte swizzle that `load_tiled` reads into the
    WGMMA layout without bank conflicts. When the padded row fits
    (`resident_cols`, 512 lanes = 128 KiB per block) the block is copied
    once and all k passes read SMEM; wider rows stream through
    `plgpu.emit_pipeline` (double-buffered TMA) on every pass, so shared
    memory holds two chunks whatever n is;
  - quotas without per-item state: the TPU kernel keeps per-item (lo, hi)
    left and rewrites them each pass, which on a GPU would be two extra
    read-modify-write streams. Here each row carries its G group counts
    (G ≤ `MAX_GROUPS` = 32 row vectors, unrolled), and at the start of a
    pass folds the group rule of `_common` into one int32 bitmask per row,
    bit g set iff group g may take the slot. An item's eligibility is then
    `(mask >> group_i) & 1`: two integer ops per element whatever G is. The
    group ids come in as a (128,) `WGMMA.reduce(0)` column vector per chunk,
    broadcast across the rows. The picked item's group is read back by a
    masked row max. With more than 32 groups `topk_sample_mosaic_gpu` uses
    the XLA slot scan instead (exact, same ids);
  - the picks of up to `_SLOTS` slots are staged in SMEM as rows of a
    (slots, 64) int32 buffer and stored to a transposed (k, B) output by
    TMA; XLA transposes back. Every slot up to the padded k is written
    (−1 past max(u) of the block), so nothing in the output is left
    unwritten.

Sizes that are not block multiples are padded in XLA: rows to 64 (u = 0:
nothing picked), items to 128 (−inf: never eligible), slots to a multiple
of the staging width.

`interpret="gpu"` runs this kernel in Pallas' GPU simulator (shared memory,
barriers and TMA emulated on the CPU); `poison=` passes the output in as a
`jax.new_ref` filled with that value, so an element the kernel fails to
write shows up.
"""

from __future__ import annotations

import functools

import numpy as np
import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from luce import kernels
from luce.kernels.topk_sample import _common

_ROWS = 64             # rows per program: one warpgroup's WGMMA row block
_CHUNK = 128           # lanes per step: four (8, 32) f32 tiles, 128-byte swizzle
_SLOTS = 128           # slots staged in SMEM per TMA store of the output
_RESIDENT_COLS = 512   # rows up to this many (padded) items stay in SMEM
_BIG = 2**30           # larger than any item id
MAX_GROUPS = 32        # groups per row bitmask

_ROW = plgpu.Layout.WGMMA.reduce(1)
_COL = plgpu.Layout.WGMMA.reduce(0)
_TRANSFORMS = (plgpu.TilingTransform((8, 32)), plgpu.SwizzleTransform(128))


def _bit(g):
  """int32 with only bit g set (bit 31 is the sign bit)."""
  return np.array(1 << g, np.uint32).view(np.int32)


def _kernel(*refs, k, ks, kpad, n_chunks, n_groups, resident, compiled):
  quotas = n_groups > 0
  if quotas:
    z_gmem, info_gmem, g_gmem, q_gmem, out_gmem = refs
  else:
    z_gmem, info_gmem, out_gmem = refs
    g_gmem = q_gmem = None
  r = lax.axis_index("r")
  rows = pl.ds(r * _ROWS, _ROWS)

  def hint(x, layout):
    return plgpu.layout_cast(x, layout) if compiled else x

  def row_full(value, dtype):
    return hint(jnp.full((_ROWS,), value, dtype), _ROW)

  def bcast_row(v):
    return lax.broadcast_in_dim(v, (_ROWS, _CHUNK), (0,))

  def body(info_smem, q_smem, z_smem, g_smem, stage, bars, z_bars):
    # Inputs in: per-row (u, d0, block max u), quota tables, and when
    # resident the whole block of scores and the group ids.
    plgpu.copy_gmem_to_smem(info_gmem.at[:, rows], info_smem, bars.at[0])
    if quotas:
      plgpu.copy_gmem_to_smem(q_gmem.at[:, rows], q_smem, bars.at[1])
    if resident:
      for c in range(n_chunks):
        plgpu.copy_gmem_to_smem(z_gmem.at[rows, pl.ds(c * _CHUNK, _CHUNK)], z_smem.at[c],
                                z_bars.at[c])
      if quotas:
        plgpu.copy_gmem_to_smem(g_gmem, g_smem, bars.at[2])
    plgpu.barrier_wait(bars.at[0])
    if quotas:
      plgpu.barrier_wait(bars.at[1])
      if resident:
        plgpu.barrier_wait(bars.at[2])
    if resident:
      for c in range(n_chunks):
        plgpu.barrier_wait(z_bars.at[c])

    def chunk_step(c, z, gcol, acc, last_z, last_i, okmask):
      """Fold chunk c (z (64, 128) scores, gcol (128,) group ids) into the
      running (max, argmax, group of the argmax) of each row."""
      best_z, best_i, best_g = acc
      idx = hint(lax.broadcasted_iota(jnp.int32, (_ROWS, _CHUNK), 1), plgpu.Layout.WGMMA)
      idx = idx + c * _CHUNK
      lz, li = bcast_row(last_z), bcast_row(last_i)
      ok = (z < lz) | ((z == lz) & (idx > li))
      if quotas:
        g = lax.broadcast_in_dim(gcol, (_ROWS, _CHUNK), (1,))
        ok = ok & ((lax.shift_right_logical(bcast_row(okmask), g) & 1) != 0)
      zc = jnp.where(ok, z, -jnp.inf)
      m = jnp.max(zc, axis=1)
      i = jnp.min(jnp.where(ok & (zc == bcast_row(m)), idx, _BIG), axis=1)
      better = m > best_z  # ties keep the earlier chunk: the lower id
      if quotas:
        cg = jnp.max(jnp.where(idx == bcast_row(i), g, -1), axis=1)
        best_g = jnp.where(better, cg, best_g)
      return jnp.where(better, m, best_z), jnp.where(better, i, best_i), best_g

    def slot(oc, j, carry):
      last_z, last_i, deficit, counts = carry
      okmask = None
      if quotas:
        # Bit g: group g is below its max, and, when the slots left equal
        # the deficit, below its min.
        loose = deficit < (k - j)
        okmask = row_full(0, jnp.int32)
        for g in range(n_groups):
          lo = hint(q_smem[g], _ROW)
          hi = hint(q_smem[n_groups + g], _ROW)
          ok_g = (counts[g] < hi) & (loose | (counts[g] < lo))
          okmask = okmask | jnp.where(ok_g, _bit(g), np.int32(0))
      acc = (row_full(-jnp.inf, jnp.float32), row_full(-1, jnp.int32),
             row_full(-1, jnp.int32))
      step = functools.partial(chunk_step, last_z=last_z, last_i=last_i, okmask=okmask)
      if resident:
        def resident_chunk(c, acc):
          gcol = hint(g_smem[c], _COL) if quotas else None
          return step(c, z_smem[c], gcol, acc)
        acc = lax.fori_loop(0, n_chunks, resident_chunk, acc)
      else:
        in_specs = [plgpu.BlockSpec((_ROWS, _CHUNK), lambda c: (0, c), transforms=_TRANSFORMS)]
        if quotas:
          in_specs.append(plgpu.BlockSpec((1, _CHUNK), lambda c: (c, 0)))

        def streamed_chunk(indices, z_ref, *rest):
          *g_refs, acc = rest
          gcol = hint(g_refs[0][0], _COL) if quotas else None
          return step(indices[0], z_ref[...], gcol, acc)

        pipeline = plgpu.emit_pipeline(streamed_chunk, grid=(n_chunks,), in_specs=in_specs,
                                       max_concurrent_steps=min(2, n_chunks), init_carry=acc)
        acc = pipeline(z_gmem.at[rows], *([g_gmem] if quotas else []))
      best_z, best_i, best_g = acc
      found = (best_z > -jnp.inf) & (j < hint(info_smem[0], _ROW))
      stage[j - oc * ks] = jnp.where(found, best_i, -1)
      if quotas:
        new_counts = []
        for g in range(n_groups):
          sel = found & (best_g == g)
          lo = hint(q_smem[g], _ROW)
          deficit = deficit - jnp.where(sel & (counts[g] < lo), 1, 0)
          new_counts.append(counts[g] + jnp.where(sel, 1, 0))
        counts = tuple(new_counts)
      return (jnp.where(found, best_z, last_z), jnp.where(found, best_i, last_i), deficit,
              counts)

    n_slots = info_smem[2, 0]  # max u over the block's rows

    def out_chunk(oc, carry):
      plgpu.wait_smem_to_gmem(0, wait_read_only=True)  # stage is free again
      lo = oc * ks
      mid = jnp.clip(n_slots, lo, lo + ks)
      carry = lax.fori_loop(lo, mid, functools.partial(slot, oc), carry)

      def empty(j, _):
        stage[j - lo] = row_full(-1, jnp.int32)
        return _

      lax.fori_loop(mid, lo + ks, empty, 0)
      plgpu.commit_smem()
      plgpu.copy_smem_to_gmem(stage, out_gmem.at[pl.ds(lo, ks), rows])
      return carry

    deficit = hint(info_smem[1], _ROW) if quotas else row_full(0, jnp.int32)
    carry = (row_full(jnp.inf, jnp.float32), row_full(-1, jnp.int32), deficit,
             tuple(row_full(0, jnp.int32) for _ in range(n_groups)))
    lax.fori_loop(0, kpad // ks, out_chunk, carry)
    plgpu.wait_smem_to_gmem(0)

  scratch = dict(
      info_smem=plgpu.SMEM((3, _ROWS), jnp.int32),
      q_smem=plgpu.SMEM((2 * n_groups, _ROWS), jnp.int32) if quotas else None,
      z_smem=(plgpu.SMEM((n_chunks, _ROWS, _CHUNK), jnp.float32, transforms=_TRANSFORMS)
              if resident else None),
      g_smem=plgpu.SMEM((n_chunks, _CHUNK), jnp.int32) if resident and quotas else None,
      stage=plgpu.SMEM((ks, _ROWS), jnp.int32),
      bars=plgpu.Barrier(num_barriers=3),
      z_bars=plgpu.Barrier(num_barriers=n_chunks) if resident else None,
  )
  scratch = {name: s for name, s in scratch.items() if s is not None}

  def scoped(**refs):
    defaults = dict(q_smem=None, z_smem=None, g_smem=None, z_bars=None)
    body(**{**defaults, **refs})

  pl.run_scoped(scoped, **scratch, collective_axes=())


def topk_ids(z, k, take_u, lo=None, hi=None, groups=None, *, interpret="gpu", poison=None,
             resident_cols=_RESIDENT_COLS):
  """The kernel on canonical inputs: int32[B, k] ids, no row-level mask.

  z float32[B, n] with −inf for unavailable items; take_u int32[B] in [0, k];
  with quotas, lo / hi int32[B, G] per-row group (min, max) with min ≥ 0 and
  groups int32[n] in [0, G), G ≤ MAX_GROUPS. `interpret`: False (compiled)
  or "gpu" (simulator). `poison`: an int the output starts filled with.
  `resident_cols`: widest padded row kept in SMEM (smaller values make the
  tests reach the streamed path at small n).
  """
  b, n = z.shape
  bp = pl.cdiv(max(b, 1), _ROWS) * _ROWS
  npad = pl.cdiv(n, _CHUNK) * _CHUNK
  n_chunks = npad // _CHUNK
  ks = min(pl.cdiv(k, 8) * 8, _SLOTS)
  kpad = pl.cdiv(k, ks) * ks
  quotas = lo is not None
  n_groups = lo.shape[1] if quotas else 0
  resident = npad <= resident_cols

  zp = jnp.pad(z.astype(jnp.float32), ((0, bp - b), (0, npad - n)), constant_values=-jnp.inf)
  u = jnp.pad(take_u.astype(jnp.int32), (0, bp - b))
  d0 = jnp.sum(lo, axis=1).astype(jnp.int32) if quotas else jnp.zeros((b,), jnp.int32)
  block_max = jnp.repeat(jnp.max(u.reshape(-1, _ROWS), axis=1), _ROWS)
  info = jnp.stack([u, jnp.pad(d0, (0, bp - b)), block_max])
  args = [zp, info]
  if quotas:
    gp = jnp.pad(groups.astype(jnp.int32), (0, npad - n)).reshape(n_chunks, _CHUNK)
    qt = jnp.concatenate([lo.T, hi.T]).astype(jnp.int32)
    args += [gp, jnp.pad(qt, ((0, 0), (0, bp - b)))]

  compiled = kernels.interpret_mode(interpret) is False
  kernel = functools.partial(_kernel, k=k, ks=ks, kpad=kpad, n_chunks=n_chunks,
                             n_groups=n_groups, resident=resident, compiled=compiled)
  mesh = plgpu.Mesh(grid=(bp // _ROWS,), grid_names=("r",))
  out_type = jax.ShapeDtypeStruct((kpad, bp), jnp.int32)
  params = dict(mesh=mesh, compiler_params=plgpu.CompilerParams(),
                interpret=kernels.interpret_params(interpret))
  if poison is None:
    out = pl.kernel(kernel, out_type=out_type, **params)(*args)
  else:
    out_ref = jax.new_ref(jnp.full(out_type.shape, poison, jnp.int32), memory_space=plgpu.GMEM)
    pl.kernel(kernel, out_type=(), **params)(*args, out_ref)
    out = out_ref[...]
  return out[:k, :b].T


def topk_sample_mosaic_gpu(perturbed, k, u=None, forbidden=None, groups=None, quotas=None,
                           *, interpret="gpu", poison=None, resident_cols=_RESIDENT_COLS):
  """Arguments and result as `reference.topk_sample_reference`."""
  z = _common.available(perturbed, forbidden)
  rows, _ = z.shape
  take_u = _common.slots_per_row(u, rows, k)
  if quotas is None:
    return topk_ids(z, k, take_u, interpret=interpret, poison=poison,
                    resident_cols=resident_cols)
  groups = groups.astype(jnp.int32)
  q = _common.row_quotas(quotas, rows)
  if q.shape[1] > MAX_GROUPS:
    from luce.kernels.topk_sample.xla import topk_sample_xla
    return topk_sample_xla(perturbed, k, u, forbidden, groups, quotas)
  ids = topk_ids(z, k, take_u, q[..., 0], q[..., 1], jnp.clip(groups, 0, q.shape[1] - 1),
                 interpret=interpret, poison=poison, resident_cols=resident_cols)
  return _common.finish(ids, _common.feasible(z, groups, q, k))
