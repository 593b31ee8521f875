"""Per-event metrics of item scores against observed events, as jit-able JAX.

Shapes. Every function takes a batch of events on the leading axis:

  scores     float[m, n]   item scores (log-weights) of each event
  items      int[m, k]     the observed list, best first for rankings, -1 padded
  available  bool[m, n]    the items that could be picked in each event

and returns float32[m] (one value per event) unless it says otherwise. The
*relevant* items of an event are its first `relevant` listed items (its
observed top-`relevant`); `relevant=None` takes the whole list (a set).
Unavailable items are never predicted and never count as relevant.

Ties. Every ranking metric (hits, precision, recall, NDCG, reciprocal rank)
counts ties in expectation over uniformly random tie-breaking among the
available items, never by item id. An available item with g available items
scored strictly above it and t available items (itself included) at its score
sits at a position uniform on g, ..., g + t - 1 (0-based), so a metric that
adds f(position) over items gets (F(g + t) - F(g)) / t per item, with
F(p) = Σ_{q<p} f(q). A scorer that gives every item the same score therefore
has expected hits@k = k |relevant| / n (k² / n when k items are relevant)
whatever the item ids, on rankings and sets alike. An item marked available
but scored -inf ranks last, tied with the other such items. `top_k_items` is
the one function that breaks ties by id: it is a concrete prediction (what
luce-predict writes), not a metric, and no metric uses it.

The NLL is the exact PL likelihood of `luce.losses.event_nll` (the ranking or
the set likelihood). `summary` reduces the per-event values to weighted means
with a bootstrap interval for the NLL.

    >>> import numpy as np
    >>> from luce import metrics
    >>> scores = np.zeros((1, 20), np.float32)     # a constant scorer, n = 20 items
    >>> items = np.array([[17, 3, 11, 0, 8]])      # the observed top-5
    >>> available = np.ones((1, 20), bool)
    >>> float(metrics.hits_at_k(scores, items, available, k=5)[0])   # k * k / n
    1.25
    >>> round(float(metrics.ndcg_at_k(scores, items, available, k=5)[0]), 6)  # k / n
    0.25
    >>> out = metrics.summary(scores, items, available, np.ones(1), kind="ranking", k=5)
    >>> out["hits_at_k"], out["events"]
    (1.25, 1)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from luce.errors import ConfigError, InputError, ShapeError
from luce.losses import KINDS, event_nll

# The likelihoods luce models report: the PL ranking and PL set likelihoods
# are computed exactly (no bound); a family that can only bound its NLL says so.
NLL_KINDS = ("exact", "bound")

# Bootstrap of `summary`'s NLL interval: resamples and seed (fixed: the
# interval of one table and one scorer is always the same).
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
# Most int64 resample indices drawn at once (32 MiB).
_BOOTSTRAP_CHUNK = 1 << 22


def check_events(scores, items, available) -> None:
  """Raise ShapeError unless scores [m, n], items [m, k] and available [m, n] agree."""
  s, i, a = np.shape(scores), np.shape(items), np.shape(available)
  if len(s) != 2 or len(i) != 2 or len(a) != 2:
    raise ShapeError(f"scores {s}, items {i} and available {a} must be 2-D: [events, items], "
                     f"[events, list length] and [events, items].")
  if s != a or s[0] != i[0]:
    raise ShapeError(f"scores {s}, items {i} and available {a} disagree: scores and available "
                     f"are [m, n] and items [m, k] for the same m events.")


def _check_k(k, name: str = "k") -> None:
  if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
    raise ConfigError(f"{name}={k!r}: the cut-off must be a positive integer (e.g. data.eval_k).")


def _check_kind(kind) -> None:
  if kind not in KINDS:
    raise ConfigError(f"event kind {kind!r}; luce models handle {KINDS} (a table of one kind).")


def _relevant_mask(items, n: int, relevant: int | None):
  """bool[m, n]: item j is among the event's first `relevant` listed items."""
  top = items if relevant is None else items[:, :relevant]
  idx = jnp.where(top >= 0, top, n)  # -1 padding: out of range, dropped
  rows = jnp.arange(top.shape[0])[:, None]
  return jnp.zeros((top.shape[0], n), bool).at[rows, idx].set(True, mode="drop")


def _masked(scores, available):
  return jnp.where(available, scores.astype(jnp.float32), -jnp.inf)


