"""Plackett-Luce NLL of ordered top-k lists, tuned for XLA on CPU.

Forward, for one list with global max M of the available scores:

  e_j = exp(s_{π_j} − M),  E_U = Σ_{u ∈ U} exp(s_u − M)
  D_j = M + log(E_U + Σ_{l ≥ j} e_l)           (suffix sums)
  NLL = Σ_j w_j (D_j − s_{π_j})

Backward, in closed form (one more O(n + k) pass):

  C_m = log Σ_{j ≤ m} w_j exp(−D_j)             (prefix sums)
  ∂NLL/∂s_i = exp(s_i + C_{pos(i)}) − w_{pos(i)}

where pos(i) is the stage at which item i was picked, and for an item never
picked C_{pos} is C_k (all stages) and w_{pos} = 0.

Why this shape: XLA's CPU scans (cumsum, associative_scan, cumlogsumexp) and
flips are slow, so the suffix and prefix sums are done as small triangular
matmuls over blocks of 32 stages. Shifting by one global max is exact as long
as no picked score sits more than `_SAFE_RANGE` nats below M (then no partial
sum underflows float32 and every sum is of positive terms, so relative error
stays at k·eps). Rows outside that range, which real data almost never has,
take an exact path: log-space associative scans with a running max, computed
only when some row needs it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# exp(-60) ≈ 9e-27 is far above float32's smallest normal (1.2e-38), and the
# prefix sums of the backward span at most this range plus log(n) nats.
_SAFE_RANGE = 60.0
_BLOCK = 32


def _cumsum_blocked(x, reverse: bool):
  """Cumulative sum along the last axis by triangular matmuls.

  Exact in the sense of a plain sum of positive terms: each output is a dot
  product with a 0/1 vector. `reverse=True` gives suffix sums.
  """
  *lead, k = x.shape
  b = min(_BLOCK, k)
  nb = -(-k // b)
  pad = nb * b - k
  if pad:
    x = jnp.pad(x, [(0, 0)] * len(lead) + [(0, pad)])
  xb = x.reshape(*lead, nb, b)
  idx = jnp.arange(b)
  # within[..., j] = Σ_{i ≤ j} x_i (forward) or Σ_{i ≥ j} x_i (reverse).
  tri = (idx[:, None] >= idx[None, :]) if reverse else (idx[:, None] <= idx[None, :])
  within = jnp.matmul(xb, tri.astype(x.dtype), precision=jax.lax.Precision.HIGHEST)
  if nb > 1:
    bidx = jnp.arange(nb)
    btri = (bidx[:, None] > bidx[None, :]) if reverse else (bidx[:, None] < bidx[None, :])
    totals = jnp.sum(xb, axis=-1)
    offset = jnp.matmul(totals, btri.astype(x.dtype), precision=jax.lax.Precision.HIGHEST)
    within = within + offset[..., None]
  out = within.reshape(*lead, nb * b)
  return out[..., :k] if pad else out


def _positions(ranking, n):
  """pos[b, i] = stage at which item i was picked, or k if never picked."""
  bsz, k = ranking.shape
  rows = jnp.arange(bsz, dtype=jnp.int32)[:, None] * n
  # Padded slots write into one spare cell past the end, which is then cut.
  flat = jnp.where(ranking >= 0, rows + ranking, bsz * n).reshape(-1)
  stage = jnp.broadcast_to(jnp.arange(k, dtype=jnp.int32), (bsz, k)).reshape(-1)
  pos = jnp.full((bsz * n + 1,), k, jnp.int32)
  pos = pos.at[flat].set(stage, mode="promise_in_bounds")
  return pos[:-1].reshape(bsz, n)


def _exact_denominators(s, picked, valid, unpicked):
  """D[b, j] by a running-max reverse log-cumsum-exp (any finite scores)."""
  log_eu = jax.nn.logsumexp(jnp.where(unpicked, s, -jnp.inf), axis=-1)
  x = jnp.where(valid, picked, -jnp.inf)
  suffix = jax.lax.associative_scan(jnp.logaddexp, x, axis=1, reverse=True)
  return jnp.logaddexp(suffix, log_eu[:, None])


def _exact_prefix(log_terms):
  return jax.lax.associative_scan(jnp.logaddexp, log_terms, axis=1)


def _forward(s, ranking, w):
  """Returns NLL[b], the residuals needed by the backward."""
  n = s.shape[-1]
  k = ranking.shape[-1]
  valid = ranking >= 0
  pos = _positions(ranking, n)
  unpicked = pos == k
  # Fast rows work relative to the row's max M: the NLL is shift invariant,
  # and keeping D_j − M (not D_j) as the residual keeps the gradient's
  # exponents small, so float32 rounding of large scores does not leak in.
  # Rows on the exact path keep absolute scores: there the stages that matter
  # may sit far below M, and subtracting it would round them.
  top = jnp.max(s, axis=-1, keepdims=True)
  top = jnp.where(jnp.isfinite(top), top, 0.0)
  picked = jnp.take_along_axis(s, jnp.where(valid, ranking, 0), axis=-1)
  picked = jnp.where(valid, picked, -jnp.inf)
  # A picked item with −inf score has probability 0: it does not force the
  # exact path, its row's NLL is +inf.
  impossible = jnp.any(valid & (picked == -jnp.inf), axis=-1)
  fast_ok = jnp.all(~valid | (picked - top >= -_SAFE_RANGE) | (picked == -jnp.inf), axis=-1)
  shift = jnp.where(fast_ok[:, None], top, 0.0)
  s = s - shift
  picked = picked - shift

  eu = jnp.sum(jnp.where(unpicked, jnp.exp(s), 0.0), axis=-1)
  ep = jnp.exp(picked)
  suffix = _cumsum_blocked(ep, reverse=True) + eu[:, None]
  denom_fast = jnp.log(suffix)

  denom = jax.lax.cond(
      jnp.all(fast_ok),
      lambda: denom_fast,
      lambda: jnp.where(fast_ok[:, None], denom_fast,
                        _exact_denominators(s, picked, valid, unpicked)))
  denom = jnp.where(valid, denom, 0.0)
  stage = jnp.where(valid, denom - picked, 0.0)
  nll = jnp.sum(w * stage, axis=-1)
  nll = jnp.where(impossible, jnp.inf, nll)
  return nll, (s, pos, denom, valid, fast_ok, impossible)


def _backward(w, res, g):
  s, pos, denom, valid, _, impossible = res
  # log of w_j exp(−D_j); pads and zero weights give −inf.
  log_terms = jnp.where(valid & (w > 0), jnp.log(jnp.where(w > 0, w, 1.0)) - denom, -jnp.inf)
  last = jnp.max(log_terms, axis=-1, keepdims=True)
  last = jnp.where(jnp.isfinite(last), last, 0.0)
  # Same guard as the forward, on the terms of the prefix sums (weights can
  # widen their range beyond the denominators').
  fast_ok = jnp.all((log_terms - last >= -_SAFE_RANGE - 20.0) | (log_terms == -jnp.inf), axis=-1)
  prefix_fast = last + jnp.log(_cumsum_blocked(jnp.exp(log_terms - last), reverse=False))
  prefix = jax.lax.cond(
      jnp.all(fast_ok),
      lambda: prefix_fast,
      lambda: jnp.where(fast_ok[:, None], prefix_fast, _exact_prefix(log_terms)))
  # Never-picked items see all stages: C_k is the last prefix.
  prefix = jnp.concatenate([prefix, prefix[:, -1:]], axis=-1)
  wext = jnp.concatenate([jnp.where(valid, w, 0.0), jnp.zeros_like(w[:, :1])], axis=-1)
  c = jnp.take_along_axis(prefix, pos, axis=-1)
  wi = jnp.take_along_axis(wext, pos, axis=-1)
  grad_s = jnp.exp(s + c) - wi
  grad_s = jnp.where(impossible[:, None] | (s == -jnp.inf), 0.0, grad_s)
  return grad_s * g[:, None]


@jax.custom_vjp
def _pl_nll(s, ranking, w):
  return _forward(s, ranking, w)[0]


def _pl_nll_fwd(s, ranking, w):
  nll, res = _forward(s, ranking, w)
  return nll, (ranking, w, res)


def _pl_nll_bwd(saved, g):
  ranking, w, res = saved
  s, _, denom, valid, _, impossible = res
  picked = jnp.take_along_axis(s, jnp.where(valid, ranking, 0), axis=-1)
  grad_w = jnp.where(valid & ~impossible[:, None], denom - picked, 0.0) * g[:, None]
  grad_s = _backward(w, res, g)
  ranking_ct = None
  return grad_s, ranking_ct, grad_w


_pl_nll.defvjp(_pl_nll_fwd, _pl_nll_bwd)


def pl_nll_xla(scores, ranking, where=None, weights=None):
  """−log P(ranking) under Plackett-Luce, one list per row (see module doc).

  Args:
    scores: float[B, n] (any float dtype; computed in float32); −inf marks an
      unavailable item.
    ranking: int32[B, k] item ids best first; −1 pads the end of a list.
    where: bool[B, n] or None; False marks an unavailable item.
    weights: float[B, k] or None; weight of each stage's term (≥ 0).

  Returns:
    float32[B]. +inf for a list that picks an unavailable item. Differentiable
    in `scores` and `weights` by a closed-form custom VJP.
  """
  s = scores.astype(jnp.float32)
  if where is not None:
    s = jnp.where(where, s, -jnp.inf)
  w = jnp.ones(ranking.shape, jnp.float32) if weights is None else weights.astype(jnp.float32)
  return _pl_nll(s, ranking.astype(jnp.int32), w)
