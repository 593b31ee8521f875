"""Ensembles: the mixture NLL, scores and samples against brute force, the member
specs and their errors, and an ensemble trained through the one loop."""

import itertools
import math

import jax
import ml_collections
import numpy as np
import pytest

import luce.train
from luce.configs import synthetic
from luce.errors import ConfigError
from luce.models import PLFamily
from luce.train import EnsembleFamily, checked_config, mixture_nll


def _pl_prob(w, ranking):
  """P(ranking) under PL with weights w (float64), the available items only."""
  p, left = 1.0, w.sum()
  for i in ranking:
    p *= w[i] / left
    left -= w[i]
  return p


def _ensemble(n, k, members=2, hidden=8):
  fams = []
  for encoder in ["mlp", "s5", "deepar"][:members]:
    m = ml_collections.ConfigDict(dict(encoder=encoder, hidden=hidden, depth=1, heads=2,
                                       embed_dim=3, dropout=0.0, state_size=4))
    fams.append(PLFamily(m, n_items=n, kind="ranking", k=k, item_names=("in_last_1", "rank_last_1", "x"),
                         width=None))
  return EnsembleFamily(fams, n_items=n, kind="ranking", k=k)


def _arrays(rng, m, n, k):
  available = np.ones((m, n), bool)
  available[0, 0] = False
  items = np.stack([rng.choice(np.flatnonzero(available[e]), k, replace=False) for e in range(m)])
  return {"available": available, "items": items, "weights": np.ones(m, np.float32),
          "item_features": rng.normal(size=(m, n, 3)).astype(np.float32) * 2,
          "event_features": rng.normal(size=(m, 1)).astype(np.float32)}


def _init(family, arrays, rng):
  params = family.model.init(jax.random.key(int(rng.integers(1 << 30))),
                             family.take(arrays, np.arange(1)))["params"]
  # Non-zero item biases, so the members differ a lot and a mixing error would show.
  return {name: dict(p, item_bias=rng.normal(size=p["item_bias"].shape).astype(np.float32) * 2)
          for name, p in params.items()}


def test_mixture_nll_and_scores_equal_brute_force(rng):
  n, k = 6, 3
  family = _ensemble(n, k, members=3)
  arrays = _arrays(rng, 5, n, k)
  params = _init(family, arrays, rng)
  member_scores = [np.asarray(f.scores(params[f"members_{j}"], arrays), np.float64)
                   for j, f in enumerate(family.members)]
  got = family.nll(params, arrays, batch_size=2)
  first = family.scores(params, arrays, batch_size=2)
  for e in range(5):
    avail = arrays["available"][e]
    weights = [np.where(avail, np.exp(s[e] - s[e][avail].max()), 0.0) for s in member_scores]
    want = -math.log(np.mean([_pl_prob(w, arrays["items"][e]) for w in weights]))
    assert abs(got[e] - want) < 1e-5 * max(1.0, abs(want))
    p_first = np.mean([w / w.sum() for w in weights], axis=0)
    np.testing.assert_allclose(np.exp(first[e][avail]), p_first[avail], rtol=1e-5)
    assert np.isneginf(first[e][~avail]).all()
  assert family.nll_kind == "exact"


def test_mixture_nll_is_stable_far_from_one():
  """Members with NLLs of 1000 and 2000 nats: logsumexp, not a sum of exp underflowing to 0."""
  out = mixture_nll(np.array([[1000.0, 3.0], [2000.0, np.inf]]))
  np.testing.assert_allclose(out, [1000.0 + math.log(2), 3.0 + math.log(2)])
  assert np.isinf(mixture_nll(np.array([[np.inf], [np.inf]])))[0]


