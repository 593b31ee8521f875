"""Plackett-Luce probability of an unordered top-k set.

Under Plackett-Luce with scores s (w = e^s) the items are drawn one at a time
without replacement, each with probability proportional to w among the items
left. `pl_set_log_prob` gives log P(the first k draws are the set S, in any
order):

  P(S) = sum over the k! orders pi of S of
         prod_j w_{pi_j} / (R + sum_{l >= j} w_{pi_l}),   R = sum_{j avail, j not in S} w_j.

Two ways to compute it, both in log space and both differentiable:

- "exact": the subset recursion over the 2^k subsets A of S::

    f(empty) = 1,  f(A) = sum_{i in A} f(A \\ i) w_i / (R + w_S - w_{A \\ i}),

  P(S) = f(S). Every term is positive, so it keeps full relative accuracy even
  where P(S) is tiny; the alternating inclusion-exclusion sum
  sum_{B subset S} (-1)^|B| R / (R + w_B) does not (it cancels
  catastrophically in float32).
- "quadrature": P(S) = int_0^inf e^-t prod_{i in S} (1 - e^{-t a_i}) dt with
  a_i = w_i / R, taken on x = log t by the trapezoid rule on a fixed grid.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import jax
import jax.numpy as jnp

from luce import _checks
from luce.errors import InputError, ShapeError
from luce.kernels import check_interpret
from luce.kernels.pl_set import quadrature, resolve_impl

# The exact recursion costs k 2^(k-1) terms per event: fine to 16, absurd after.
EXACT_MAX_K = 16
# Up to here the exact recursion costs about as much as the quadrature's grid.
AUTO_EXACT_MAX_K = 10
_METHODS = ("auto", "exact", "quadrature")

def pl_set_log_prob(scores, subset, *, where=None, method="auto", impl="auto",
                    interpret=False):
  """Log-probability under Plackett-Luce that the top-k set is `subset`.

  The order inside the set is not observed:

    P(S) = sum_{orders pi of S} prod_j w_{pi_j} / (R + sum_{l >= j} w_{pi_l}),

  with w = exp(scores) and R = sum of w_j over the available items not in S.
  Equivalently P(S) = int_0^inf e^-t prod_{i in S} (1 - exp(-t w_i / R)) dt.
  Unavailable items (`where` False or score -inf) are out of the race: they
  are neither in S nor in R. When S holds every available item (R = 0),
  log P = 0.

  Args:
    scores: float[..., n] item scores (log-weights); float32, bfloat16,
      float16 or float64. Computed in float32, or in float64 when given float64
      (which needs `jax_enable_x64`). -inf marks an unavailable item; +inf and
      NaN are errors.
    subset: int[..., k] item ids of the set, any order; -1 pads a short set at
      the end (a padded slot contributes a factor 1; an all -1 row gives 0).
    where: optional bool[..., n]; False marks an item that is not available in
      that event.
    method: "exact" (subset recursion; k <= 16, cost k 2^(k-1) per event),
      "quadrature" (trapezoid rule, any k, cost about 30 k sqrt(k + 10) per
      event) or "auto": exact for k <= 10, where it is the cheaper of the two,
      quadrature above. k is the static size of the last axis of `subset`.
      The two agree to about 1e-5 in log P in float32 (to a few float32 ulps
      of log P where |log P| is large), to 1e-8 in float64. For large k the
      float32 error grows to about k ulps of log R: log P moves k times as
      much as any rounding of log R.

    impl: implementation of the quadrature, "auto" | "xla" | "pallas" |
      "reference" (see `luce.kernels.pl_set`); "auto" is Pallas on GPU/TPU,
      XLA on CPU. The exact method is plain XLA.
    interpret: how the Pallas kernels run (impl="pallas" only; see
      `luce.kernels`): False compiled (Mosaic GPU on a GPU, Mosaic TPU on a
      TPU), True the TPU-layout kernels in Pallas' HLO interpreter, "gpu"
      the Mosaic GPU kernels in Pallas' GPU simulator, "tpu" the TPU kernels
      in its TPU simulator; the last three run on CPU too.

  The leading axes of `scores`, `subset` and `where` broadcast together.

  Returns:
    float32[...] (float64[...] for float64 scores) log P(S) per event, 0 for
    empty sets and for sets holding every available item.

  Raises:
    ShapeError: non-float scores, non-integer subset, non-bool where, batch
      axes that do not broadcast, `where` with a last axis other than n, or
      method="exact" with k > 16.
    InputError: unknown `method`; and, when the arrays are concrete (called
      eagerly), NaN or +inf scores, ids out of range, duplicate ids, -1 before
      an id, or a set item that is unavailable. Under `jax.jit` / `jax.vmap`
      the value checks are skipped: a set with an unavailable item then gets
      log P = -inf, and other bad values give unspecified results.

  Example:
    >>> import jax.numpy as jnp
    >>> from luce.pl_set import pl_set_log_prob
    >>> # Equal scores: every 2-subset of 4 items has probability 1/6.
    >>> p = jnp.exp(pl_set_log_prob(jnp.zeros(4), jnp.array([2, 0])))
    >>> round(float(p), 6)
    0.166667
  """
  if not isinstance(method, str) or method not in _METHODS:
    raise InputError(f"method must be one of {_METHODS}, got {method!r}.")
  interpret = check_interpret(resolve_impl(impl), interpret)
  scores = _checks.float_array(scores, "scores")
  subset = _checks.int_array(subset, "subset")
  n, k = scores.shape[-1], subset.shape[-1]
  _checks.check_leading_shapes(scores.shape, subset.shape, "scores", "subset")
  if where is not None:
    where = jnp.asarray(where)
    if where.dtype != jnp.bool_:
      raise ShapeError(f"where must be a bool array, got dtype {where.dtype}.")
    if where.ndim < 1 or where.shape[-1] != n:
      raise ShapeError(
          f"where must have shape [..., n] with n = {n} (the last axis of "
          f"scores), got {where.shape}.")
    _checks.check_leading_shapes(scores.shape, where.shape, "scores", "where")
  batch = _batch_shape(scores, subset, where)
  if method == "exact" and k > EXACT_MAX_K:
    raise ShapeError(
        f"method='exact' handles sets of up to {EXACT_MAX_K} items (its cost is "
        f"k 2^(k-1) per event); subset has k = {k} slots: use "
        f"method='quadrature' (or 'auto').")
  if method == "auto":
    method = "exact" if k <= AUTO_EXACT_MAX_K else "quadrature"

  _checks.check_no_nan(scores, "scores")
  _checks.check_item_lists(subset, n, "subset")
  if _checks.is_concrete(scores, subset, where):
    _check_available(scores, subset, where, batch)

  dtype = jnp.float64 if scores.dtype == jnp.float64 else jnp.float32
  if k == 0 or n == 0:  # only empty (all -1) sets fit here: probability 1
    return jnp.zeros(batch, dtype)
  num_events = math.prod(batch)
  scores = jnp.broadcast_to(scores.astype(dtype), batch + (n,)).reshape(num_events, n)
  subset = jnp.broadcast_to(subset, batch + (k,)).reshape(num_events, k)
  if where is not None:
    where = jnp.broadcast_to(where, batch + (n,)).reshape(num_events, n)
  return _log_prob(scores, subset, where, method, impl, interpret).reshape(batch)


def _batch_shape(scores, subset, where):
  shapes = [scores.shape[:-1], subset.shape[:-1]]
  if where is not None:
    shapes.append(where.shape[:-1])
  try:
    return tuple(np.broadcast_shapes(*shapes))
  except ValueError:
    raise ShapeError(
        f"batch axes of scores {scores.shape}, subset {subset.shape} and where "
        f"{where.shape} do not broadcast together.") from None


def _own_index(batch_idx, shape):
  """The index into an array of `shape` that broadcasting maps to batch_idx."""
  lead = shape[:-1]
  tail = batch_idx[len(batch_idx) - len(lead):] if lead else ()
  return [0 if size == 1 else int(i) for i, size in zip(tail, lead)]


def _check_available(scores, subset, where, batch):
  """Every id in `subset` must name an available item (concrete arrays only)."""
  s = np.asarray(scores).astype(np.float64)  # bfloat16 has no numpy isinf
  inf = np.isposinf(s)
  if inf.any():
    idx = [int(i) for i in np.argwhere(inf)[0]]
    raise InputError(
        f"scores{idx} is +inf; scores must be finite, or -inf for an "
        f"unavailable item.")
  n, k = s.shape[-1], subset.shape[-1]
  if k == 0 or n == 0:
    return
  sub = np.broadcast_to(np.asarray(subset), batch + (k,))
  s_b = np.broadcast_to(s, batch + (n,))
  ids = np.where(sub >= 0, sub, 0)
  gone = (sub >= 0) & np.isneginf(np.take_along_axis(s_b, ids, axis=-1))
  cause = "scores"
  if where is not None:
    w_b = np.broadcast_to(np.asarray(where), batch + (n,))
    off = (sub >= 0) & ~np.take_along_axis(w_b, ids, axis=-1)
    if off.any():
      gone, cause = off, "where"
  if not gone.any():
    return
  pos = tuple(int(i) for i in np.argwhere(gone)[0])
  item = int(sub[pos])
  sub_idx = _own_index(pos[:-1], subset.shape) + [pos[-1]]
  src = scores if cause == "scores" else where
  src_idx = _own_index(pos[:-1], src.shape) + [item]
  what = "is -inf" if cause == "scores" else "is False"
  raise InputError(
      f"subset{sub_idx} = {item} names an unavailable item: {cause}{src_idx} "
      f"{what}. An unavailable item cannot be in the set (its probability is "
      f"0); make it available or drop it from the set.")


@functools.partial(jax.jit, static_argnames=("method", "impl", "interpret"))
def _log_prob(scores, subset, where, method, impl, interpret):
  """log P(S) for flat float[B, n] scores, int[B, k] subset, bool[B, n] where."""
  num_events, n = scores.shape
  neg_inf = jnp.asarray(-jnp.inf, scores.dtype)
  avail = scores > -jnp.inf
  if where is not None:
    avail &= where
  s = jnp.where(avail, scores, neg_inf)
  valid = subset >= 0
  s_set = jnp.take_along_axis(s, jnp.where(valid, subset, 0), axis=-1)

  # log R over the available items outside S; a scatter marks S, since
  # log(sum(w) - w_S) would cancel.
  rows = jnp.arange(num_events)[:, None]
  in_set = jnp.zeros((num_events, n), bool).at[
      rows, jnp.where(valid, subset, n)].set(True, mode="drop")
  log_r = _logsumexp(jnp.where(in_set, neg_inf, s), axis=-1)

  # A set item that is unavailable has probability 0; an empty S, or R = 0
  # (S is every available item), has probability 1. These are set by `where`
  # at the end; the methods see finite stand-ins so gradients stay finite.
  impossible = jnp.any(valid & (s_set == -jnp.inf), axis=-1)
  certain = (log_r == -jnp.inf) | ~jnp.any(valid, axis=-1)
  s_set = jnp.where(valid & (s_set > -jnp.inf), s_set, 0.0)
  log_r = jnp.where(certain, 0.0, log_r)

  if method == "exact":
    out = _exact(s_set, valid, log_r)
  else:
    out = quadrature(s_set - log_r[:, None], valid, impl=impl, interpret=interpret)
  out = jnp.where(certain, 0.0, out)
  return jnp.where(impossible, neg_inf, out)


def _logsumexp(x, axis):
  """logsumexp whose gradient is 0, not NaN, where every input is -inf."""
  peak = jax.lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True))
  peak = jnp.where(jnp.isfinite(peak), peak, 0.0)
  total = jnp.sum(jnp.exp(x - peak), axis=axis, keepdims=True)
  some = total > 0
  out = jnp.where(some, jnp.log(jnp.where(some, total, 1.0)) + peak, -jnp.inf)
  return jnp.squeeze(out, axis=axis)


def _logaddexp(a, b):
  """Elementwise log(e^a + e^b), gradient 0 where both are -inf.

  An elementwise form rather than a logsumexp over a stacked axis: XLA fuses
  it into one kernel, which matters in the unrolled recursion below.
  """
  peak = jax.lax.stop_gradient(jnp.maximum(a, b))
  peak = jnp.where(jnp.isfinite(peak), peak, 0.0)
  total = jnp.exp(a - peak) + jnp.exp(b - peak)
  some = total > 0
  return jnp.where(some, jnp.log(jnp.where(some, total, 1.0)) + peak, -jnp.inf)


# ---------------------------------------------------------------------------
# Exact: the subset recursion, one popcount layer at a time.


@functools.lru_cache(maxsize=None)
def _subset_tables(k):
  """Static index tables for the masks over k slots, grouped by popcount.

  Layer c lists the masks with c bits set, in increasing order. Returns a list
  over c = 0..k of dicts:
    pred: int32[C(k,c), c], position in layer c-1 of mask minus each set bit;
    item: int32[C(k,c), c], the slot of that bit;
    sup:  int32[C(k,c)], position in layer c+1 of mask plus its lowest unset bit
          (absent in layer k), and sup_item: that slot;
    prefix: position of the mask of slots 0..c-1 (the valid slots of an event
          whose set has c items).
  """
  masks = np.arange(1 << k, dtype=np.int64)
  popcount = np.zeros_like(masks)
  for bit in range(k):
    popcount += (masks >> bit) & 1
  layers = [masks[popcount == c] for c in range(k + 1)]
  pos = np.empty(1 << k, dtype=np.int64)
  for layer in layers:
    pos[layer] = np.arange(len(layer))
  tables = []
  for c, layer in enumerate(layers):
    t = {"prefix": int(pos[(1 << c) - 1])}
    if c > 0:
      bits = (layer[:, None] >> np.arange(k)) & 1
      item = np.nonzero(bits)[1].reshape(len(layer), c)
      t["item"] = item.astype(np.int32)
      t["pred"] = pos[layer[:, None] ^ (1 << item)].astype(np.int32)
    if c < k:
      low = (~layer) & (layer + 1)  # lowest unset bit, as a power of two
      t["sup_item"] = np.log2(low).round().astype(np.int32)
      t["sup"] = pos[layer | low].astype(np.int32)
    tables.append(t)
  return tables


def _exact(s_set, valid, log_r):
  """log P(S) by the subset recursion, for float[B, k] set scores.

  The PL conditional is log pi(i | B) = s_i - D(B), with
  D(B) = log(R + sum_{j in S, j not in B} w_j): a log-sum of positive terms
  built from the full set down (D(B) = logaddexp(D(B + j), s_j)), never a
  difference. Padded slots get s = -inf, so they add nothing to D and any mask
  holding one has f = 0; the answer is f at the mask of the valid slots.
  """
  k = s_set.shape[-1]
  tables = _subset_tables(k)
  s = jnp.where(valid, s_set, -jnp.inf).T  # [k, B]

  # d[c]: D over the masks of layer c, float[C(k, c), B].
  d = [None] * (k + 1)
  d[k] = log_r[None, :]
  for c in range(k - 1, -1, -1):
    t = tables[c]
    d[c] = _logaddexp(jnp.take(d[c + 1], t["sup"], axis=0),
                      jnp.take(s, t["sup_item"], axis=0))

  def log_cond(c, pred, item):
    return jnp.take(s, item, axis=0) - jnp.take(d[c], pred, axis=0)

  return subset_recursion(log_cond, jnp.sum(valid, axis=-1), k)


def subset_recursion(log_cond, size, k):
  """log f(S) by the subset recursion over the k slots of a set S.

    f(empty) = 1,   f(A) = sum_{i in A} f(A \\ i) pi(i | A \\ i),   P(S) = f(S),

  for any sequential model pi of distinct picks: Plackett-Luce
  (pi(i | B) = w_i / sum_{j not in B} w_j, `pl_set_log_prob`) and the subset
  diffusion denoiser (`luce.diffusion.exact_set_log_prob`) both go through
  here. The masks over the slots run one popcount layer at a time; events sit
  on the last axis, so every gather copies whole rows of events (several
  times faster on CPU than gathering single elements). Every term is
  positive: no cancellation.

  Args:
    log_cond: `log_cond(c, pred, item) -> float[M, c + 1, B]`: log pi(slot
      item[m, j] | the mask pred[m, j] of layer c), for int[M, c + 1] tables
      `pred` (positions of masks in layer c, popcount c, in increasing mask
      order) and `item` (a slot not in that mask); c = 0..k-1.
    size: int[B], the valid slots of each event (slots 0..size-1); the answer
      is f at the mask of those slots.
    k: the static number of slots.

  Returns:
    float[B] log f(S).
  """
  tables = _subset_tables(k)
  log_f, at_prefix = None, []
  for c in range(1, k + 1):
    t = tables[c]
    cond = log_cond(c - 1, t["pred"], t["item"])
    if log_f is None:  # f(empty) = 1, in the conditionals' dtype
      log_f = jnp.zeros((1, size.shape[0]), cond.dtype)
      at_prefix.append(log_f[0])
    terms = jnp.take(log_f, t["pred"], axis=0) + cond
    log_f = _logsumexp(terms, axis=1)  # [C(k, c), B]
    at_prefix.append(log_f[t["prefix"]])
  return jnp.take_along_axis(jnp.stack(at_prefix, axis=-1), size[:, None], axis=-1)[:, 0]
