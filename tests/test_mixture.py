"""fit_pl_mixture: EM for mixtures of Plackett-Luce models, against brute force."""

import dataclasses
import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import scipy.special
import scipy.stats
from sklearn.metrics import adjusted_rand_score

import luce
from luce.errors import ConvergenceError, InputError, ShapeError
from luce_test_utils import gumbel_top_k


def draw(rng, theta, weights, m, k, where=None):
  """m top-k lists from the mixture (numpy Gumbel-top-k) and their classes."""
  z = rng.choice(len(weights), size=m, p=weights)
  return gumbel_top_k(rng, theta[z], k, where), z


def orderings(rankings, n, where=None):
  """Every full ordering of each event's available items that starts with its
  list: (perms int[P, n] padded with −1, row int[P] the event of each)."""
  perms, rows = [], []
  for i, row in enumerate(rankings):
    items = range(n) if where is None else np.flatnonzero(where[i])
    top = [int(x) for x in row if x >= 0]
    rest = [int(x) for x in items if x not in top]
    for p in itertools.permutations(rest):
      full = top + list(p)
      perms.append(full + [-1] * (n - len(full)))
      rows.append(i)
  return np.array(perms), np.array(rows)


def brute_component_log_prob(theta, rankings, where=None, enum=None):
  """float64[m, G] log P_g(list) as the sum of the full-ordering PL
  probabilities over `orderings` (a marginal, not the top-k formula)."""
  theta = np.asarray(theta, np.float64)
  perms, rows = orderings(rankings, theta.shape[1], where) if enum is None else enum
  valid = perms >= 0
  s = np.where(valid, theta[:, np.maximum(perms, 0)], -np.inf)            # [G, P, n]
  # log P(full ordering) = Σ_j s_j − log Σ_{l ≥ j} e^{s_l}.
  tail = np.logaddexp.accumulate(s[..., ::-1], axis=-1)[..., ::-1]
  logp = np.sum(np.where(valid, s - np.where(valid, tail, 0.0), 0.0), axis=-1)   # [G, P]
  starts = np.flatnonzero(np.diff(rows, prepend=-1))
  top = logp.max()
  return (np.log(np.add.reduceat(np.exp(logp - top), starts, axis=1)) + top).T


def brute_log_prob(theta, weights, rankings, where=None, enum=None):
  """float64[m] log Σ_g w_g P_g(list) from `brute_component_log_prob`."""
  comp = brute_component_log_prob(theta, rankings, where, enum)
  return scipy.special.logsumexp(comp + np.log(weights), axis=1)


# Most small tests fit lists of this shape (40 top-2 lists of 4 items), so the
# compiled likelihood is shared between them.
THETA4 = np.stack([np.linspace(1.5, -1.5, 4), np.linspace(-1.5, 1.5, 4)])


def small_lists(rng):
  return draw(rng, THETA4, np.array([0.5, 0.5]), 40, 2)[0]


# ---------------------------------------------------------------------------
# The likelihood, exactly.


@pytest.fixture(scope="module")
def small_fit():
  """A tight fit of top-k lists with availability, n = 4 (brute force is cheap)."""
  seed = int(os.environ.get("LUCE_TEST_SEED") or np.random.SeedSequence().entropy % 2**31)
  rng = np.random.default_rng(seed)
  n, m = 4, 40
  theta = np.array([[1.5, 0.5, -0.5, -1.5], [-1.5, -0.5, 0.5, 1.5]])
  where = rng.random((m, n)) < 0.8
  where[:, :2] = True
  r, _ = draw(rng, theta, np.array([0.6, 0.4]), m, 3, where)
  r[::3, 2:] = -1        # some top-2 lists
  r[1::5, 1:] = -1       # some top-1 lists
  fit = luce.fit_pl_mixture(r, n, 2, where=where, restarts=2, seed=seed, tol=1e-12,
                            max_iter=2000)
  return seed, r, where, fit