def _tie_groups(scores, available):
  """(g, t) float32[m, n]: for each item, the number g of available items
  scored strictly above it and the number t of available items tied with it
  (itself included). O(n log n) per event: one sort and two searchsorted.
  Meaningful for available items only."""
  n = scores.shape[1]
  masked = _masked(scores, available)

  def row(s):
    ordered = jnp.sort(s)
    return jnp.searchsorted(ordered, s, side="left"), jnp.searchsorted(ordered, s, side="right")

  left, right = jax.vmap(row)(masked)
  # Unavailable items sit at -inf; an available item scored -inf is not tied with them.
  unavailable = n - available.sum(axis=1, keepdims=True)
  tied = right - left - jnp.where(masked == -jnp.inf, unavailable, 0)
  return (n - right).astype(jnp.float32), jnp.maximum(tied, 1).astype(jnp.float32)


def _expected(cumulative, g, t):
  """E[f(position)] for a position uniform on g..g+t-1, from F(p) = Σ_{q<p} f(q)."""
  return (cumulative(g + t) - cumulative(g)) / t


def _top_k_share(scores, available, k: int):
  """float32[m, n]: P(item in the predicted top-k) under uniform tie-breaking:
  (min(g + t, k) - min(g, k)) / t; 0 for unavailable items. Fewer than k
  available items: every available item is in."""
  g, t = _tie_groups(scores, available)
  share = _expected(lambda p: jnp.minimum(p, k), g, t)
  return jnp.where(available, share, 0.0).astype(jnp.float32)


def top_k_items(scores, available, k: int):
  """int32[m, k]: the k available items with the highest scores, best first
  (-1 where an event has fewer than k available items with finite scores).

  A prediction, not a metric: it is the concrete top-k list luce-predict
  writes, so equal scores go to the lower item id (`jax.lax.top_k`). The
  metrics of this module never use it; they count ties in expectation.
  """
  _check_k(k)
  n = np.shape(scores)[-1]
  if k > n:
    raise ConfigError(f"k={k} exceeds the n={n} items of scores {np.shape(scores)}; "
                      f"ask for at most {n}.")
  values, idx = jax.lax.top_k(_masked(jnp.asarray(scores), jnp.asarray(available)), k)
  return jnp.where(jnp.isfinite(values), idx, -1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("kind",))
def nll(scores, items, available, *, kind: str):
  """float32[m]: -log P(event) in nats, exact (`luce.losses.event_nll`: the PL
  ranking likelihood, or the PL set likelihood for kind "set")."""
  check_events(scores, items, available)
  return event_nll(scores, items, available, kind=kind)


@functools.partial(jax.jit, static_argnames=("k", "relevant"))
def hits(scores, items, available, *, k: int, relevant: int | None = None):
  """float32[m]: E|predicted top-k ∩ relevant items| over random tie-breaking.

  relevant=None: every listed item (a set); an int r: the observed top-r
  (`hits_at_k` uses r = k). Uniform scores over n available items give
  k |relevant| / n.
  """
  check_events(scores, items, available)
  _check_k(k)
  rel = _relevant_mask(items, scores.shape[1], relevant)
  return (_top_k_share(scores, available, k) * rel).sum(axis=1).astype(jnp.float32)


def hits_at_k(scores, items, available, *, k: int):
  """float32[m]: E|predicted top-k ∩ observed top-k| (for sets of size k: the set)."""
  return hits(scores, items, available, k=k, relevant=k)


@functools.partial(jax.jit, static_argnames=("k", "relevant"))
def precision_at_k(scores, items, available, *, k: int, relevant: int | None = None):
  """float32[m]: E|predicted top-k ∩ relevant| / k."""
  return hits(scores, items, available, k=k, relevant=relevant) / k


@functools.partial(jax.jit, static_argnames=("k", "relevant"))
def recall_at_k(scores, items, available, *, k: int, relevant: int | None = None):
  """float32[m]: E|predicted top-k ∩ relevant| / |relevant available items|
  (0 for an event with none)."""
  check_events(scores, items, available)
  _check_k(k)
  rel = _relevant_mask(items, scores.shape[1], relevant) & available
  found = (_top_k_share(scores, available, k) * rel).sum(axis=1)
  size = rel.sum(axis=1)
  return jnp.where(size > 0, found / jnp.maximum(size, 1), 0.0).astype(jnp.float32)


