"""Per-event ranking metrics and calibration, as jit-able JAX functions.

Every function takes a batch of events on the leading axis:

  scores     float[m, n]   item scores (log-weights) of each event
  items      int[m, k]     the observed list, best first for rankings, -1 padded
  available  bool[m, n]    the items that could be picked in each event

and returns float32[m] (one value per event) unless it says otherwise. The
*relevant* items of an event are its first `relevant` listed items (its
observed top-`relevant`; for sets, pass None to use the whole set). Items with
equal scores are ordered by item id (`jax.lax.top_k` keeps the lower index),
except that hits, precision and recall count ties in expectation.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from luce.errors import ShapeError
from luce.eval_metrics import event_nll

# The likelihoods luce models report: the PL ranking and PL set likelihoods
# are computed exactly (no bound); a family that can only bound its NLL says so.
NLL_KINDS = ("exact", "bound")


def check_events(scores, items, available) -> None:
  """Raise ShapeError unless scores [m, n], items [m, k] and available [m, n] agree."""
  s, i, a = np.shape(scores), np.shape(items), np.shape(available)
  if len(s) != 2 or len(i) != 2 or len(a) != 2:
    raise ShapeError(f"scores {s}, items {i} and available {a} must be 2-D: [events, items], "
                     f"[events, list length] and [events, items].")
  if s != a or s[0] != i[0]:
    raise ShapeError(f"scores {s}, items {i} and available {a} disagree: scores and available "
                     f"are [m, n] and items [m, k] for the same m events.")


def _relevant_mask(items, n: int, relevant: int | None):
  """bool[m, n]: item j is among the event's first `relevant` listed items."""
  top = items if relevant is None else items[:, :relevant]
  onehot = (top[:, :, None] == jnp.arange(n)[None, None, :]) & (top[:, :, None] >= 0)
  return onehot.any(axis=1)


def top_k_items(scores, available, k: int):
  """int32[m, k]: the k available items with the highest scores, best first
  (-1 where an event has fewer than k available items)."""
  masked = jnp.where(available, scores.astype(jnp.float32), -jnp.inf)
  values, idx = jax.lax.top_k(masked, k)
  return jnp.where(jnp.isfinite(values), idx, -1).astype(jnp.int32)


def _top_k_mask(scores, available, k: int):
  n = scores.shape[1]
  idx = top_k_items(scores, available, k)
  return ((idx[:, :, None] == jnp.arange(n)[None, None, :]) & (idx[:, :, None] >= 0)).any(axis=1)


def _top_k_share(scores, available, k: int):
  """float32[m, n]: P(item in the predicted top-k) when ties are broken uniformly
  at random: 1 above the k-th score, (k - #above) / #tied at it, else 0."""
  masked = jnp.where(available, scores.astype(jnp.float32), -jnp.inf)
  kth = jax.lax.top_k(masked, k)[0][:, -1:]
  above = available & (masked > kth)
  tied = available & (masked == kth)
  share = (k - above.sum(axis=1, keepdims=True)) / jnp.maximum(tied.sum(axis=1, keepdims=True), 1)
  # Fewer than k available items: the k-th score is -inf and every available item is in.
  return jnp.where(jnp.isfinite(kth), above + tied * share, available).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("kind",))
def nll(scores, items, available, *, kind: str):
  """float32[m]: -log P(event) in nats, exact (`luce.eval_metrics.event_nll`:
  the PL ranking likelihood, or the PL set likelihood for kind "set")."""
  return event_nll(scores, items, available, kind=kind)


@functools.partial(jax.jit, static_argnames=("k", "relevant"))
def hits(scores, items, available, *, k: int, relevant: int | None = None):
  """float32[m]: |predicted top-k ∩ relevant items|; relevant=None: every listed
  item (a set), an int r: the observed top-r (default for rankings: r = k via
  `hits_at_k`). Ties at the k-th score count in expectation over random
  tie-breaking (uniform scores over n items: k |relevant| / n)."""
  rel = _relevant_mask(items, scores.shape[1], relevant)
  return (_top_k_share(scores, available, k) * rel).sum(axis=1).astype(jnp.float32)


