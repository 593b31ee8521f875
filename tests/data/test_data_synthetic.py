"""`synthetic:` sources and luce.data.synthetic_pl: reproducible draws, the oracle column, bad options."""

import numpy as np
import pyarrow as pa
import pytest

from luce import data as ld
from luce.errors import ConfigError, DataError

SMALL = "n_items=7&k=3&n_events=200&seed=3"


def _replay(scores, n_items, k, seed, item_spread=1.0):
  """The items the generating law draws from `scores`, with the seed's own noise stream."""
  rng = np.random.default_rng(seed)
  rng.normal(0.0, item_spread, n_items)          # θ comes first in the stream
  return np.stack([np.argsort(-(s + rng.gumbel(size=n_items)))[:k] for s in scores])


def _law(items, theta, n_items, k, momentum, rank_momentum):
  """float64[m, n]: θ + α·in_last_1 + γ·rank_last_1 computed from the drawn items."""
  m = len(items)
  in_last = np.zeros((m, n_items))
  rank_last = np.zeros((m, n_items))
  for t in range(1, m):
    in_last[t, items[t - 1]] = 1.0
    rank_last[t, items[t - 1]] = (k - np.arange(k)) / k
  return theta + momentum * in_last + rank_momentum * rank_last


def test_same_source_same_table_and_hash():
  a = ld.read(f"synthetic:ranking?{SMALL}")
  b = ld.read(f"synthetic:ranking?{SMALL}")
  assert a.events.equals(b.events) and a.content_hash == b.content_hash
  assert (a.n_events, a.n_items, a.k, a.kind) == (200, 7, 3, "ranking")
  assert a.metadata["source"] == f"synthetic:ranking?{SMALL}"
  drawn = ld.synthetic_pl(n_items=7, k=3, n_events=200, seed=3)
  assert drawn.table.content_hash == a.content_hash
  np.testing.assert_array_equal(ld.oracle_scores(a), drawn.scores)
  other = ld.read("synthetic:ranking?n_items=7&k=3&n_events=200&seed=4")
  assert other.content_hash != a.content_hash


def test_defaults_and_empty_kind():
  t = ld.read("synthetic:")
  assert (t.n_events, t.n_items, t.k, t.kind) == (4000, 20, 5, "ranking")
  assert t.content_hash == ld.read("synthetic:ranking?n_items=20&k=5&n_events=4000&item_spread=1.0"
                                   "&momentum=1.0&rank_momentum=1.0&seed=0").content_hash
  s = ld.read("synthetic:set?n_items=9&k=4&n_events=50")
  assert (s.kind, s.k, s.n_items) == ("set", 4, 9)


def test_oracle_column_is_hashed_and_round_trips(tmp_path):
  t = ld.read(f"synthetic:set?{SMALL}")
  assert "ctx_oracle_scores" in t.context_columns()
  scores = ld.oracle_scores(t)
  assert scores.dtype == np.float32 and scores.shape == (200, 7)
  path = tmp_path / "synthetic.parquet"
  digest = ld.write(t, path)
  back = ld.read_parquet(path)
  assert back.content_hash == digest == t.content_hash
  np.testing.assert_array_equal(ld.oracle_scores(back), scores)
  np.testing.assert_array_equal(ld.oracle_scores(ld.read(f"events:{path}")), scores)
  # The hash covers the scores: the same items with other scores hash differently.
  changed = pa.FixedSizeListArray.from_arrays(pa.array((scores + 1).reshape(-1), pa.float32()), 7)
  i = t.events.column_names.index("ctx_oracle_scores")
  moved = ld.EventTable(t.events.set_column(i, "ctx_oracle_scores", changed), t.catalog)
  assert moved.content_hash != t.content_hash
  # A slice keeps its rows' scores.
  np.testing.assert_array_equal(ld.oracle_scores(t.slice(10, 20)), scores[10:20])


