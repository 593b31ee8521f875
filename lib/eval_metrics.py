"""Per-event metrics of item scores against observed events: NLL, hits@k, NDCG@k.

Small and array-in, array-out; the full evaluation stack (calibration,
bootstrap, backtests) builds on these.

    nll = event_nll(scores, items, available, kind="ranking")   # float32[m] nats
    hits = hits_at_k(scores, items, available, k=3)             # float32[m]
"""

from __future__ import annotations

import numpy as np
import jax.numpy as jnp

from luce.errors import ConfigError
from luce.pl import pl_log_prob

KINDS = ("ranking", "set")


def event_nll(scores, items, available, *, kind: str):
  """Negative log-likelihood of each event, in nats.

  Args:
    scores: float[m, n] item scores.
    items: int[m, k] the observed list (best first for rankings), -1 padded.
    available: bool[m, n] items that could be picked; the likelihood runs over
      these only (an F1 race ranks its entrants, not every driver).
    kind: "ranking" (ordered top-k PL likelihood, `luce.pl_log_prob`) or "set"
      (unordered top-k set likelihood, `luce.pl_set.pl_set_log_prob`).

  Returns:
    float32[m]: -log P(event).
  """
  if kind == "ranking":
    return -pl_log_prob(scores, items, where=available)
  if kind == "set":
    from luce.pl_set import pl_set_log_prob  # a separate module; only set data needs it
    return -pl_set_log_prob(scores, items, where=available)
  raise ConfigError(f"event kind {kind!r}; luce models handle {KINDS} (a table of one kind).")


def top_k(scores, available, k: int) -> np.ndarray:
  """int32[m, k]: the k available items with the highest scores, best first."""
  s = np.where(np.asarray(available), np.asarray(scores, np.float64), -np.inf)
  order = np.argsort(-s, axis=1, kind="stable")[:, :k]
  return order.astype(np.int32)


def _truth_top(items, k: int) -> np.ndarray:
  return np.asarray(items)[:, :k]


def hits_at_k(scores, items, available, k: int) -> np.ndarray:
  """float32[m]: |predicted top-k ∩ observed top-k| per event (observed top-k is
  the first k listed items; for sets, the set)."""
  pred = top_k(scores, available, k)
  truth = _truth_top(items, k)
  hit = (pred[:, :, None] == truth[:, None, :]) & (truth[:, None, :] >= 0)
  return hit.any(axis=2).sum(axis=1).astype(np.float32)


def ndcg_at_k(scores, items, available, k: int) -> np.ndarray:
  """float32[m]: NDCG@k with binary relevance (1 for the observed top-k items).

  DCG = Σ_{j<k} rel(pred_j) / log2(j + 2), divided by the DCG of a perfect list.
  """
  pred = top_k(scores, available, k)
  truth = _truth_top(items, k)
  rel = ((pred[:, :, None] == truth[:, None, :]) & (truth[:, None, :] >= 0)).any(axis=2)
  discount = 1.0 / np.log2(np.arange(k) + 2.0)
  dcg = (rel * discount).sum(axis=1)
  n_rel = np.minimum((truth >= 0).sum(axis=1), k)
  ideal = np.cumsum(discount)[np.maximum(n_rel - 1, 0)] * (n_rel > 0)
  return np.where(ideal > 0, dcg / np.where(ideal > 0, ideal, 1.0), 0.0).astype(np.float32)


def summary(scores, items, available, weights, *, kind: str, k: int) -> dict[str, float]:
  """Weighted means over events: `nll_per_event` (nats), `hits_at_k`, `ndcg_at_k`."""
  w = np.asarray(weights, np.float64)
  total = max(w.sum(), 1e-12)
  nll = np.asarray(event_nll(jnp.asarray(scores, jnp.float32), jnp.asarray(items),
                             jnp.asarray(available), kind=kind), np.float64)
  return {
      "nll_per_event": float((nll * w).sum() / total),
      "hits_at_k": float((hits_at_k(scores, items, available, k) * w).sum() / total),
      "ndcg_at_k": float((ndcg_at_k(scores, items, available, k) * w).sum() / total),
      "events": int(len(w)),
  }
