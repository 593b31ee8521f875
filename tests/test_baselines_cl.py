"""The covariate baselines (conditional_logit, grid) on data from a known covariate model."""

import numpy as np
import pytest

from luce import baselines, losses
from luce.errors import ConfigError, InputError, ShapeError

NAMES = ("grid", "pit_lane")


def covariate_events(rng, n=30, m=700, size=12, k=5, beta_grid=-0.25, beta_pit=-1.0):
  """Rankings from s_ti = θ_i + β_grid · grid_ti + β_pit · pit_ti (Gumbel-top-k).

  grid is the starting slot 1..size (a random order of the entrants), pit a
  0/1 flag for about one entrant in ten; raw values, 0 where unavailable.
  """
  keys = rng.random((m, n))
  avail = keys <= np.sort(keys, axis=1)[:, size - 1:size]
  theta = rng.normal(size=n)
  grid = np.zeros((m, n))
  for t in range(m):
    grid[t, rng.permutation(np.flatnonzero(avail[t]))] = np.arange(1, size + 1)
  pit = ((rng.random((m, n)) < 0.1) & avail).astype(float)
  scores = theta + beta_grid * grid + beta_pit * pit
  g = np.where(avail, scores + rng.gumbel(size=(m, n)), -np.inf)
  items = np.argsort(-g, axis=1)[:, :k].astype(np.int32)
  return items, avail, np.stack([grid, pit], axis=-1), np.where(avail, scores, -np.inf)


def held_out_nll(scores, items, avail, start):
  return float(np.mean(losses.event_nll(scores[start:], items[start:], avail[start:],
                                        kind="ranking")))


def test_conditional_logit_beats_frequency_and_static_and_nears_the_truth(rng):
  items, avail, cov, truth = covariate_events(rng)
  n_train = 500
  nll = {name: held_out_nll(baselines.baseline_scores(name, items, avail, n_train, "ranking",
                                                      covariates=cov, covariate_names=NAMES),
                            items, avail, n_train)
         for name in ("uniform", "frequency", "static", "conditional_logit", "grid")}
  oracle = held_out_nll(truth, items, avail, n_train)
  # Seen over seeds: static ~1.5 nats above the generating model, conditional_logit 0.02-0.05.
  assert nll["conditional_logit"] < nll["static"] - 0.5, nll
  assert nll["conditional_logit"] < nll["frequency"] - 0.5, nll
  assert nll["conditional_logit"] - oracle < 0.1 * (nll["static"] - oracle), (nll, oracle)
  # grid alone (no item effects) still beats uniform.
  assert nll["grid"] < nll["uniform"] - 0.3, nll


def test_grid_recovers_the_slope_sign(rng):
  items, avail, cov, _ = covariate_events(rng, m=300, beta_grid=-0.3)
  s = baselines.baseline_scores("grid", items, avail, 200, "ranking", covariates=cov,
                                covariate_names=NAMES)
  assert s.dtype == np.float32 and s.shape == avail.shape
  # Scores fall with the grid slot in every event: a negative slope on grid alone.
  for t in (0, 150, 299):
    order = np.argsort(cov[t, avail[t], 0])
    assert np.all(np.diff(s[t, avail[t]][order]) < 0)
  # Scores depend on grid alone: two items on the same slot of two events score the same.
  a = np.flatnonzero(avail[0])[0]
  b = np.flatnonzero(avail[1] & (cov[1, :, 0] == cov[0, a, 0]))[0]
  assert s[0, a] == s[1, b]
  # The sign follows the data: a grid that helps gives rising scores.
  items2, avail2, cov2, _ = covariate_events(rng, m=300, beta_grid=0.3)
  s2 = baselines.baseline_scores("grid", items2, avail2, 200, "ranking", covariates=cov2,
                                 covariate_names=NAMES)
  order = np.argsort(cov2[0, avail2[0], 0])
  assert np.all(np.diff(s2[0, avail2[0]][order]) > 0)


