"""Pseudo-rankings, normal priors and inference on fit_pl, against independent float64 code."""

import types

import numpy as np
import pytest
from scipy import optimize, stats

import luce
from luce.errors import ConvergenceError, InputError, ShapeError

# Two groups of items that never meet (0-3 and 4-7), item 8 only ever wins
# against item 0, item 9 never appears: no MLE, a singular information.
DISCONNECTED = np.array([
    [0, 1, 2, 3], [1, 0, 3, 2], [2, 1, 0, -1], [3, 2, -1, -1], [0, 2, 1, 3],
    [4, 5, 6, 7], [5, 4, 7, 6], [6, 7, 4, -1], [7, 5, -1, -1], [4, 6, 5, 7],
    [8, 0, -1, -1],
], np.int32)
DISCONNECTED_WHERE = np.zeros((11, 10), bool)
DISCONNECTED_WHERE[:5, :4] = True
DISCONNECTED_WHERE[5:10, 4:8] = True
DISCONNECTED_WHERE[10, [0, 8]] = True


def stages(theta, rankings, where=None, counts=None):
  """Each choice of each row: (count, chosen item, available ids, their probabilities)."""
  n = theta.shape[0]
  for i, row in enumerate(rankings):
    race = np.ones(n, bool) if where is None else np.array(where[i], bool)
    c = 1.0 if counts is None else counts[i]
    for item in row:
      if item < 0:
        break
      ids = np.flatnonzero(race)
      p = np.exp(theta[ids] - np.logaddexp.reduce(theta[ids]))
      yield c, item, ids, p
      race[item] = False


def np_log_lik(theta, rankings, where=None, counts=None):
  """Log-likelihood straight from the definition."""
  return sum(c * np.log(p[ids == item][0]) for c, item, ids, p in
             stages(theta, rankings, where, counts))


def np_score(theta, rankings, where=None, counts=None):
  g = np.zeros(theta.shape[0])
  for c, item, ids, p in stages(theta, rankings, where, counts):
    g[item] += c
    g[ids] -= c * p
  return g


def information(theta, rankings, where=None, counts=None):
  """Fisher information Σ_stages c (diag p − p pᵀ) over each choice set."""
  n = theta.shape[0]
  info = np.zeros((n, n))
  for c, _, ids, p in stages(theta, rankings, where, counts):
    info[np.ix_(ids, ids)] += c * (np.diag(p) - np.outer(p, p))
  return info


def centred_cov(info):
  n = info.shape[0]
  c = np.eye(n) - 1.0 / n
  return c @ np.linalg.pinv(info) @ c


def ghost_rankings(rankings, where, n, npseudo):
  """The explicit construction: item n is the ghost; every item beats it and
  loses to it in pairwise rankings of count npseudo."""
  m, k = rankings.shape
  pairs = np.full((2 * n, k), -1, np.int32)
  pairs[:n, 0], pairs[:n, 1] = np.arange(n), n
  pairs[n:, 0], pairs[n:, 1] = n, np.arange(n)
  w_real = np.ones((m, n), bool) if where is None else where
  w = np.zeros((m + 2 * n, n + 1), bool)
  w[:m, :n] = w_real
  w[m + np.arange(n), np.arange(n)] = True
  w[m + n + np.arange(n), np.arange(n)] = True
  w[m:, n] = True
  counts = np.concatenate([np.ones(m), np.full(2 * n, npseudo)])
  return np.concatenate([rankings, pairs]), w, counts


CONNECTED = np.array([[0, 1, 2, 3], [1, 2, 0, -1], [2, 3, 1, 0], [3, 0, -1, -1],
                      [1, 0, 3, 2], [0, 3, 2, 1], [2, 0, 1, 3]], np.int32)


