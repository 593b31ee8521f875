"""Sampling ordered top-k lists from Plackett-Luce by Gumbel-top-k.

Plackett-Luce (PL) with scores s picks item i first with probability
softmax(s)_i, then picks among the rest the same way. Adding independent
standard Gumbel noise g_i to every score and sorting, s + g, gives exactly
that process (the Gumbel-max trick applied slot by slot; Yellott 1977,
Kool et al. 2019), so an ordered top-k sample is `lax.top_k(s + g, k)`:
O(n) noise and one partial sort, no loop over the k slots.

Constraints:
- Unavailable items (score -inf, or `forbidden`) are never sampled. By Luce's
  choice axiom, PL restricted to the allowed items is PL on those items, so
  dropping them is exact.
- Per-group quotas (at least min_g, at most max_g picks from group g) turn the
  sample into a sequential process over the k slots; see `pl_sample`.
"""

from __future__ import annotations

import functools
import math
import operator

import numpy as np
import jax
import jax.numpy as jnp

from luce import _checks
from luce.errors import InfeasibleError, InputError, ShapeError
from luce import kernels
from luce.kernels import topk_sample as topk_kernels

# Largest float32 below 1; see `_gumbel_from_bits` for why v is clamped to it.
_BELOW_ONE = 1.0 - 2.0 ** -24


def _gumbel_from_bits(bits: jax.Array) -> jax.Array:
  """Standard Gumbel values from uint32 random bits, elementwise.

  v = (bits + 1/2) 2^-32 in float32, clamped to at most 1 - 2^-24, then
  g = -log(-log1p(-v)). Shapes follow `bits`; the result is float32.
  """
  # bits + 1/2 keeps v off 0: the smallest v is 2^-33, so g <= 22.87. Below
  # 2^23 the sum and the scaling by 2^-32 are exact, so small v (the large,
  # decisive Gumbel values) keep every one of their 32 bits.
  v = (bits.astype(jnp.float32) + 0.5) * jnp.float32(2.0 ** -32)
  # Above 2^24 the cast to float32 rounds, and bits >= 2^32 - 128 round up to
  # 2^32, i.e. v = 1, log1p(-1) = -inf and g = -inf: an allowed item would tie
  # with the -inf of unavailable ones. Clamping to the largest float32 below 1
  # moves that 2^-25 of mass to the lowest bin, g = -log(24 log 2) = -2.81,
  # which is where it belongs anyway (float32 cannot resolve v closer to 1).
  v = jnp.minimum(v, jnp.float32(_BELOW_ONE))
  return -jnp.log(-jnp.log1p(-v))


def gumbel_noise(key: jax.Array, shape) -> jax.Array:
  """Standard Gumbel noise, G ~ Gumbel(0, 1): P(G <= x) = exp(-exp(-x)).

  Built from 32 random bits per value (`jax.random.bits`, uint32):
  v = (bits + 1/2) 2^-32 lies strictly inside (0, 1) in float32 (it is clamped
  below 1 - 2^-24, the largest float32 under 1, because the float32 cast rounds
  the top 128 bit patterns up to 2^32, i.e. v = 1 and g = -inf), and
  g = -log(-log1p(-v)). Large Gumbel values, the ones that decide a top-k,
  come from small v, which this construction represents exactly; the values
  are finite and lie in [-2.81, 22.87].

  Args:
    key: a `jax.random.key` (or legacy uint32[2] key).
    shape: tuple of ints, static.

  Returns:
    float32[shape] independent standard Gumbel values (mean: the
    Euler-Mascheroni constant 0.5772, variance pi^2 / 6).
  """
  return _gumbel_from_bits(jax.random.bits(key, tuple(shape), jnp.uint32))


