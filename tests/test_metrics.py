"""luce.metrics and luce.losses against hand-computed values, brute force over
every tie-breaking order, closed forms, sklearn and float64 numpy."""

import doctest
import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, ndcg_score

import luce
from luce import losses, metrics
from luce.errors import ConfigError, InputError, ShapeError

# One event over 5 items: scores give the predicted order 3, 1, 4, 0, 2.
SCORES = np.array([[0.5, 2.0, -1.0, 3.0, 1.0]], np.float32)
ITEMS = np.array([[1, 2, 3, -1]], np.int32)       # observed: 1 first, then 2, then 3
AVAIL = np.ones((1, 5), bool)


def _discount_sum(p, k):
  """C(p) = Σ_{q < min(p, k)} 1 / log2(q + 2), in float64."""
  return sum(1.0 / math.log2(q + 2) for q in range(min(p, k)))


# --- brute force: every tie-breaking order, float64 ------------------------------------------

def _orders(scores, available):
  """Every order of the available items consistent with the scores (ties in all orders)."""
  avail = [j for j in range(len(scores)) if available[j]]
  levels = sorted({float(scores[j]) for j in avail}, reverse=True)
  groups = [[j for j in avail if float(scores[j]) == v] for v in levels]
  for parts in itertools.product(*(itertools.permutations(g) for g in groups)):
    yield [j for part in parts for j in part]


def _brute_force(scores, items, available, k, relevant):
  """Mean over all tie-breaking orders of hits, precision, recall, ndcg and rr."""
  listed = [int(j) for j in items if j >= 0]
  top = listed if relevant is None else [int(j) for j in items[:relevant] if j >= 0]
  rel = {j for j in top if available[j]}
  ideal = _discount_sum(len(rel), k)
  winner = int(items[0])
  totals = np.zeros(5)
  count = 0
  for order in _orders(scores, available):
    pred = order[:k]
    h = sum(j in rel for j in pred)
    dcg = sum(1.0 / math.log2(q + 2) for q, j in enumerate(pred) if j in rel)
    rr = 1.0 / (order.index(winner) + 1) if winner >= 0 and winner in order else 0.0
    totals += [h, h / k, h / len(rel) if rel else 0.0, dcg / ideal if ideal > 0 else 0.0, rr]
    count += 1
  if count == 0:  # nothing available: one empty order
    return np.zeros(5)
  return totals / count


def _random_events(rng, m, n):
  """Integer scores in {-inf, 0, 1, 2} (many ties; -inf on available items too),
  availability from none to all, lists of random length (-1 padded) that may
  name unavailable items. Events over fewer than n items are events whose
  other items are unavailable."""
  scores = rng.integers(-1, 3, (m, n)).astype(np.float32)
  scores[scores < 0] = -np.inf
  available = rng.uniform(size=(m, n)) < rng.uniform(size=(m, 1))
  available[0], available[1] = True, False
  items = np.full((m, n), -1, np.int32)
  for e in range(m):
    length = rng.integers(0, n + 1) if e > 1 else n
    items[e, :length] = rng.permutation(n)[:length]
  return scores, items, available


# (k, relevant) pairs of the brute-force test: k up to beyond n = 6, relevant None (a set)
# or the observed top-r.
_COMBOS = tuple(dict.fromkeys((k, r) for k in (1, 2, 3, 6, 7) for r in (None, 1, 2, k)))


@jax.jit
def _all_metrics(scores, items, available):
  """float32[len(_COMBOS), m, 4] hits, precision, recall, ndcg; float32[m] rr. One
  compilation for every pair (and a check that the metrics compose under jit)."""
  per = [jnp.stack([metrics.hits(scores, items, available, k=k, relevant=r),
                    metrics.precision_at_k(scores, items, available, k=k, relevant=r),
                    metrics.recall_at_k(scores, items, available, k=k, relevant=r),
                    metrics.ndcg_at_k(scores, items, available, k=k, relevant=r)], axis=1)
         for k, r in _COMBOS]
  return jnp.stack(per), metrics.reciprocal_rank(scores, items, available)