def test_log_likelihood_matches_enumeration(small_fit):
  seed, r, where, fit = small_fit
  brute = brute_log_prob(fit.log_strengths, fit.weights, r, where)
  np.testing.assert_allclose(fit.log_prob(r, where), brute, rtol=1e-12, atol=1e-12,
                             err_msg=f"seed {seed}")
  assert fit.log_likelihood == pytest.approx(brute.sum(), rel=1e-12), seed
  np.testing.assert_allclose(fit.component_log_prob(r, where),
                             brute_component_log_prob(fit.log_strengths, r, where),
                             rtol=1e-12, atol=1e-12)
  # The responsibilities are the posterior at the fitted parameters.
  joint = brute_component_log_prob(fit.log_strengths, r, where) + np.log(fit.weights)
  np.testing.assert_allclose(fit.responsibilities,
                             np.exp(joint - scipy.special.logsumexp(joint, axis=1, keepdims=True)),
                             atol=1e-10)
  p = fit.n_params
  assert p == 1 + 2 * 3
  assert fit.bic == pytest.approx(-2 * brute.sum() + p * np.log(len(r)))
  assert fit.aic == pytest.approx(-2 * brute.sum() + 2 * p)


def test_fit_is_a_maximum_of_the_enumerated_objective(small_fit):
  """No direction of (θ, mixing logits) raises the brute-force penalised objective."""
  seed, r, where, fit = small_fit
  g, n = fit.log_strengths.shape
  enum = orderings(r, n, where)

  def neg_objective(x):
    theta = x[:g * n].reshape(g, n)
    logits = np.append(x[g * n:], 0.0)
    w = np.exp(logits - scipy.special.logsumexp(logits))
    return -(brute_log_prob(theta, w, r, where, enum).sum() - 0.5 * fit.prior * np.sum(theta**2))

  logw = np.log(fit.weights)
  x0 = np.concatenate([fit.log_strengths.ravel(), logw[:-1] - logw[-1]])
  res = scipy.optimize.minimize(neg_objective, x0, method="BFGS", options={"gtol": 1e-8})
  assert neg_objective(x0) - res.fun < 1e-6 * abs(res.fun), (seed, neg_objective(x0), res.fun)
  assert fit.weights[0] >= fit.weights[1]        # ordered by weight


def test_em_objective_never_decreases(small_fit, planted):
  for trace in (small_fit[3].trace, planted["fit"].trace):
    assert len(trace) >= 3
    step = np.diff(trace)
    assert step.min() >= -1e-9 * np.abs(trace[1:]).max(), step.min()
  assert small_fit[3].converged


# ---------------------------------------------------------------------------
# A planted two-cluster set.


@pytest.fixture(scope="module")
def planted():
  seed = int(os.environ.get("LUCE_TEST_SEED") or np.random.SeedSequence().entropy % 2**31)
  rng = np.random.default_rng(seed)
  n = 6
  base = np.linspace(2.5, -2.5, n)
  theta = np.stack([base, base[[5, 4, 3, 0, 1, 2]]])
  weights = np.array([0.6, 0.4])
  train, z_train = draw(rng, theta, weights, 300, n)
  test, _ = draw(rng, theta, weights, 300, n)
  fit = luce.fit_pl_mixture(train, n, (1, 2, 3), restarts=2, seed=seed, tol=1e-6)
  return dict(seed=seed, n=n, theta=theta, weights=weights, train=train, z=z_train, test=test,
              fit=fit)


def test_em_recovers_planted_clusters(planted):
  fit, seed = planted["fit"], planted["seed"]
  assert fit.n_groups == 2, (seed, fit.selection)
  ari = adjusted_rand_score(planted["z"], fit.responsibilities.argmax(axis=1))
  assert ari >= 0.9, (seed, ari)
  np.testing.assert_allclose(fit.weights, planted["weights"], atol=0.1, err_msg=f"seed {seed}")
  truth = planted["theta"] - planted["theta"].mean(axis=1, keepdims=True)
  z = (fit.log_strengths - truth) / fit.stderr
  # The standard errors (conditional on the responsibilities, which are almost
  # 0 or 1 here) are close to calibrated: every estimate within 5 of them.
  assert np.abs(z).max() < 5, (seed, z)
  assert np.all(fit.stderr > 0) and np.all(fit.stderr < 0.5)


def test_mixture_beats_one_pl_on_held_out_lists(planted):
  fit, test, n = planted["fit"], planted["test"], planted["n"]
  one = luce.fit_pl(planted["train"], n)
  with jax.enable_x64(True):
    nll_one = -float(jnp.mean(luce.pl_log_prob(jnp.asarray(one.log_strengths), test)))
  nll_mix = -float(np.mean(fit.log_prob(test)))
  assert nll_mix < nll_one - 0.5, (planted["seed"], nll_mix, nll_one)