def pl_sample(key, scores, k, *, forbidden=None, groups=None, quotas=None,
              impl="auto", interpret=False):
  """Ordered top-k lists sampled from Plackett-Luce, with optional constraints.

  Without quotas, the list is the top-k of s_i + g_i over the allowed items,
  g ~ Gumbel(0, 1) i.i.d. (`gumbel_noise`), which is exactly PL without
  replacement:

    P(pi_1..pi_k) = prod_j exp(s_{pi_j}) / sum_{i in A, i not in pi_<j} exp(s_i),

  A the allowed items (score > -inf and not forbidden).

  With quotas (`groups` and `quotas` together), slot j = 1..k takes the argmax
  of the same s + g over the items that are *eligible*: allowed, not picked
  yet, in a group below its max, and, when the r = k - j + 1 slots left equal
  the total outstanding deficit D = sum_g max(0, min_g - count_g), in a group
  still below its min. These are exactly the items whose pick leaves the
  quotas reachable by some completion of the list, so every sample meets all
  the constraints. Eligibility only shrinks from slot to slot (counts only
  grow), and given the picks so far the Gumbel-perturbed scores of the still
  eligible items are independent Gumbels truncated at the previous maximum, a
  bound common to all of them, whose argmax is still softmax-distributed. So
  reusing one noise draw samples exactly the process "PL restricted, stage by
  stage, to the choices that keep every quota reachable":

    P(pi) = prod_j exp(s_{pi_j}) / sum_{i in E_j(pi_<j)} exp(s_i),

  E_j the eligible set at slot j. This is NOT PL conditioned on the
  constraints (sampling PL and rejecting lists that break them): relative to
  that law, the stage-wise process gives more mass to lists whose later slots
  had fewer eligible items, because the quotas renormalize each slot over E_j
  rather than over every item left.
  It costs O(k n) per row (one pass over the items per slot; see
  `luce.kernels.topk_sample`).

  Scores are centered on the row's largest allowed score before the noise is
  added, so a large common offset does not swamp the noise in float32.

  Args:
    key: a `jax.random.key`; one key for the whole batch (the noise is drawn
      for the flattened batch at once). Same key and inputs, same samples.
    scores: float[..., n] item scores (log-weights); integers are promoted,
      half precision is computed in float32. -inf marks an unavailable item.
      NaN and +inf are errors.
    k: static Python int, 1 <= k <= n, the length of each list.
    forbidden: optional bool[..., n], True for items never to sample; it
      broadcasts against `scores` (e.g. bool[n] for every row).
    groups: optional int[n], the group id of each item, in [0, G).
    quotas: optional int[G, 2], (min, max) picks per group; needs `groups`.
    impl: which implementation of the `luce.kernels.topk_sample` op picks the
      items from the perturbed scores: "auto" (Pallas on GPU/TPU, XLA on
      CPU), "xla", "pallas" or "reference". The noise is drawn before the
      op, so all of them give the same samples for the same key.
    interpret: with impl="pallas", how the Pallas kernel runs (see
      `luce.kernels`): False compiled (GPU or TPU), True the TPU kernel in
      the HLO interpreter, "tpu" / "gpu" the TPU / Mosaic GPU kernel in
      Pallas' hardware simulator (all of them on a CPU too).

  Returns:
    int32[..., k] item ids, best first; the batch axes are those of `scores`
    and `forbidden` broadcast together.

  Raises:
    ShapeError, InputError: arrays of the wrong shape or dtype, k not an int
      or out of range, group ids out of range, negative quotas, NaN or +inf
      scores.
    InfeasibleError: (concrete inputs) a row where no list meets the
      constraints: fewer than k allowed items, min > max, sum of mins > k, a
      group with fewer allowed items than its min, or groups that together
      cannot supply k picks.

  Under `jax.jit` or `jax.vmap` value checks cannot raise (wrap the function
  in `luce.checked` to get every one of them, infeasible rows included, as a
  checkify error). Without it nothing invalid comes back: without quotas, a row with m < k allowed items gets them
  in PL order followed by k - m entries of -1 (luce's padding of short item
  lists); a row with NaN or +inf scores, or (with quotas) a row whose
  constraints no list can meet, or any row if a group id is out of range, is
  all -1. Mark `k` static: `jax.jit(pl_sample, static_argnames="k")`.

  Example:
    >>> key = jax.random.key(0)
    >>> pl_sample(key, jnp.zeros((8, 6)), 3).shape
    (8, 3)
  """
  scores = _checks.float_array(scores, "scores")
  n = scores.shape[-1]
  k = _static_k(k, n)
  _checks.check_no_nan(scores, "scores")
  _checks.check_no_pos_inf(scores, "scores")
  batch = scores.shape[:-1]

  if forbidden is not None:
    forbidden = jnp.asarray(forbidden)
    if forbidden.dtype != jnp.bool_:
      # A list of ids passed here would otherwise be read as a mask.
      raise ShapeError(
          f"forbidden must be a bool mask [..., n] (True = never sample), got "
          f"dtype {forbidden.dtype}; to forbid items by id use "
          f"jnp.zeros(n, bool).at[ids].set(True).")
    try:
      full = np.broadcast_shapes(forbidden.shape, scores.shape)
    except ValueError:
      full = None
    if full is None or full[-1] != n:
      raise ShapeError(
          f"forbidden {tuple(forbidden.shape)} does not broadcast against "
          f"scores {tuple(scores.shape)}: its last axis must be n = {n} (or 1) "
          f"and its other axes must broadcast with the batch axes.")
    batch = full[:-1]

  if (groups is None) != (quotas is None):
    given = "groups" if quotas is None else "quotas"
    raise InputError(
        f"{given} was given alone; groups (int[n]) and quotas (int[G, 2]) go "
        f"together: pass both or neither.")
  if groups is not None:
    groups, quotas = _check_quota_tables(groups, quotas, n, k)

  impl = topk_kernels.resolve_impl(impl)
  interpret = kernels.check_interpret(impl, interpret)

  rows = math.prod(batch)
  dtype = jnp.promote_types(scores.dtype, jnp.float32)
  s = jnp.broadcast_to(scores.astype(dtype), batch + (n,)).reshape(rows, n)
  allowed = s > -jnp.inf
  if forbidden is not None:
    allowed &= ~jnp.broadcast_to(forbidden, batch + (n,)).reshape(rows, n)

  if _checks.is_concrete(s, allowed, groups, quotas):
    _check_feasible(allowed, groups, quotas, k, batch)
  else:
    _check_feasible_traced(allowed, groups, quotas, k)

  out = _sample(key, s, allowed, groups, quotas, k, impl, interpret)
  return out.reshape(batch + (k,))


