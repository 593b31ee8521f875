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
as no picked score sits more than `SAFE_RANGE` nats below M (then no partial
sum underflows float32 and every sum is of positive terms, so relative error
stays at k·eps). Rows outside that range, which real data almost never has,
take an exact path: log-space associative scans with a running max, computed
only when some row needs it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from luce.kernels.pl_nll._common import SAFE_RANGE, make_pl_nll

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


def _exact_denominators(s, picked, valid, unpicked):
  """D[b, j] by a running-max reverse log-cumsum-exp (any finite scores)."""
  log_eu = jax.nn.logsumexp(jnp.where(unpicked, s, -jnp.inf), axis=-1)
  x = jnp.where(valid, picked, -jnp.inf)
  suffix = jax.lax.associative_scan(jnp.logaddexp, x, axis=1, reverse=True)
  return jnp.logaddexp(suffix, log_eu[:, None])


def _denominators(s, picked, valid, unpicked, fast_ok):
  # Fast rows are shifted so their max is 0 and no pick is below −SAFE_RANGE.
  eu = jnp.sum(jnp.where(unpicked, jnp.exp(s), 0.0), axis=-1)
  suffix = _cumsum_blocked(jnp.exp(picked), reverse=True) + eu[:, None]
  denom_fast = jnp.log(suffix)
  return jax.lax.cond(
      jnp.all(fast_ok),
      lambda: denom_fast,
      lambda: jnp.where(fast_ok[:, None], denom_fast,
                        _exact_denominators(s, picked, valid, unpicked)))


def _prefix(log_terms):
  last = jnp.max(log_terms, axis=-1, keepdims=True)
  last = jnp.where(jnp.isfinite(last), last, 0.0)
  # The forward's guard, on the terms of the prefix sums (weights can widen
  # their range beyond the denominators'); 20 more nats for log(k).
  fast_ok = jnp.all((log_terms - last >= -SAFE_RANGE - 20.0) | (log_terms == -jnp.inf), axis=-1)
  prefix_fast = last + jnp.log(_cumsum_blocked(jnp.exp(log_terms - last), reverse=False))
  return jax.lax.cond(
      jnp.all(fast_ok),
      lambda: prefix_fast,
      lambda: jnp.where(fast_ok[:, None], prefix_fast,
                        jax.lax.associative_scan(jnp.logaddexp, log_terms, axis=1)))


pl_nll_xla = make_pl_nll(_denominators, _prefix)
pl_nll_xla.__doc__ = """−log P(ranking) under Plackett-Luce, one list per row (see module doc).

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