def test_bic_picks_two_groups(planted):
  rows = {row.n_groups: row for row in planted["fit"].selection}
  assert sorted(rows) == [1, 2, 3]
  assert rows[2].bic < rows[1].bic and rows[2].bic < rows[3].bic, (planted["seed"], rows)
  assert rows[1].log_likelihood < rows[2].log_likelihood
  assert planted["fit"].bic == rows[2].bic
  for g, row in rows.items():
    assert row.n_params == (g - 1) + g * (planted["n"] - 1)
    assert row.aic == pytest.approx(-2 * row.log_likelihood + 2 * row.n_params)


# ---------------------------------------------------------------------------
# Per-ranker classes.


def test_per_ranker_responsibilities(rng):
  n, n_rankers, per = 5, 24, 6
  theta = np.stack([np.linspace(1.5, -1.5, n), np.linspace(-1.5, 1.5, n)])
  z_rankers = rng.permutation(np.arange(n_rankers) % 2)
  ids = 1000 + 7 * rng.permutation(n_rankers)           # arbitrary ids, shuffled
  owner = np.repeat(np.arange(n_rankers), per)
  r = gumbel_top_k(rng, theta[z_rankers[owner]], 3)
  perm = rng.permutation(len(r))
  r, owner = r[perm], owner[perm]
  fit = luce.fit_pl_mixture(r, n, 2, rankers=ids[owner], restarts=2, seed=1, tol=1e-8)
  assert fit.responsibilities.shape == (n_rankers, 2)
  np.testing.assert_array_equal(fit.ranker_ids, np.sort(ids))
  assert fit.n_obs == n_rankers
  # Log-likelihood: Σ_rankers logsumexp_g(log w_g + Σ_events log P_g), independently.
  comp = brute_component_log_prob(fit.log_strengths, r)
  unit = np.searchsorted(fit.ranker_ids, ids[owner])
  per_ranker = np.zeros((n_rankers, 2))
  np.add.at(per_ranker, unit, comp)
  joint = per_ranker + np.log(fit.weights)
  assert fit.log_likelihood == pytest.approx(scipy.special.logsumexp(joint, axis=1).sum(),
                                             rel=1e-12)
  np.testing.assert_allclose(fit.responsibilities,
                             np.exp(joint - scipy.special.logsumexp(joint, axis=1, keepdims=True)),
                             atol=1e-10)
  np.testing.assert_allclose(fit.posterior(r, rankers=ids[owner]), fit.responsibilities,
                             atol=1e-12)
  truth = z_rankers[np.argsort(ids)]                    # classes in ranker_ids order
  ari = adjusted_rand_score(truth, fit.responsibilities.argmax(axis=1))
  assert ari >= 0.9, ari
  assert np.all(np.diff(fit.trace) >= -1e-9 * np.abs(fit.trace).max())


def test_one_event_per_ranker_is_the_per_event_fit(rng):
  n, r = 4, small_lists(rng)
  a = luce.fit_pl_mixture(r, n, 2, restarts=1, seed=5)
  b = luce.fit_pl_mixture(r, n, 2, rankers=np.arange(40), restarts=1, seed=5)
  assert a.log_likelihood == pytest.approx(b.log_likelihood, rel=1e-10)
  np.testing.assert_allclose(a.responsibilities, b.responsibilities, atol=1e-8)
  assert a.n_obs == b.n_obs == 40


