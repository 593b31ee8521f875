"""Mosaic GPU kernels for the set likelihood's quadrature, value and gradient.

NOTE: the compiled path (interpret=False on a GPU) has not yet run on
hardware. The kernels are tested in Pallas' GPU simulator
(`interpret="gpu"`), which checks the program's semantics (TMA copies,
barriers, shared memory) but not what Mosaic GPU's compiler accepts; they are
written to the constraints the JAX Mosaic GPU kernels
(`jax/experimental/pallas/ops/gpu/*_mgpu.py`) show. The simulator in JAX
0.10.2 cannot evaluate `plgpu.layout_cast`, so under it the register layout
casts are left out (`_Regs`): the compiled kernel's layouts are unchecked.

The maths is that of `pallas.py` (the TPU kernels; see its docstring for the
forward's online log-sum-exp over quadrature nodes and the closed-form
backward) and `_common` (neutral slots, tanh-based factor arithmetic). What
differs is the layout:

  - One CUDA block = one warpgroup (128 threads) owning `_ROWS` = 64 events,
    the row count of the WGMMA register layout. A (64, `_COLS`) chunk of b is
    loaded from shared memory in `plgpu.Layout.WGMMA`; its row sums come out
    in the WGMMA row layout (`Layout.WGMMA.reduce(1)`), in which every
    per-event quantity (slope, best node, rest, Σ, p) is carried across the
    node loop.
  - b is laid out in XLA as [chunks, B, `_COLS`] (k padded with neutral slots
    to a multiple of `_COLS` = 64, B to a multiple of 64), so one TMA copy
    brings a block's whole [chunks, 64, 64] slab into shared memory, tiled
    (8, 32) and 128-byte swizzled as the Hopper kernels tile their operands
    (32 float32 = 128 bytes). Per node the kernel walks the chunks, so
    registers hold one (64, 64) chunk (32 values a thread) at a time.
  - Forward output: (top, rest_top, log Σ) as a [3, B] array, written from a
    [3, 64] shared buffer by one TMA copy after `commit_smem`.
  - Backward: the gradient accumulates in a second tiled [chunks, 64, 64]
    shared buffer (read-modify-write per node and chunk; registers cannot
    hold a whole row block for large k) and goes out by one TMA copy.
    Per node, one pass over the chunks forms rest_n, a second adds
    p_n · L'(x_n + b) into the gradient.

Shared memory bounds k: the backward holds 2 · 64 · k_pad float32, so k is
limited to `MAX_K` (192 KiB of the H100's 227 KiB); `supports(k)` says
whether a k fits. Larger sets would need the chunks streamed from global
memory per node (`plgpu.emit_pipeline` inside the node loop); the
dispatcher uses XLA for them under impl="auto".
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from luce import kernels
from luce.kernels.pl_set import _common
from luce.kernels.pl_set._common import grid

_ROWS = 64           # events per block: one warpgroup's WGMMA row tile
_COLS = 64           # set slots per chunk
_SWIZZLE = 128       # bytes; 32 float32 per swizzled row
MAX_K = 384          # backward: 2 · 64 · 384 · 4 B = 192 KiB of shared memory


def supports(k: int) -> bool:
  """Whether sets of k slots fit the kernels' shared memory."""
  return pl.cdiv(k, _COLS) * _COLS <= MAX_K


