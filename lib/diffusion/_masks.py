"""The mask M of the denoiser: which items may be added to a partial set.

An item i may join the visible partial set A (|A| = k - r, r slots left) iff
it is available (not forbidden, not marked unavailable), not in A already,
and picking it keeps every group quota reachable:

  count_g(A) < max_g for i's group g, and, when the outstanding deficit
  D = sum_g max(0, min_g - count_g(A)) equals the r slots left, g is still
  below its min.

This is the rule of `luce.kernels.topk_sample` (and `luce.pl_sample`): given
a feasible start (checked by `check_constraints` before anything runs) it
never strands a quota, so every set built by repeated picks from M is valid.
The same M masks the denoiser's logits in training, in the likelihoods and in
the sampler.
"""

from __future__ import annotations

import numpy as np
import jax
import jax.numpy as jnp

from luce import sampling as _sampling
from luce.errors import InputError, ShapeError


def allowed_items(visible, slots_left, *, available=None, groups=None, quotas=None):
  """bool[..., n]: the items that may join A (the mask M).

  Args:
    visible: bool[..., n], the partial set A as a mask over the items.
    slots_left: int[...], r = k - |A| (broadcasts against visible's batch axes).
    available: optional bool[..., n] (broadcasting), False = never pick
      (unavailable or forbidden).
    groups: optional int[n] group ids in [0, G); quotas: int[G, 2] (min, max)
      picks per group. Both or neither.
  """
  ok = ~visible
  if available is not None:
    ok &= available
  if quotas is None:
    return ok
  n_groups = quotas.shape[0]
  member = jax.nn.one_hot(groups, n_groups, dtype=jnp.float32)           # [n, G]
  count = jnp.round(visible.astype(jnp.float32) @ member).astype(jnp.int32)  # [..., G]
  lo, hi = quotas[:, 0], quotas[:, 1]
  deficit = jnp.maximum(lo - count, 0)
  tight = jnp.sum(deficit, axis=-1, keepdims=True) >= jnp.asarray(slots_left)[..., None]
  group_ok = (count < hi) & (~tight | (deficit > 0))                     # [..., G]
  return ok & jnp.take(group_ok, groups, axis=-1)


def masked_log_softmax(logits, allowed):
  """log pi(i | A) = log softmax(logits + log M)_i: float32[..., n] (float64
  for float64 logits), -inf off M.

  A row with no allowed item (only reachable when the set is already full)
  is all -inf.
  """
  logits = jnp.asarray(logits)
  z = jnp.where(allowed, logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), -jnp.inf)
  peak = jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))
  peak = jnp.where(jnp.isfinite(peak), peak, 0.0)
  total = jnp.sum(jnp.where(allowed, jnp.exp(z - peak), 0.0), axis=-1, keepdims=True)
  log_total = jnp.log(jnp.where(total > 0, total, 1.0)) + peak
  return jnp.where(allowed, z - log_total, -jnp.inf)


def check_constraints(n: int, k: int, *, available=None, groups=None, quotas=None):
  """Check (eagerly) that some k-set meets the constraints; return them as arrays.

  Args:
    n, k: items and set size, 1 <= k <= n.
    available: optional bool[n] or bool[B, n] (False = unavailable/forbidden).
    groups, quotas: optional int[n] and int[G, 2], both or neither.

  Returns:
    (available bool[B or 1, n] | None, groups int32[n] | None, quotas int32[G, 2] | None).

  Raises:
    InfeasibleError: no k-set of available items meets the quotas (in some row).
    InputError, ShapeError: malformed constraints.
  """
  if not 1 <= k <= n:
    raise InputError(f"k = {k} is out of range 1 <= k <= n = {n}.")
  if (groups is None) != (quotas is None):
    raise InputError("groups (int[n]) and quotas (int[G, 2]) go together: pass both or neither.")
  if groups is not None:
    groups, quotas = _sampling._check_quota_tables(groups, quotas, n, k)
  if available is not None:
    available = jnp.asarray(available)
    if available.dtype != jnp.bool_ or available.shape[-1] != n or available.ndim > 2:
      raise ShapeError(f"available must be bool[n] or bool[B, n] with n = {n}, got "
                       f"{available.dtype}{list(available.shape)}.")
    available = available.reshape((-1, n))
  allowed = available if available is not None else jnp.ones((1, n), bool)
  if all(isinstance(a, (np.ndarray, jax.Array)) and not isinstance(a, jax.core.Tracer)
         for a in (allowed,) + ((groups, quotas) if quotas is not None else ())):
    _sampling._check_feasible(allowed, groups, quotas, k, allowed.shape[:1])
  return available, groups, quotas