@pytest.mark.parametrize("case", ["disconnected", "connected"])
def test_npseudo_equals_explicit_ghost_item(case):
  if case == "disconnected":
    r, where, n = DISCONNECTED, DISCONNECTED_WHERE, 10
  else:
    r, where, n = CONNECTED, None, 4
  npseudo = 0.5
  fit = luce.fit_pl(r, n, where=where, npseudo=npseudo, tol=1e-14)
  assert fit.prior == 0.0 and fit.npseudo == npseudo
  gr, gw, gc = ghost_rankings(r, where, n, npseudo)
  ghost = luce.fit_pl(gr, n + 1, where=gw, counts=gc, prior=0.0, tol=1e-14)
  theta = ghost.log_strengths[:n] - ghost.log_strengths[n]        # the ghost at 0
  np.testing.assert_allclose(fit.log_strengths, theta - theta.mean(), atol=1e-8)
  # log L of the real rankings only; the objective with the pseudo-rankings.
  np.testing.assert_allclose(fit.log_likelihood, np_log_lik(theta, r, where), atol=1e-8)
  np.testing.assert_allclose(fit.log_posterior, ghost.log_likelihood, atol=1e-8)
  if case == "connected":
    # Standard errors from the real rankings' information (PlackettLuce's vcov).
    cov = centred_cov(information(theta, r, where))
    np.testing.assert_allclose(fit.covariance, cov, atol=1e-8)
    np.testing.assert_allclose(fit.stderr, np.sqrt(np.diag(cov)), atol=1e-8)
  else:
    assert np.all(np.isinf(fit.stderr)) and np.all(np.isnan(fit.covariance))
    # The never-seen item sits at the ghost's level.
    np.testing.assert_allclose(theta[9], 0.0, atol=1e-8)


def test_disconnected_network_without_npseudo_or_prior_names_components():
  with pytest.raises(ConvergenceError, match=r"use prior > 0 or npseudo > 0") as err:
    luce.fit_pl(DISCONNECTED, 10, where=DISCONNECTED_WHERE, prior=0.0)
  msg = str(err.value)
  assert "strongly connected components" in msg and "never meet" in msg
  assert "[8]" in msg and "[9]" in msg        # 8 is never beaten; 9 never appears


def test_check_connected_matches_brute_force_reachability():
  conn = luce.check_connected(DISCONNECTED, 10, DISCONNECTED_WHERE)
  # Brute force: i beat j when i was listed while j was still available.
  beat = np.zeros((10, 10), bool)
  for row, avail in zip(DISCONNECTED, DISCONNECTED_WHERE):
    left = set(np.flatnonzero(avail).tolist())
    for item in row[row >= 0]:
      left.discard(int(item))
      beat[item, list(left)] = True
  reach = beat | np.eye(10, dtype=bool)
  for k in range(10):
    reach |= reach[:, [k]] & reach[[k], :]
  same = reach & reach.T
  np.testing.assert_array_equal(conn.labels[:, None] == conn.labels[None, :], same)
  assert not conn.connected and not conn.weakly_connected
  assert conn.n_components == len({tuple(np.flatnonzero(s)) for s in same})
  np.testing.assert_array_equal(conn.never_won, np.flatnonzero(~beat.any(axis=1)))
  np.testing.assert_array_equal(conn.never_lost, np.flatnonzero(~beat.any(axis=0)))
  top = {tuple(conn.components[c].tolist()) for c in conn.unbeaten}
  assert (8,) in top and (9,) in top
  assert luce.check_connected(CONNECTED, 4).connected


def random_prior(rng, n):
  a = rng.normal(size=(n, n))
  return rng.normal(size=n), a @ a.T / n + 0.2 * np.eye(n)


def test_normal_prior_map_matches_scipy_on_the_penalised_objective(rng):
  n = 5
  r = CONNECTED.copy()
  r[3] = [4, 0, -1, -1]
  r = np.concatenate([r, [[4, 2, 1, -1]]]).astype(np.int32)
  mean, cov = random_prior(rng, n)
  prec = np.linalg.inv(cov)
  fit = luce.fit_pl(r, n, prior=luce.NormalPrior(mean, cov=cov), tol=1e-14)

  def objective(t):
    d = t - mean
    return np_log_lik(t, r) - 0.5 * d @ prec @ d

  res = optimize.minimize(lambda t: -objective(t), mean,
                          jac=lambda t: -(np_score(t, r) - prec @ (t - mean)),
                          method="BFGS", options={"gtol": 1e-11})
  np.testing.assert_allclose(fit.log_strengths, res.x - res.x.mean(), atol=1e-6)
  np.testing.assert_allclose(fit.log_posterior, objective(res.x), atol=1e-9)
  np.testing.assert_allclose(fit.log_likelihood, np_log_lik(res.x, r), atol=1e-6)
  # Posterior covariance: (information + Λ)⁻¹, centred.
  c = np.eye(n) - 1.0 / n
  cov_post = c @ np.linalg.inv(information(res.x, r) + prec) @ c
  np.testing.assert_allclose(fit.covariance, cov_post, atol=1e-6)
  # The precision form is the same prior.
  same = luce.fit_pl(r, n, prior=luce.NormalPrior(mean, precision=prec), tol=1e-14)
  np.testing.assert_allclose(same.log_strengths, fit.log_strengths, atol=1e-10)


