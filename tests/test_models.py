"""luce.models scorers, baselines, the losses and a few metrics (on luce.data.synthetic_pl draws)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from luce import baselines, losses, metrics
from luce.data import synthetic_pl
from luce.errors import ConfigError
from luce.models import ENCODERS, PLScorer, history_columns


def _batch(b=3, n=6, f=8, g=2, seed=0):
  rng = np.random.default_rng(seed)
  available = np.ones((b, n), bool)
  available[0, -2:] = False
  return {"item_features": rng.normal(size=(b, n, f)).astype(np.float32),
          "event_features": rng.normal(size=(b, g)).astype(np.float32),
          "available": available}


@pytest.mark.parametrize("encoder", ENCODERS)
def test_scorer_shapes_and_finite_grads(encoder):
  names = tuple(f"in_last_{i}" for i in range(1, 5)) + tuple(f"rank_last_{i}" for i in range(1, 5))
  model = PLScorer(n_items=6, encoder=encoder, hidden=8, depth=1, heads=2, embed_dim=3,
                   history_columns=history_columns(names))
  batch = _batch()
  params = jax.jit(model.init)(jax.random.key(0), batch)["params"]
  items = jnp.array([[0, 1, 2], [5, 4, -1], [3, 0, 1]])

  def nll(p):
    s = model.apply({"params": p}, batch)
    return jnp.sum(losses.event_nll(s, items, batch["available"], kind="ranking")), s

  (_, scores), grads = jax.jit(jax.value_and_grad(nll, has_aux=True))(params)
  assert scores.shape == (3, 6) and scores.dtype == jnp.float32
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_itransformer_ignores_unavailable_items():
  """An unavailable item's features cannot change the available items' scores."""
  model = PLScorer(n_items=6, encoder="itransformer", hidden=8, depth=2, heads=2, embed_dim=0)
  batch = _batch()
  params = jax.jit(model.init)(jax.random.key(1), batch)["params"]
  changed = dict(batch, item_features=batch["item_features"].copy())
  changed["item_features"][0, -1] += 100.0          # item 5 is unavailable in event 0
  apply = jax.jit(model.apply)
  a = apply({"params": params}, batch)[0, :4]
  b = apply({"params": params}, changed)[0, :4]
  np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_transformer_needs_history_features():
  model = PLScorer(n_items=6, encoder="transformer", hidden=8, heads=2)
  with pytest.raises(ConfigError, match="in_last"):
    model.init(jax.random.key(0), _batch())


def test_baselines_shapes_and_order():
  data = synthetic_pl(n_items=8, k=3, n_events=400, seed=0)
  items, avail = data.table.items_array(), data.table.available_mask()
  nll = {}
  for name in baselines.NAMES:
    if name in baselines.COVARIATE_BASELINES:  # tested with covariates in test_baselines_cl.py
      continue
    s = baselines.baseline_scores(name, items, avail, 300, "ranking")
    assert s.shape == (400, 8) and np.isfinite(s).all()
    nll[name] = float(np.mean(losses.event_nll(s[300:], items[300:], avail[300:], kind="ranking")))
  assert nll["frequency"] < nll["uniform"] and nll["static"] < nll["uniform"]
  assert nll["openskill"] < nll["uniform"]
  with pytest.raises(ConfigError, match="valid"):
    baselines.baseline_scores("popular", items, avail, 300, "ranking")


def test_recency_uses_only_the_past():
  data = synthetic_pl(n_items=6, k=2, n_events=50, seed=1)
  items, avail = data.table.items_array(), data.table.available_mask()
  a = baselines.recency(items, avail, 40, "ranking")
  changed = items.copy()
  changed[30:] = changed[30:, ::-1]
  b = baselines.recency(changed, avail, 40, "ranking")
  np.testing.assert_array_equal(a[:31], b[:31])


def test_hits_and_ndcg_closed_form():
  scores = np.array([[3.0, 2.0, 1.0, 0.0]])
  avail = np.ones((1, 4), bool)
  assert metrics.hits_at_k(scores, np.array([[0, 1]]), avail, k=2)[0] == 2
  assert metrics.hits_at_k(scores, np.array([[2, 3]]), avail, k=2)[0] == 0
  assert metrics.ndcg_at_k(scores, np.array([[0, 1]]), avail, k=2)[0] == pytest.approx(1.0)
  # One hit at position 2 of 2: (1/log2 3) / (1 + 1/log2 3).
  want = (1 / np.log2(3)) / (1 + 1 / np.log2(3))
  assert metrics.ndcg_at_k(scores, np.array([[2, 1]]), avail, k=2)[0] == pytest.approx(want)
  # An unavailable item is never predicted.
  avail[0, 0] = False
  assert metrics.top_k_items(scores, avail, 1)[0, 0] == 1


def test_set_nll_matches_brute_force():
  scores = jnp.array([[0.5, -0.2, 1.0, 0.0]])
  nll = losses.event_nll(scores, jnp.array([[2, 0]]), jnp.ones((1, 4), bool), kind="set")
  w = np.exp(np.asarray(scores[0], np.float64))
  p = w[2] / w.sum() * w[0] / (w.sum() - w[2]) + w[0] / w.sum() * w[2] / (w.sum() - w[0])
  assert float(nll[0]) == pytest.approx(-np.log(p), rel=1e-5)


def test_dropout_mask_rate_and_independence(seed):
  """The counter-hash mask: drop fraction within 5 binomial SDs of the rate, no
  correlation between neighbouring elements or between two keys' masks, and a
  pure function of the key."""
  from luce.models import dropout_keep
  shape = (64, 50, 64)
  size = 64 * 50 * 64
  for rate in (0.1, 0.5, 0.9):
    key = jax.random.key(seed)
    keep = np.asarray(dropout_keep(key, shape, rate), np.float64).reshape(-1)
    sd = np.sqrt(rate * (1 - rate) / size)
    assert abs((1 - keep.mean()) - rate) < 5 * sd, (rate, keep.mean())
    other = np.asarray(dropout_keep(jax.random.fold_in(key, 1), shape, rate), np.float64).reshape(-1)
    for a, b in ((keep[:-1], keep[1:]), (keep[:-64], keep[64:]), (keep, other)):
      assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(size)
    np.testing.assert_array_equal(keep, np.asarray(dropout_keep(key, shape, rate)).reshape(-1))


def test_dropout_module_scales_and_is_identity_when_deterministic():
  from luce.models import Dropout
  x = np.ones((256, 256), np.float32)
  layer = Dropout(0.25)
  np.testing.assert_array_equal(layer.apply({}, x, deterministic=True), x)
  y = np.asarray(layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(0)}))
  assert set(np.unique(y).tolist()) == {0.0, float(np.float32(1.0) / np.float32(0.75))}
  assert abs(y.mean() - 1.0) < 0.02
  np.testing.assert_array_equal(Dropout(0.0).apply({}, x, deterministic=False), x)


def test_static_set_fit_is_the_penalised_mle(rng):
  """The L-BFGS set fit: its gradient of the penalised set NLL is ~0 (computed here on
  the unpadded events), it recovers the generating strengths, and padding the window
  does not move it (700 events pad to 768, 768 do not)."""
  from luce.baselines import _fit_set
  from luce.pl_set import pl_set_log_prob
  m, n, k = 768, 30, 6
  truth = rng.normal(size=n)
  items = np.argsort(-(truth + rng.gumbel(size=(m, n))), axis=1)[:, :k].astype(np.int32)
  available = np.ones((m, n), bool)
  theta = _fit_set(items, available, 0.01)

  def penalised(t):
    s = jnp.broadcast_to(t, (m, n))
    return -jnp.mean(pl_set_log_prob(s, jnp.asarray(items))) + 0.5 * 0.01 * jnp.sum(t ** 2) / m

  grad = np.asarray(jax.grad(penalised)(jnp.asarray(theta, jnp.float32)))
  # theta is centred; the likelihood is shift invariant, the ridge term is not: compare
  # the gradient's shift-free part.
  assert np.abs(grad - grad.mean()).max() < 1e-4
  assert np.corrcoef(theta, truth)[0, 1] > 0.97
  part = _fit_set(items[:700], available[:700], 0.01)
  exact = _fit_set(np.concatenate([items[:700], np.full((68, k), -1, np.int32)]),
                   available, 0.01)
  np.testing.assert_allclose(part, exact, atol=2e-4)
