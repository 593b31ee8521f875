"""What every topk_sample implementation shares: canonical inputs and row checks.

The op, on a flat batch of perturbed scores z float[B, n] (scores plus Gumbel
noise, drawn by the caller so that every implementation sees the same values):

  slot j = 0, 1, ..., k−1 of row b takes the argmax of z over the items that
  are *eligible*: available (z > −inf, not forbidden), not picked yet, in a
  group below its max, and, when the k − j slots left equal the outstanding
  deficit D = Σ_g max(0, min_g − count_g), in a group still below its min.
  Ties go to the lower item id. With no eligible item the slot is −1.

  top-u: slots j ≥ u[b] are −1. The first u[b] slots are exactly the first
  u[b] slots of the full k-slot fill (the tight rule still counts the k − j
  slots left), so a diffusion step that takes u of its r slots now keeps the
  quotas reachable by the r − u it takes later.

  A row whose quotas no k-list of its available items can meet (or with a
  group id out of range) is all −1.

Quotas may be one table int[G, 2] of (min, max) for every row, or one per row
int[B, G, 2] (e.g. the quotas left after the items a partial set already
holds). Implementations work on per-item bounds: lo[b, i] = min of item i's
group, hi[b, i] = its max, and d0[b] = Σ_g max(min_g, 0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def available(perturbed, forbidden):
  """float32 z with −inf at every item that may never be picked (NaN included)."""
  z = perturbed.astype(jnp.float32)
  ok = z > -jnp.inf  # False for −inf and NaN
  if forbidden is not None:
    ok &= ~forbidden
  return jnp.where(ok, z, -jnp.inf)


def slots_per_row(u, rows, k):
  """int32[B]: how many slots each row fills, u clipped to [0, k] (k if None)."""
  if u is None:
    return jnp.full((rows,), k, jnp.int32)
  return jnp.clip(jnp.broadcast_to(jnp.asarray(u, jnp.int32), (rows,)), 0, k)


def row_quotas(quotas, rows):
  """int32[B, G, 2] from int[G, 2] or int[B, G, 2], mins clipped at 0."""
  q = jnp.asarray(quotas, jnp.int32)
  q = jnp.broadcast_to(q, (rows,) + q.shape[-2:])
  return q.at[..., 0].max(0)


def item_bounds(groups, quotas_b):
  """(lo, hi) int32[B, n]: the (min, max) of each item's group, and d0 int32[B].

  Group ids out of range read group 0 here; `feasible` marks those rows −1.
  """
  n_groups = quotas_b.shape[1]
  g = jnp.clip(groups.astype(jnp.int32), 0, n_groups - 1)
  lo = jnp.take(quotas_b[..., 0], g, axis=1)
  hi = jnp.take(quotas_b[..., 1], g, axis=1)
  return lo, hi, jnp.sum(quotas_b[..., 0], axis=1)


def feasible(z, groups, quotas_b, k):
  """bool[B]: whether a k-list of available items meets row b's quotas."""
  n_groups = quotas_b.shape[1]
  avail = jax.ops.segment_sum((z > -jnp.inf).T.astype(jnp.int32), groups,
                              num_segments=n_groups).T
  lo = quotas_b[..., 0]
  hi = jnp.minimum(quotas_b[..., 1], avail)
  ok = (jnp.all(lo <= hi, axis=-1) & (jnp.sum(lo, axis=-1) <= k)
        & (jnp.sum(hi, axis=-1) >= k))
  ids_ok = jnp.all((groups >= 0) & (groups < n_groups))
  return ok & ids_ok


def finish(picks, row_ok):
  return jnp.where(row_ok[:, None], picks, -1).astype(jnp.int32)