def test_brute_force_over_tie_orders(rng):
  m, n = 160, 6
  scores, items, available = _random_events(rng, m, n)
  got, rr = (np.asarray(x) for x in _all_metrics(scores, items, available))
  for c, (k, relevant) in enumerate(_COMBOS):
    want = np.array([_brute_force(scores[e], items[e], available[e], k, relevant)
                     for e in range(m)])
    for col, name in enumerate(("hits", "precision", "recall", "ndcg")):
      np.testing.assert_allclose(got[c, :, col], want[:, col], rtol=2e-6, atol=2e-6,
                                 err_msg=f"{name}, k={k}, relevant={relevant}")
    np.testing.assert_allclose(rr, want[:, 4], rtol=2e-6, atol=2e-6, err_msg="reciprocal rank")
  # the unjitted entry points give the same numbers
  np.testing.assert_allclose(metrics.hits_at_k(scores, items, available, k=2), got[_COMBOS.index((2, 2)), :, 0])
  np.testing.assert_allclose(metrics.ndcg_at_k(scores, items, available, k=3), got[_COMBOS.index((3, None)), :, 3])


# --- the tie rule: a constant scorer ----------------------------------------------------------

@functools.partial(jax.jit, static_argnames="k")
def _constant_metrics(scores, ranking, subset, available, *, k):
  """hits, ndcg, precision and recall of a ranking (relevant: its top k) and of a set
  (relevant: all of it), float32[8, m]."""
  return jnp.stack([f(scores, items, available, k=k, relevant=r)
                    for items, r in ((ranking, k), (subset, None))
                    for f in (metrics.hits, metrics.ndcg_at_k, metrics.precision_at_k,
                              metrics.recall_at_k)])


@pytest.mark.parametrize("n,k", [(20, 5), (7, 3), (10, 1), (6, 6), (9, 4), (500, 10)])
def test_constant_scorer_closed_form(rng, n, k):
  m = 6
  scores = np.full((m, n), 0.7, np.float32)
  available = np.ones((m, n), bool)
  want_hits = k * k / n
  # each item sits uniformly on 0..n-1: expected discount C(n) / n; ideal DCG C(k).
  want_ndcg = k * _discount_sum(n, k) / n / _discount_sum(k, k)
  assert want_ndcg == pytest.approx(k / n)
  want = np.array([want_hits, want_ndcg, k / n, k / n] * 2)[:, None]
  ids = [np.stack([rng.permutation(n)[:min(n, k + 2)] for _ in range(m)]).astype(np.int32)
         for _ in range(3)]
  ids.append(np.sort(ids[0], axis=1))  # the same events, ids in another order: the same
  ids.append(np.tile(np.arange(min(n, k + 2), dtype=np.int32), (m, 1)))  # the lowest ids
  for ranking in ids:
    subset = np.where(np.arange(ranking.shape[1]) < k, ranking, -1).astype(np.int32)  # a k-set, padded
    got = np.asarray(_constant_metrics(scores, ranking, subset, available, k=k))
    np.testing.assert_allclose(got, np.broadcast_to(want, got.shape), rtol=1e-5)
  if n in (20, 6):  # k * k / n is exact in float32
    assert float(got[0, 0]) == want_hits and float(got[4, 0]) == want_hits


def test_constant_scorer_same_value_for_permuted_ids(rng):
  n, k, m = 12, 4, 30
  scores = np.zeros((m, n), np.float32)
  available = np.ones((m, n), bool)
  items = np.stack([rng.permutation(n)[:k] for _ in range(m)]).astype(np.int32)
  perm = rng.permutation(n)
  for kind in ("ranking", "set"):
    a = metrics.event_metrics(scores, items, available, kind=kind, k=k)
    b = metrics.event_metrics(scores, perm[items].astype(np.int32), available, kind=kind, k=k)
    for name in ("hits", "precision", "recall", "ndcg"):
      np.testing.assert_allclose(a[name], b[name], rtol=1e-6)
      np.testing.assert_allclose(a[name], a[name][0], rtol=1e-6)  # every event alike
    np.testing.assert_allclose(a["hits"], k * k / n, rtol=1e-6)
    np.testing.assert_allclose(a["ndcg"], k / n, rtol=1e-5)
  s = metrics.summary(scores, items, available, np.ones(m), kind="set", k=k)
  assert s["hits_at_k"] == pytest.approx(k * k / n, rel=1e-6)
  assert s["ndcg_at_k"] == pytest.approx(k / n, rel=1e-5)


