"""luce.ratings.openskill_scores: openskill's PlackettLuce ratings, online, as PL scores."""

import math

import numpy as np
import openskill
from openskill.models import PlackettLuce
import pytest

import luce
from luce import ratings
from luce.errors import ConfigError, InputError, LuceError, ShapeError

MU0 = 25.0


def _table(kind, seed, n_items=8, k=3, n_events=60):
  return luce.data.synthetic_pl(n_items=n_items, k=k, n_events=n_events, kind=kind, seed=seed).table


def _arrays(table):
  return table.items_array(), table.available_mask()


def _log_lik(scores, items, available, kind):
  fn = luce.pl_set_log_prob if kind == "set" else luce.pl_log_prob
  return float(np.sum(np.asarray(fn(scores, items, where=available), np.float64)))


@pytest.mark.parametrize("kind", ["ranking", "set"])
def test_no_lookahead(kind, seed):
  table = _table(kind, seed % 1000)
  items, available = _arrays(table)
  n_train = 30
  # Fitted T: rewriting events >= t >= n_train changes neither T nor the rows <= t.
  for t in (n_train, 45, len(table) - 1):
    other = luce.data.perturb_from(table, t, seed=seed % 997 + 1)
    a, info_a = ratings.openskill_scores(items, available, n_train, kind)
    b, info_b = ratings.openskill_scores(*_arrays(other), n_train, kind)
    assert info_a == info_b
    np.testing.assert_array_equal(a[:t + 1], b[:t + 1])
  # Fixed T: the ratings alone, rewriting from inside the training events.
  for t in (1, 10, 29):
    other = luce.data.perturb_from(table, t, seed=seed % 991 + 2)
    a, _ = ratings.openskill_scores(items, available, n_train, kind, temperature=3.0)
    b, _ = ratings.openskill_scores(*_arrays(other), n_train, kind, temperature=3.0)
    np.testing.assert_array_equal(a[:t + 1], b[:t + 1])
    assert not np.array_equal(a[t + 1:], b[t + 1:])  # the check has teeth


@pytest.mark.parametrize("kind", ["ranking", "set"])
def test_first_event_scores_are_equal_and_shapes(kind, seed):
  items, available = _arrays(_table(kind, seed % 1000))
  scores, info = ratings.openskill_scores(items, available, 40, kind)
  assert scores.dtype == np.float32 and scores.shape == available.shape
  assert np.all(scores[0] == scores[0, 0]) and scores[0, 0] == 0.0
  assert np.all(np.isfinite(scores))
  assert set(info) == {"temperature", "model", "version"}
  assert info["model"] == "openskill.PlackettLuce" and info["version"] == openskill.__version__
  assert info["temperature"] > 0


@pytest.mark.parametrize("kind", ["ranking", "set"])
def test_repeated_winner_ends_highest(kind, rng):
  n, k, m, star = 7, 3, 40, 4
  items = np.empty((m, k), np.int64)
  for t in range(m):
    others = rng.permutation(np.delete(np.arange(n), star))[:k - 1]
    items[t] = np.concatenate([[star], others]) if kind == "ranking" else rng.permutation(
        np.concatenate([[star], others]))
  available = np.ones((m, n), bool)
  scores, _ = ratings.openskill_scores(items, available, m, kind)
  assert np.argmax(scores[-1]) == star
  assert np.all(scores[-1, star] > np.delete(scores[-1], star))


@pytest.mark.parametrize("kind", ["ranking", "set"])
def test_fitted_temperature_maximises_the_training_likelihood(kind, seed):
  items, available = _arrays(_table(kind, seed % 1000, n_events=80))
  n_train = 50
  scores, info = ratings.openskill_scores(items, available, n_train, kind)
  temp = info["temperature"]
  assert ratings.T_BOUNDS[0] < temp < ratings.T_BOUNDS[1]
  centred = scores.astype(np.float64) * temp  # mu - mu_0
  tr = slice(0, n_train)

  def ll(t):
    return _log_lik((centred[tr] / t).astype(np.float32), items[tr], available[tr], kind)

  best = ll(temp)
  tol = 1e-6 * abs(best) + 1e-4
  for factor in np.exp(np.concatenate([np.linspace(-0.05, 0.05, 21), np.linspace(-2.0, 2.0, 9)])):
    assert ll(temp * factor) <= best + tol, (factor, ll(temp * factor), best)
  # The held-out events do not enter the fit.
  other_items = luce.data.perturb_from(_table(kind, seed % 1000, n_events=80), n_train, seed=3).items_array()
  _, info2 = ratings.openskill_scores(other_items, available, n_train, kind)
  assert info2["temperature"] == temp


def test_fixed_temperature_scales_the_scores():
  items, available = _arrays(_table("ranking", 5))
  s1, info1 = ratings.openskill_scores(items, available, 0, "ranking", temperature=1.0)
  s4, info4 = ratings.openskill_scores(items, available, 0, "ranking", temperature=4.0)
  assert info1["temperature"] == 1.0 and info4["temperature"] == 4.0
  np.testing.assert_allclose(s4 * 4.0, s1, rtol=1e-6, atol=1e-5)


