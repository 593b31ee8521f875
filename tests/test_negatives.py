"""Sampled negatives (`luce.models.sampled_batch`): the sampled PL loss against the exact
loss, what the negatives may hold, their determinism, the config errors, and a training
run on a wider catalog whose evaluation stays exact."""

import jax
import ml_collections
import numpy as np
import pytest

import luce.models._family
import luce.train
from luce.errors import ConfigError, DataError, ShapeError
from luce.losses import event_nll
from luce.models import PLFamily, max_available, sample_negatives, sampled_batch


def _arrays(rng, m=9, n=40, f=2, k=4):
  """Events over n items, each with k..n available (row 1 all of them), a top-k list of
  distinct available items (every third row one short, -1 padded)."""
  available = np.zeros((m, n), bool)
  items = np.full((m, k), -1, np.int64)
  for e in range(m):
    count = n if e == 1 else int(rng.integers(k + 1, n))
    on = rng.choice(n, count, replace=False)
    available[e, on] = True
    take = k - 1 if e % 3 == 0 else k
    items[e, :take] = rng.choice(on, take, replace=False)
  return {"available": available, "items": items,
          "weights": rng.uniform(0.5, 2.0, m).astype(np.float32),
          "item_features": rng.normal(size=(m, n, f)).astype(np.float32),
          "event_features": rng.normal(size=(m, 1)).astype(np.float32)}


_event_nll = jax.jit(event_nll, static_argnames="kind")


def _sampled_nll(scores, batch, kind):
  """The sampled loss of catalog scores float[m, n] on a `sampled_batch`."""
  block = np.take_along_axis(scores, batch["entrants"], 1) + batch["offset"]
  return np.asarray(_event_nll(block, batch["items"], batch["available"], kind=kind), np.float64)


def _unchosen(arrays):
  pool = arrays["available"].copy()
  for e, row in enumerate(arrays["items"]):
    pool[e, row[row >= 0]] = False
  return pool


PROPOSALS = ["uniform", "proposal"]


def _proposal(rng, which, n):
  return None if which == "uniform" else rng.lognormal(0.0, 1.0, n)


@pytest.mark.parametrize("which", PROPOSALS)
@pytest.mark.parametrize("kind", ["ranking", "set"])
def test_sampled_loss_is_the_exact_loss_when_every_unchosen_item_is_drawn(rng, kind, which):
  arrays = _arrays(rng)
  proposal = _proposal(rng, which, 40)
  scores = rng.normal(0.0, 2.0, arrays["available"].shape).astype(np.float32)
  exact = np.asarray(event_nll(scores, arrays["items"], arrays["available"], kind=kind))
  most = int(_unchosen(arrays).sum(axis=1).max())
  rows = np.arange(len(arrays["items"]))
  for count in (most, most + 3):
    batch = sampled_batch(arrays, rows, count, key=int(rng.integers(1 << 30)), proposal=proposal)
    np.testing.assert_array_equal(batch["offset"], 0.0)
    np.testing.assert_allclose(_sampled_nll(scores, batch, kind), exact, rtol=2e-6, atol=2e-5)
  # One negative fewer than the widest event's unchosen items: that event is sampled.
  batch = sampled_batch(arrays, rows, most - 1, key=1, proposal=proposal)
  if proposal is None:
    assert batch["offset"][1, -1] == pytest.approx(np.log(most / (most - 1)))
  assert (batch["offset"][1, 4:] > 0).any()
  assert not np.allclose(_sampled_nll(scores, batch, kind)[1], exact[1], rtol=1e-6)