def test_constant_scorer_sets_of_other_sizes():
  # hits = k |relevant| / n for a set of any size, with only the available items counting.
  n, k = 10, 3
  scores = np.zeros((1, n), np.float32)
  items = np.array([[0, 4, 7, 9, 2, -1]], np.int32)
  available = np.ones((1, n), bool)
  assert float(metrics.hits(scores, items, available, k=k)[0]) == pytest.approx(k * 5 / n)
  available[0, :5] = False  # 5 items left; 2 of them (7 and 9) listed
  assert float(metrics.hits(scores, items, available, k=k)[0]) == pytest.approx(k * 2 / 5)


def test_module_doctest():
  result = doctest.testmod(metrics)
  assert result.attempted >= 5 and result.failed == 0


def test_no_cubic_comparison():
  # The tie groups come from a sort per row: nothing of shape [m, n, n] is built.
  m, n, k = 64, 500, 10
  s = jnp.zeros((m, n), jnp.float32)
  i = jnp.zeros((m, k), jnp.int32)
  a = jnp.ones((m, n), bool)
  for fn in (metrics.ndcg_at_k, metrics.hits):
    text = jax.jit(lambda s, i, a, fn=fn: fn(s, i, a, k=k)).lower(s, i, a).as_text()
    assert f"{m}x{n}x{n}" not in text, fn.__name__


# --- hand-computed values and references (from the luce.eval metrics tests) ------------------

def test_hand_computed_values():
  # predicted top-2 = {3, 1}; observed top-2 = {1, 2}: one hit.
  assert float(metrics.hits_at_k(SCORES, ITEMS, AVAIL, k=2)[0]) == 1.0
  # relevant = every listed item {1, 2, 3}: top-2 holds 3 and 1.
  assert float(metrics.hits(SCORES, ITEMS, AVAIL, k=2)[0]) == 2.0
  assert float(metrics.precision_at_k(SCORES, ITEMS, AVAIL, k=2)[0]) == 1.0
  assert float(metrics.recall_at_k(SCORES, ITEMS, AVAIL, k=2)[0]) == pytest.approx(2 / 3)
  # NDCG@2 vs observed top-2 {1, 2}: predicted 3 (miss), 1 (hit) -> (1/log2 3) / (1 + 1/log2 3).
  want = (1 / np.log2(3)) / (1 + 1 / np.log2(3))
  assert float(metrics.ndcg_at_k(SCORES, ITEMS, AVAIL, k=2, relevant=2)[0]) == pytest.approx(want, rel=1e-6)
  # The winner (item 1) is second by score.
  assert float(metrics.reciprocal_rank(SCORES, ITEMS, AVAIL)[0]) == pytest.approx(0.5)
  # NLL: the top-3 PL likelihood, and luce.pl_log_prob agrees.
  s = SCORES[0].astype(np.float64)
  logp, left = 0.0, list(range(5))
  for i in (1, 2, 3):
    logp += s[i] - np.log(np.exp(s[left]).sum())
    left.remove(i)
  assert float(metrics.nll(SCORES, ITEMS, AVAIL, kind="ranking")[0]) == pytest.approx(-logp, rel=1e-5)