def test_counts_are_repeated_events(rng):
  """Per event, a count of c is c copies of the event; per ranker it is one
  ranker who gave the same list c times (one class for all of them)."""
  n, r = 4, small_lists(rng)
  counts = rng.integers(1, 4, size=40)
  fit = luce.fit_pl_mixture(r, n, 2, counts=counts.astype(float), restarts=1)
  assert fit.n_obs == counts.sum()
  assert fit.log_likelihood == pytest.approx(counts @ fit.log_prob(r), rel=1e-12)
  fit_r = luce.fit_pl_mixture(r, n, 2, counts=counts.astype(float), rankers=np.arange(40) // 4,
                              restarts=1)
  joint = np.zeros((10, 2))
  np.add.at(joint, np.arange(40) // 4, counts[:, None] * fit_r.component_log_prob(r))
  joint += np.log(fit_r.weights)
  assert fit_r.log_likelihood == pytest.approx(scipy.special.logsumexp(joint, axis=1).sum(),
                                               rel=1e-12)


# ---------------------------------------------------------------------------
# Sampling and scores.


def chi2_pvalue(samples, log_probs, cells):
  """Chi-square p-value of lists int[N, k] against exact probabilities of `cells`."""
  samples, cells = np.asarray(samples), np.asarray(cells)
  code = 10 ** np.arange(cells.shape[1])
  cell_codes = cells @ code
  order = np.argsort(cell_codes)
  pos = np.searchsorted(cell_codes[order], samples @ code)
  assert np.all(cell_codes[order][np.minimum(pos, len(cells) - 1)] == samples @ code), \
      "a sample is not one of the cells"
  observed = np.bincount(order[pos], minlength=len(cells))
  expected = len(samples) * np.exp(log_probs)
  assert expected.sum() == pytest.approx(len(samples), rel=1e-9)
  return scipy.stats.chisquare(observed, expected).pvalue


def test_sample_matches_exact_mixture_probabilities(small_fit, seed):
  fit = dataclasses.replace(
      small_fit[3], weights=np.array([0.7, 0.3]),
      log_strengths=np.array([[1.0, 0.3, -0.3, -1.0], [-1.0, 0.0, 1.2, -0.2]]))
  key = jax.random.key(seed)
  n_samples = 20000
  # Full rankings of 4 items: 24 cells.
  cells = np.array(list(itertools.permutations(range(4))))
  samples, comp = fit.sample(key, n_samples, return_components=True)
  assert samples.shape == (n_samples, 4) and samples.dtype == jnp.int32
  assert chi2_pvalue(samples, fit.log_prob(cells), cells) > 1e-3, seed
  assert abs(float(jnp.mean(comp == 0)) - 0.7) < 0.02
  one = dataclasses.replace(fit, weights=np.array([1.0]), log_strengths=fit.log_strengths[:1])
  assert chi2_pvalue(samples, one.log_prob(cells), cells) < 1e-3   # the test has power
  # Top-2 lists with item 3 unavailable: 6 cells.
  avail = np.array([True, True, True, False])
  cells = np.array(list(itertools.permutations(range(3), 2)))
  samples = fit.sample(jax.random.fold_in(key, 1), n_samples, 2, where=avail)
  lp = fit.log_prob(cells, np.broadcast_to(avail, (len(cells), 4)))
  assert chi2_pvalue(samples, lp, cells) > 1e-3, seed
  # Same key, same samples.
  np.testing.assert_array_equal(fit.sample(key, n_samples, return_components=True)[1], comp)


def test_scores_are_first_choice_log_probabilities(small_fit):
  fit = small_fit[3]
  firsts = np.arange(4)[:, None]
  np.testing.assert_allclose(fit.scores(), fit.log_prob(firsts), atol=1e-12)
  avail = np.array([[True, False, True, True]])
  s = fit.scores(avail)
  assert s.shape == (1, 4) and s[0, 1] == -np.inf
  np.testing.assert_allclose(s[0, [0, 2, 3]],
                             fit.log_prob(np.array([[0], [2], [3]]), np.repeat(avail, 3, 0)),
                             atol=1e-12)


# ---------------------------------------------------------------------------
# Determinism and errors.


def test_same_seed_same_fit(rng):
  n, r = 4, small_lists(rng)
  a = luce.fit_pl_mixture(r, n, 2, restarts=2, seed=11)
  b = luce.fit_pl_mixture(r, n, 2, restarts=2, seed=11)
  np.testing.assert_array_equal(a.log_strengths, b.log_strengths)
  np.testing.assert_array_equal(a.responsibilities, b.responsibilities)
  np.testing.assert_array_equal(a.trace, b.trace)
  assert a.log_likelihood == b.log_likelihood


def test_one_group_is_fit_pl(rng):
  n, r = 4, small_lists(rng)
  fit = luce.fit_pl_mixture(r, n, 1)
  one = luce.fit_pl(r, n)
  np.testing.assert_allclose(fit.log_strengths[0], one.log_strengths, atol=1e-10)
  assert fit.log_likelihood == pytest.approx(one.log_likelihood, rel=1e-10)
  np.testing.assert_array_equal(fit.weights, [1.0])


R = np.array([[0, 1, 2], [2, 1, 0], [1, 0, 2], [0, 2, 1]])


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(n_groups=0), InputError, "at least one component"),
    (dict(n_groups=-1), InputError, "at least one component"),
    (dict(n_groups=[]), InputError, "empty"),
    (dict(n_groups=(1, 1)), InputError, "twice"),
    (dict(n_groups=1.5), InputError, "n_groups"),
    (dict(n_groups=True), InputError, "n_groups"),
    (dict(n_groups=5), InputError, r"n_groups = 5 is above the number of events with data \(4\)"),
    (dict(n_groups=(1, 2, 5)), InputError, "n_groups = 5"),
    (dict(n_groups=3, rankers=np.array([0, 0, 1, 1])), InputError,
     r"number of rankers with data \(2\)"),
    (dict(n_groups=4, counts=np.array([1.0, 1.0, 0.0, 1.0])), InputError,
     r"events with data \(3\)"),
    (dict(rankers=np.array([0, 1, 2])), ShapeError, r"rankers must be int\[m=4\]"),
    (dict(rankers=np.zeros((4, 1), int)), ShapeError, "rankers must be int"),
    (dict(rankers=np.array([0.0, 1.0, 2.0, 3.0])), ShapeError, "integer ranker ids"),
    (dict(counts=np.ones(3)), ShapeError, "counts"),
    (dict(counts=np.array([1.0, -1.0, 1.0, 1.0])), InputError, r"counts\[1\]"),
    (dict(counts=np.array([1.0, np.nan, 1.0, 1.0])), InputError, r"counts\[1\]"),
    (dict(where=np.ones((4, 2), bool)), ShapeError, "where"),
    (dict(where=np.ones((4, 3), int)), ShapeError, "where"),
    (dict(where=np.array([[True, True, False]] * 4)), InputError, "unavailable"),
    (dict(restarts=0), InputError, "restarts"),
    (dict(max_iter=0), InputError, "max_iter"),
    (dict(tol=0.0), InputError, "tol"),
    (dict(prior=-1.0), InputError, "prior"),
])
def test_bad_inputs(kwargs, error, match):
  kwargs = {"n_groups": 2, **kwargs}
  with pytest.raises(error, match=match):
    luce.fit_pl_mixture(R, 3, **kwargs)


