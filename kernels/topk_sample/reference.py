"""Pure-jnp reference for topk_sample: the definition, written to be read.

Slot by slot, a masked argmax of the perturbed scores over the eligible items
(see `_common` for the rule), with an explicit `taken` mask and per-group
counts. O(k·(n + G)) per row; the fast implementations are tested against it.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from luce.kernels.topk_sample import _common


def topk_sample_reference(perturbed, k, u=None, forbidden=None, groups=None,
                          quotas=None):
  """int32[B, k] item ids, best first; −1 for slots left empty.

  Args:
    perturbed: float[B, n] scores plus noise; −inf (or NaN) = unavailable.
    k: static int, the slots per row.
    u: optional int[B], slots to fill per row (top-u); the rest are −1.
    forbidden: optional bool[B, n], True = never pick.
    groups: optional int[n] group ids; quotas: optional int[G, 2] or
      int[B, G, 2] (min, max) picks per group. Both or neither.
  """
  z = _common.available(perturbed, forbidden)
  rows, n = z.shape
  take_u = _common.slots_per_row(u, rows, k)
  items = jnp.arange(n, dtype=jnp.int32)
  if quotas is None:
    groups = jnp.zeros((n,), jnp.int32)
    q = jnp.broadcast_to(jnp.array([0, k], jnp.int32), (rows, 1, 2))
  else:
    groups = groups.astype(jnp.int32)
    q = _common.row_quotas(quotas, rows)
  n_groups = q.shape[1]
  qmin, qmax = q[..., 0], q[..., 1]
  safe_groups = jnp.clip(groups, 0, n_groups - 1)

  def slot(j, state):
    out, taken, count = state
    deficit = jnp.maximum(qmin - count, 0)                      # [B, G]
    tight = jnp.sum(deficit, axis=1, keepdims=True) >= k - j    # [B, 1]
    group_ok = (count < qmax) & (~tight | (deficit > 0))        # [B, G]
    item_ok = jnp.take_along_axis(
        group_ok, jnp.broadcast_to(safe_groups, (rows, n)), axis=1)
    eligible = (z > -jnp.inf) & ~taken & item_ok & (j < take_u)[:, None]
    zj = jnp.where(eligible, z, -jnp.inf)
    pick = jnp.argmax(zj, axis=1).astype(jnp.int32)             # first of ties
    hit = jnp.any(eligible, axis=1)
    taken = taken | ((items == pick[:, None]) & hit[:, None])
    picked_group = safe_groups[pick]
    count = count + ((jnp.arange(n_groups) == picked_group[:, None])
                     & hit[:, None]).astype(jnp.int32)
    out = out.at[:, j].set(jnp.where(hit, pick, -1))
    return out, taken, count

  init = (jnp.full((rows, k), -1, jnp.int32), jnp.zeros((rows, n), bool),
          jnp.zeros((rows, n_groups), jnp.int32))
  out = lax.fori_loop(0, k, slot, init)[0]
  if quotas is None:
    return out
  return _common.finish(out, _common.feasible(z, groups, q, k))
