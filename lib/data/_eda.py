"""Exploratory numbers of an event table, tested against the uniform null.

Every function returns numbers (dataclasses of numpy arrays and floats); the
`luce-eda` launcher draws them. The uniform null: each event picks its k items
uniformly among the items available to it (a fair lottery; a race whose
finishing order is a random permutation of its entrants).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from luce._lazy import LazyModule
from luce.data._table import EventTable

special, stats = LazyModule("scipy.special"), LazyModule("scipy.stats")
_vq = LazyModule("scipy.cluster.vq")


@dataclasses.dataclass(frozen=True)
class ChiSquare:
  """A chi-square goodness-of-fit test: observed vs expected counts per bin."""
  name: str
  bins: tuple[str, ...]
  observed: np.ndarray
  expected: np.ndarray
  statistic: float
  dof: int
  p_value: float
  note: str = ""


def chi_square(name: str, bins, observed, expected, *, min_expected: float = 5.0,
               note: str = "") -> ChiSquare:
  """Chi-square test, merging neighbouring bins until each expects >= min_expected.

  Bins with zero expectation must have zero observations (else p = 0).
  """
  observed = np.asarray(observed, dtype=np.float64)
  expected = np.asarray(expected, dtype=np.float64)
  bins = tuple(str(b) for b in bins)
  # Merge left to right; a short tail joins the last full bin.
  groups, acc_o, acc_e, acc_b = [], 0.0, 0.0, []
  for b, o, e in zip(bins, observed, expected):
    acc_o, acc_e = acc_o + o, acc_e + e
    acc_b.append(b)
    if acc_e >= min_expected:
      groups.append([acc_b, acc_o, acc_e])
      acc_o, acc_e, acc_b = 0.0, 0.0, []
  if acc_b:
    if groups:
      groups[-1][0] += acc_b
      groups[-1][1] += acc_o
      groups[-1][2] += acc_e
    else:
      groups.append([acc_b, acc_o, acc_e])
  o = np.array([g[1] for g in groups])
  e = np.array([g[2] for g in groups])
  if len(groups) < 2:
    return ChiSquare(name, bins, observed, expected, 0.0, 0, 1.0, note + " (too few counts to test)")
  statistic = float(np.sum((o - e) ** 2 / e))
  dof = len(groups) - 1
  return ChiSquare(name, bins, observed, expected, statistic, dof,
                   float(stats.chi2.sf(statistic, dof)), note)


def _inclusion_probability(table: EventTable) -> np.ndarray:
  """float64[m, n]: P(item in event) under the uniform null: k_t / |A_t| on A_t."""
  avail = table.available_mask()
  size = avail.sum(axis=1)
  return avail * (table.lengths() / np.maximum(size, 1))[:, None]


def item_frequencies(table: EventTable) -> ChiSquare:
  """How often each item is picked, against the uniform expectation (chi-square).

  Expected count of item i: sum over events of k_t / |A_t| where i is available.
  """
  observed = table.inclusion_matrix().sum(axis=0)
  expected = _inclusion_probability(table).sum(axis=0)
  keep = expected > 0
  labels = np.asarray(table.catalog.labels)
  statistic = float(np.sum((observed[keep] - expected[keep]) ** 2 / expected[keep]))
  dof = int(keep.sum()) - 1
  return ChiSquare("item frequency", tuple(labels), observed.astype(np.float64), expected,
                   statistic, dof, float(stats.chi2.sf(statistic, dof)),
                   "one bin per item; expected = sum of k/|available| over events")


@dataclasses.dataclass(frozen=True)
class WinRates:
  """Rankings: wins, starts, mean position per item, and the test of wins vs uniform."""
  wins: np.ndarray            # int64[n] events the item ranked first
  starts: np.ndarray          # int64[n] events the item was available
  expected_wins: np.ndarray   # float64[n] sum of 1/|A_t| over its events
  mean_position: np.ndarray   # float64[n] mean 1-based position where ranked (NaN never)
  mean_percentile: np.ndarray # float64[n] mean (position-1)/(|list|-1); 0 = first
  test: ChiSquare

  @property
  def win_rate(self) -> np.ndarray:
    return np.where(self.starts > 0, self.wins / np.maximum(self.starts, 1), np.nan)


def win_rates(table: EventTable) -> WinRates:
  """Win counts against uniform winners among the available items (chi-square)."""
  items = table.items_array()
  n = table.n_items
  wins = np.bincount(items[:, 0][items[:, 0] >= 0], minlength=n)
  avail = table.available_mask()
  starts = avail.sum(axis=0)
  expected = (avail / np.maximum(avail.sum(axis=1), 1)[:, None]).sum(axis=0)
  values, offsets = table.items_flat()
  lengths = np.diff(offsets)
  position = np.arange(len(values)) - np.repeat(offsets[:-1], lengths)
  count = np.bincount(values, minlength=n)
  pos_sum = np.bincount(values, weights=position + 1, minlength=n)
  pct = position / np.maximum(np.repeat(lengths, lengths) - 1, 1)
  pct_sum = np.bincount(values, weights=pct, minlength=n)
  with np.errstate(invalid="ignore", divide="ignore"):
    mean_pos = np.where(count > 0, pos_sum / np.maximum(count, 1), np.nan)
    mean_pct = np.where(count > 0, pct_sum / np.maximum(count, 1), np.nan)
  keep = expected > 0
  statistic = float(np.sum((wins[keep] - expected[keep]) ** 2 / expected[keep]))
  dof = int(keep.sum()) - 1
  test = ChiSquare("wins", tuple(table.catalog.labels), wins.astype(np.float64), expected,
                   statistic, dof, float(stats.chi2.sf(statistic, dof)),
                   "one bin per item; expected wins = sum of 1/|entrants| over its events")
  return WinRates(wins, starts, expected, mean_pos, mean_pct, test)


@dataclasses.dataclass(frozen=True)
class CoOccurrence:
  """Pair counts against the uniform (hypergeometric) expectation."""
  observed: np.ndarray       # float64[n, n] events holding both items (diagonal 0)
  expected: np.ndarray       # float64[n, n]
  statistic: float           # sum over pairs i<j of (O - E)^2 / E
  dispersion: float          # statistic / number of pairs (about 1 under the null)
  max_z: float               # largest |O - E| / sqrt(E) over pairs
  max_pair: tuple[int, int]
  min_pair_p: float          # smallest two-sided binomial p-value of one pair
  p_bonferroni: float        # min_pair_p times the number of pairs (capped at 1)
  p_value: float             # Monte Carlo p-value of `statistic` under the null
  n_sims: int


def _simulate_inclusion(table: EventTable, rng: np.random.Generator) -> np.ndarray:
  """bool[m, n]: a table of the same sizes and availabilities drawn uniformly."""
  avail = table.available_mask()
  keys = np.where(avail, rng.random(avail.shape, dtype=np.float32), 2.0)
  kth = np.sort(keys, axis=1)[np.arange(len(keys)), np.maximum(table.lengths() - 1, 0)]
  return (keys <= kth[:, None]) & avail


def _pair_counts(inc: np.ndarray) -> np.ndarray:
  x = inc.astype(np.float32)
  c = (x.T @ x).astype(np.float64)
  np.fill_diagonal(c, 0)
  return c


def _pair_expectation(table: EventTable) -> np.ndarray:
  avail = table.available_mask().astype(np.float64)
  size = avail.sum(axis=1)
  k = table.lengths()
  w = k * (k - 1) / np.maximum(size * (size - 1), 1)
  e = (avail * w[:, None]).T @ avail
  np.fill_diagonal(e, 0)
  return e


def _pair_statistic(observed, expected) -> float:
  iu = np.triu_indices_from(observed, 1)
  e = expected[iu]
  keep = e > 0
  return float(np.sum((observed[iu][keep] - e[keep]) ** 2 / e[keep]))


def pair_cooccurrence(table: EventTable, *, n_sims: int = 200, seed: int = 0) -> CoOccurrence:
  """Pair co-occurrence vs the hypergeometric expectation k(k-1)/(n(n-1)) per event.

  The per-pair p-values are exact binomial when every event picks k of the same
  n items; the overall p-value is Monte Carlo (uniform tables with the same
  sizes and availabilities), as pair counts are not independent.
  """
  observed = _pair_counts(table.inclusion_matrix())
  expected = _pair_expectation(table)
  statistic = _pair_statistic(observed, expected)
  iu = np.triu_indices_from(observed, 1)
  o, e = observed[iu], expected[iu]
  with np.errstate(divide="ignore", invalid="ignore"):
    z = np.where(e > 0, (o - e) / np.sqrt(e), 0)
  j = int(np.argmax(np.abs(z)))
  m = len(table)
  fixed = table.k is not None and not table.has_availability()
  if fixed:
    p = e / m
    pair_p = np.minimum(1.0, 2 * np.minimum(stats.binom.cdf(o, m, p), stats.binom.sf(o - 1, m, p)))
  else:
    pair_p = 2 * stats.norm.sf(np.abs(z))
  rng = np.random.default_rng(seed)
  # Each simulation costs an [n, m] x [m, n] product: cap the total work.
  n_sims = int(min(n_sims, max(20, 2e10 // max(m * len(observed) ** 2, 1))))
  sims = np.array([_pair_statistic(_pair_counts(_simulate_inclusion(table, rng)), expected)
                   for _ in range(n_sims)])
  p_value = float((1 + np.sum(sims >= statistic)) / (1 + n_sims))
  n_pairs = int((e > 0).sum())
  return CoOccurrence(observed, expected, statistic, statistic / max(n_pairs, 1), float(abs(z[j])),
                      (int(iu[0][j]), int(iu[1][j])), float(pair_p.min()),
                      float(min(1.0, pair_p.min() * n_pairs)), p_value, n_sims)


def _labels_as_numbers(table: EventTable) -> np.ndarray:
  numeric = table.catalog.numeric_labels()
  return numeric if numeric is not None else np.arange(1, table.n_items + 1)


def fixed_buckets(table: EventTable, size: int = 10) -> ChiSquare:
  """Picks per fixed label range (1-10, 11-20, ...) against the uniform expectation."""
  labels = _labels_as_numbers(table)
  lo = labels.min()
  bucket = (labels - lo) // size
  n_buckets = int(bucket.max()) + 1
  observed = np.bincount(bucket, weights=table.inclusion_matrix().sum(axis=0), minlength=n_buckets)
  expected = np.bincount(bucket, weights=_inclusion_probability(table).sum(axis=0), minlength=n_buckets)
  names = [f"{lo + b * size}-{min(lo + (b + 1) * size - 1, labels.max())}" for b in range(n_buckets)]
  return chi_square(f"picks per bucket of {size}", names, observed, expected,
                    note="fixed ranges of the item labels")


@dataclasses.dataclass(frozen=True)
class Clusters:
  """Items grouped by their co-occurrence residuals (sets) or rank profiles (rankings)."""
  basis: str                 # "co-occurrence" or "rank profile"
  labels: np.ndarray         # int64[n] cluster of each item (-1: never available)
  score: float               # sets: observed / expected pair count inside clusters;
                             # rankings: share of rank-profile variance between clusters
  p_value: float             # share of uniform tables whose clusters score as high
  n_sims: int


def _cluster(profile: np.ndarray, n_clusters: int, seed: int) -> np.ndarray:
  profile = profile - profile.mean(axis=0)
  _, labels = _vq.kmeans2(profile, n_clusters, seed=seed, minit="++")
  return labels


def _within_lift(observed, expected, labels) -> float:
  same = (labels[:, None] == labels[None, :]) & (labels[:, None] >= 0)
  np.fill_diagonal(same, False)
  return float(observed[same].sum() / max(expected[same].sum(), 1e-12))


def learned_clusters(table: EventTable, n_clusters: int = 5, *, n_sims: int = 30,
                     seed: int = 0) -> Clusters:
  """k-means clusters of items, and whether they mean anything.

  Sets: each item's profile is its row of standardised pair residuals
  (O - E)/sqrt(E). Rankings: its mean rank score per block of events. The
  within-cluster lift of pair counts is compared with the lifts of clusters
  learned the same way on uniform tables (Monte Carlo p-value): clusters found
  in noise lift too, so only a lift beyond theirs says something. For rankings
  the score is the share of profile variance between clusters instead.
  """
  expected = _pair_expectation(table)
  rng = np.random.default_rng(seed)
  ranking = table.kind != "set"

  def profile(inc: np.ndarray, scores: np.ndarray | None) -> np.ndarray:
    if ranking:
      blocks = np.array_split(np.arange(len(inc)), min(20, len(inc)))
      return np.stack([scores[b].mean(axis=0) for b in blocks], axis=1)
    obs = _pair_counts(inc)
    with np.errstate(divide="ignore", invalid="ignore"):
      return np.where(expected > 0, (obs - expected) / np.sqrt(expected), 0)

  def fit(inc, scores):
    prof = profile(inc, scores)
    labels = _cluster(prof, n_clusters, int(rng.integers(2**31)))
    if not ranking:
      return _within_lift(_pair_counts(inc), expected, labels), labels
    centred = prof - prof.mean(axis=0)
    between = sum(len(c) * np.sum(centred[labels == j].mean(axis=0) ** 2)
                  for j in np.unique(labels) for c in [np.flatnonzero(labels == j)])
    return float(between / max(np.sum(centred ** 2), 1e-12)), labels

  from luce.data._features import rank_scores
  inc = table.inclusion_matrix()
  score, labels = fit(inc, rank_scores(table) if ranking else None)
  sims = []
  for _ in range(n_sims):
    sim_inc = _simulate_inclusion(table, rng)
    sim_scores = None
    if ranking:  # a uniform random order of the simulated picks
      sim_scores = sim_inc * rng.random(sim_inc.shape)
    sims.append(fit(sim_inc, sim_scores)[0])
  p_value = float((1 + np.sum(np.array(sims) >= score)) / (1 + n_sims))
  return Clusters("rank profile" if ranking else "co-occurrence", labels, score, p_value, n_sims)


# ---- patterns of numbered draws ----------------------------------------------------

def _hypergeom_test(name: str, counts: np.ndarray, n: int, n_marked: int, k: int, note: str) -> ChiSquare:
  values = np.arange(k + 1)
  observed = np.bincount(counts, minlength=k + 1)[:k + 1]
  expected = len(counts) * stats.hypergeom.pmf(values, n, n_marked, k)
  return chi_square(name, values, observed, expected, note=note)


def _simulate_draws(n: int, k: int, size: int, rng) -> np.ndarray:
  """int[size, k] uniform k-subsets of 0..n-1, sorted."""
  keys = rng.random((size, n), dtype=np.float32)
  return np.sort(np.argpartition(keys, k - 1, axis=1)[:, :k], axis=1)


@dataclasses.dataclass(frozen=True)
class SumTest:
  """Sum of the picked labels per event: mean z-test and KS test vs simulated draws."""
  sums: np.ndarray
  null_mean: float
  null_sd: float
  z: float
  p_mean: float
  ks_statistic: float
  p_ks: float
  null_sample: np.ndarray


def consecutive_pairs_pmf(n: int, k: int) -> np.ndarray:
  """float64[k]: P(r adjacent pairs (j, j+1)) among a uniform k-subset of 1..n, r = 0..k-1.

  A k-subset with r successions is a choice of which r of its k-1 gaps are 1
  (C(k-1, r)) and a placement of its k - r runs among n - k + 1 slots
  (C(n-k+1, k-r)); the counts sum to C(n, k) (Vandermonde).
  """
  r = np.arange(k)
  log = (special.gammaln(k) - special.gammaln(r + 1) - special.gammaln(k - r)
         + special.gammaln(n - k + 2) - special.gammaln(k - r + 1) - special.gammaln(n - 2 * k + r + 2)
         - (special.gammaln(n + 1) - special.gammaln(k + 1) - special.gammaln(n - k + 1)))
  feasible = (k - r) <= (n - k + 1)
  return np.where(feasible, np.exp(np.where(feasible, log, 0.0)), 0.0)


def holm(p_values: dict[str, float], alpha: float = 0.01) -> tuple[dict[str, float], list[str]]:
  """Holm's step-down correction: (adjusted p-value of each test, the tests rejected at
  `alpha`, most significant first). NaN p-values are left out."""
  names = [name for name, p in p_values.items() if not math.isnan(p)]
  order = sorted(names, key=lambda name: p_values[name])
  adjusted, running = {}, 0.0
  for i, name in enumerate(order):
    running = max(running, min(1.0, (len(order) - i) * p_values[name]))
    adjusted[name] = running
  return adjusted, [name for name in order if adjusted[name] <= alpha]


def pattern_tests(table: EventTable, *, gap_bins: int = 25, n_null: int = 100_000,
                  seed: int = 0) -> dict[str, object]:
  """Patterns of numbered k-of-n draws under the uniform null, with p-values.

  Needs a fixed k and no availability list (a lottery). Returns::

    odd: ChiSquare of the number of odd labels per draw (hypergeometric null);
    low: ChiSquare of labels in the lower half (hypergeometric null);
    sum: SumTest of the sum of labels;
    consecutive: ChiSquare of adjacent-label pairs per draw (simulated null);
    gaps: ChiSquare of events since each pick was last picked (geometric null,
      p = k/n, over draws t >= gap_bins so every gap up to the last bin is seen).
  """
  k, n = table.k, table.n_items
  if k is None or table.has_availability():
    raise ValueError("pattern_tests needs draws of a fixed k from all n items.")
  labels = _labels_as_numbers(table)
  items = table.items_array()
  picked = np.sort(labels[items], axis=1)
  rng = np.random.default_rng(seed)
  out: dict[str, object] = {}
  odd = labels % 2 == 1
  out["odd"] = _hypergeom_test("odd numbers per draw", odd[items].sum(axis=1), n, int(odd.sum()), k,
                               "hypergeometric null")
  low = labels < labels.min() + n / 2
  out["low"] = _hypergeom_test("low numbers per draw (lower half)", low[items].sum(axis=1), n,
                               int(low.sum()), k, "hypergeometric null")
  sums = picked.sum(axis=1)
  mu = k * labels.mean()
  sd = np.sqrt(k * labels.var() * (n - k) / (n - 1))
  z = (sums.mean() - mu) / (sd / np.sqrt(len(sums)))
  null_draws = labels[_simulate_draws(n, k, n_null, rng)]
  null_sums = null_draws.sum(axis=1)
  ks = stats.ks_2samp(sums, null_sums)
  out["sum"] = SumTest(sums, float(mu), float(sd), float(z), float(2 * stats.norm.sf(abs(z))),
                       float(ks.statistic), float(ks.pvalue), null_sums)
  consecutive = (np.diff(picked, axis=1) == 1).sum(axis=1)
  values = np.arange(k)
  contiguous = np.array_equal(np.sort(labels), labels.min() + np.arange(n))
  if contiguous:
    expected, note = (len(consecutive) * consecutive_pairs_pmf(n, k),
                      "exact null: C(k-1, r) C(n-k+1, k-r) / C(n, k) draws with r pairs")
  else:  # labels with gaps: no closed form; simulation error is kept small by n_null
    null_consecutive = (np.diff(null_draws, axis=1) == 1).sum(axis=1)
    expected = len(consecutive) * np.bincount(null_consecutive, minlength=k)[:k] / n_null
    note = f"null from {n_null} simulated draws (labels are not a contiguous range)"
  out["consecutive"] = chi_square(
      "consecutive pairs per draw", values, np.bincount(consecutive, minlength=k)[:k], expected,
      note=f"{note}; mean k(k-1)/n = {k * (k - 1) / n:.3f}")
  # Gaps: for draws t >= G, events since each pick was last picked (G+ = not in the last G-1).
  inc = table.inclusion_matrix()
  m = len(inc)
  seen = np.where(inc, np.arange(m)[:, None], -10**9)
  last = np.maximum.accumulate(seen, axis=0)
  before = np.vstack([np.full((1, n), -10**9), last[:-1]])
  G = gap_bins
  rows = np.arange(G, m)
  gaps = (rows[:, None] - before[rows])[inc[rows]]
  gaps = np.minimum(gaps, G)
  p = k / n
  g = np.arange(1, G + 1)
  null = np.where(g < G, p * (1 - p) ** (g - 1), (1 - p) ** (G - 1))
  out["gaps"] = chi_square(
      "events since last picked", [str(v) if v < G else f"{G}+" for v in g],
      np.bincount(gaps, minlength=G + 1)[1:], len(gaps) * null,
      note=f"geometric null with p = k/n = {p:.4f}; picks of draws {G}.. only")
  return out


@dataclasses.dataclass(frozen=True)
class RankStability:
  """Kendall tau between consecutive rankings on the items both rank."""
  taus: np.ndarray     # float64[m-1] (NaN where fewer than 2 common items)
  mean_tau: float
  t_statistic: float
  p_value: float       # one-sample t-test of the taus against 0 (the null mean)


def rank_stability(table: EventTable) -> RankStability:
  items = table.items_array()
  n = table.n_items
  taus = np.full(len(items) - 1, np.nan)
  for t in range(1, len(items)):
    a, b = items[t - 1], items[t]
    a, b = a[a >= 0], b[b >= 0]
    common = np.intersect1d(a, b)
    if len(common) < 2:
      continue
    pos_a = np.full(n, -1)
    pos_a[a] = np.arange(len(a))
    pos_b = np.full(n, -1)
    pos_b[b] = np.arange(len(b))
    taus[t - 1] = stats.kendalltau(pos_a[common], pos_b[common]).statistic
  ok = taus[np.isfinite(taus)]
  res = stats.ttest_1samp(ok, 0.0) if len(ok) > 1 else None
  return RankStability(taus, float(ok.mean()) if len(ok) else float("nan"),
                       float(res.statistic) if res else float("nan"),
                       float(res.pvalue) if res else float("nan"))


@dataclasses.dataclass(frozen=True)
class Eda:
  """Everything `explore` found; `p_values()` lists every test."""
  n_events: int
  n_items: int
  k: int | None
  kind: str
  frequencies: ChiSquare
  cooccurrence: CoOccurrence
  buckets: ChiSquare
  clusters: Clusters
  patterns: dict | None
  wins: WinRates | None
  stability: RankStability | None

  def verdict(self, alpha: float = 0.01) -> str:
    """One line: consistent with uniform draws, or which tests reject, after Holm's
    correction over every test of `p_values`."""
    adjusted, rejected = holm(self.p_values(), alpha)
    if not rejected:
      return (f"Consistent with uniform draws: none of the {len(adjusted)} tests rejects at "
              f"{alpha:g} after Holm's correction for multiple testing.")
    return (f"Not uniform: {len(rejected)} of {len(adjusted)} tests reject at {alpha:g} after "
            f"Holm's correction: " + "; ".join(f"{name} (adjusted p = {adjusted[name]:.2g})"
                                                for name in rejected) + ".")

  def p_values(self) -> dict[str, float]:
    out = {"item frequency (chi-square)": self.frequencies.p_value,
           "pair co-occurrence (Monte Carlo)": self.cooccurrence.p_value,
           "pair co-occurrence, strongest pair (Bonferroni)": self.cooccurrence.p_bonferroni,
           f"{self.buckets.name} (chi-square)": self.buckets.p_value,
           f"learned clusters, {self.clusters.basis} (Monte Carlo)": self.clusters.p_value}
    if self.patterns:
      for test in self.patterns.values():
        if isinstance(test, SumTest):
          out["sum of picks, mean (z)"] = test.p_mean
          out["sum of picks, distribution (KS)"] = test.p_ks
        else:
          out[f"{test.name} (chi-square)"] = test.p_value
    if self.wins is not None:
      out["wins (chi-square)"] = self.wins.test.p_value
    if self.stability is not None:
      out["rank stability, mean Kendall tau = 0 (t-test)"] = self.stability.p_value
    return out


def explore(table: EventTable, *, bucket_size: int = 10, n_clusters: int = 5,
            n_sims: int = 200, seed: int = 0) -> Eda:
  """Run every analysis that fits the table (patterns: numbered fixed-k draws;
  wins and stability: rankings)."""
  patterns = None
  if table.kind == "set" and table.k is not None and not table.has_availability() \
      and table.catalog.numeric_labels() is not None:
    patterns = pattern_tests(table, seed=seed)
  ranking = table.kind != "set"
  return Eda(len(table), table.n_items, table.k, table.kind, item_frequencies(table),
             pair_cooccurrence(table, n_sims=n_sims, seed=seed), fixed_buckets(table, bucket_size),
             learned_clusters(table, n_clusters, n_sims=max(n_sims // 10, 10), seed=seed), patterns,
             win_rates(table) if ranking else None, rank_stability(table) if ranking else None)
