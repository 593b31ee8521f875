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
from luce.train import EnsembleFamily, checked_config, mixture_nll, stack_weights


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
  c.model.ensemble.weights = "stacked"
  c.train.update(batch_size=32, num_steps=30, log_every=10, eval_every=10, checkpoint_every=10,
                 progress_bar=False, async_checkpoints=False)
  c.baselines.names = ("uniform",)
  result = luce.train.train_and_evaluate(c, tmp_path)
  assert result["family"] == "ensemble" and result["nll"] == "exact"
  run = luce.train.load_run(tmp_path)
  valid = run.prepared.arrays["valid"]
  members = run.family.member_nll(run.params, valid)
  # the stacked weights: fitted on the validation split's member NLLs
  w = stack_weights(members, valid["weights"])
  mixture = mixture_nll(members, w)
  # -log sum w exp(-x) lies between the members' NLLs, and below their weighted mean (Jensen)
  assert (mixture <= members.max(axis=0) + 1e-9).all()
  assert (mixture >= members.min(axis=0) - 1e-9).all()
  assert (mixture <= w @ members + 1e-9).all()
  assert abs(result["valid"]["model"]["nll_per_event"] - mixture.mean()) < 1e-6
  # luce-eval of the test split uses the same validation-fitted weights
  test = luce.train.evaluate_run(run, "test")["model"]["nll_per_event"]
  np.testing.assert_allclose(run.family.weights, w, atol=1e-12)
  test_arrays = run.prepared.arrays["test"]
  want = mixture_nll(run.family.member_nll(run.params, test_arrays), w)
  assert abs(test - float(np.average(want, weights=test_arrays["weights"]))) < 1e-6
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


def test_stacked_weights_maximise_the_held_out_mixture_likelihood(rng):
  """stack_weights against scipy's maximum of the same objective over the simplex (softmax
  parametrisation), with event weights and an event no member can explain."""
  import scipy.optimize
  from scipy.special import logsumexp
  nll = rng.gamma(2.0, 2.0, size=(3, 60)) + np.array([[0.0], [0.4], [1.5]])
  nll[1, :10] += 3.0  # member 1 is bad on some events, good on the others
  nll[:, 5] = np.inf  # no member explains event 5: no information
  c = rng.uniform(0.5, 2.0, 60)
  got = stack_weights(nll, c)
  finite = np.isfinite(nll).any(axis=0)

  def objective(z):
    w = np.exp(z - logsumexp(z))
    return -np.sum(c[finite] * logsumexp(np.log(w)[:, None] - nll[:, finite], axis=0))
  best = scipy.optimize.minimize(objective, np.zeros(3), method="Nelder-Mead",
                                 options=dict(xatol=1e-10, fatol=1e-12, maxiter=20000))
  want = np.exp(best.x - logsumexp(best.x))
  np.testing.assert_allclose(got, want, atol=2e-4)
  assert abs(got.sum() - 1) < 1e-12 and objective(np.log(got)) <= best.fun + 1e-8
  # the stacked mixture is never worse than the equal one on the events it was fitted to
  eq = np.full(3, 1 / 3)
  assert np.sum(c[finite] * mixture_nll(nll, got)[finite]) <= np.sum(c[finite] * mixture_nll(nll, eq)[finite])
  # a dominant member takes (nearly) all the weight; equal NLLs keep equal weights
  dominant = np.stack([np.full(50, 10.0), np.full(50, 14.0)])
  assert stack_weights(dominant)[0] > 0.999
  np.testing.assert_allclose(stack_weights(np.ones((2, 7))), [0.5, 0.5])
  np.testing.assert_allclose(stack_weights(np.full((2, 3), np.inf)), [0.5, 0.5])