def test_scores_follow_the_generating_law():
  n, k, seed, alpha, gamma, spread = 7, 3, 3, 0.7, 1.3, 2.0
  t = ld.read(f"synthetic:ranking?n_items={n}&k={k}&n_events=300&seed={seed}&momentum={alpha}"
              f"&rank_momentum={gamma}&item_spread={spread}")
  scores, items = ld.oracle_scores(t), t.items_array()
  theta = np.random.default_rng(seed).normal(0.0, spread, n)
  # The first event has no previous one: its scores are θ (no momentum yet).
  np.testing.assert_array_equal(scores[0], theta.astype(np.float32))
  law = _law(items, theta, n, k, alpha, gamma)
  np.testing.assert_array_equal(scores, law.astype(np.float32))
  # And the items are the Gumbel-top-k draws of those scores under the seed.
  np.testing.assert_array_equal(_replay(law, n, k, seed, spread), items)
  # Sets carry no rank bonus: γ is ignored.
  s = ld.read(f"synthetic:set?n_items={n}&k={k}&n_events=100&seed={seed}&momentum={alpha}"
              f"&rank_momentum={gamma}&item_spread={spread}")
  law = _law(s.items_array(), theta, n, k, alpha, 0.0)
  np.testing.assert_array_equal(ld.oracle_scores(s), law.astype(np.float32))


def test_features_model_matches_the_scores():
  data = ld.synthetic_pl(n_items=7, k=3, n_events=200, seed=3)
  feats = ld.build_features(data.table)
  inc = feats.item[:, :, feats.item_names.index("in_last_1")]
  rank = feats.item[:, :, feats.item_names.index("rank_last_1")]
  np.testing.assert_allclose(data.scores, data.scores[0] + inc + rank, atol=1e-5)


def test_oracle_scores_of_other_tables_is_none():
  t = ld.EventTable.from_arrays(np.array([[0, 1], [2, 0]]), catalog=3)
  assert ld.oracle_scores(t) is None


def test_oracle_scores_rejects_a_malformed_column():
  t = ld.EventTable.from_arrays(np.array([[0, 1], [2, 0]]), catalog=3,
                                context={"oracle_scores": np.array(["a", "b"])})
  with pytest.raises(DataError, match="ctx_oracle_scores.*type"):
    ld.oracle_scores(t)
  short = pa.array([[0.0, 1.0], [1.0, 2.0]], pa.list_(pa.float32()))
  t = ld.EventTable(t.events.set_column(t.events.column_names.index("ctx_oracle_scores"),
                                        "ctx_oracle_scores", short), t.catalog)
  with pytest.raises(DataError, match="event 0 has 2 scores.*3 items"):
    ld.oracle_scores(t)


@pytest.mark.parametrize("query, match", [
    ("n_item=5", "unknown option 'n_item'.*n_items"),
    ("kind=set", "unknown option 'kind'"),
    ("n_items=many", "n_items='many' must be an integer"),
    ("k=2.5", "k='2.5' must be an integer"),
    ("n_events=", "n_events='' must be an integer"),
    ("seed=x", "seed='x' must be an integer"),
    ("item_spread=wide", "item_spread='wide' must be a number"),
    ("momentum=nan", "momentum='nan' must be a finite number"),
    ("rank_momentum=inf", "rank_momentum='inf' must be a finite number"),
    ("n_items=4&k=5", "k=5 must be between 1 and n_items=4"),
    ("k=0", "k=0 must be at least 1"),
    ("n_items=0", "n_items=0 must be at least 1"),
    ("n_events=0", "n_events=0 must be at least 1"),
    ("seed=-1", "seed=-1 must be at least 0"),
    ("item_spread=-1", "item_spread=-1.0 must be at least 0"),
    ("n_items", "option 'n_items' has no value"),
])
def test_bad_options_name_the_option(query, match):
  with pytest.raises(ConfigError, match=match):
    ld.read(f"synthetic:ranking?{query}")


def test_bad_kind_names_the_valid_kinds():
  with pytest.raises(ConfigError, match="synthetic:ranking, synthetic:set"):
    ld.read("synthetic:partial?n_items=5")
  with pytest.raises(ConfigError, match="synthetic:KIND"):
    ld.read("lotto:x")                             # the scheme list names synthetic:KIND


def test_synthetic_pl_checks_its_arguments():
  with pytest.raises(ConfigError, match="kind='pairs'.*ranking, set"):
    ld.synthetic_pl(n_items=5, k=2, n_events=3, kind="pairs")
  with pytest.raises(ConfigError, match="n_items=5.0 must be an integer"):
    ld.synthetic_pl(n_items=5.0, k=2, n_events=3)
  with pytest.raises(ConfigError, match="momentum='1' must be a finite number"):
    ld.synthetic_pl(n_items=5, k=2, n_events=3, momentum="1")
