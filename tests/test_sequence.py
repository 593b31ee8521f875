"""The sequence encoders (s5, deepar) against independent references.

The diagonal SSM's associative scan is checked against the recurrence run
step by step in numpy complex128 and against its closed-form impulse
response; the GRU stack against the GRU equations written out in numpy
float64; both stacks' one-event `step` against the whole-sequence call; and
the scorer with either encoder for equal scores in the catalog and the
gathered-entrant layouts.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from luce.errors import ConfigError
from luce.models import (DiagonalSSM, GRUStack, PLFamily, PLScorer, S5Stack, history_sequence,
                         max_available)


def _ssm_matrices(p):
  """(A bar, B bar, C, D) of a DiagonalSSM's parameters, in numpy complex128 / float64."""
  p = {k: np.asarray(v, np.float64) for k, v in p.items()}
  lam = -np.exp(p["log_neg_real"]) + 1j * p["imag"]
  a = np.exp(lam * np.exp(p["log_step"]))
  b = ((a - 1.0) / lam)[:, None] * (p["b_real"] + 1j * p["b_imag"])
  return a, b, p["c_real"] + 1j * p["c_imag"], p["d"]


def _random_ssm(rng, h=5, p=7):
  layer = DiagonalSSM(h, p)
  params = layer.init(jax.random.key(int(rng.integers(1 << 30))), jnp.zeros((1, 3, h)))["params"]
  # Spread the eigenvalues and steps beyond the initialisation (fast and slow modes).
  params = dict(params, log_neg_real=rng.uniform(-3.0, 1.0, p).astype(np.float32),
                imag=rng.uniform(-4.0, 4.0, p).astype(np.float32),
                log_step=rng.uniform(-3.0, 0.5, p).astype(np.float32))
  return layer, params


def test_ssm_scan_equals_the_sequential_recurrence(rng):
  layer, params = _random_ssm(rng)
  u = rng.normal(size=(3, 4, 11, 5)) * rng.choice([1e-3, 1.0, 30.0], size=(3, 4, 1, 1))
  y = np.asarray(layer.apply({"params": params}, u.astype(np.float32)))
  a, b, c, d = _ssm_matrices(params)
  x = np.zeros((3, 4, len(a)), np.complex128)
  want = np.zeros(u.shape)
  for t in range(u.shape[2]):
    x = a * x + u[:, :, t] @ b.T
    want[:, :, t] = (x @ c.T).real + d * u[:, :, t]
  scale = np.abs(want).max(axis=(2, 3), keepdims=True) + 1e-6
  np.testing.assert_allclose(y / scale, want / scale, atol=2e-5)


def test_ssm_impulse_response_is_closed_form(rng):
  """Input e_j at time s, zero elsewhere: y_t = Re(C A^(t-s) B e_j) for t > s, D_j e_j at t = s."""
  layer, params = _random_ssm(rng)
  a, b, c, d = _ssm_matrices(params)
  length, s = 16, 3
  for j in range(5):
    u = np.zeros((1, length, 5), np.float32)
    u[0, s, j] = 1.0
    y = np.asarray(layer.apply({"params": params}, u))[0]
    t = np.arange(length)
    power = np.where(t[:, None] >= s, a[None] ** np.maximum(t - s, 0)[:, None], 0.0)   # [L, P]
    want = ((power * b[:, j][None]) @ c.T).real
    want[s, j] += d[j]
    np.testing.assert_allclose(y, want, atol=2e-5 * (1 + np.abs(want).max()))


def test_ssm_is_stable_for_any_parameters(rng):
  """|A bar| < 1 whatever the parameters: a long constant input gives a bounded output."""
  layer, params = _random_ssm(rng)
  a, _, _, _ = _ssm_matrices(params)
  assert (np.abs(a) < 1).all()
  y = np.asarray(layer.apply({"params": params}, np.ones((1, 400, 5), np.float32)))
  assert np.isfinite(y).all()


@pytest.mark.parametrize("stack", ["s5", "deepar"])
def test_one_event_step_equals_the_whole_sequence(rng, stack):
  module = S5Stack(hidden=8, depth=2, state_size=6) if stack == "s5" else GRUStack(hidden=8, depth=2)
  u = rng.normal(size=(2, 3, 9, 2)).astype(np.float32)
  params = module.init(jax.random.key(int(rng.integers(1 << 30))), u)["params"]
  whole = np.asarray(module.apply({"params": params}, u))
  states = module.apply({"params": params}, (2, 3), method="initial_state")
  for t in range(u.shape[2]):
    states, y = module.apply({"params": params}, states, u[:, :, t], method="step")
    np.testing.assert_allclose(np.asarray(y), whole[:, :, t], rtol=1e-5, atol=1e-5)


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def test_gru_stack_equals_the_gru_equations(rng):
  module = GRUStack(hidden=6, depth=2)
  u = rng.normal(size=(4, 7, 3)) * 2.0
  params = module.init(jax.random.key(int(rng.integers(1 << 30))), u.astype(np.float32))["params"]
  got = np.asarray(module.apply({"params": params}, u.astype(np.float32)))
  x = u
  for layer in range(2):
    p = jax.tree.map(lambda v: np.asarray(v, np.float64), params[f"cells_{layer}"])
    h = np.zeros((4, 6))
    out = []
    for t in range(x.shape[1]):
      xt = x[:, t]
      r = _sigmoid(xt @ p["ir"]["kernel"] + p["ir"]["bias"] + h @ p["hr"]["kernel"])
      z = _sigmoid(xt @ p["iz"]["kernel"] + p["iz"]["bias"] + h @ p["hz"]["kernel"])
      cand = np.tanh(xt @ p["in"]["kernel"] + p["in"]["bias"]
                     + r * (h @ p["hn"]["kernel"] + p["hn"]["bias"]))
      h = (1 - z) * cand + z * h
      out.append(h)
    x = np.stack(out, axis=1)
  np.testing.assert_allclose(got, x, rtol=2e-5, atol=2e-5)