@pytest.mark.parametrize("name", ["conditional_logit", "grid"])
def test_standardisation_uses_the_training_window_only(rng, name):
  items, avail, cov, _ = covariate_events(rng, m=300)
  n_train = 200
  a = baselines.baseline_scores(name, items, avail, n_train, "ranking", covariates=cov,
                                covariate_names=NAMES)
  changed = cov.copy()
  changed[n_train:] = np.where(avail[n_train:, :, None], 10.0 * changed[n_train:] + 7.0, 0.0)
  b = baselines.baseline_scores(name, items, avail, n_train, "ranking", covariates=changed,
                                covariate_names=NAMES)
  np.testing.assert_array_equal(a[:n_train], b[:n_train])
  assert not np.allclose(a[n_train:][avail[n_train:]], b[n_train:][avail[n_train:]])
  # Changing a training event's covariates does change the fit.
  changed = cov.copy()
  changed[:20, :, 0] = np.where(avail[:20], 13.0 - changed[:20, :, 0], 0.0)
  c = baselines.baseline_scores(name, items, avail, n_train, "ranking", covariates=changed,
                                covariate_names=NAMES)
  assert not np.array_equal(a[n_train:], c[n_train:])


def test_scores_are_the_fit_on_standardised_covariates(rng):
  import luce
  items, avail, cov, _ = covariate_events(rng, m=200)
  n_train = 150
  s = baselines.baseline_scores("conditional_logit", items, avail, n_train, "ranking",
                                covariates=cov, covariate_names=NAMES)
  seen = avail[:n_train]
  z = np.stack([np.where(avail, (cov[..., j] - cov[:n_train, :, j][seen].mean())
                         / cov[:n_train, :, j][seen].std(), 0.0) for j in range(2)], axis=-1)
  fit = luce.fit_cl(items[:n_train], z[:n_train], avail.shape[1], where=avail[:n_train])
  np.testing.assert_allclose(s, fit.scores(z), rtol=1e-6, atol=1e-6)


def test_a_covariate_constant_in_training_gets_slope_zero(rng):
  items, avail, cov, _ = covariate_events(rng, m=200)
  cov[:150, :, 1] = 0.0          # nobody started from the pit lane in the training window
  s = baselines.baseline_scores("conditional_logit", items, avail, 150, "ranking",
                                covariates=cov, covariate_names=NAMES)
  without = baselines.baseline_scores("conditional_logit", items, avail, 150, "ranking",
                                      covariates=cov[..., :1], covariate_names=NAMES[:1])
  np.testing.assert_allclose(s, without, atol=1e-6)


def test_the_four_other_baselines_ignore_covariates(rng):
  items, avail, cov, _ = covariate_events(rng, m=120)
  for name in ("uniform", "frequency", "recency", "static"):
    a = baselines.baseline_scores(name, items, avail, 100, "ranking")
    b = baselines.baseline_scores(name, items, avail, 100, "ranking", covariates=cov,
                                  covariate_names=NAMES)
    np.testing.assert_array_equal(a, b)
  assert {"conditional_logit", "grid"} <= set(baselines.NAMES)
  assert baselines.COVARIATE_BASELINES == ("conditional_logit", "grid")


def test_errors_name_the_missing_covariate_and_the_sources(rng):
  items, avail, cov, _ = covariate_events(rng, m=60)
  call = baselines.baseline_scores
  with pytest.raises(ConfigError, match=r"needs per-item covariates.*got none.*ergast: gives grid"):
    call("conditional_logit", items, avail, 40, "ranking")
  with pytest.raises(ConfigError, match=r"'grid' needs the covariate 'grid'.*ergast: gives grid"):
    call("grid", items, avail, 40, "ranking")
  with pytest.raises(ConfigError, match=r"named 'grid'.*\('pit', 'x'\).*ergast: gives grid"):
    call("grid", items, avail, 40, "ranking", covariates=cov, covariate_names=("pit", "x"))
  for name in ("conditional_logit", "grid"):
    with pytest.raises(ConfigError, match=r"takes rankings only.*kind 'set'"):
      call(name, items, avail, 40, "set", covariates=cov, covariate_names=NAMES)
  with pytest.raises(ShapeError, match=r"covariate_names has 1 names for the 2 covariates"):
    call("conditional_logit", items, avail, 40, "ranking", covariates=cov, covariate_names=("grid",))
  with pytest.raises(ShapeError, match=r"covariates must be float\[m=60, n=30, p\]"):
    call("conditional_logit", items, avail, 40, "ranking", covariates=cov[:10],
         covariate_names=NAMES)
  bad = cov.copy()
  t, i = np.argwhere(avail)[5]
  bad[t, i, 1] = np.nan
  with pytest.raises(InputError, match=rf"covariates\[{t}, {i}, 1\] \('pit_lane'\) = nan"):
    call("conditional_logit", items, avail, 40, "ranking", covariates=bad, covariate_names=NAMES)
  with pytest.raises(ConfigError, match="valid: .*conditional_logit, grid"):
    call("popular", items, avail, 40, "ranking")