@pytest.mark.parametrize("which", PROPOSALS)
@pytest.mark.parametrize("kind", ["ranking", "set"])
def test_sampled_loss_is_consistent(rng, kind, which):
  """Over many draws the estimate of R = sum over the unchosen of e^s is unbiased, the
  sampled NLL sits below the exact one (Jensen) and its bias shrinks as M grows."""
  arrays = _arrays(rng, m=4, n=60)
  proposal = _proposal(rng, which, 60)
  scores = rng.normal(0.0, 1.5, arrays["available"].shape).astype(np.float32)
  exact = np.asarray(event_nll(scores, arrays["items"], arrays["available"], kind=kind), np.float64)
  pool = _unchosen(arrays)
  r_exact = np.where(pool, np.exp(scores.astype(np.float64)), 0.0).sum(axis=1)
  rows = np.arange(len(arrays["items"]))
  draws = 400
  bias = {}
  for count in (4, 16):
    nll, r_hat = [], []
    for d in range(draws):
      batch = sampled_batch(arrays, rows, count, key=(7, count, d), proposal=proposal)
      nll.append(_sampled_nll(scores, batch, kind))
      k = batch["items"].shape[1]
      neg = np.take_along_axis(scores, batch["entrants"][:, k:], 1).astype(np.float64)
      r_hat.append((np.exp(neg + batch["offset"][:, k:]) * batch["available"][:, k:]).sum(axis=1))
    r_hat, nll = np.array(r_hat), np.array(nll)
    stderr = r_hat.std(axis=0) / np.sqrt(draws)
    assert (np.abs(r_hat.mean(axis=0) - r_exact) < 5 * stderr + 1e-9).all(), (r_hat.mean(0), r_exact)
    bias[count] = nll.mean(axis=0) - exact
    assert (bias[count] < 5 * nll.std(axis=0) / np.sqrt(draws) + 1e-6).all(), bias[count]
  assert np.abs(bias[16]).sum() < np.abs(bias[4]).sum(), bias


def test_a_proposal_near_the_weights_lowers_the_variance(rng):
  """q = e^s (the ideal proposal) estimates R with a smaller spread than uniform draws."""
  arrays = _arrays(rng, m=3, n=80)
  arrays["available"][:] = True        # 76 or 77 unchosen items in every event, 8 drawn
  scores = rng.normal(0.0, 2.0, 80).astype(np.float32)
  catalog = np.broadcast_to(scores, arrays["available"].shape)
  spread = {}
  for name, proposal in (("uniform", None), ("ideal", np.exp(scores.astype(np.float64)))):
    r_hat = []
    for d in range(200):
      negatives, real, log_weight = sample_negatives(arrays["available"], arrays["items"], 8, (d,),
                                                     proposal)
      s = np.take_along_axis(catalog, negatives, 1)
      r_hat.append((np.exp(s + log_weight) * real).sum(axis=1))
    spread[name] = np.std(np.log(np.array(r_hat)), axis=0)
  assert (spread["ideal"] < 0.5 * spread["uniform"]).all(), spread


def test_negatives_are_distinct_unchosen_available_items_drawn_uniformly(rng):
  arrays = _arrays(rng, m=6, n=30)
  pool = _unchosen(arrays)
  unchosen = pool.sum(axis=1)
  count = 8
  hits = np.zeros(pool.shape)
  draws = 600
  for d in range(draws):
    negatives, real, log_weight = sample_negatives(arrays["available"], arrays["items"], count, (3, d))
    for e in range(len(negatives)):
      drawn = negatives[e, real[e]]
      assert len(drawn) == min(count, unchosen[e]) == len(set(drawn.tolist()))
      assert pool[e, drawn].all()          # never a listed or an unavailable item
      hits[e, drawn] += 1
    expect = np.log(unchosen / np.minimum(unchosen, count))[:, None]
    np.testing.assert_allclose(log_weight, np.where(real, expect, 0.0), rtol=1e-6)
  # Each unchosen item is drawn with probability M/|U| (binomial, 5 standard errors).
  p = np.minimum(count, unchosen)[:, None] / unchosen[:, None]
  rate = hits / draws
  assert (np.abs(rate - p)[pool] < 5 * np.sqrt(p * (1 - p) / draws).repeat(pool.shape[1], 1)[pool]
          + 1e-9).all()
  assert (hits[~pool] == 0).all()
  proposal = rng.lognormal(0.0, 2.0, 30)
  for d in range(50):
    negatives, real, log_weight = sample_negatives(arrays["available"], arrays["items"], count,
                                                   (4, d), proposal)
    for e in range(len(negatives)):
      drawn = negatives[e, real[e]]
      assert len(drawn) == min(count, unchosen[e]) == len(set(drawn.tolist()))
      assert pool[e, drawn].all()
    assert (log_weight[~real] == 0).all() and (log_weight[real] >= 0).all()