@functools.partial(jax.jit, static_argnames=("k", "relevant"))
def ndcg_at_k(scores, items, available, *, k: int, relevant: int | None = None):
  """float32[m]: NDCG@k with binary relevance, ties in expectation.

  DCG = Σ_{j<k} rel(pred_j) / log2(j + 2). An available item with g items
  above it and t tied with it (itself included) has expected discount
  (C(g + t) - C(g)) / t, C(p) = Σ_{q < min(p, k)} 1 / log2(q + 2); the DCG is
  the sum over the relevant available items, divided by the DCG of the ideal
  list (all min(k, |relevant|) relevant items first); 0 when nothing
  available is relevant. Uniform scores over n >= k available items with k
  relevant give k / n. relevant=None: every listed item; an int r: the
  observed top-r (r = k for rankings, as `hits_at_k` and `summary`).
  """
  check_events(scores, items, available)
  _check_k(k)
  n = scores.shape[1]
  rel = _relevant_mask(items, n, relevant) & available
  discount = 1.0 / jnp.log2(jnp.arange(k, dtype=jnp.float32) + 2.0)
  total = jnp.concatenate([jnp.zeros(1, jnp.float32), jnp.cumsum(discount)])  # C(p), p = 0..k
  cumulative = lambda p: total[jnp.minimum(p, k).astype(jnp.int32)]
  g, t = _tie_groups(scores, available)
  dcg = jnp.where(rel, _expected(cumulative, g, t), 0.0).sum(axis=1)
  ideal = total[jnp.minimum(rel.sum(axis=1), k)]
  return jnp.where(ideal > 0, dcg / jnp.where(ideal > 0, ideal, 1.0), 0.0).astype(jnp.float32)


@jax.jit
def reciprocal_rank(scores, items, available):
  """float32[m]: 1 / (rank of the winner, items[:, 0], among the available items).

  Ties are broken uniformly at random and the expectation is returned: with g
  items scored above the winner and t items (the winner included) tied with
  it, E[1/rank] = (H(g + t) - H(g)) / t, H the harmonic numbers. Uniform
  scores over n items give H(n)/n. Events without a winner, or whose winner is
  unavailable, give 0. The mean over events is the MRR.
  """
  check_events(scores, items, available)
  winner = items[:, 0]
  s = _masked(scores, available)
  s_win = jnp.take_along_axis(s, jnp.maximum(winner, 0)[:, None], axis=1)
  greater = (available & (s > s_win)).sum(axis=1).astype(jnp.float32)
  tied = (available & (s == s_win)).sum(axis=1).astype(jnp.float32)
  harmonic = lambda x: jax.scipy.special.digamma(x + 1.0) + np.euler_gamma
  rr = (harmonic(greater + tied) - harmonic(greater)) / jnp.maximum(tied, 1.0)
  won = (winner >= 0) & jnp.take_along_axis(available, jnp.maximum(winner, 0)[:, None], axis=1)[:, 0]
  return jnp.where(won, rr, 0.0).astype(jnp.float32)


def _draw_mask(noisy, available, k: int):
  """bool[m, n]: the k available items of largest `noisy` (continuous: no ties)."""
  n = noisy.shape[1]
  values, idx = jax.lax.top_k(noisy, k)
  idx = jnp.where(jnp.isfinite(values), idx, n)
  rows = jnp.arange(noisy.shape[0])[:, None]
  return jnp.zeros(noisy.shape, bool).at[rows, idx].set(True, mode="drop") & available


@functools.partial(jax.jit, static_argnames=("k", "samples"))
def inclusion_probabilities(key, scores, available, *, k: int, samples: int = 256):
  """float32[m, n]: P(item i is in the PL top-k of the event), by Monte Carlo.

  Each sample is the top-k of scores + Gumbel noise over the available items
  (an exact PL draw); the estimate is the fraction of `samples` draws holding
  i (standard error ≤ 0.5 / sqrt(samples)). With k = 1 it is the softmax up to
  that noise. Unavailable items get 0.
  """
  _check_k(k)
  m, n = scores.shape
  if k > n:
    raise ConfigError(f"k={k} exceeds the n={n} items of scores {scores.shape}; ask for at most {n}.")
  masked = _masked(scores, available)

  def one(count, sample_key):
    g = jax.random.gumbel(sample_key, (m, n), jnp.float32)
    return count + _draw_mask(masked + g, available, k), None

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
  if np.shape(probs) != np.shape(outcomes) or np.shape(probs) != np.shape(where):
    raise ShapeError(f"probs {np.shape(probs)}, outcomes {np.shape(outcomes)} and where "
                     f"{np.shape(where)} must have the same shape.")
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


def _as_events(scores, items, available):
  check_events(scores, items, available)
  return (jnp.asarray(scores, jnp.float32), jnp.asarray(items, jnp.int32),
          jnp.asarray(available, bool))


