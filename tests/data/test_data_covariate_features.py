"""Features of the per-event item covariates: values, cross-sectional z-scores, group
history from earlier events only, and their training-window standardisation."""

import numpy as np
import pytest

import luce.data as ld
import luce.train


def _table(rng, m=40, n=6, kind="ranking"):
  """m events; items 0..n-1 in teams t0/t1/t2 (two each, fixed); one numeric
  covariate (a 'grid' slot, distinct per event) and one categorical ('team')."""
  available = rng.random((m, n)) < 0.8
  available[:, :3] = True                                   # at least 3 entrants
  items = np.full((m, 3), -1, np.int32)
  grid = np.full((m, n), np.nan)
  team = np.full((m, n), None, dtype=object)
  for t in range(m):
    entrants = np.flatnonzero(available[t])
    order = rng.permutation(entrants)
    items[t] = order[:3]
    grid[t, entrants] = rng.permutation(len(entrants)) + 1.0
    team[t, entrants] = [f"t{i // 2}" for i in entrants]
  table = ld.EventTable.from_arrays(items, catalog=n, kind=kind, available=available,
                                    covariates={"grid": grid, "team": team})
  return table, grid, available


def test_numeric_covariate_value_and_cross_sectional_z(rng):
  table, grid, available = _table(rng)
  config = ld.FeatureConfig(last=1, horizons=(), since_last=False, calendar=False, static=False)
  feats = ld.build_features(table, config)
  names = list(feats.item_names)
  raw, z = feats.item[:, :, names.index("cov_grid")], feats.item[:, :, names.index("covz_grid")]
  np.testing.assert_array_equal(raw, np.where(available, grid, 0.0).astype(np.float32))
  for t in range(len(table)):
    x = grid[t, available[t]]
    np.testing.assert_allclose(z[t, available[t]], (x - x.mean()) / x.std(), rtol=1e-5, atol=1e-6)
    assert np.all(z[t, ~available[t]] == 0)


def test_group_history_is_the_mean_outcome_of_the_group_before_the_event(rng):
  table, _, available = _table(rng)
  config = ld.FeatureConfig(last=1, horizons=(), since_last=False, calendar=False, static=False,
                            group_horizons=(3, 10))
  feats = ld.build_features(table, config)
  names = list(feats.item_names)
  score = ld.rank_scores(table).astype(np.float64)
  team_of = np.array([i // 2 for i in range(table.n_items)])
  for h in (3, 10):
    got = feats.item[:, :, names.index(f"grp_team_rate_{h}")]
    for t in range(len(table)):
      for i in np.flatnonzero(available[t]):
        lo = max(t - h, 0)
        mates = available[lo:t] & (team_of[None, :] == team_of[i])   # the team's entries in [t-h, t)
        want = score[lo:t][mates].mean() if mates.any() else 0.0
        assert got[t, i] == pytest.approx(want, abs=1e-6), (h, t, i)
  new = feats.item[:, :, names.index("grp_team_new")]
  assert np.all(new[0][available[0]] == 1) and np.all(new[5:][available[5:]] == 0)


def test_covariate_features_use_no_later_outcome(rng):
  table, _, _ = _table(rng, m=60)
  config = ld.FeatureConfig(last=2, horizons=(5,), calendar=False, static=False,
                            group_horizons=(2, 7))
  ld.check_no_lookahead(lambda t: ld.build_features(t, config), table)


def test_sets_use_inclusion_as_the_group_outcome(rng):
  table, _, available = _table(rng, kind="set")
  config = ld.FeatureConfig(last=1, horizons=(), since_last=False, calendar=False, static=False,
                            group_horizons=(4,))
  feats = ld.build_features(table, config)
  got = feats.item[:, :, list(feats.item_names).index("grp_team_rate_4")]
  inc = table.inclusion_matrix()
  t, i = 10, int(np.flatnonzero(available[10])[0])
  mates = available[6:10] & (np.arange(table.n_items)[None, :] // 2 == i // 2)
  assert got[t, i] == pytest.approx(inc[6:10][mates].mean(), abs=1e-6)


def test_prepare_standardises_covariates_on_the_training_window_only(rng, tmp_path):
  table, grid, available = _table(rng, m=100)
  path = tmp_path / "events.parquet"
  ld.write(table, path)
  config = luce.train.checked_config({
      "data": {"source": f"events:{path}", "features": {"calendar": False, "static": False}}})
  prepared = luce.train.prepare(config)
  assert prepared.fit_until == prepared.bounds[1] == 80
  j = list(prepared.item_names).index("cov_grid")
  x = prepared.arrays["all"]["item_features"][:, :, j]
  train = x[:80][available[:80]]
  assert abs(train.mean()) < 1e-5 and abs(train.std() - 1) < 1e-5
  raw = grid[:80][available[:80]]
  np.testing.assert_allclose(x[available], (grid[available] - raw.mean()) / raw.std(), rtol=1e-4,
                             atol=1e-5)
  assert np.all(x[~available] == 0)
  # Statistics of an earlier window when asked (a walk-forward's first predicted event).
  early = luce.train.prepare(config, fit_until=30)
  x30 = early.arrays["all"]["item_features"][:, :, j]
  raw30 = grid[:30][available[:30]]
  np.testing.assert_allclose(x30[available], (grid[available] - raw30.mean()) / raw30.std(),
                             rtol=1e-4, atol=1e-5)