def test_mixture_samples_match_the_mixture_probabilities(rng):
  n, k = 4, 2
  family = _ensemble(n, k)
  arrays = _arrays(rng, 1, n, k)
  arrays["available"][:] = True
  params = _init(family, arrays, rng)
  draws = 20000
  drawn = family.sample(params, arrays, jax.random.key(int(rng.integers(1 << 30))), draws, k)
  assert drawn.shape == (1, draws, k) and (drawn >= 0).all()
  member_scores = [np.asarray(f.scores(params[f"members_{j}"], arrays), np.float64)[0]
                   for j, f in enumerate(family.members)]
  weights = [np.exp(s - s.max()) for s in member_scores]
  outcomes = list(itertools.permutations(range(n), k))
  want = np.array([np.mean([_pl_prob(w, o) for w in weights]) for o in outcomes])
  index = {o: i for i, o in enumerate(outcomes)}
  counts = np.bincount([index[tuple(d)] for d in drawn[0]], minlength=len(outcomes))
  # Pearson chi-square against the exact mixture, 11 degrees of freedom: p < 1e-4 beyond 38.
  chi2 = float(np.sum((counts - draws * want) ** 2 / (draws * want)))
  assert chi2 < 38.0, chi2
  # and the members alone do not fit (the test can tell a mixture from a member)
  alone = np.array([_pl_prob(weights[0], o) for o in outcomes])
  assert float(np.sum((counts - draws * alone) ** 2 / (draws * alone))) > 38.0


@pytest.mark.parametrize("members, match", [
    (("encoder",), "is not field=value"),
    (("encodr=s5",), "model.encodr does not exist.*'encoder'"),
    (("depth=two",), "model.depth='two' is not a int"),
    (("encoder=lstm",), "model.encoder='lstm'.*in model.ensemble.members entry 'encoder=lstm'"),
    (("ensemble.seeds=3",), "a member cannot set"),
    (("hidden=30, heads=4",), "multiple of model.heads"),
])
def test_bad_member_specs_are_named(members, match):
  with pytest.raises(ConfigError, match=match):
    checked_config({"model": {"ensemble": {"members": members}}})


def test_seeds_must_be_positive():
  with pytest.raises(ConfigError, match="model.ensemble.seeds=0"):
    checked_config({"model": {"ensemble": {"seeds": 0}}})


def test_a_pl_and_diffusion_ensemble_trains_and_scores_between_its_members(tmp_path):
  c = synthetic.get_config("set")
  c.data.source = "synthetic:set?n_items=12&k=3&n_events=300"
  c.data.eval_k = 3
  c.model.update(hidden=16, depth=1, embed_dim=4)
  c.model.ensemble.members = ("family=pl", "family=diffusion, encoder=mlp")
  c.train.update(batch_size=32, num_steps=30, log_every=10, eval_every=10, checkpoint_every=10,
                 progress_bar=False, async_checkpoints=False)
  c.baselines.names = ("uniform",)
  result = luce.train.train_and_evaluate(c, tmp_path)
  assert result["family"] == "ensemble" and result["nll"] == "exact"
  run = luce.train.load_run(tmp_path)
  valid = run.prepared.arrays["valid"]
  members = run.family.member_nll(run.params, valid)
  mixture = run.family.nll(run.params, valid)
  # -log mean exp(-x) lies between the members' NLLs, and below their mean (Jensen)
  assert (mixture <= members.max(axis=0) + 1e-9).all()
  assert (mixture >= members.min(axis=0) - 1e-9).all()
  assert (mixture <= members.mean(axis=0) + 1e-9).all()
  assert abs(result["valid"]["model"]["nll_per_event"] - mixture.mean()) < 1e-6
  sets = run.family.sample(run.params, valid, jax.random.key(0), 5, 3)
  assert ((np.sort(sets, axis=-1)[..., 1:] != np.sort(sets, axis=-1)[..., :-1]).all())


def test_seed_ensemble_members_start_apart(rng):
  c = checked_config({"model": {"ensemble": {"seeds": 3}, "hidden": 8, "depth": 1}})
  members = luce.train._ensemble.member_model_configs(c.model)
  assert len(members) == 3 and all(m.ensemble.seeds == 1 for m in members)
  family = EnsembleFamily([PLFamily(m, n_items=5, kind="ranking", k=2, item_names=()) for m in members],
                          n_items=5, kind="ranking", k=2)
  arrays = _arrays(rng, 3, 5, 2)
  params = family.model.init(jax.random.key(0), family.take(arrays, np.arange(2)))["params"]
  kernels = [np.asarray(params[f"members_{j}"]["MLP_0"]["Dense_0"]["kernel"]) for j in range(3)]
  assert kernels[0].shape == kernels[1].shape
  assert not np.allclose(kernels[0], kernels[1]) and not np.allclose(kernels[1], kernels[2])