def test_sampled_batch_layout_and_bad_input(rng):
  arrays = _arrays(rng)
  rows = np.array([4, 0, 1])
  batch = sampled_batch(arrays, rows, 5, key=0)
  k = arrays["items"].shape[1]
  for j, e in enumerate(rows):
    listed = arrays["items"][e] >= 0
    np.testing.assert_array_equal(batch["entrants"][j, :k][listed], arrays["items"][e][listed])
    np.testing.assert_array_equal(batch["items"][j], np.where(listed, np.arange(k), -1))
    np.testing.assert_array_equal(batch["item_features"][j],
                                  arrays["item_features"][e, batch["entrants"][j]])
    assert batch["weights"][j] == arrays["weights"][e]
  bad = dict(arrays, available=arrays["available"].copy())
  item = int(bad["items"][2, 1])
  bad["available"][2, item] = False
  with pytest.raises(DataError, match=f"batch event 1: listed item {item} .position 1. is not"):
    sampled_batch(bad, np.array([0, 2]), 5, key=0)
  for proposal in (np.ones(39), np.r_[np.ones(39), 0.0], np.r_[np.ones(39), np.nan]):
    with pytest.raises(ShapeError, match="proposal must be 40 finite positive weights"):
      sampled_batch(arrays, rows, 5, key=0, proposal=proposal)


def test_negatives_are_a_function_of_the_key(rng):
  arrays = _arrays(rng)
  rows = np.arange(len(arrays["items"]))
  a, b = (sampled_batch(arrays, rows, 6, key=(1, 2, 0)) for _ in range(2))
  for name in a:
    np.testing.assert_array_equal(a[name], b[name])
  c = sampled_batch(arrays, rows, 6, key=(1, 3, 0))
  assert not np.array_equal(a["entrants"], c["entrants"])


def _model(**fields):
  return ml_collections.ConfigDict({**dict(encoder="mlp", hidden=8, depth=1, heads=2, embed_dim=2,
                                           dropout=0.0), **fields})


def test_family_loss_and_config_errors(rng):
  arrays = _arrays(rng)
  width = max_available(arrays)
  family = PLFamily(_model(), n_items=40, kind="ranking", k=4, item_names=(), width=width,
                    negatives=width - 1)
  params = family.model.init(jax.random.key(0), family.take(arrays, np.arange(2)))["params"]
  params = dict(params, item_bias=rng.normal(size=40).astype(np.float32))
  rows = np.arange(len(arrays["items"]))
  # M = width - 1 draws every unchosen item: the family's training loss is its exact NLL.
  sampled = family.train_take(arrays, rows, (0, 1))
  loss = family.loss(family.model.apply({"params": params}, sampled), sampled)
  np.testing.assert_allclose(loss, family.nll(params, arrays), rtol=2e-6, atol=2e-5)
  exact = PLFamily(_model(), n_items=40, kind="ranking", k=4, item_names=(), width=width)
  assert exact.train_take(arrays, rows, (0, 1)).keys() == exact.take(arrays, rows).keys()

  def build(negatives, width=width, **fields):
    return PLFamily(_model(**fields), n_items=40, kind="ranking", k=4, item_names=(), width=width,
                    negatives=negatives)
  with pytest.raises(ConfigError, match="model.negatives=-1 must be >= 0"):
    build(-1)
  with pytest.raises(ConfigError, match=f"widest event has {width} available items .catalog 40."):
    build(width)
  with pytest.raises(ConfigError, match="needs model.encoder='mlp'.*'itransformer' reads them"):
    build(4, encoder="itransformer")
  with pytest.raises(ConfigError, match="needs model.entrants=True"):
    build(4, width=None)


@pytest.mark.parametrize("fields, message", [
    ({"model.negatives": -3}, "model.negatives=-3 must be >= 0"),
    ({"model.negatives": 8, "model.negative_proposal": "zipf"},
     "model.negative_proposal='zipf'; valid: uniform, popularity"),
    ({"model.negatives": 8, "model.family": "diffusion"}, "model.family='diffusion' cannot"),
    ({"model.negatives": 8, "model.encoder": "s5"}, "needs model.encoder='mlp'"),
    ({"model.negatives": 8, "model.entrants": False}, "needs model.entrants=True"),
    ({"model.negatives": 8, "model.ensemble.seeds": 2}, "with model.ensemble"),
    ({"model.negatives": 8, "tune.population": 2}, "with tune.population=2"),
])
def test_config_errors(fields, message):
  config = {}
  for name, value in fields.items():
    *path, leaf = name.split(".")
    node = config
    for part in path:
      node = node.setdefault(part, {})
    node[leaf] = value
  with pytest.raises(ConfigError, match=message):
    luce.train.checked_config(config)


