"""Mosaic GPU kernels for the pl_nll op, designed for memory bandwidth.

Status: these kernels run and are tested under Pallas' GPU simulator
(`interpret="gpu"`), which emulates shared memory, TMA copies and barriers but
not register layouts or the compiler. The compiled path (`interpret=False` on
a GPU) has NOT yet run on hardware; it is written to Mosaic GPU's constraints
as JAX's own `*_mgpu.py` kernels use them, but expect a first compile to need
fixes.

The math (see `_common` for the derivation): with U the available items never
picked,

  D_j = log( Σ_{u ∈ U} e^{s_u} + Σ_{l ≥ j} e^{s_{π_l}} ),
  NLL = Σ_j w_j (D_j − s_{π_j}),
  C_m = log Σ_{j ≤ m} w_j e^{−D_j},
  ∂NLL/∂s_i = exp(s_i + C_{pos(i)}) − w_{pos(i)}   (C_k, w = 0 for i ∈ U).

Only two quantities touch all B·n scores; everything else lives on the B·k
picks, which XLA gathers:

  forward   `row_logsumexp` streams the scores once: T = log Σ_i e^{s_i} by an
            online log-sum-exp (running max m, sum l rescaled by e^{m_old − m}),
            and the count of finite scores. Then, per row, in XLA:
              * every available item picked (count = number of finite picks):
                E_U = 0;
              * the picks hold at most half the mass (P = log Σ_j e^{s_{π_j}},
                e^{P − T} ≤ 1/2): log E_U = T + log1p(−e^{P − T}), which loses
                at most a factor 2 of relative precision to the subtraction;
              * otherwise (rare: long lists that are not full rankings) a
                second kernel pass with an additive −inf bias on the picked
                items gives log E_U exactly. That pass is taken only when some
                row needs it (`lax.cond`).
            So the common cases read the scores once and write no [B, n] mask.
  backward  `scaled_exp` streams the scores once and writes the gradient
            g_b · exp(s_i + C_k) for every item; XLA then overwrites the B·k
            picked items' entries in place (a scatter).
  stages    the suffix scan D and prefix scan C over the k stages run in XLA
            on [B, k] arrays: a blocked triangular matmul after a shift by the
            row max, or an exact log-space associative scan for rows whose
            terms span more than SAFE_RANGE nats.

Bytes per item for value + gradient: 4 (forward read) + 4 (backward read) + 4
(gradient write), against 8 for a copy-bound floor (read scores, write the
gradient), plus O(B·k) for the stages.

Kernel layout, following Mosaic GPU's constraints as JAX's
`jax/experimental/pallas/ops/gpu/*_mgpu.py` kernels use them:
  * one warpgroup (128 threads) per CTA, one CTA per block of 64 rows: a
    [64, 128] float32 chunk in registers has `plgpu.Layout.WGMMA`, and its row
    reductions (`x.max(axis=1)`, `x.sum(axis=1)`) come out as 1-D [64] row
    vectors in `Layout.WGMMA.reduce(1)` (WGMMA_ROW), the layout of the carries;
  * chunks move gmem -> smem by TMA (`copy_gmem_to_smem` + mbarrier), through
    smem buffers tiled (8, 32) and 128-byte swizzled, the float32 form of the
    attention kernel's (8, 64) + 128 for 16-bit types;
  * the forward is an `emit_pipeline` over the row's chunks with the running
    (max, sum, count) as the pipeline carry; the backward has an explicit
    multi-buffered loop (TMA loads `_IN_SLOTS` chunks ahead; results go smem ->
    gmem by TMA from two buffers, `wait_smem_to_gmem(1, wait_read_only=True)`
    before a buffer is reused), written out because the GPU simulator cannot
    run `emit_pipeline`'s predicated output copies;
  * per-row inputs and outputs are 1-D [64] smem vectors moved by TMA.
B and n are padded in XLA to multiples of 64 and 128 (−inf scores, whose
exponentials are 0), so the kernels see whole blocks.

Two things differ between the compiled kernel and the simulated one, both
layout annotations the simulator has no rules for: `plgpu.layout_cast` (the
carries' initial values) and `plgpu.load(..., layout=)` (the per-row vectors)
become the identity and a plain ref read. `poison=True` asks the simulator
for NaN-filled allocations (its default), so an output element the kernel
never writes reads NaN; compiled, `poison` has no effect.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from luce import kernels
from luce.kernels.pl_nll._common import (SAFE_RANGE, log_weight_terms, stage_sum,
                                         with_vjp)
from luce.kernels.pl_nll.xla import _cumsum_blocked

_ROWS = 64        # rows per CTA: one WGMMA row tile for a warpgroup
_CHUNK = 128      # float32 columns per pipeline step: 64 × 128 × 4 B = 32 KiB
_FWD_SLOTS = 4    # forward: chunks in flight (128 KiB of smem)
_IN_SLOTS = 3     # backward: input chunks in flight (96 KiB)
_OUT_SLOTS = 2    # backward: output chunks being stored (64 KiB)
# Picks holding at most this share of a row's mass leave E_U = T − P to a
# subtraction that loses at most a factor 1 / (1 − share) of precision.
_MAX_PICKED_SHARE = 0.5


def _transforms():
  # float32: a 128-byte swizzle spans 32 columns, so tiles are (8, 32).
  return (plgpu.TilingTransform((8, 32)), plgpu.SwizzleTransform(128))


def _row_layout():
  return plgpu.Layout.WGMMA.reduce(1)


def _simulated(interpret) -> bool:
  return kernels.interpret_mode(interpret) == "gpu"


def _as_rows(x, simulated):
  """`x` [64] in WGMMA_ROW layout (identity in the simulator)."""
  return x if simulated else plgpu.layout_cast(x, _row_layout())


def _load_rows(ref, simulated):
  """A [64] smem vector as a WGMMA_ROW register vector."""
  return ref[...] if simulated else plgpu.load(ref, (), layout=_row_layout())


def _kernel_interpret(interpret, poison):
  mode = kernels.interpret_mode(interpret)
  if mode != "gpu":
    return kernels.interpret_params(mode)
  from jax._src.pallas.mosaic_gpu.interpret.params import InterpretGPUParams
  return InterpretGPUParams(uninitialized_memory="nan") if poison else InterpretGPUParams()


def _pad_to(x, rows, cols, value):
  b, c = x.shape
  if (b, c) == (rows, cols):
    return x
  return jnp.pad(x, ((0, rows - b), (0, cols - c)), constant_values=value)


# ------------------------------------------------------------------ forward
def _row_logsumexp_kernel(*refs, n_chunks, masked, simulated):
  n_in = 2 if masked else 1
  ins = refs[:n_in]
  lse_gmem, count_gmem, lse_smem, count_smem = refs[n_in:]
  rows = pl.ds(lax.axis_index("rows") * _ROWS, _ROWS)

  def step(_, *args):
    *chunk_refs, carry = args
    m, l, count = carry
    x = chunk_refs[0][...]                     # [64, 128], WGMMA layout
    if masked:
      x = x + chunk_refs[1][...]               # bias: 0 or −inf
    count = count + jnp.where(x > -jnp.inf, 1.0, 0.0).sum(axis=1)
    new_m = jnp.maximum(m, x.max(axis=1))
    ref = jnp.where(new_m > -jnp.inf, new_m, 0.0)   # all −inf so far: any finite shift
    l = l * jnp.exp(m - ref) + jnp.exp(x - lax.broadcast_in_dim(ref, x.shape, [0])).sum(axis=1)
    return new_m, l, count

  init = (_as_rows(jnp.full((_ROWS,), -jnp.inf, jnp.float32), simulated),
          _as_rows(jnp.zeros((_ROWS,), jnp.float32), simulated),
          _as_rows(jnp.zeros((_ROWS,), jnp.float32), simulated))
  spec = plgpu.BlockSpec((_ROWS, _CHUNK), lambda j: (0, j), transforms=_transforms())
  m, l, count = plgpu.emit_pipeline(
      step, grid=(n_chunks,), in_specs=[spec] * n_in,
      max_concurrent_steps=min(_FWD_SLOTS // n_in, n_chunks), init_carry=init,
  )(*[x.at[rows] for x in ins])
  lse_smem[...] = jnp.where(l > 0, m + jnp.log(jnp.where(l > 0, l, 1.0)), -jnp.inf)
  count_smem[...] = count
  plgpu.commit_smem()
  plgpu.copy_smem_to_gmem(lse_smem, lse_gmem.at[rows])
  plgpu.copy_smem_to_gmem(count_smem, count_gmem.at[rows])
  plgpu.wait_smem_to_gmem(0)


def row_logsumexp(s, bias=None, *, interpret=False, poison=False):
  """(lse float32[B], count float32[B]) of x = s (+ bias): lse = log Σ_i e^{x_i}
  (−inf for an empty row), count = number of finite x_i.

  `bias` float32[B, n] of 0 / −inf masks items out. `poison` see the module
  docstring.
  """
  b, n = s.shape
  bp, npad = pl.cdiv(b, _ROWS) * _ROWS, pl.cdiv(n, _CHUNK) * _CHUNK
  ins = [_pad_to(s.astype(jnp.float32), bp, npad, -jnp.inf)]
  if bias is not None:
    ins.append(_pad_to(bias.astype(jnp.float32), bp, npad, -jnp.inf))
  out = jax.ShapeDtypeStruct((bp,), jnp.float32)
  lse, count = plgpu.kernel(
      functools.partial(_row_logsumexp_kernel, n_chunks=npad // _CHUNK,
                        masked=bias is not None, simulated=_simulated(interpret)),
      out_type=(out, out),
      grid=(bp // _ROWS,), grid_names=("rows",),
      scratch_types=[plgpu.SMEM((_ROWS,), jnp.float32)] * 2,
      interpret=_kernel_interpret(interpret, poison),
  )(*ins)
  return lse[:b], count[:b]


# ----------------------------------------------------------------- backward
def _scaled_exp_kernel(s_gmem, off_gmem, scale_gmem, o_gmem, s_smem, o_smem, off_smem,
                       scale_smem, in_bars, vec_bars, *, n_chunks, simulated):
  rows = pl.ds(lax.axis_index("rows") * _ROWS, _ROWS)
  plgpu.copy_gmem_to_smem(off_gmem.at[rows], off_smem, vec_bars.at[0])
  plgpu.copy_gmem_to_smem(scale_gmem.at[rows], scale_smem, vec_bars.at[1])

  def fetch(j, slot):
    plgpu.copy_gmem_to_smem(s_gmem.at[rows, pl.ds(j * _CHUNK, _CHUNK)], s_smem.at[slot],
                            in_bars.at[slot])

  for j in range(min(_IN_SLOTS, n_chunks)):   # prologue: fill the input slots
    fetch(j, j)
  plgpu.barrier_wait(vec_bars.at[0])
  plgpu.barrier_wait(vec_bars.at[1])
  off = _load_rows(off_smem, simulated)
  scale = _load_rows(scale_smem, simulated)

  @pl.loop(0, n_chunks)
  def _(j):
    slot = lax.rem(j, _IN_SLOTS)
    out_slot = lax.rem(j, _OUT_SLOTS)
    plgpu.barrier_wait(in_bars.at[slot])
    x = s_smem.at[slot][...]
    shape = x.shape
    y = lax.broadcast_in_dim(scale, shape, [0]) * jnp.exp(
        x + lax.broadcast_in_dim(off, shape, [0]))
    # The store issued _OUT_SLOTS steps ago must have read its buffer.
    plgpu.wait_smem_to_gmem(_OUT_SLOTS - 1, wait_read_only=True)
    o_smem.at[out_slot][...] = y
    plgpu.commit_smem()   # also orders every thread's read of s_smem[slot] before the refill
    plgpu.copy_smem_to_gmem(o_smem.at[out_slot], o_gmem.at[rows, pl.ds(j * _CHUNK, _CHUNK)])

    @pl.when(j + _IN_SLOTS < n_chunks)
    def _():
      fetch(j + _IN_SLOTS, slot)

  plgpu.wait_smem_to_gmem(0)


def scaled_exp(s, offset, scale, *, interpret=False, poison=False):
  """float32[B, n]: scale_b · exp(s_{b,i} + offset_b).

  −inf scores give 0; an offset of −inf zeroes a row. `poison` see the module
  docstring.
  """
  b, n = s.shape
  bp, npad = pl.cdiv(b, _ROWS) * _ROWS, pl.cdiv(n, _CHUNK) * _CHUNK
  sp = _pad_to(s.astype(jnp.float32), bp, npad, -jnp.inf)
  off = jnp.pad(offset.astype(jnp.float32), (0, bp - b), constant_values=-jnp.inf)
  sc = jnp.pad(scale.astype(jnp.float32), (0, bp - b))
  smem = lambda slots: plgpu.SMEM((slots, _ROWS, _CHUNK), jnp.float32, transforms=_transforms())
  out = plgpu.kernel(
      functools.partial(_scaled_exp_kernel, n_chunks=npad // _CHUNK,
                        simulated=_simulated(interpret)),
      out_type=jax.ShapeDtypeStruct((bp, npad), jnp.float32),
      grid=(bp // _ROWS,), grid_names=("rows",),
      scratch_types=[smem(_IN_SLOTS), smem(_OUT_SLOTS),
                     plgpu.SMEM((_ROWS,), jnp.float32), plgpu.SMEM((_ROWS,), jnp.float32),
                     plgpu.Barrier(num_barriers=_IN_SLOTS), plgpu.Barrier(num_barriers=2)],
      interpret=_kernel_interpret(interpret, poison),
  )(sp, off, sc)
  return out if (bp, npad) == (b, n) else out[:b, :n]


# ------------------------------------------------------------ stage scans (XLA)
def _log_cumsum(x, init, reverse):
  """out_j = log(e^{init} + Σ e^{x_i} over i ≥ j (reverse) or i ≤ j), float32[B, k].

  One shift by the row max and a blocked triangular matmul when every term
  lies within SAFE_RANGE nats of it (no partial sum underflows, relative error
  ~k·eps); an exact log-space associative scan for the other rows, computed
  only when some row needs it.
  """
  top = jnp.maximum(jnp.max(x, axis=-1), init)
  top = jnp.where(top > -jnp.inf, top, 0.0)
  near = lambda v, t: (v - t >= -SAFE_RANGE) | (v == -jnp.inf)
  fast_ok = jnp.all(near(x, top[:, None]), axis=-1) & near(init, top)
  sums = _cumsum_blocked(jnp.exp(x - top[:, None]), reverse) + jnp.exp(init - top)[:, None]
  fast = jnp.where(sums > 0, top[:, None] + jnp.log(jnp.where(sums > 0, sums, 1.0)), -jnp.inf)

  def exact():
    scan = lax.associative_scan(jnp.logaddexp, x, axis=1, reverse=reverse)
    return jnp.where(fast_ok[:, None], fast, jnp.logaddexp(scan, init[:, None]))

  return lax.cond(jnp.all(fast_ok), lambda: fast, exact)


# ------------------------------------------------------------------ the op
def _scatter_rows(base, ranking, valid, values):
  """base with base[b, ranking[b, j]] = values[b, j] where valid (pads dropped)."""
  bsz, n = base.shape
  rows = jnp.arange(bsz, dtype=jnp.int32)[:, None]
  cols = jnp.where(valid, ranking, n)
  return base.at[rows, cols].set(values, mode="drop")


def _forward(s, ranking, w, interpret):
  bsz, n = s.shape
  valid = ranking >= 0
  picked = jnp.take_along_axis(s, jnp.where(valid, ranking, 0), axis=-1)
  picked = jnp.where(valid, picked, -jnp.inf)
  # A picked item with −inf score has probability 0: its row's NLL is +inf.
  impossible = jnp.any(valid & (picked == -jnp.inf), axis=-1)

  total, count = row_logsumexp(s, interpret=interpret)
  n_picked = jnp.sum(picked > -jnp.inf, axis=-1).astype(jnp.float32)
  all_picked = n_picked >= count
  share = jnp.exp(jax.nn.logsumexp(picked, axis=-1) - total)   # NaN only for empty rows
  by_difference = share <= _MAX_PICKED_SHARE
  log_eu = jnp.where(
      all_picked, -jnp.inf,
      total + jnp.log1p(-jnp.where(by_difference, share, 0.0)))
  needs_mask = ~(all_picked | by_difference | impossible)

  def masked():
    bias = _scatter_rows(jnp.zeros((bsz, n), jnp.float32), ranking, valid, -jnp.inf)
    exact = row_logsumexp(s, bias, interpret=interpret)[0]
    return jnp.where(needs_mask, exact, log_eu)

  log_eu = lax.cond(jnp.any(needs_mask), masked, lambda: log_eu)
  denom = _log_cumsum(picked, log_eu, reverse=True)
  nll, denom = stage_sum(denom, picked, valid, impossible, w)
  return nll, (s, picked, ranking, denom, valid, impossible)


def _backward(w, res, g, interpret):
  s, picked, ranking, denom, valid, impossible = res
  bsz, k = ranking.shape
  prefix = _log_cumsum(log_weight_terms(w, denom, valid), jnp.full((bsz,), -jnp.inf, jnp.float32), reverse=False)
  last = prefix[:, -1] if k else jnp.full((bsz,), -jnp.inf, jnp.float32)
  live = ~impossible & (g != 0)
  # Every item as if never picked: g · exp(s_i + C_k) ...
  grad_s = scaled_exp(s, jnp.where(live, last, -jnp.inf), g, interpret=interpret)
  # ... then the picked ones: g · (exp(s_{π_m} + C_m) − w_m).
  picked_grad = jnp.where(valid & live[:, None], jnp.exp(picked + prefix) - w, 0.0) * g[:, None]
  grad_s = _scatter_rows(grad_s, ranking, valid, picked_grad)
  grad_w = jnp.where(valid & ~impossible[:, None], denom - picked, 0.0) * g[:, None]
  return grad_s, grad_w


@functools.cache
def _make(interpret):
  return with_vjp(lambda s, ranking, w: _forward(s, ranking, w, interpret),
                  lambda w, res, g: _backward(w, res, g, interpret))


def pl_nll_mosaic_gpu(scores, ranking, where=None, weights=None, *, interpret=False):
  """−log P(ranking) per row by the Mosaic GPU kernels; arguments as
  `pl_nll_xla`, `interpret` False (compiled, GPU backend) or "gpu" (simulator)."""
  return _make(kernels.interpret_mode(interpret))(scores, ranking, where, weights)