def _hand_loop(items, available, kind, rng):
  """mu[m, n] before each event, calling openskill directly (rating objects per item, teams in
  a shuffled order, ranks given explicitly)."""
  model = PlackettLuce()
  players = {i: model.rating() for i in range(available.shape[1])}
  out = []
  for t in range(len(items)):
    out.append([players[i].mu for i in range(available.shape[1])])
    listed = [int(i) for i in items[t] if i >= 0]
    rank_of = {}
    for i in range(available.shape[1]):
      if available[t, i]:
        if i in listed:
          rank_of[i] = 0 if kind == "set" else listed.index(i)
        else:
          rank_of[i] = 1 if kind == "set" else len(listed)
    if len(set(rank_of.values())) < 2:
      continue
    order = [int(i) for i in rng.permutation(sorted(rank_of))]
    new = model.rate([[players[i]] for i in order], ranks=[rank_of[i] for i in order])
    for i, team in zip(order, new):
      players[i] = team[0]
  return np.array(out)


@pytest.mark.parametrize("kind", ["ranking", "set"])
def test_ratings_equal_a_hand_loop_over_openskill(kind, rng):
  # 5 items, some unavailable, lists of 1..3 (top-k of the available ones), an empty event
  # and a one-item event (nothing ordered: no update).
  items = np.array([[0, 2, -1], [3, 1, 4], [4, -1, -1], [2, 0, 1], [-1, -1, -1], [1, -1, -1], [0, 4, 3]])
  available = np.ones((7, 5), bool)
  available[0, [1]] = False
  available[2, [0, 1]] = False
  available[5] = [False, True, False, False, False]
  available[6, 2] = False
  scores, _ = ratings.openskill_scores(items, available, 7, kind, temperature=1.0)
  want = _hand_loop(items, available, kind, rng)
  np.testing.assert_allclose(scores.astype(np.float64) + MU0, want, rtol=0, atol=2e-5)
  assert not np.allclose(want[-1], MU0)  # the ratings did move
  np.testing.assert_array_equal(want[5], want[4])  # the empty event moved nothing


def test_first_update_matches_weng_lin_in_closed_form():
  # Two equal players: each wins with p = 1/2, so the winner gains sigma'^2 / (2c) with
  # sigma'^2 = sigma^2 + tau^2 and c^2 = 2 (sigma'^2 + beta^2) (Weng & Lin 2011, Algorithm 4).
  sigma2 = (25 / 3) ** 2 + (25 / 300) ** 2
  c = math.sqrt(2 * (sigma2 + (25 / 6) ** 2))
  gain = sigma2 / (2 * c)
  items = np.array([[1, 0], [0, 1]])
  scores, _ = ratings.openskill_scores(items, np.ones((2, 2), bool), 2, "ranking", temperature=1.0)
  np.testing.assert_allclose(scores[1], [-gain, gain], rtol=1e-5)


def test_deterministic(seed):
  items, available = _arrays(_table("ranking", seed % 1000))
  a, ia = ratings.openskill_scores(items, available, 30, "ranking")
  b, ib = ratings.openskill_scores(items.copy(), available.copy(), 30, "ranking")
  np.testing.assert_array_equal(a, b)
  assert ia == ib


def test_bad_inputs_name_the_argument():
  items, available = _arrays(_table("ranking", 1, n_events=10))
  cases = [
      (dict(items=items[0]), ShapeError, r"items must be int\[m, k\]"),
      (dict(items=items.astype(np.float32)), ShapeError, r"items must hold integer"),
      (dict(available=available[0]), ShapeError, r"available must be bool\[m, n\]"),
      (dict(available=available.astype(np.float32)), ShapeError, r"available must be a bool"),
      (dict(available=available[:-1]), ShapeError, r"items \(10, 3\) and available \(9, 8\)"),
      (dict(items=np.where(np.arange(3) == 0, 8, items)), InputError, r"items\[0, 0\] = 8"),
      (dict(items=np.where(np.arange(3) == 1, items[:, :1], items)), InputError, r"twice"),
      (dict(kind="draw"), ConfigError, r"kind 'draw'; valid: ranking, set"),
      (dict(n_train=11), ConfigError, r"n_train=11"),
      (dict(n_train=-1), ConfigError, r"n_train=-1"),
      (dict(n_train=2.0), ConfigError, r"n_train=2.0"),
      (dict(n_train=0), ConfigError, r"n_train=0 .*temperature="),
      (dict(temperature=0.0), ConfigError, r"temperature=0.0"),
      (dict(temperature=float("nan")), ConfigError, r"temperature=nan"),
      (dict(temperature=-1), ConfigError, r"temperature=-1"),
  ]
  base = dict(items=items, available=available, n_train=5, kind="ranking")
  for change, error, match in cases:
    args = {**base, **change}
    temperature = args.pop("temperature", None)
    with pytest.raises(error, match=match):
      ratings.openskill_scores(args["items"], args["available"], args["n_train"], args["kind"],
                               temperature=temperature)
  off = available.copy()
  off[3, items[3, 1]] = False
  with pytest.raises(InputError, match=rf"items\[3, 1\] = {items[3, 1]} is not available in event 3"):
    ratings.openskill_scores(items, off, 5, "ranking")
  assert issubclass(ShapeError, LuceError) and issubclass(ConfigError, LuceError)