@functools.partial(jax.jit, static_argnames=("k", "impl", "interpret"))
def _sample(key, s, allowed, groups, quotas, k, impl="auto", interpret=False):
  """The sampler on flat arrays: s float[B, n], allowed bool[B, n] -> int32[B, k].

  Centers the scores, adds the noise, and hands the perturbed scores to the
  `luce.kernels.topk_sample` op (`lax.top_k` or the slot scan with quotas in
  XLA, or the Pallas kernel): every `impl` returns the same ids for one key.
  """
  rows, n = s.shape
  # NaN or +inf leave the sample undefined; checked eagerly, masked under jit.
  row_ok = ~jnp.any(jnp.isnan(s) | (s == jnp.inf), axis=-1)
  top = jnp.max(jnp.where(allowed, s, -jnp.inf), axis=-1, keepdims=True)
  top = jnp.where(jnp.isfinite(top), top, 0)
  z = jnp.where(allowed, s - top, -jnp.inf) + gumbel_noise(key, (rows, n))
  # The op also makes a row whose quotas no list can meet all -1.
  picks = topk_kernels.topk_sample(z, k, groups=groups, quotas=quotas, impl=impl,
                                   interpret=interpret)
  return jnp.where(row_ok[:, None], picks, -1).astype(jnp.int32)


@jax.jit  # also called eagerly by `_check_feasible`: compile it once
def _group_supply(allowed, groups, quotas):
  """Per row and group, the fewest and most picks any valid list takes.

  Returns (avail, lo, hi), each int32[B, G]: avail the allowed items of each
  group, lo = max(min, 0), hi = min(max, avail). A list of k picks meeting the
  quotas exists iff lo <= hi in every group and sum lo <= k <= sum hi.
  """
  n_groups = quotas.shape[0]
  avail = jax.ops.segment_sum(
      allowed.T.astype(jnp.int32), groups, num_segments=n_groups).T
  lo = jnp.broadcast_to(jnp.maximum(quotas[:, 0], 0), avail.shape)
  hi = jnp.minimum(quotas[:, 1], avail)
  return avail, lo, hi


def _static_k(k, n: int) -> int:
  if isinstance(k, jax.core.Tracer):
    raise ShapeError(
        "k must be a static Python int, got a traced value; under jax.jit "
        "mark it static: jax.jit(pl_sample, static_argnames='k').")
  if isinstance(k, (bool, np.bool_)):
    raise ShapeError(f"k must be a Python int (the list length), got bool {k}.")
  try:
    k = operator.index(k)
  except TypeError:
    raise ShapeError(
        f"k must be a Python int (the list length), got "
        f"{type(k).__name__} {k!r}.") from None
  if not 1 <= k <= n:
    raise InputError(
        f"k = {k} is out of range: a list takes 1 <= k <= n = {n} items "
        f"(n is the last axis of scores).")
  return k


