"""The parts of the pl_nll op that every implementation shares.

An implementation supplies two scans over the k stages of each list:

  denominators(s, picked, valid, unpicked, fast_ok) -> D  float32[B, k]
      D_j = log( Σ_{u ∈ U} e^{s_u} + Σ_{l ≥ j} e^{s_{π_l}} )   (a suffix scan)
  prefix(log_terms) -> C                                  float32[B, k]
      C_m = log Σ_{j ≤ m} e^{t_j}, t_j = log w_j − D_j           (a prefix scan)

and `make_pl_nll` turns them into a differentiable NLL with the closed-form
gradient

  ∂NLL/∂s_i = exp(s_i + C_{pos(i)}) − w_{pos(i)},

pos(i) the stage at which item i was picked (for an item never picked, C_k and
w = 0), and ∂NLL/∂w_j = D_j − s_{π_j}. The ids are handled here, in XLA: one
scatter marks the never-picked items for the forward, a gather reads the
picked scores, and the backward scatters the picked items' gradients over the
never-picked items' formula.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# exp(-60) ≈ 9e-27 is far above float32's smallest normal (1.2e-38): a row
# whose picks all sit within this many nats of its max can be summed after one
# shift by the max without any partial sum underflowing.
SAFE_RANGE = 60.0


def positions(ranking, n):
  """pos[b, i] = stage at which item i was picked, or k if never picked."""
  bsz, k = ranking.shape
  rows = jnp.arange(bsz, dtype=jnp.int32)[:, None] * n
  # Padded slots write into one spare cell past the end, which is then cut.
  flat = jnp.where(ranking >= 0, rows + ranking, bsz * n).reshape(-1)
  stage = jnp.broadcast_to(jnp.arange(k, dtype=jnp.int32), (bsz, k)).reshape(-1)
  pos = jnp.full((bsz * n + 1,), k, jnp.int32)
  pos = pos.at[flat].set(stage, mode="promise_in_bounds")
  return pos[:-1].reshape(bsz, n)


def _forward(denominators, s, ranking, w):
  n = s.shape[-1]
  k = ranking.shape[-1]
  valid = ranking >= 0
  pos = positions(ranking, n)
  unpicked = pos == k
  # Rows whose picks all sit within SAFE_RANGE of the row's max M work
  # relative to M: the NLL is shift invariant, and keeping D_j − M (not D_j)
  # as the residual keeps the gradient's exponents small, so float32 rounding
  # of large scores does not leak in. Other rows keep absolute scores: there
  # the stages that matter may sit far below M, and subtracting it would round
  # them.
  top = jnp.max(s, axis=-1, keepdims=True)
  top = jnp.where(jnp.isfinite(top), top, 0.0)
  picked = jnp.take_along_axis(s, jnp.where(valid, ranking, 0), axis=-1)
  picked = jnp.where(valid, picked, -jnp.inf)
  # A picked item with −inf score has probability 0: its row's NLL is +inf.
  impossible = jnp.any(valid & (picked == -jnp.inf), axis=-1)
  fast_ok = jnp.all(~valid | (picked - top >= -SAFE_RANGE) | (picked == -jnp.inf), axis=-1)
  shift = jnp.where(fast_ok[:, None], top, 0.0)
  s = s - shift
  picked = picked - shift
  denom = denominators(s, picked, valid, unpicked, fast_ok)
  nll, denom = stage_sum(denom, picked, valid, impossible, w)
  return nll, (s, picked, ranking, denom, valid, impossible)


def stage_sum(denom, picked, valid, impossible, w):
  """(NLL = Σ_j w_j (D_j − s_{π_j}), D with pads zeroed); +inf for impossible rows."""
  denom = jnp.where(valid, denom, 0.0)
  stage = jnp.where(valid, denom - picked, 0.0)
  return jnp.where(impossible, jnp.inf, jnp.sum(w * stage, axis=-1)), denom


def log_weight_terms(w, denom, valid):
  """log(w_j e^{−D_j}), the terms of the backward's prefix scan; pads and zero
  weights give −inf."""
  return jnp.where(valid & (w > 0), jnp.log(jnp.where(w > 0, w, 1.0)) - denom, -jnp.inf)


def _backward(prefix_fn, w, res, g):
  s, picked, ranking, denom, valid, impossible = res
  prefix = prefix_fn(log_weight_terms(w, denom, valid))
  # Never-picked items are in every stage's race: their gradient is
  # exp(s_u + C_k), C_k the last prefix. Write that for every item, then
  # overwrite the B·k picked ones by a scatter (gathering C_pos(i) for all B·n
  # items instead makes XLA emit a slow, unvectorised loop).
  bsz, n = s.shape
  picked_grad = jnp.where(valid, jnp.exp(picked + prefix) - w, 0.0)
  rows = jnp.arange(bsz, dtype=jnp.int32)[:, None] * n
  # Padded slots write into one spare cell past the end, which is then cut.
  flat = jnp.where(valid, rows + ranking, bsz * n).reshape(-1)
  grad_s = jnp.exp(s + prefix[:, -1:]).reshape(-1)
  grad_s = jnp.concatenate([grad_s, jnp.zeros((1,), grad_s.dtype)])
  grad_s = grad_s.at[flat].set(picked_grad.reshape(-1), mode="promise_in_bounds")
  grad_s = grad_s[:-1].reshape(bsz, n)
  grad_s = jnp.where(impossible[:, None] | (s == -jnp.inf), 0.0, grad_s) * g[:, None]
  grad_w = jnp.where(valid & ~impossible[:, None], denom - picked, 0.0) * g[:, None]
  return grad_s, grad_w


def with_vjp(forward, backward):
  """A differentiable pl_nll(scores, ranking, where, weights) from a forward
  `(s, ranking, w) -> (nll, residuals)` and a backward `(w, residuals, g) ->
  (grad_s, grad_w)` on float32 scores (float64 ones stay float64) with `where`
  folded in as −inf."""

  @jax.custom_vjp
  def nll(s, ranking, w):
    return forward(s, ranking, w)[0]

  def fwd(s, ranking, w):
    value, res = forward(s, ranking, w)
    return value, (w, res)

  def bwd(saved, g):
    w, res = saved
    grad_s, grad_w = backward(w, res, g)
    return grad_s, None, grad_w

  nll.defvjp(fwd, bwd)

  def pl_nll(scores, ranking, where=None, weights=None):
    # float64 stays float64 (under jax_enable_x64); every other dtype runs in float32.
    dtype = jnp.float64 if scores.dtype == jnp.float64 else jnp.float32
    s = scores.astype(dtype)
    if where is not None:
      s = jnp.where(where, s, -jnp.inf)
    w = jnp.ones(ranking.shape, dtype) if weights is None else weights.astype(dtype)
    return nll(s, ranking.astype(jnp.int32), w)

  return pl_nll


def make_pl_nll(denominators, prefix):
  """A differentiable pl_nll(scores, ranking, where, weights) from two scans."""
  return with_vjp(lambda s, ranking, w: _forward(denominators, s, ranking, w),
                  lambda w, res, g: _backward(prefix, w, res, g))
