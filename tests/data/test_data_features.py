"""Features: no look-ahead (with a planted leak), values, cache; splits; batches."""

import jax
import numpy as np
import pytest

from luce import data as ld
from luce.errors import DataError


def test_planted_future_leak_is_caught(powerball):
  def leaky(table):  # counts that include the event itself: a one-event leak
    return np.cumsum(table.inclusion_matrix(), axis=0)
  with pytest.raises(DataError, match="look-ahead"):
    ld.check_no_lookahead(leaky, powerball)

  def honest(table):
    inc = table.inclusion_matrix()
    return np.cumsum(inc, axis=0) - inc
  ld.check_no_lookahead(honest, powerball)


@pytest.mark.parametrize("name", ["powerball", "f1"])
def test_features_use_only_the_past(request, name):
  table = request.getfixturevalue(name)
  config = ld.FeatureConfig(last=2, horizons=(5, 30))
  ld.check_no_lookahead(lambda t: ld.build_features(t, config), table)


def test_feature_values_by_loop(rng):
  m, n, k = 40, 9, 3
  items = np.argsort(rng.random((m, n)), axis=1)[:, :k]
  t = ld.EventTable.from_arrays(items, catalog=n, kind="ranking")
  f = ld.build_features(t, ld.FeatureConfig(last=2, horizons=(4,), calendar=False))
  names = list(f.item_names)
  assert names == ["in_last_1", "in_last_2", "rank_last_1", "rank_last_2", "rate_4", "since_last"]
  for e in range(m):
    for i in range(n):
      past = [j for j in range(e) if i in items[j]]
      assert f.item[e, i, 0] == (e >= 1 and i in items[e - 1])
      assert f.item[e, i, 1] == (e >= 2 and i in items[e - 2])
      want_rank = (k - list(items[e - 1]).index(i)) / k if e >= 1 and i in items[e - 1] else 0
      assert f.item[e, i, 2] == pytest.approx(want_rank)
      window = range(max(e - 4, 0), e)
      rate = sum(i in items[j] for j in window) / max(len(window), 1)
      assert f.item[e, i, 4] == pytest.approx(rate)
      gap = e - (past[-1] if past else -1)
      assert f.item[e, i, 5] == pytest.approx(np.log1p(gap))


def test_calendar_and_static(powerball, f1):
  f = ld.build_features(powerball, ld.FeatureConfig(last=1, horizons=()))
  weekday = f.event[:, :7].argmax(axis=1)
  want = (powerball.times().astype("datetime64[D]").astype(np.int64) + 3) % 7
  assert (weekday == want).all() and set(weekday) <= {0, 2, 5}  # Mon, Wed, Sat draws
  g = ld.build_features(f1, ld.FeatureConfig(last=1, horizons=()))
  assert g.static.shape[0] == 848 and "group=British" in g.static_names
  assert (g.available == f1.available_mask()).all()


def test_cache_is_keyed_by_data_and_config(tmp_path, powerball):
  config = ld.FeatureConfig(last=2, horizons=(10,))
  a = ld.build_features(powerball, config, cache_dir=tmp_path)
  files = list(tmp_path.glob("features-*.npz"))
  assert len(files) == 1
  b = ld.build_features(powerball, config, cache_dir=tmp_path)
  assert np.array_equal(a.item, b.item) and a.item_names == b.item_names
  ld.build_features(powerball, ld.FeatureConfig(last=3, horizons=(10,)), cache_dir=tmp_path)
  ld.build_features(powerball.slice(0, 100), config, cache_dir=tmp_path)
  assert len(list(tmp_path.glob("features-*.npz"))) == 3


def test_split_is_time_ordered(f1):
  s = ld.split_by_time(f1, (0.7, 0.15, 0.15))
  assert len(s.train) + len(s.valid) + len(s.test) == len(f1)
  assert s.train.times().max() < s.valid.times().min() <= s.valid.times().max() < s.test.times().min()


def test_batches_prefetch_to_device(powerball):
  f = ld.build_features(powerball, ld.FeatureConfig(last=1, horizons=()))
  arrays = ld.model_arrays(powerball, f)
  got = list(ld.batches(arrays, 500, prefetch=2))
  assert [b["items"].shape[0] for b in got] == [500, 500, 390]
  assert all(isinstance(b["items"], jax.Array) for b in got)
  assert np.array_equal(np.concatenate([np.asarray(b["items"]) for b in got]), arrays["items"])
  shuffled = list(ld.batches(arrays, 500, shuffle=True, seed=3, drop_remainder=True, epochs=2))
  assert len(shuffled) == 4
  idx = np.asarray(shuffled[0]["index"])
  assert np.array_equal(np.asarray(shuffled[0]["items"]), arrays["items"][idx])
  assert not np.array_equal(idx, np.arange(500))