@pytest.mark.parametrize("rankings, n_items, error, match", [
    (R[0], 3, ShapeError, "int\\[m, k\\]"),
    (R.astype(float), 3, ShapeError, "integer"),
    (np.array([[0, 1, 3]]), 3, InputError, "not an item id"),
    (np.array([[0, 0, 1]]), 3, InputError, "twice"),
    (np.array([[0, -1, 1]]), 3, InputError, "only pad"),
    (R, 2, ShapeError, "n_items"),
    (R, 0, InputError, "n_items"),
])
def test_bad_rankings(rankings, n_items, error, match):
  with pytest.raises(error, match=match):
    luce.fit_pl_mixture(rankings, n_items, 1)


def test_non_convergence_names_the_iteration_count(rng):
  with pytest.raises(ConvergenceError, match=r"n_groups = 2 did not converge in max_iter = 2 EM"):
    luce.fit_pl_mixture(small_lists(rng), 4, 2, max_iter=2, tol=1e-15)


def test_bad_sample_and_score_arguments(small_fit):
  fit = small_fit[3]
  key = jax.random.key(0)
  with pytest.raises(InputError, match="n_samples"):
    fit.sample(key, 0)
  with pytest.raises(ShapeError, match="where"):
    fit.sample(key, 5, where=np.ones(3, bool))
  with pytest.raises(luce.InfeasibleError):
    fit.sample(key, 5, 4, where=np.array([True, True, True, False]))
  with pytest.raises(ShapeError, match="where"):
    fit.scores(np.ones((2, 3), bool))
  with pytest.raises(InputError, match="not an item id"):
    fit.log_prob(np.array([[0, 7]]))


def test_inference_criteria_count_the_mixture_parameters():
  """luce.aic / luce.bic of a mixture fit count (G − 1) + G(n − 1) parameters, as the fit's own."""
  rng = np.random.default_rng(5)
  rankings = np.stack([rng.permutation(4) for _ in range(40)])
  fit = luce.fit_pl_mixture(rankings, 4, 2, restarts=1, seed=0)
  assert luce.inference.n_parameters(fit) == 1 + 2 * 3
  np.testing.assert_allclose(luce.aic(fit), fit.aic, rtol=1e-12)
  np.testing.assert_allclose(luce.bic(fit), fit.bic, rtol=1e-12)