def test_popularity_proposal_counts_the_training_split():
  config = luce.train.checked_config(_config(16, n_events=300) | {"model": _config(16)["model"] | {
      "negative_proposal": "popularity"}})
  prepared = luce.train.prepare(config)
  family = luce.train.build_family(config, prepared)
  train = np.asarray(prepared.arrays["train"]["items"])
  expect = np.array([1 + (train == i).sum() for i in range(200)], np.float64)
  np.testing.assert_array_equal(family.proposal, expect)
  assert family.proposal.sum() == 200 + train.size
  batch = family.train_take(prepared.arrays["train"], np.arange(8), (0, 1))
  assert batch["offset"].shape == (8, 3 + 16) and (batch["offset"][:, 3:] > 0).any()


def test_larger_than_the_catalog_is_a_config_error(tmp_path):
  config = _config(negatives=60, n_items=60)
  with pytest.raises(ConfigError, match="model.negatives=60: the widest event has 60 available items"):
    luce.train.train_and_evaluate(config, tmp_path)


def _config(negatives, n_items=200, n_events=1000, steps=200, seed=0):
  return {
      "seed": seed,
      "data": {"source": f"synthetic:ranking?n_items={n_items}&k=3&n_events={n_events}"
                         f"&item_spread=2&seed=1",
               "features": {"calendar": False, "last": 1, "horizons": (), "since_last": False},
               "split": (0.6, 0.2, 0.2), "eval_k": 3},
      "model": {"hidden": 16, "embed_dim": 4, "depth": 1, "heads": 2, "negatives": negatives},
      "optimizer": {"learning_rate": 3e-2, "warmup_steps": 5, "weight_decay": 0.0},
      "train": {"batch_size": 32, "num_steps": steps, "eval_every": steps, "checkpoint_every": steps,
                "log_every": 25, "progress_bar": False},
      "baselines": {"names": ("uniform", "frequency")},
  }


def test_trains_with_sampled_negatives_and_evaluates_exactly(tmp_path):
  """200 items, top-3, 24 negatives: the held-out NLL (exact, over all 200 items) within
  6% of the generating model's (3.9% when written; exact training 3.3%) and below the
  baselines'; the same seed gives the same parameters."""
  result = luce.train.train_and_evaluate(_config(24), tmp_path / "a")
  valid = result["valid"]
  model, oracle = valid["model"]["nll_per_event"], valid["oracle"]["nll_per_event"]
  assert model <= 1.06 * oracle, valid
  for name in ("uniform", "frequency"):
    assert model < valid[name]["nll_per_event"], valid
  run = luce.train.load_run(tmp_path / "a")
  arrays = run.prepared.split_arrays("valid")
  exact = np.asarray(event_nll(run.family.scores(run.params, arrays), arrays["items"],
                               arrays["available"], kind="ranking"), np.float64)
  np.testing.assert_allclose(run.family.nll(run.params, arrays), exact, rtol=1e-5)
  # The negatives come from (seed, step): two runs of one seed end at the same parameters.
  again, twice = (luce.train.train_and_evaluate(_config(24, steps=10), tmp_path / name)
                  for name in ("b", "c"))
  for x, y in zip(jax.tree.leaves(again["final_params"]), jax.tree.leaves(twice["final_params"]),
                  strict=True):
    np.testing.assert_array_equal(x, y)


def test_large_catalog_config():
  from luce.configs import large_catalog
  assert large_catalog.__doc__.splitlines()[2].strip().startswith(
      "luce-train --config=configs/large_catalog.py")
  config = luce.train.checked_config(large_catalog.get_config())
  assert "n_items=10000" in config.data.source and config.model.negatives == 64
  assert "static" not in config.baselines.names   # fit_pl stops at 8,192 items


def test_store_pipeline_trains_with_negatives(tmp_path, monkeypatch):
  """The Grain batches of the feature store get their negatives the same way."""
  calls = []

  def counted(arrays, rows, count, key, proposal=None):
    calls.append((len(rows), key))
    return sampled_batch(arrays, rows, count, key, proposal)
  monkeypatch.setattr(luce.models._family, "sampled_batch", counted)
  config = _config(24, n_events=300, steps=10)
  config["data"]["pipeline"] = "store"
  result = luce.train.train_and_evaluate(config, tmp_path)
  assert result["step"] == 10 and np.isfinite(result["valid"]["model"]["nll_per_event"])
  assert [key[1] for _, key in calls] == list(range(10)) and {n for n, _ in calls} == {32}
