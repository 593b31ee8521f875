"""Pure-jnp reference for the Plackett-Luce NLL of ordered top-k lists.

Written for clarity, not speed: every stage's denominator is its own masked
log-sum-exp over the items still in the race, O(n·k) per list. The fast
implementations are tested against it, and autodiff through it is the
reference gradient.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def pl_nll_reference(scores, ranking, where=None, weights=None):
  """−log P(ranking) under Plackett-Luce, one list per row.

  Args:
    scores: float[B, n]; −inf marks an unavailable item.
    ranking: int32[B, k] item ids best first, −1 pads the end of a list.
    where: bool[B, n] or None; False marks an unavailable item.
    weights: float[B, k] or None; weight of each stage's term.

  Returns:
    float32[B] (float64 for float64 scores): Σ_j w_j (D_j − s_{π_j}), D_j = logsumexp of the scores of the
    items available and not picked before stage j.
  """
  dtype = jnp.float64 if scores.dtype == jnp.float64 else jnp.float32
  s = scores.astype(dtype)
  if where is not None:
    s = jnp.where(where, s, -jnp.inf)
  n = s.shape[-1]
  k = ranking.shape[-1]
  valid = ranking >= 0
  w = jnp.ones(ranking.shape, dtype) if weights is None else weights.astype(dtype)
  safe = jnp.where(valid, ranking, 0)
  picked_score = jnp.take_along_axis(s, safe, axis=-1)
  # still_in[b, j, i]: item i has not been picked before stage j.
  onehot = (safe[..., :, None] == jnp.arange(n)) & valid[..., :, None]
  before = jnp.cumsum(onehot, axis=-2) - onehot
  still_in = before == 0
  # Pads (and picks of unavailable items) are masked before anything is
  # differentiated, so no −inf − (−inf) or empty log-sum-exp reaches the
  # gradient.
  ok = valid & (picked_score > -jnp.inf)
  race = jnp.where(still_in, s[..., None, :], -jnp.inf)
  denom = jax.nn.logsumexp(jnp.where(ok[..., None], race, 0.0), axis=-1)
  stage = jnp.where(ok, denom - jnp.where(ok, picked_score, 0.0), 0.0)
  impossible = jnp.any(valid & (picked_score == -jnp.inf), axis=-1)
  del k
  return jnp.where(impossible, jnp.inf, jnp.sum(w * stage, axis=-1))
