"""Sample quality metrics for k-sets: validity, inclusion calibration,
co-occurrence MMD and the pairwise-overlap histogram.

NumPy in, floats and arrays out; samples are int[..., k] item ids.
"""

from __future__ import annotations

import math

import numpy as np


def _indicators(sets, n):
  """float64[m, n] 0/1 rows: which items each set holds (-1 and out-of-range ignored)."""
  sets = np.asarray(sets).reshape(-1, np.shape(sets)[-1])
  x = np.zeros((len(sets), n))
  rows = np.repeat(np.arange(len(sets)), sets.shape[1])
  ids = sets.reshape(-1)
  ok = (ids >= 0) & (ids < n)
  x[rows[ok], ids[ok]] = 1.0
  return x


def validity_rate(samples, n, k, *, available=None, groups=None, quotas=None) -> float:
  """Fraction of samples that are k distinct item ids in [0, n), all
  available, meeting every group's (min, max) quota.

  Args:
    samples: int[m, k]; available: optional bool[n] or bool[m, n];
    groups: optional int[n]; quotas: optional int[G, 2].
  """
  s = np.asarray(samples)
  ok = (s.shape[-1] == k) & np.all((s >= 0) & (s < n), axis=-1)
  srt = np.sort(s, axis=-1)
  ok &= np.all(srt[:, 1:] != srt[:, :-1], axis=-1)
  safe = np.clip(s, 0, n - 1)
  if available is not None:
    avail = np.broadcast_to(np.asarray(available, bool), (len(s), n))
    ok &= np.all(np.take_along_axis(avail, safe, axis=-1), axis=-1)
  if quotas is not None:
    q = np.asarray(quotas)
    g = np.asarray(groups)[safe]
    count = np.stack([(g == i).sum(axis=-1) for i in range(len(q))], axis=-1)
    ok &= np.all((count >= q[:, 0]) & (count <= q[:, 1]), axis=-1)
  return float(np.mean(ok)) if len(s) else 1.0


def inclusion_from_samples(samples, n):
  """float64[m, n]: P(i in S) per event estimated from int[m, s, k] samples."""
  s = np.asarray(samples)
  m, count, k = s.shape
  return _indicators(s.reshape(m * count, k), n).reshape(m, count, n).mean(axis=1)


def inclusion_calibration(predicted, observed, *, bins: int = 10) -> dict:
  """Calibration of inclusion probabilities against the observed sets.

  Args:
    predicted: float[m, n] P(i in S_t) per event (e.g. `inclusion_from_samples`).
    observed: int[m, k] the observed sets.
    bins: equal-width probability bins.

  Returns:
    {"ece": expected calibration error (mean |observed rate - predicted| over
    items, weighted by bin size), "brier": mean squared error of the
    indicators, "bins": list of (mean predicted, observed rate, count)}.
  """
  p = np.asarray(predicted, np.float64)
  y = _indicators(observed, p.shape[-1])
  p, y = p.reshape(-1), y.reshape(-1)
  which = np.minimum((p * bins).astype(int), bins - 1)
  table, ece = [], 0.0
  for b in range(bins):
    sel = which == b
    if sel.any():
      table.append((float(p[sel].mean()), float(y[sel].mean()), int(sel.sum())))
      ece += sel.sum() * abs(p[sel].mean() - y[sel].mean())
  return {"ece": float(ece / len(p)), "brier": float(np.mean((p - y) ** 2)), "bins": table}


def cooccurrence_mmd(samples, reference, n) -> float:
  """Unbiased MMD^2 between two sets of k-sets with the kernel |S ∩ S'|^2.

  |S ∩ S'|^2 = <x x^T, x' x'^T> for the indicator vectors x, so the kernel's
  mean embedding is the co-occurrence matrix C = E[x x^T] (diagonal: the
  inclusion rates) and MMD^2 = ||C_X - C_Y||_F^2 minus the diagonal (same
  sample) terms: O((a + b) n^2), no a x b Gram matrix. 0 in expectation when
  both come from one distribution; it can be slightly negative.

  Args:
    samples: int[a, k]; reference: int[b, k] (e.g. held-out events); n: items.
  """
  def parts(sets):
    x = _indicators(sets, n)
    c = x.T @ x                                   # sum of x x^T
    self_k = np.sum(x.sum(axis=1) ** 2)           # sum over the sets of K(S, S) = |S|^2
    return c, self_k, len(x)
  cx, sx, a = parts(samples)
  cy, sy, b = parts(reference)
  kxx = (np.sum(cx * cx) - sx) / (a * (a - 1))
  kyy = (np.sum(cy * cy) - sy) / (b * (b - 1))
  kxy = np.sum(cx * cy) / (a * b)
  return float(kxx + kyy - 2 * kxy)


def overlap_histogram(samples, n, k, *, pairs: int | None = None, seed: int = 0) -> dict:
  """Histogram of |S ∩ S'| over pairs of distinct samples vs the hypergeometric.

  For two independent uniform k-subsets of n items,
  P(|S ∩ S'| = j) = C(k, j) C(n - k, k - j) / C(n, k). Overlaps above that
  law mean samples cluster (mode collapse); below, they spread too evenly.

  Args:
    samples: int[m, k]; n, k: items and set size.
    pairs: how many random pairs (None: all m (m - 1) / 2 pairs).

  Returns:
    {"observed": float[k + 1] frequencies, "expected": float[k + 1]
    hypergeometric, "pairs": count, "chi2": sum (O - E)^2 / E over counts}.
  """
  x = _indicators(samples, n)
  m = len(x)
  if pairs is None:
    overlap = (x @ x.T)[np.triu_indices(m, 1)]
  else:
    rng = np.random.default_rng(seed)
    i = rng.integers(0, m, pairs)
    j = (i + rng.integers(1, m, pairs)) % m
    overlap = np.sum(x[i] * x[j], axis=1)
  counts = np.bincount(overlap.astype(int), minlength=k + 1)[:k + 1].astype(float)
  expected = np.array([math.comb(k, j) * math.comb(n - k, k - j) for j in range(k + 1)],
                      float) / math.comb(n, k)
  total = counts.sum()
  e = expected * total
  chi2 = float(np.sum(np.where(e > 0, (counts - e) ** 2 / np.where(e > 0, e, 1), 0.0)))
  return {"observed": counts / max(total, 1), "expected": expected, "pairs": int(total),
          "chi2": chi2}