def test_float_prior_is_the_isotropic_normal_prior():
  n, p = 4, 0.3
  a = luce.fit_pl(CONNECTED, n, prior=p)
  b = luce.fit_pl(CONNECTED, n, prior=luce.NormalPrior(0.0, precision=p * np.eye(n)))
  np.testing.assert_allclose(b.log_strengths, a.log_strengths, atol=1e-10)
  np.testing.assert_allclose(b.covariance, a.covariance, atol=1e-10)
  assert a.prior == p and isinstance(b.prior, luce.NormalPrior)
  assert luce.fit_pl(CONNECTED, n).prior == 0.01      # the default is unchanged


def mle_fit():
  return luce.fit_pl(CONNECTED, 4, prior=0.0, tol=1e-14)


def test_vcov_with_a_reference_item_inverts_the_reduced_information():
  fit = mle_fit()
  info = information(fit.log_strengths, CONNECTED)
  for ref in (0, 2):
    keep = np.arange(4) != ref
    want = np.zeros((4, 4))
    want[np.ix_(keep, keep)] = np.linalg.inv(info[np.ix_(keep, keep)])
    np.testing.assert_allclose(luce.vcov(fit, ref=ref), want, atol=1e-10)
  np.testing.assert_allclose(luce.vcov(fit), fit.covariance, atol=1e-14)
  est = luce.inference.log_strengths(fit, ref=2)
  assert est[2] == 0.0
  np.testing.assert_allclose(est - est.mean(), fit.log_strengths, atol=1e-12)


def qv_reference(cov):
  """qvcalc's criterion minimised by scipy: Σ_{i<j} (log(q_i + q_j) − log v_ij)²."""
  n = cov.shape[0]
  i, j = np.triu_indices(n, 1)
  v = cov[i, i] + cov[j, j] - 2 * cov[i, j]
  res = optimize.least_squares(lambda q: np.log(q[i] + q[j]) - np.log(v), np.diag(cov),
                               xtol=1e-15, ftol=1e-15, gtol=1e-15)
  return res.x


def test_quasi_variances_match_qvcalc_criterion_and_approximate_contrasts(rng):
  a = rng.normal(size=(5, 5))
  cov = a @ a.T + np.eye(5)
  qv = luce.quasi_variances(cov)
  np.testing.assert_allclose(qv.quasi_var, qv_reference(cov), rtol=1e-6)
  # Three items: exact.
  cov3 = cov[:3, :3]
  q3 = luce.quasi_variances(cov3).quasi_var
  for i, j in ((0, 1), (0, 2), (1, 2)):
    np.testing.assert_allclose(q3[i] + q3[j], cov3[i, i] + cov3[j, j] - 2 * cov3[i, j], rtol=1e-9)
  # On a fit: q_i + q_j ≈ var(θ_i − θ_j), whatever the constraint.
  fit = mle_fit()
  q = luce.quasi_variances(fit)
  for ref in (None, 1):
    v = luce.vcov(fit, ref=ref)
    d = np.diag(v)
    var = d[:, None] + d[None, :] - 2 * v
    off = ~np.eye(4, dtype=bool)
    rel = np.sqrt((q.quasi_var[:, None] + q.quasi_var[None, :])[off] / var[off]) - 1
    np.testing.assert_allclose(rel, q.relative_errors[off], atol=1e-12)
    assert np.abs(rel).max() < 0.1
  with pytest.raises(InputError, match="at least 3 items"):
    luce.quasi_variances(np.eye(2))


def test_itempar_worths_and_delta_method_stderr():
  fit = mle_fit()
  ip = luce.itempar(fit)
  w = np.exp(fit.log_strengths) / np.exp(fit.log_strengths).sum()
  np.testing.assert_allclose(ip.estimates, w, atol=1e-14)
  assert ip.estimates.sum() == pytest.approx(1.0)
  # Delta method with a finite-difference Jacobian of the worths.
  eps = 1e-6
  jac = np.stack([(np.exp(fit.log_strengths + eps * e) / np.exp(fit.log_strengths + eps * e).sum()
                   - w) / eps for e in np.eye(4)], axis=1)
  np.testing.assert_allclose(ip.covariance, jac @ fit.covariance @ jac.T, atol=1e-6)
  logp = luce.itempar(fit, log=True, ref=0)
  assert logp.estimates[0] == 0.0 and logp.stderr[0] == 0.0
  with pytest.raises(InputError, match="ref applies to log=True"):
    luce.itempar(fit, ref=0)