def test_unavailable_items_and_ties():
  avail = np.array([[True, True, True, False, True]])
  # item 3 (best score) unavailable: the winner 1 is now first.
  assert float(metrics.reciprocal_rank(SCORES, ITEMS, avail)[0]) == pytest.approx(1.0)
  assert metrics.top_k_items(SCORES, avail, 2).tolist() == [[1, 4]]
  # uniform scores over n items: E[1/rank] = H(n) / n.
  n = 7
  rr = metrics.reciprocal_rank(np.zeros((1, n)), np.array([[3]]), np.ones((1, n), bool))
  assert float(rr[0]) == pytest.approx(sum(1 / r for r in range(1, n + 1)) / n, rel=1e-5)
  # uniform scores: expected hits k * |relevant| / n, not the ids 0..k-1.
  items = np.array([[5, 6, -1]])
  assert float(metrics.hits(np.zeros((1, n)), items, np.ones((1, n), bool), k=3)[0]) == pytest.approx(6 / 7)
  # fewer available items than k: -1 for the missing picks.
  few = np.array([[True, False, False, False, False]])
  assert metrics.top_k_items(SCORES, few, 2).tolist() == [[0, -1]]
  # signed zeros are one score: tied.
  signed = np.array([[0.0, -0.0, 0.0, -0.0]], np.float32)
  assert float(metrics.hits(signed, np.array([[1, 3]]), np.ones((1, 4), bool), k=2)[0]) == 1.0
  # top_k_items is a prediction: ties go to the lower id.
  assert metrics.top_k_items(np.zeros((1, 5)), AVAIL, 3).tolist() == [[0, 1, 2]]


def test_ndcg_matches_sklearn(rng):
  m, n, k = 30, 12, 4
  scores = rng.normal(size=(m, n)).astype(np.float32)  # continuous: no ties
  items = np.argsort(rng.normal(size=(m, n)), axis=1)[:, :6].astype(np.int32)
  avail = np.ones((m, n), bool)
  rel = np.zeros((m, n))
  np.put_along_axis(rel, items[:, :k], 1.0, axis=1)
  ours = np.asarray(metrics.ndcg_at_k(scores, items, avail, k=k, relevant=k))
  theirs = [ndcg_score(rel[i:i + 1], scores[i:i + 1], k=k) for i in range(m)]
  np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_calibration_matches_sklearn(rng):
  p = rng.uniform(size=500)
  y = rng.uniform(size=500) < p
  where = np.ones(500, bool)
  out = metrics.calibration(jnp.asarray(p, jnp.float32), y, where, bins=10)
  assert float(out["brier"]) == pytest.approx(brier_score_loss(y, p), rel=1e-5)
  prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy="uniform")
  keep = np.asarray(out["count"]) > 0
  np.testing.assert_allclose(np.asarray(out["observed"])[keep], prob_true, rtol=1e-5)
  np.testing.assert_allclose(np.asarray(out["mean_predicted"])[keep], prob_pred, rtol=1e-5)
  counts = np.asarray(out["count"])[keep]
  ece = (counts / counts.sum() * np.abs(prob_true - prob_pred)).sum()
  assert float(out["ece"]) == pytest.approx(ece, rel=1e-4)


def test_inclusion_probabilities():
  scores = jnp.asarray([[0.0, 1.0, 2.0, -1.0]])
  avail = jnp.asarray([[True, True, True, False]])
  p1 = metrics.inclusion_probabilities(jax.random.key(0), scores, avail, k=1, samples=4000)
  soft = np.exp([0.0, 1.0, 2.0]) / np.exp([0.0, 1.0, 2.0]).sum()
  np.testing.assert_allclose(np.asarray(p1)[0, :3], soft, atol=0.03)
  assert float(p1[0, 3]) == 0.0
  p2 = metrics.inclusion_probabilities(jax.random.key(1), scores, avail, k=2, samples=512)
  np.testing.assert_allclose(np.asarray(p2).sum(axis=1), 2.0, rtol=1e-6)
  # fewer available items than k: each available item is always in.
  p4 = metrics.inclusion_probabilities(jax.random.key(2), scores, avail, k=4, samples=16)
  np.testing.assert_allclose(np.asarray(p4)[0], [1, 1, 1, 0])


def test_calibration_of_probs_and_kinds(rng):
  m, n, k = 20, 6, 2
  scores = rng.normal(size=(m, n)).astype(np.float32)
  items = np.argsort(-scores, axis=1)[:, :k].astype(np.int32)
  avail = np.ones((m, n), bool)
  out = metrics.calibration_of(scores, items, avail, kind="set", k=k, samples=64)
  assert set(out) == {"ece", "brier", "mean_predicted", "observed", "count"}
  assert sum(out["count"]) == m * n
  with pytest.raises(ShapeError, match=r"\(20, 5\)"):
    metrics.calibration_of(scores, items, avail, kind="set", k=k, probs=np.zeros((m, n - 1)))
  with pytest.raises(ConfigError, match="pairs"):
    metrics.calibration_of(scores, items, avail, kind="pairs", k=k)