def event_metrics(scores, items, available, *, kind: str, k: int) -> dict[str, np.ndarray]:
  """Every per-event metric of one model: name -> float64[m] (numpy).

  nll (nats, exact), hits, precision, recall and ndcg at k against the
  observed top-k (the whole set for sets), and rr (reciprocal rank of the
  winner; rankings only, NaN for sets, whose order is unknown).
  """
  _check_kind(kind)
  s, i, a = _as_events(scores, items, available)
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

  For sets the probabilities are of inclusion in a set of the event's own
  size, whatever `k` is (a set of 6 is compared with PL draws of 6, not of
  `k`); for rankings `k` is the top-k compared. `probs` (float[m, n]) replaces
  the PL Monte Carlo by a model's own inclusion probabilities (e.g. counted
  over a diffusion model's samples)."""
  _check_kind(kind)
  s, i, a = _as_events(scores, items, available)
  key = jax.random.key(0) if key is None else key
  if probs is None and kind == "set":
    sizes = np.asarray(jnp.sum(i >= 0, axis=1))
    parts = np.zeros(s.shape, np.float32)
    for size in np.unique(sizes[sizes > 0]):
      rows = np.flatnonzero(sizes == size)
      parts[rows] = np.asarray(inclusion_probabilities(jax.random.fold_in(key, int(size)), s[rows],
                                                       a[rows], k=int(size), samples=samples))
    probs = jnp.asarray(parts)
  elif probs is None:
    probs = inclusion_probabilities(key, s, a, k=k, samples=samples)
  else:
    probs = jnp.asarray(probs, jnp.float32)
    if probs.shape != s.shape:
      raise ShapeError(f"probs has shape {probs.shape}; it must match scores {s.shape}.")
  observed = _relevant_mask(i, s.shape[1], None if kind == "set" else k)
  out = calibration(probs, observed, a, bins=bins)
  return {name: (float(v) if np.ndim(v) == 0 else np.asarray(v, np.float64).tolist())
          for name, v in out.items()}


def _per_event(values, m: int, name: str) -> np.ndarray:
  v = np.asarray(values, np.float64)
  if v.shape != (m,):
    raise ShapeError(f"{name} has shape {v.shape}; it must be [m] = ({m},), one value per event "
                     f"of scores [m, n].")
  return v


def _bootstrap_ci(values: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
  """95% percentile interval of the weighted mean, events resampled with
  replacement (BOOTSTRAP_RESAMPLES draws of numpy default_rng(BOOTSTRAP_SEED))."""
  m = len(values)
  if m == 0:
    return (float("nan"), float("nan"))
  rng = np.random.default_rng(seed=BOOTSTRAP_SEED)
  rows = max(1, _BOOTSTRAP_CHUNK // m)
  means = []
  for start in range(0, BOOTSTRAP_RESAMPLES, rows):
    idx = rng.integers(0, m, (min(rows, BOOTSTRAP_RESAMPLES - start), m))
    w = weights[idx]
    means.append((values[idx] * w).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-12))
  lo, hi = np.quantile(np.concatenate(means), [0.025, 0.975])
  return (float(lo), float(hi))


def summary(scores, items, available, weights, *, kind: str, k: int, nll=None) -> dict:
  """Weighted means over events of the NLL, hits@k and NDCG@k of one scorer.

  Args:
    scores, items, available: the events (module docstring shapes).
    weights: float[m] >= 0 event weights; the means divide by their total
      (clamped at 1e-12).
    kind: "ranking" or "set"; the relevant items are the observed top-k for
      rankings and the whole listed set for sets (as `event_metrics`).
    k: the cut-off of hits and NDCG.
    nll: float[m] per-event NLL in nats to report instead of the PL NLL of
      `scores` (e.g. a model family's own exact NLL, or a bound).

  Returns:
    {"nll_per_event": nats, "hits_at_k", "ndcg_at_k" (ties in expectation),
    "events": m, "nll_ci95": (lo, hi) the 95% bootstrap interval of the
    weighted mean NLL (2000 resamples of events, seed 0; NaN for m = 0)},
    plain Python floats.
  """
  _check_kind(kind)
  _check_k(k)
  s, i, a = _as_events(scores, items, available)
  m = s.shape[0]
  w = _per_event(weights, m, "weights")
  if not (np.all(np.isfinite(w)) and np.all(w >= 0)):
    raise InputError("weights must be finite and >= 0 (one weight per event).")
  if nll is None:
    per_nll = np.asarray(event_nll(s, i, a, kind=kind), np.float64)
  else:
    per_nll = _per_event(nll, m, "nll")
  relevant = None if kind == "set" else k
  total = max(float(w.sum()), 1e-12)

  def mean(v):
    return float((np.asarray(v, np.float64) * w).sum() / total)

  return {
      "nll_per_event": mean(per_nll),
      "hits_at_k": mean(hits(s, i, a, k=k, relevant=relevant)),
      "ndcg_at_k": mean(ndcg_at_k(s, i, a, k=k, relevant=relevant)),
      "events": int(m),
      "nll_ci95": _bootstrap_ci(per_nll, w),
  }