def test_aic_bic_and_likelihood_ratio_test():
  counts = np.array([1.0, 2.0, 1.0, 1.0, 3.0, 1.0, 0.0])
  fit = luce.fit_pl(CONNECTED, 4, counts=counts, prior=0.0)
  assert fit.n_obs == 9.0
  assert luce.aic(fit) == pytest.approx(-2 * fit.log_likelihood + 2 * 3)
  assert luce.bic(fit) == pytest.approx(-2 * fit.log_likelihood + 3 * np.log(9.0))
  # A larger nested fit: the tie model reports log_tie (one per tie order).
  big = types.SimpleNamespace(log_strengths=fit.log_strengths, log_tie=np.zeros(2),
                              log_likelihood=fit.log_likelihood + 3.0, n_obs=9.0)
  assert luce.aic(big) == pytest.approx(-2 * big.log_likelihood + 2 * 5)
  test = luce.likelihood_ratio_test(fit, big)
  assert test.statistic == pytest.approx(6.0) and test.df == 2
  assert test.p_value == pytest.approx(stats.chi2.sf(6.0, 2))
  with pytest.raises(InputError, match="pass the smaller"):
    luce.likelihood_ratio_test(big, fit)
  worse = types.SimpleNamespace(**{**vars(big), "log_likelihood": fit.log_likelihood - 1.0})
  with pytest.raises(InputError, match="not nested, misordered"):
    luce.likelihood_ratio_test(fit, worse)
  other = types.SimpleNamespace(**{**vars(big), "n_obs": 10.0})
  with pytest.raises(InputError, match="different data"):
    luce.likelihood_ratio_test(fit, other)


def test_summary_table_columns():
  fit = mle_fit()
  tab = luce.summary_table(fit, ref=0)
  assert tab["estimate"][0] == 0.0 and np.isnan(tab["z"][0])
  np.testing.assert_allclose(tab["z"][1:], tab["estimate"][1:] / tab["se"][1:])
  np.testing.assert_allclose(tab["p"][1:], 2 * stats.norm.sf(np.abs(tab["z"][1:])))
  np.testing.assert_allclose(tab["quasi_se"], luce.quasi_variances(fit).quasi_se)


@pytest.mark.parametrize("kwargs,err,match", [
    ({"npseudo": -1.0}, InputError, r"npseudo must be a finite number ≥ 0"),
    ({"npseudo": float("nan")}, InputError, r"npseudo must be"),
    ({"prior": "strong"}, InputError, r"prior must be a float precision ≥ 0 or a luce.NormalPrior"),
    ({"prior": -0.5}, InputError, r"prior must be a finite number ≥ 0"),
    ({"prior": luce.NormalPrior(0.0, cov=np.eye(3))}, ShapeError,
     r"NormalPrior is over 3 items but n_items = 4"),
])
def test_bad_fit_inputs_raise_named_errors(kwargs, err, match):
  with pytest.raises(err, match=match):
    luce.fit_pl(CONNECTED, 4, **kwargs)


@pytest.mark.parametrize("kwargs,err,match", [
    ({"cov": np.diag([1.0, 0.0, 1.0])}, InputError, r"cov must be positive definite"),
    ({"cov": np.array([[1.0, 2.0], [2.0, 1.0]])}, InputError, r"cov must be positive definite"),
    ({"cov": np.array([[1.0, 0.5], [0.0, 1.0]])}, InputError, r"cov is not symmetric: cov\[0, 1\]"),
    ({"precision": -np.eye(2)}, InputError, r"precision must be positive semidefinite"),
    ({"cov": np.ones(3)}, ShapeError, r"cov must be a square float\[n, n\]"),
    ({"cov": np.eye(2), "precision": np.eye(2)}, InputError, r"exactly one of cov="),
    ({}, InputError, r"exactly one of cov="),
    ({"mean": np.zeros(3), "cov": np.eye(2)}, ShapeError, r"mean must be a float or float\[n=2\]"),
])
def test_bad_normal_prior_raises_named_errors(kwargs, err, match):
  with pytest.raises(err, match=match):
    luce.NormalPrior(**kwargs)