def _smem_chunks(chunks):
  """Shared buffer for a block's [chunks, 64, 64] float32 slab, tiled and
  swizzled as the Hopper kernels do it."""
  return plgpu.SMEM(
      (chunks, _ROWS, _COLS), jnp.float32,
      transforms=(plgpu.TilingTransform((8, _SWIZZLE // 4)),
                  plgpu.SwizzleTransform(_SWIZZLE)))


def _simulated_cast(x, layout):
  """Pallas' GPU simulator in JAX 0.10.2 cannot evaluate `plgpu.layout_cast`
  (no CPU rule for the primitive) nor `plgpu.load(..., layout=...)` on a
  transformed ref. Layouts say only how values sit in registers, not what
  they are, so under the simulator the cast is the identity."""
  del layout
  return x


class _Regs:
  """Register-value helpers, with the layout casts of the compiled kernel
  (`plgpu.layout_cast`) or none under the simulator (see `_simulated_cast`)."""

  def __init__(self, compiled):
    self.cast = plgpu.layout_cast if compiled else _simulated_cast

  def row(self, value):
    """A (64,) per-event vector in the WGMMA row layout."""
    return self.cast(jnp.full((_ROWS,), value, jnp.float32), plgpu.Layout.WGMMA.reduce(1))

  def load(self, ref, layout=plgpu.Layout.WGMMA):
    """ref's value in `layout`. A load directly followed by its layout cast
    is lowered as a load in that layout (for a tiled, swizzled chunk:
    Mosaic's tiled load); it is what `plgpu.load(ref, (), layout=...)` binds."""
    return self.cast(ref[...], layout)


def _rows_to_chunk(v):
  return lax.broadcast_in_dim(v, (_ROWS, _COLS), [0])


def _slope(regs, b_smem, chunks):
  """1 + the number of low (b < 0) slots per event; neutral slots are not low."""
  def body(c, acc):
    return acc + jnp.sum(jnp.where(regs.load(b_smem.at[c]) < 0, 1.0, 0.0), axis=1)
  return lax.fori_loop(0, chunks, body, regs.row(1.0))


def _rest(regs, b_smem, chunks, x):
  """rest(x) per event: Σ_i term_i(x + b_i) − e^x, chunk by chunk."""
  def body(c, acc):
    bc = regs.load(b_smem.at[c])
    return acc + jnp.sum(_common.factor_terms(x + bc, bc < 0), axis=1)
  return lax.fori_loop(0, chunks, body, regs.row(0.0)) - jnp.exp(x)


def _forward_kernel(b_gmem, out_gmem, b_smem, o_smem, bar, *, x_lo, dx, num, chunks,
                    compiled):
  regs = _Regs(compiled)
  r = lax.axis_index("r")
  plgpu.copy_gmem_to_smem(b_gmem.at[:, pl.ds(r * _ROWS, _ROWS)], b_smem, bar)
  plgpu.barrier_wait(bar)
  slope = _slope(regs, b_smem, chunks)

  def step(i, carry):
    top, rest_top, acc = carry
    fi = i.astype(jnp.float32)
    rest = _rest(regs, b_smem, chunks, x_lo + fi * dx)
    d = slope * ((fi - top) * dx) + (rest - rest_top)
    better = d > 0
    acc = jnp.where(better, acc * jnp.exp(-jnp.maximum(d, 0.0)) + 1.0,
                    acc + jnp.exp(jnp.minimum(d, 0.0)))
    return jnp.where(better, fi, top), jnp.where(better, rest, rest_top), acc

  init = (regs.row(0.0), _rest(regs, b_smem, chunks, jnp.float32(x_lo)), regs.row(1.0))
  top, rest_top, acc = lax.fori_loop(1, num, step, init)
  o_smem.at[0][...] = top
  o_smem.at[1][...] = rest_top
  o_smem.at[2][...] = jnp.log(acc)
  plgpu.commit_smem()
  plgpu.copy_smem_to_gmem(o_smem, out_gmem.at[:, pl.ds(r * _ROWS, _ROWS)])
  plgpu.wait_smem_to_gmem(0)


def _backward_kernel(b_gmem, stats_gmem, g_gmem, b_smem, s_smem, g_smem, bars, *,
                     x_lo, dx, num, chunks, compiled):
  regs = _Regs(compiled)
  r = lax.axis_index("r")
  rows = pl.ds(r * _ROWS, _ROWS)
  plgpu.copy_gmem_to_smem(b_gmem.at[:, rows], b_smem, bars.at[0])
  plgpu.copy_gmem_to_smem(stats_gmem.at[:, rows], s_smem, bars.at[1])
  zero = regs.cast(jnp.zeros((_ROWS, _COLS), jnp.float32), plgpu.Layout.WGMMA)

  @pl.loop(0, chunks)
  def _(c):
    g_smem.at[c][...] = zero

  plgpu.barrier_wait(bars.at[0])
  plgpu.barrier_wait(bars.at[1])
  slope = _slope(regs, b_smem, chunks)
  stat = lambda j: regs.load(s_smem.at[j], plgpu.Layout.WGMMA.reduce(1))
  top, rest_top, log_acc = stat(0), stat(1), stat(2)

  @pl.loop(0, num)
  def _(i):
    fi = i.astype(jnp.float32)
    x = x_lo + fi * dx
    rest = _rest(regs, b_smem, chunks, x)
    p = _rows_to_chunk(jnp.exp(slope * ((fi - top) * dx) + (rest - rest_top) - log_acc))

    @pl.loop(0, chunks)
    def _(c):
      g_smem.at[c][...] = regs.load(g_smem.at[c]) + (
          p * _common.factor_slope(x + regs.load(b_smem.at[c])))

  plgpu.commit_smem()
  plgpu.copy_smem_to_gmem(g_smem, g_gmem.at[:, rows])
  plgpu.wait_smem_to_gmem(0)


def _compiled(interpret):
  return kernels.interpret_mode(interpret) is False


def _params(interpret, poison):
  params = kernels.interpret_params(interpret)
  if poison and dataclasses.is_dataclass(params):
    # The simulator's fresh buffers (outputs included) start as NaN, so an
    # element the kernel does not write shows. Compiled, poison does nothing.
    params = dataclasses.replace(params, uninitialized_memory="nan")
  return params


def _layout(b, valid):
  """Neutral-padded b as [chunks, bp, 64] and the padded sizes."""
  bsz, k = b.shape
  if not supports(k):
    raise ValueError(f"k={k} exceeds the Mosaic GPU kernels' MAX_K={MAX_K}.")
  bp, kp = pl.cdiv(bsz, _ROWS) * _ROWS, pl.cdiv(k, _COLS) * _COLS
  bt = _common.pad_to(_common.neutral_b(b, valid), bp, kp)
  return bt.reshape(bp, kp // _COLS, _COLS).transpose(1, 0, 2), bp, kp


def node_stats(b, valid, *, interpret=False, poison=False):
  """float32[B, 3]: per row the best node's index, rest there and log Σ.
  `poison=True` (simulator only) starts the outputs as NaN so an element the
  kernel leaves unwritten shows; compiled it does nothing."""
  bsz, k = b.shape
  x_lo, dx, num = grid(k)
  bt, bp, kp = _layout(b, valid)
  chunks = kp // _COLS
  kernel = functools.partial(_forward_kernel, x_lo=float(x_lo), dx=float(dx), num=int(num),
                             chunks=chunks, compiled=_compiled(interpret))
  out = plgpu.kernel(
      kernel,
      out_type=jax.ShapeDtypeStruct((3, bp), jnp.float32),
      grid=(bp // _ROWS,),
      grid_names=("r",),
      scratch_types=[_smem_chunks(chunks), plgpu.SMEM((3, _ROWS), jnp.float32),
                     plgpu.Barrier()],
      interpret=_params(interpret, poison),
  )(bt)
  return out[:, :bsz].T


def node_grad(b, valid, stats, *, interpret=False, poison=False):
  """float32[B, k]: ∂ log P / ∂b from the backward kernel (0 at masked slots)."""
  bsz, k = b.shape
  x_lo, dx, num = grid(k)
  bt, bp, kp = _layout(b, valid)
  chunks = kp // _COLS
  st = jnp.pad(stats[:, :3].T.astype(jnp.float32), ((0, 0), (0, bp - bsz)))
  kernel = functools.partial(_backward_kernel, x_lo=float(x_lo), dx=float(dx), num=int(num),
                             chunks=chunks, compiled=_compiled(interpret))
  g = plgpu.kernel(
      kernel,
      out_type=jax.ShapeDtypeStruct((chunks, bp, _COLS), jnp.float32),
      grid=(bp // _ROWS,),
      grid_names=("r",),
      scratch_types=[_smem_chunks(chunks), plgpu.SMEM((3, _ROWS), jnp.float32),
                     _smem_chunks(chunks), plgpu.Barrier(num_barriers=2)],
      interpret=_params(interpret, poison),
  )(bt, st)
  return g.transpose(1, 0, 2).reshape(bp, kp)[:bsz, :k]


quadrature_mosaic_gpu = _common.make_quadrature(node_stats, node_grad,
                                                "quadrature_mosaic_gpu")
quadrature_mosaic_gpu.__doc__ = """log P(S) for float32[B, k] b_i = s_i − log R by the Mosaic GPU
kernels, `quadrature_mosaic_gpu(b, valid, interpret)` (see the module doc)."""