def test_history_sequence_puts_the_oldest_event_first():
  names = ["in_last_1", "in_last_2", "in_last_3", "x", "rank_last_1", "rank_last_2", "rank_last_3"]
  item = np.arange(7, dtype=np.float32)[None, None]                  # [1, 1, 7]
  from luce.models import history_columns
  seq = np.asarray(history_sequence(item, history_columns(names)))
  assert seq.shape == (1, 1, 3, 2)
  np.testing.assert_array_equal(seq[0, 0], [[2, 6], [1, 5], [0, 4]])
  with pytest.raises(ConfigError, match="data.features.last >= 1"):
    history_sequence(item, ((), ()))


def _arrays(rng, m=6, n=9, last=4, k=3):
  available = np.zeros((m, n), bool)
  items = np.full((m, k), -1, np.int64)
  for e in range(m):
    on = rng.choice(n, int(rng.integers(k, n + 1)), replace=False)
    available[e, on] = True
    items[e] = rng.choice(on, k, replace=False)
  hist = rng.integers(0, 2, size=(m, n, last)).astype(np.float32)
  ranks = hist * rng.uniform(size=(m, n, last)).astype(np.float32)
  other = rng.normal(size=(m, n, 2)).astype(np.float32)
  names = tuple(f"in_last_{i}" for i in range(1, last + 1)) + tuple(
      f"rank_last_{i}" for i in range(1, last + 1)) + ("a", "b")
  return {"available": available, "items": items, "weights": np.ones(m, np.float32),
          "item_features": np.concatenate([hist, ranks, other], axis=-1),
          "event_features": rng.normal(size=(m, 1)).astype(np.float32)}, names


@pytest.mark.parametrize("encoder", ["s5", "deepar"])
def test_sequence_encoders_score_entrants_as_the_catalog(rng, encoder):
  arrays, names = _arrays(rng)
  m = ml_collections.ConfigDict(dict(encoder=encoder, hidden=8, depth=2, heads=2, embed_dim=3,
                                     dropout=0.0, state_size=4))
  gathered = PLFamily(m, n_items=9, kind="ranking", k=3, item_names=names,
                      width=max_available(arrays))
  catalog = PLFamily(m, n_items=9, kind="ranking", k=3, item_names=names, width=None)
  params = catalog.model.init(jax.random.key(int(rng.integers(1 << 30))),
                              catalog.take(arrays, np.arange(2)))["params"]
  a, b = gathered.scores(params, arrays, 4), catalog.scores(params, arrays, 4)
  assert np.isneginf(a[~arrays["available"]]).all()
  np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)
  np.testing.assert_allclose(gathered.nll(params, arrays, 4), catalog.nll(params, arrays, 4),
                             rtol=1e-5)


@pytest.mark.parametrize("encoder", ["s5", "deepar"])
def test_sequence_scorer_is_item_equivariant_and_reads_the_field(rng, encoder):
  """Permuting the items (features and ids) permutes the scores; an unavailable item's
  history does not change an available item's score, an available rival's does."""
  arrays, names = _arrays(rng, m=2)
  from luce.models import history_columns
  model = PLScorer(n_items=9, encoder=encoder, hidden=8, depth=1, embed_dim=0,
                   history_columns=history_columns(names), state_size=4)
  batch = {key: arrays[key] for key in ("item_features", "event_features", "available")}
  batch["available"] = np.ones_like(batch["available"])
  batch["available"][:, 0] = False
  params = model.init(jax.random.key(int(rng.integers(1 << 30))), batch)["params"]
  score = lambda b: np.asarray(model.apply({"params": params}, b))
  base = score(batch)
  perm = rng.permutation(9)
  permuted = dict(batch, item_features=batch["item_features"][:, perm],
                  available=batch["available"][:, perm])
  np.testing.assert_allclose(score(permuted), base[:, perm], rtol=1e-5, atol=1e-5)
  changed = batch["item_features"].copy()
  changed[:, 0, :4] = 1.0 - changed[:, 0, :4]                        # unavailable item 0
  np.testing.assert_allclose(score(dict(batch, item_features=changed))[:, 1:], base[:, 1:],
                             rtol=1e-5, atol=1e-5)
  changed = batch["item_features"].copy()
  changed[:, 2, :4] = 1.0 - changed[:, 2, :4]                        # available rival 2
  assert np.abs(score(dict(batch, item_features=changed))[:, 1] - base[:, 1]).max() > 1e-6
