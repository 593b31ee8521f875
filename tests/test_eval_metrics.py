"""luce.eval metrics against hand-computed values, sklearn and each other."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, ndcg_score

import luce
from luce import eval as le

# One event over 5 items: scores give the predicted order 3, 1, 4, 0, 2.
SCORES = np.array([[0.5, 2.0, -1.0, 3.0, 1.0]], np.float32)
ITEMS = np.array([[1, 2, 3, -1]], np.int32)       # observed: 1 first, then 2, then 3
AVAIL = np.ones((1, 5), bool)


def test_hand_computed_values():
  # predicted top-2 = {3, 1}; observed top-2 = {1, 2}: one hit.
  assert float(le.hits_at_k(SCORES, ITEMS, AVAIL, k=2)[0]) == 1.0
  # relevant = every listed item {1, 2, 3}: top-2 holds 3 and 1.
  assert float(le.hits(SCORES, ITEMS, AVAIL, k=2)[0]) == 2.0
  assert float(le.precision_at_k(SCORES, ITEMS, AVAIL, k=2)[0]) == 1.0
  assert float(le.recall_at_k(SCORES, ITEMS, AVAIL, k=2)[0]) == pytest.approx(2 / 3)
  # NDCG@2 vs observed top-2 {1, 2}: predicted 3 (miss), 1 (hit) -> (1/log2 3) / (1 + 1/log2 3).
  want = (1 / np.log2(3)) / (1 + 1 / np.log2(3))
  assert float(le.ndcg_at_k(SCORES, ITEMS, AVAIL, k=2, relevant=2)[0]) == pytest.approx(want, rel=1e-6)
  # The winner (item 1) is second by score.
  assert float(le.reciprocal_rank(SCORES, ITEMS, AVAIL)[0]) == pytest.approx(0.5)
  # NLL: the top-3 PL likelihood, and luce.pl_log_prob agrees.
  s = SCORES[0].astype(np.float64)
  logp, left = 0.0, list(range(5))
  for i in (1, 2, 3):
    logp += s[i] - np.log(np.exp(s[left]).sum())
    left.remove(i)
  assert float(le.nll(SCORES, ITEMS, AVAIL, kind="ranking")[0]) == pytest.approx(-logp, rel=1e-5)


def test_unavailable_items_and_ties():
  avail = np.array([[True, True, True, False, True]])
  # item 3 (best score) unavailable: the winner 1 is now first.
  assert float(le.reciprocal_rank(SCORES, ITEMS, avail)[0]) == pytest.approx(1.0)
  assert le.top_k_items(SCORES, avail, 2).tolist() == [[1, 4]]
  # uniform scores over n items: E[1/rank] = H(n) / n.
  n = 7
  rr = le.reciprocal_rank(np.zeros((1, n)), np.array([[3]]), np.ones((1, n), bool))
  assert float(rr[0]) == pytest.approx(sum(1 / r for r in range(1, n + 1)) / n, rel=1e-5)
  # uniform scores: expected hits k * |relevant| / n, not the ids 0..k-1.
  items = np.array([[5, 6, -1]])
  assert float(le.hits(np.zeros((1, n)), items, np.ones((1, n), bool), k=3)[0]) == pytest.approx(6 / 7)
  # fewer available items than k: -1 for the missing picks, no hit counted for them.
  few = np.array([[True, False, False, False, False]])
  assert le.top_k_items(SCORES, few, 2).tolist() == [[0, -1]]


def test_ndcg_matches_sklearn(rng):
  m, n, k = 30, 12, 4
  scores = rng.normal(size=(m, n)).astype(np.float32)  # continuous: no ties
  items = np.argsort(rng.normal(size=(m, n)), axis=1)[:, :6].astype(np.int32)
  avail = np.ones((m, n), bool)
  rel = np.zeros((m, n))
  np.put_along_axis(rel, items[:, :k], 1.0, axis=1)
  ours = np.asarray(le.ndcg_at_k(scores, items, avail, k=k, relevant=k))
  theirs = [ndcg_score(rel[i:i + 1], scores[i:i + 1], k=k) for i in range(m)]
  np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_calibration_matches_sklearn(rng):
  p = rng.uniform(size=500)
  y = rng.uniform(size=500) < p
  where = np.ones(500, bool)
  out = le.calibration(jnp.asarray(p, jnp.float32), y, where, bins=10)
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
  p1 = le.inclusion_probabilities(jax.random.key(0), scores, avail, k=1, samples=4000)
  soft = np.exp([0.0, 1.0, 2.0]) / np.exp([0.0, 1.0, 2.0]).sum()
  np.testing.assert_allclose(np.asarray(p1)[0, :3], soft, atol=0.03)
  assert float(p1[0, 3]) == 0.0
  p2 = le.inclusion_probabilities(jax.random.key(1), scores, avail, k=2, samples=512)
  np.testing.assert_allclose(np.asarray(p2).sum(axis=1), 2.0, rtol=1e-6)


def test_jit_and_vmap_agree(rng):
  scores = rng.normal(size=(8, 6)).astype(np.float32)
  items = np.argsort(-scores + rng.normal(size=(8, 6)), axis=1)[:, :3].astype(np.int32)
  avail = np.ones((8, 6), bool)
  batched = le.ndcg_at_k(scores, items, avail, k=3)
  one = jax.vmap(lambda s, i, a: le.ndcg_at_k(s[None], i[None], a[None], k=3)[0])(scores, items, avail)
  np.testing.assert_allclose(batched, one, rtol=1e-6)
  legacy = luce.eval_metrics.ndcg_at_k(scores, items, avail, 3)
  np.testing.assert_allclose(batched, legacy, rtol=1e-6)


def test_event_metrics_shapes_and_errors():
  out = le.event_metrics(SCORES, ITEMS, AVAIL, kind="ranking", k=2)
  assert set(out) == {"nll", "hits", "precision", "recall", "ndcg", "rr"}
  assert all(v.shape == (1,) for v in out.values())
  with pytest.raises(luce.ShapeError, match="disagree"):
    le.event_metrics(SCORES, ITEMS, np.ones((2, 5), bool), kind="ranking", k=2)
  with pytest.raises(luce.ConfigError, match="kind"):
    le.event_metrics(SCORES, ITEMS, AVAIL, kind="pairs", k=2)
