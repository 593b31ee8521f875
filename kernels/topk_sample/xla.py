"""topk_sample in plain XLA, tuned for CPU.

Without quotas the eligible set at slot j is "available and not picked yet",
so the k slots are the top-k of z: one `lax.top_k` (a partial sort, no loop
over slots). Slots past a row's available items come back as −inf and are
padded with −1; top-u masks slots j ≥ u[b].

With quotas eligibility depends on the picks so far: one `lax.scan` over the
k slots, each a masked argmax over the n items with the group rule of
`_common` evaluated on per-item bounds (lo, hi), O(k·n) per row.
"""

from __future__ import annotations

import jax.numpy as jnp
from jax import lax

from luce.kernels.topk_sample import _common


def topk_sample_xla(perturbed, k, u=None, forbidden=None, groups=None, quotas=None):
  """Arguments and result as `reference.topk_sample_reference`."""
  z = _common.available(perturbed, forbidden)
  rows, n = z.shape
  if quotas is None:
    best, picks = lax.top_k(z, k)
    picks = jnp.where(best > -jnp.inf, picks, -1).astype(jnp.int32)
    if u is not None:
      take_u = _common.slots_per_row(u, rows, k)
      picks = jnp.where(jnp.arange(k) < take_u[:, None], picks, -1)
    return picks
  groups = groups.astype(jnp.int32)
  q = _common.row_quotas(quotas, rows)
  picks = _sequential_picks(z, groups, q, k, _common.slots_per_row(u, rows, k))
  return _common.finish(picks, _common.feasible(z, groups, q, k))


def _sequential_picks(z, groups, q, k, take_u):
  """Slot-by-slot argmax of z over the eligible items: int32[B, k], −1 if none."""
  rows, n = z.shape
  lo, hi, d0 = _common.item_bounds(groups, q)
  safe_groups = jnp.clip(groups, 0, q.shape[1] - 1)
  item_ids = jnp.arange(n, dtype=jnp.int32)

  def slot(carry, j):
    # lo_left / hi_left: min / max of each item's group minus the picks from
    # that group so far; deficit: Σ_g max(0, min_g − count_g).
    taken, lo_left, hi_left, deficit = carry
    tight = (deficit >= k - j)[:, None]
    ok = (hi_left > 0) & (~tight | (lo_left > 0)) & ~taken
    zj = jnp.where(ok, z, -jnp.inf)
    pick = jnp.argmax(zj, axis=-1).astype(jnp.int32)
    hit = (jnp.max(zj, axis=-1) > -jnp.inf) & (j < take_u)
    taken |= (item_ids == pick[:, None]) & hit[:, None]
    same = (safe_groups == safe_groups[pick][:, None]) & hit[:, None]
    picked_lo = jnp.take_along_axis(lo_left, pick[:, None], axis=1)[:, 0]
    deficit -= (hit & (picked_lo > 0)).astype(jnp.int32)
    carry = (taken, lo_left - same, hi_left - same, deficit)
    return carry, jnp.where(hit, pick, -1)

  init = (jnp.zeros((rows, n), bool), lo, hi, d0)
  _, picks = lax.scan(slot, init, jnp.arange(k, dtype=jnp.int32))
  return picks.T