def test_weighted_mixture_nll_scores_and_samples(rng):
  """A weighted mixture: NLL and first-choice scores against brute force, a zero-weight member
  ignored even where its NLL is inf, samples drawn with the weights (chi-square)."""
  n, k = 4, 2
  family = _ensemble(n, k)
  arrays = _arrays(rng, 3, n, k)
  arrays["available"][:] = True
  params = _init(family, arrays, rng)
  w = np.array([0.8, 0.2])
  family.set_weights(w)
  member_scores = [np.asarray(f.scores(params[f"members_{j}"], arrays), np.float64)
                   for j, f in enumerate(family.members)]
  probs = [[_pl_prob(np.exp(s[e] - s[e].max()), arrays["items"][e]) for s in member_scores]
           for e in range(3)]
  want = [-math.log(w @ p) for p in probs]
  np.testing.assert_allclose(family.nll(params, arrays), want, rtol=1e-5)
  first = np.exp(family.scores(params, arrays))
  p_first = sum(wj * np.exp(s - s.max(axis=1, keepdims=True)) /
                np.exp(s - s.max(axis=1, keepdims=True)).sum(axis=1, keepdims=True)
                for wj, s in zip(w, member_scores))
  np.testing.assert_allclose(first, p_first, rtol=1e-5)
  np.testing.assert_allclose(mixture_nll(np.array([[2.0], [np.inf]]), [1.0, 0.0]), [2.0])
  np.testing.assert_allclose(mixture_nll(np.array([[2.0], [1.0]]), [0.0, 1.0]), [1.0])
  draws = 20000
  drawn = family.sample(params, {key: v[:1] for key, v in arrays.items()},
                        jax.random.key(int(rng.integers(1 << 30))), draws, k)
  outcomes = list(itertools.permutations(range(n), k))
  weights = [np.exp(s[0] - s[0].max()) for s in member_scores]
  exact = np.array([w @ [_pl_prob(x, o) for x in weights] for o in outcomes])
  index = {o: i for i, o in enumerate(outcomes)}
  counts = np.bincount([index[tuple(d)] for d in drawn[0]], minlength=len(outcomes))
  chi2 = lambda p: float(np.sum((counts - draws * p) ** 2 / (draws * p)))
  assert chi2(exact) < 38.0  # 11 degrees of freedom, p < 1e-4 beyond 38
  equal = np.array([np.mean([_pl_prob(x, o) for x in weights]) for o in outcomes])
  assert chi2(equal) > 38.0  # the equal mixture would not fit: the weights are used
  with pytest.raises(ConfigError, match="summing to 1"):
    family.set_weights([0.7, 0.7])
  with pytest.raises(ConfigError, match="'equal' or 'stacked'"):
    checked_config({"model": {"ensemble": {"seeds": 2, "weights": "learned"}}})


def test_stacked_walk_forward_fits_each_folds_weights_on_the_folds_before(tmp_path):
  """Fold 0 equal, fold f the stack_weights of folds < f's member NLLs; the model's NLL is the
  mixture under them; a resumed backtest ends where an uninterrupted one does."""
  from luce.eval import walk_forward
  c = synthetic.get_config("ranking")
  c.data.source = "synthetic:ranking?n_items=8&k=3&n_events=240&seed=1"
  c.model.update(hidden=8, depth=1, embed_dim=2)
  c.model.ensemble.update(members=("encoder=mlp", "encoder=mlp, hidden=4"), weights="stacked")
  c.train.update(batch_size=16, progress_bar=False, async_checkpoints=False, log_every=5)
  c.backtest.update(start="160", retrain_every=30, first_steps=10, retrain_steps=4,
                    importance=False, calibration_samples=8)
  c.baselines.names = ("uniform",)
  wf = walk_forward(c, tmp_path / "a", progress=False, say=lambda *a: None)
  starts = [s for _, s, _ in wf.folds]
  assert wf.fold_weights.shape == (len(starts), 2)
  np.testing.assert_allclose(wf.fold_weights[0], [0.5, 0.5])
  for f, s in enumerate(starts[1:], 1):
    np.testing.assert_allclose(wf.fold_weights[f], stack_weights(wf.member_nll[:, :s - starts[0]]),
                               atol=1e-12)
    part = slice(s - starts[0], (starts + [len(wf.items) + starts[0]])[f + 1] - starts[0])
    np.testing.assert_allclose(wf.nll["model"][part], mixture_nll(wf.member_nll[:, part],
                                                                  wf.fold_weights[f]))
  assert not np.allclose(wf.fold_weights[1:], 0.5)
  # killed in fold 2 and resumed: the same weights and NLLs
  import luce.eval._walk_forward as wfm
  calls = {"n": 0}
  original = wfm.stack_weights

  def dying(*args, **kwargs):
    calls["n"] += 1
    if calls["n"] == 2:  # at fold 2, after fold 1 was saved
      raise KeyboardInterrupt
    return original(*args, **kwargs)
  wfm.stack_weights = dying
  try:
    with pytest.raises(KeyboardInterrupt):
      walk_forward(c, tmp_path / "b", progress=False, say=lambda *a: None)
  finally:
    wfm.stack_weights = original
  again = walk_forward(c, tmp_path / "b", progress=False, say=lambda *a: None)
  np.testing.assert_array_equal(again.fold_weights, wf.fold_weights)
  np.testing.assert_array_equal(again.nll["model"], wf.nll["model"])