def _check_quota_tables(groups, quotas, n: int, k: int):
  """Shapes and dtypes of groups int[n] and quotas int[G, 2]; values if concrete."""
  groups = jnp.asarray(groups)
  quotas = jnp.asarray(quotas)
  if not jnp.issubdtype(groups.dtype, jnp.integer):
    raise ShapeError(
        f"groups must hold integer group ids, got dtype {groups.dtype}.")
  if groups.shape != (n,):
    raise ShapeError(
        f"groups must have shape (n,) = ({n},), one group id per item, got "
        f"{tuple(groups.shape)}.")
  if not jnp.issubdtype(quotas.dtype, jnp.integer):
    raise ShapeError(
        f"quotas must hold integer (min, max) counts, got dtype {quotas.dtype}.")
  if quotas.ndim != 2 or quotas.shape[1] != 2 or quotas.shape[0] < 1:
    raise ShapeError(
        f"quotas must have shape (G, 2), one (min, max) row per group, G >= 1, "
        f"got {tuple(quotas.shape)}.")
  groups = groups.astype(jnp.int32)
  quotas = quotas.astype(jnp.int32)
  n_groups = quotas.shape[0]

  if _checks.is_concrete(groups):
    g = np.asarray(groups)
    bad = (g < 0) | (g >= n_groups)
    if bad.any():
      i = int(np.argmax(bad))
      raise InputError(
          f"groups[{i}] = {g[i]} is not a group id: quotas has G = {n_groups} "
          f"rows, so ids run from 0 to {n_groups - 1}.")
  if _checks.is_concrete(quotas):
    q = np.asarray(quotas)
    if (q < 0).any():
      g, c = (int(i) for i in np.argwhere(q < 0)[0])
      raise InputError(
          f"quotas[{g}, {c}] = {q[g, c]} is negative; quotas[g] = (min, max) "
          f"counts picks from group g and must be >= 0.")
    lo_gt_hi = q[:, 0] > q[:, 1]
    if lo_gt_hi.any():
      g = int(np.argmax(lo_gt_hi))
      raise InfeasibleError(
          f"quotas[{g}] = ({q[g, 0]}, {q[g, 1]}) asks for at least {q[g, 0]} "
          f"and at most {q[g, 1]} picks from group {g}: min > max.")
    if q[:, 0].sum() > k:
      raise InfeasibleError(
          f"the minimums of quotas add up to {q[:, 0].sum()} picks "
          f"({q[:, 0].tolist()}) but a list has only k = {k}.")
  return groups, quotas


def _check_feasible_traced(allowed, groups, quotas, k: int) -> None:
  """Under `luce.checked`: a checkify error at the first row no valid list fits
  (the conditions of `_check_feasible`; flat row index)."""
  short = jnp.sum(allowed, axis=-1) < k
  _checks._traced_check(~jnp.any(short), f"row {{}} of scores (flat) has fewer allowed items "
                        f"(score > -inf and not forbidden) than k = {k} picks.", jnp.argmax(short))
  if quotas is None:
    return
  avail, lo, hi = _group_supply(allowed, groups, quotas)
  bad = jnp.any(avail < lo, axis=-1) | (jnp.sum(hi, axis=-1) < k)
  _checks._traced_check(~jnp.any(bad), f"row {{}} of scores (flat): no list of k = {k} picks meets "
                        f"the quotas (a group has fewer allowed items than its min, or the groups "
                        f"cannot supply k picks).", jnp.argmax(bad))


def _check_feasible(allowed, groups, quotas, k: int, batch) -> None:
  """Raise InfeasibleError at the first row where no valid list exists."""
  def row_name(b):
    if not batch:
      return "scores"
    return f"row {tuple(int(i) for i in np.unravel_index(b, batch))} of scores"

  count = np.asarray(jnp.sum(allowed, axis=-1))
  short = count < k
  if short.any():
    b = int(np.argmax(short))
    raise InfeasibleError(
        f"{row_name(b)} has {count[b]} allowed items (score > -inf and not "
        f"forbidden) but k = {k} picks were asked.")
  if quotas is None:
    return
  avail, lo, hi = (np.asarray(a) for a in _group_supply(allowed, groups, quotas))
  under = avail < lo
  if under.any():
    b, g = (int(i) for i in np.argwhere(under)[0])
    raise InfeasibleError(
        f"{row_name(b)}: group {g} has {avail[b, g]} allowed items but "
        f"quotas[{g}] asks for at least {lo[b, g]}.")
  supply = hi.sum(axis=-1)
  low = supply < k
  if low.any():
    b = int(np.argmax(low))
    raise InfeasibleError(
        f"{row_name(b)}: the groups can supply at most {supply[b]} picks "
        f"(sum over g of min(max_g, allowed items in g) = {hi[b].tolist()}) "
        f"but k = {k} picks were asked.")