def hits_at_k(scores, items, available, *, k: int):
  """float32[m]: |predicted top-k ∩ observed top-k| (for sets of size k: the set)."""
  return hits(scores, items, available, k=k, relevant=k)


@functools.partial(jax.jit, static_argnames=("k", "relevant"))
def precision_at_k(scores, items, available, *, k: int, relevant: int | None = None):
  """float32[m]: |predicted top-k ∩ relevant| / k."""
  return hits(scores, items, available, k=k, relevant=relevant) / k


@functools.partial(jax.jit, static_argnames=("k", "relevant"))
def recall_at_k(scores, items, available, *, k: int, relevant: int | None = None):
  """float32[m]: |predicted top-k ∩ relevant| / |relevant| (0 for an empty list)."""
  rel = _relevant_mask(items, scores.shape[1], relevant) & available
  found = (_top_k_share(scores, available, k) * rel).sum(axis=1)
  size = rel.sum(axis=1)
  return jnp.where(size > 0, found / jnp.maximum(size, 1), 0.0).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("k", "relevant"))
def ndcg_at_k(scores, items, available, *, k: int, relevant: int | None = None):
  """float32[m]: NDCG@k with binary relevance (ties ordered by item id).

  DCG = Σ_{j<k} rel(pred_j) / log2(j + 2), divided by the DCG of the ideal list
  (all min(k, |relevant|) relevant items first); 0 when nothing is relevant.
  """
  n = scores.shape[1]
  rel = _relevant_mask(items, n, relevant) & available
  pred = top_k_items(scores, available, k)
  gain = jnp.take_along_axis(rel, jnp.maximum(pred, 0), axis=1) & (pred >= 0)
  discount = 1.0 / jnp.log2(jnp.arange(k) + 2.0)
  dcg = (gain * discount).sum(axis=1)
  n_rel = jnp.minimum(rel.sum(axis=1), k)
  ideal = jnp.where(jnp.arange(k)[None, :] < n_rel[:, None], discount, 0.0).sum(axis=1)
  return jnp.where(ideal > 0, dcg / jnp.where(ideal > 0, ideal, 1.0), 0.0).astype(jnp.float32)


@jax.jit
def reciprocal_rank(scores, items, available):
  """float32[m]: 1 / (rank of the winner, items[:, 0], among the available items).

  Ties are broken uniformly at random and the expectation is returned: with g
  items scored above the winner and t items (the winner included) tied with
  it, E[1/rank] = (H(g + t) - H(g)) / t, H the harmonic numbers. Uniform
  scores over n items give H(n)/n. Events without a winner give 0. The mean
  over events is the MRR.
  """
  winner = items[:, 0]
  s = jnp.where(available, scores.astype(jnp.float32), -jnp.inf)
  s_win = jnp.take_along_axis(s, jnp.maximum(winner, 0)[:, None], axis=1)
  greater = (s > s_win).sum(axis=1).astype(jnp.float32)
  tied = (s == s_win).sum(axis=1).astype(jnp.float32)
  harmonic = lambda x: jax.scipy.special.digamma(x + 1.0) + np.euler_gamma
  rr = (harmonic(greater + tied) - harmonic(greater)) / jnp.maximum(tied, 1.0)
  return jnp.where((winner >= 0) & jnp.isfinite(s_win[:, 0]), rr, 0.0).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("k", "samples"))
def inclusion_probabilities(key, scores, available, *, k: int, samples: int = 256):
  """float32[m, n]: P(item i is in the PL top-k of the event), by Monte Carlo.

  Each sample is the top-k of scores + Gumbel noise over the available items
  (an exact PL draw); the estimate is the fraction of `samples` draws holding
  i (standard error ≤ 0.5 / sqrt(samples)). With k = 1 it is the softmax up to
  that noise. Unavailable items get 0.
  """
  m, n = scores.shape
  masked = jnp.where(available, scores.astype(jnp.float32), -jnp.inf)

  def one(count, sample_key):
    g = jax.random.gumbel(sample_key, (m, n), jnp.float32)
    return count + _top_k_mask(masked + g, available, k), None

  count, _ = jax.lax.scan(one, jnp.zeros((m, n), jnp.float32), jax.random.split(key, samples))
  return count / samples