def test_jit_and_vmap_agree(rng):
  scores = rng.normal(size=(8, 6)).astype(np.float32)
  items = np.argsort(-scores + rng.normal(size=(8, 6)), axis=1)[:, :3].astype(np.int32)
  avail = np.ones((8, 6), bool)
  batched = metrics.ndcg_at_k(scores, items, avail, k=3)
  one = jax.vmap(lambda s, i, a: metrics.ndcg_at_k(s[None], i[None], a[None], k=3)[0])(scores, items, avail)
  np.testing.assert_allclose(batched, one, rtol=1e-6)
  jitted = jax.jit(lambda s, i, a: metrics.hits(s, i, a, k=3))(scores, items, avail)
  np.testing.assert_allclose(jitted, metrics.hits(scores, items, avail, k=3), rtol=1e-6)
  # continuous scores: the concrete top-k list gives the same hits.
  top = np.asarray(metrics.top_k_items(scores, avail, 3))
  want = [len(set(top[e]) & set(items[e])) for e in range(8)]
  np.testing.assert_allclose(jitted, want)


def test_event_metrics_shapes_and_errors():
  out = metrics.event_metrics(SCORES, ITEMS, AVAIL, kind="ranking", k=2)
  assert set(out) == {"nll", "hits", "precision", "recall", "ndcg", "rr"}
  assert all(v.shape == (1,) and v.dtype == np.float64 for v in out.values())
  assert np.isnan(metrics.event_metrics(SCORES, ITEMS[:, :2], AVAIL, kind="set", k=2)["rr"]).all()
  with pytest.raises(ShapeError, match="disagree"):
    metrics.event_metrics(SCORES, ITEMS, np.ones((2, 5), bool), kind="ranking", k=2)
  with pytest.raises(ConfigError, match="pairs"):
    metrics.event_metrics(SCORES, ITEMS, AVAIL, kind="pairs", k=2)
  assert metrics.NLL_KINDS == ("exact", "bound")


@pytest.mark.parametrize("fn", [
    lambda s, i, a: metrics.hits(s, i, a, k=2),
    lambda s, i, a: metrics.hits_at_k(s, i, a, k=2),
    lambda s, i, a: metrics.precision_at_k(s, i, a, k=2),
    lambda s, i, a: metrics.recall_at_k(s, i, a, k=2),
    lambda s, i, a: metrics.ndcg_at_k(s, i, a, k=2),
    lambda s, i, a: metrics.reciprocal_rank(s, i, a),
    lambda s, i, a: metrics.nll(s, i, a, kind="ranking"),
    lambda s, i, a: metrics.event_metrics(s, i, a, kind="ranking", k=2),
    lambda s, i, a: metrics.summary(s, i, a, np.ones(len(s)), kind="ranking", k=2),
])
def test_bad_shapes_raise(fn):
  with pytest.raises(ShapeError, match=r"\(1, 5\).*\(2, 4\)"):
    fn(SCORES, np.zeros((2, 4), np.int32), AVAIL)
  with pytest.raises(ShapeError, match=r"\(1, 6\)"):
    fn(SCORES, ITEMS, np.ones((1, 6), bool))
  with pytest.raises(ShapeError, match=r"\(5,\).*2-D"):
    fn(SCORES[0], ITEMS, AVAIL)


def test_bad_k_raises():
  with pytest.raises(ConfigError, match="k=0"):
    metrics.hits_at_k(SCORES, ITEMS, AVAIL, k=0)
  with pytest.raises(ConfigError, match="k=6"):
    metrics.top_k_items(SCORES, AVAIL, 6)
  # k beyond n is a valid cut-off for the metrics: everything available is in.
  assert float(metrics.hits(SCORES, ITEMS, AVAIL, k=6)[0]) == 3.0


# --- summary ----------------------------------------------------------------------------------

def _ranking_events(rng, m, n, length):
  scores = rng.normal(size=(m, n)).astype(np.float32)
  scores[: m // 2] = np.round(scores[: m // 2])  # ties in half the events
  available = rng.uniform(size=(m, n)) < 0.8
  available[:, :length] = True
  items = np.stack([rng.permutation(np.flatnonzero(available[e]))[:length] for e in range(m)])
  return scores, items.astype(np.int32), available


@pytest.mark.parametrize("kind", ["ranking", "set"])
def test_summary_weighted_means(rng, kind):
  m, n, k = 120, 8, 3
  scores, items, available = _ranking_events(rng, m, n, 4 if kind == "ranking" else k)
  weights = rng.uniform(0, 2, m)
  weights[rng.uniform(size=m) < 0.2] = 0.0
  per = metrics.event_metrics(scores, items, available, kind=kind, k=k)
  nll = np.asarray(losses.event_nll(jnp.asarray(scores), jnp.asarray(items), jnp.asarray(available),
                                    kind=kind), np.float64)
  # the per-event values, then float64 numpy means
  relevant = None if kind == "set" else k
  brute = np.array([_brute_force(scores[e], items[e], available[e], k, relevant) for e in range(m)])
  np.testing.assert_allclose(per["hits"], brute[:, 0], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(per["ndcg"], brute[:, 3], rtol=1e-5, atol=1e-6)
  out = metrics.summary(scores, items, available, weights, kind=kind, k=k)
  assert set(out) == {"nll_per_event", "hits_at_k", "ndcg_at_k", "events", "nll_ci95"}
  assert out["events"] == m and isinstance(out["events"], int)
  assert all(type(out[name]) is float for name in ("nll_per_event", "hits_at_k", "ndcg_at_k"))
  assert all(type(v) is float for v in out["nll_ci95"])
  assert out["nll_per_event"] == pytest.approx(np.average(nll, weights=weights), rel=1e-9)
  assert out["hits_at_k"] == pytest.approx(np.average(brute[:, 0], weights=weights), rel=1e-5)
  assert out["ndcg_at_k"] == pytest.approx(np.average(brute[:, 3], weights=weights), rel=1e-5)
  # the weights matter: unit weights give the plain means, which differ.
  flat = metrics.summary(scores, items, available, np.ones(m), kind=kind, k=k)
  assert flat["nll_per_event"] == pytest.approx(nll.mean(), rel=1e-9)
  assert flat["hits_at_k"] == pytest.approx(brute[:, 0].mean(), rel=1e-5)
  assert flat["nll_per_event"] != pytest.approx(out["nll_per_event"], rel=1e-6)
  # one event carrying all the weight: its own values.
  one = np.zeros(m)
  one[7] = 3.0
  alone = metrics.summary(scores, items, available, one, kind=kind, k=k)
  assert alone["nll_per_event"] == pytest.approx(nll[7], rel=1e-9)
  assert alone["ndcg_at_k"] == pytest.approx(brute[7, 3], rel=1e-5, abs=1e-6)
  # zero total weight: the clamp gives 0, not NaN.
  assert metrics.summary(scores, items, available, np.zeros(m), kind=kind, k=k)["hits_at_k"] == 0.0


def test_summary_nll_override_and_interval(rng):
  m, n, k = 200, 7, 2
  scores, items, available = _ranking_events(rng, m, n, 3)
  weights = rng.uniform(0.5, 1.5, m)
  own = rng.gamma(2.0, 1.5, m)  # a family's own NLL (or bound)
  out = metrics.summary(scores, items, available, weights, kind="ranking", k=k, nll=own)
  base = metrics.summary(scores, items, available, weights, kind="ranking", k=k)
  assert out["nll_per_event"] == pytest.approx(np.average(own, weights=weights), rel=1e-12)
  assert out["nll_per_event"] != pytest.approx(base["nll_per_event"])
  assert out["hits_at_k"] == base["hits_at_k"] and out["ndcg_at_k"] == base["ndcg_at_k"]
  lo, hi = out["nll_ci95"]
  assert lo < out["nll_per_event"] < hi
  assert base["nll_ci95"][0] < base["nll_per_event"] < base["nll_ci95"][1]
  again = metrics.summary(scores, items, available, weights, kind="ranking", k=k, nll=own)
  assert again == out  # deterministic: a fixed seed
  # the interval is the weighted mean over 2000 resamples of events, default_rng(0).
  r = np.random.default_rng(seed=0)
  idx = r.integers(0, m, (2000, m))
  means = (own[idx] * weights[idx]).sum(axis=1) / weights[idx].sum(axis=1)
  np.testing.assert_allclose(out["nll_ci95"], np.quantile(means, [0.025, 0.975]), rtol=1e-12)
  # the weights move the interval too
  other = metrics.summary(scores, items, available, np.ones(m), kind="ranking", k=k, nll=own)
  assert other["nll_ci95"] != out["nll_ci95"]


def test_summary_errors():
  with pytest.raises(ShapeError, match=r"weights has shape \(2,\).*\(1,\)"):
    metrics.summary(SCORES, ITEMS, AVAIL, np.ones(2), kind="ranking", k=2)
  with pytest.raises(ShapeError, match=r"nll has shape \(1, 1\)"):
    metrics.summary(SCORES, ITEMS, AVAIL, np.ones(1), kind="ranking", k=2, nll=np.ones((1, 1)))
  with pytest.raises(InputError, match="weights"):
    metrics.summary(SCORES, ITEMS, AVAIL, -np.ones(1), kind="ranking", k=2)
  with pytest.raises(ConfigError, match="pairs"):
    metrics.summary(SCORES, ITEMS, AVAIL, np.ones(1), kind="pairs", k=2)
  with pytest.raises(ConfigError, match="k=0"):
    metrics.summary(SCORES, ITEMS, AVAIL, np.ones(1), kind="ranking", k=0)


# --- losses -----------------------------------------------------------------------------------

def test_event_nll_and_pl_loss(rng):
  m, n = 5, 6
  scores = jnp.asarray(rng.normal(size=(m, n)), jnp.float32)
  items = jnp.asarray(np.stack([rng.permutation(n)[:3] for _ in range(m)]), jnp.int32)
  avail = jnp.ones((m, n), bool)
  np.testing.assert_allclose(losses.event_nll(scores, items, avail, kind="ranking"),
                             -luce.pl_log_prob(scores, items, where=avail), rtol=1e-6)
  np.testing.assert_allclose(losses.event_nll(scores, items, avail, kind="set"),
                             -luce.pl_set_log_prob(scores, items, where=avail), rtol=1e-6)
  batch = {"items": items, "available": avail}
  for kind in losses.KINDS:
    np.testing.assert_allclose(losses.pl_loss(kind)(scores, batch),
                               losses.event_nll(scores, items, avail, kind=kind), rtol=1e-6)
    np.testing.assert_allclose(metrics.nll(scores, items, avail, kind=kind),
                               losses.event_nll(scores, items, avail, kind=kind), rtol=1e-6)
  # a set's likelihood ignores its order
  assert float(losses.event_nll(scores, items[:, ::-1], avail, kind="set")[0]) == pytest.approx(
      float(losses.event_nll(scores, items, avail, kind="set")[0]), rel=1e-5)
  assert losses.KINDS == ("ranking", "set")
  with pytest.raises(ConfigError, match="'pairs'"):
    losses.event_nll(scores, items, avail, kind="pairs")
  with pytest.raises(ConfigError, match="'pairs'"):
    losses.pl_loss("pairs")


def test_set_calibration_uses_each_events_own_size():
  """Sets of 3 (and one of 2) of 10 items with eval k = 5: uniform scores predict 3/10
  (2/10), the sets' own sizes, so a uniform scorer is calibrated (before: 5/10 for all)."""
  rng = np.random.default_rng(0)
  m, n = 400, 10
  items = np.stack([rng.choice(n, 3, replace=False) for _ in range(m)])
  items[0, 2] = -1
  out = metrics.calibration_of(np.zeros((m, n)), items, np.ones((m, n), bool), kind="set", k=5,
                               samples=512)
  count = np.asarray(out["count"], np.float64)
  predicted = np.asarray(out["mean_predicted"])
  mean = float((np.nan_to_num(predicted) * count).sum() / count.sum())
  assert abs(mean - (399 * 0.3 + 0.2) / 400) < 0.005, mean
  assert out["ece"] < 0.03