@functools.partial(jax.jit, static_argnames=("bins",))
def calibration(probs, outcomes, where, *, bins: int = 10):
  """Calibration of predicted inclusion probabilities against what happened.

  Args:
    probs: float[...] predicted probabilities in [0, 1].
    outcomes: bool/float[...] 1 where the item was in the observed set.
    where: bool[...] the entries to count (available items).
    bins: equal-width bins of [0, 1]; p falls in bin min(floor(p * bins), bins - 1)
      (sklearn's `calibration_curve(strategy="uniform")` bins).

  Returns:
    {"ece": Σ_b (n_b / N) |mean p_b - mean y_b|, "brier": mean (p - y)^2,
     "mean_predicted": float32[bins], "observed": float32[bins],
     "count": float32[bins]} (empty bins: mean_predicted and observed 0).
  """
  p = probs.astype(jnp.float32).reshape(-1)
  y = outcomes.astype(jnp.float32).reshape(-1)
  w = where.astype(jnp.float32).reshape(-1)
  b = jnp.clip(jnp.floor(p * bins).astype(jnp.int32), 0, bins - 1)
  count = jax.ops.segment_sum(w, b, bins)
  sum_p = jax.ops.segment_sum(w * p, b, bins)
  sum_y = jax.ops.segment_sum(w * y, b, bins)
  total = jnp.maximum(w.sum(), 1.0)
  safe = jnp.maximum(count, 1.0)
  mean_p, obs = jnp.where(count > 0, sum_p / safe, 0.0), jnp.where(count > 0, sum_y / safe, 0.0)
  return {"ece": (count / total * jnp.abs(mean_p - obs)).sum(),
          "brier": (w * (p - y) ** 2).sum() / total,
          "mean_predicted": mean_p, "observed": obs, "count": count}


def event_metrics(scores, items, available, *, kind: str, k: int) -> dict[str, np.ndarray]:
  """Every per-event metric of one model: name -> float64[m] (numpy).

  nll (nats, exact), hits, precision, recall and ndcg at k against the
  observed top-k (the whole set for sets), and rr (reciprocal rank of the
  winner; rankings only, NaN for sets, whose order is unknown).
  """
  check_events(scores, items, available)
  s, i, a = jnp.asarray(scores, jnp.float32), jnp.asarray(items, jnp.int32), jnp.asarray(available, bool)
  relevant = None if kind == "set" else k
  out = {
      "nll": nll(s, i, a, kind=kind),
      "hits": hits(s, i, a, k=k, relevant=relevant),
      "precision": precision_at_k(s, i, a, k=k, relevant=relevant),
      "recall": recall_at_k(s, i, a, k=k, relevant=relevant),
      "ndcg": ndcg_at_k(s, i, a, k=k, relevant=relevant),
  }
  out = {name: np.asarray(v, np.float64) for name, v in out.items()}
  out["rr"] = (np.asarray(reciprocal_rank(s, i, a), np.float64) if kind == "ranking"
               else np.full(len(out["nll"]), np.nan))
  return out


def calibration_of(scores, items, available, *, kind: str, k: int, key=None, samples: int = 256,
                   bins: int = 10, probs=None) -> dict:
  """Calibration (see `calibration`) of the PL top-k inclusion probabilities of
  `scores` against the observed top-k (the set, for sets), as numpy/floats.
  `probs` (float[B, n]) replaces the PL Monte Carlo by a model's own inclusion
  probabilities (e.g. counted over a diffusion model's samples)."""
  check_events(scores, items, available)
  key = jax.random.key(0) if key is None else key
  s, a = jnp.asarray(scores, jnp.float32), jnp.asarray(available, bool)
  i = jnp.asarray(items, jnp.int32)
  if probs is None:
    probs = inclusion_probabilities(key, s, a, k=k, samples=samples)
  else:
    probs = jnp.asarray(probs, jnp.float32)
    if probs.shape != s.shape:
      raise ShapeError(f"probs has shape {probs.shape}; it must match scores {s.shape}.")
  observed = _relevant_mask(i, s.shape[1], None if kind == "set" else k)
  out = calibration(probs, observed, a, bins=bins)
  return {name: (float(v) if np.ndim(v) == 0 else np.asarray(v, np.float64).tolist())
          for name, v in out.items()}
