"""Mixtures of Plackett-Luce models: latent classes of rankers, fitted by EM."""

from __future__ import annotations

import dataclasses
import numbers

import numpy as np
from threadpoolctl import threadpool_limits
import jax
import jax.numpy as jnp

from luce import _checks
from luce.errors import ConvergenceError, InputError, ShapeError
from luce.fit import _derivatives, fit_pl
from luce.pl import pl_log_prob
from luce.sampling import pl_sample

# Newton decrement at which an M-step stops (fit_pl's default tol).
_NEWTON_TOL = 1e-9

# Responsibilities are floored here before they become fit_pl counts: fit_pl
# drops zero-count rows, and a row set that changes between EM iterations
# would recompile its Newton step each time. A weight of 1e-300 changes no
# fit.
_FLOOR = 1e-300


@dataclasses.dataclass(frozen=True)
class MixtureChoice:
  """One candidate number of components in `fit_pl_mixture`'s BIC selection.

  Attributes:
    n_groups: the number of components G.
    log_likelihood: the best restart's log-likelihood (nats, without the prior).
    bic: −2 log-likelihood + n_params · log n_obs.
    aic: −2 log-likelihood + 2 n_params.
    n_params: free parameters, (G − 1) + G (n − 1).
    converged: whether the kept restart reached the EM tolerance.
  """
  n_groups: int
  log_likelihood: float
  bic: float
  aic: float
  n_params: int
  converged: bool


@dataclasses.dataclass(frozen=True)
class PLMixtureFit:
  """Result of `fit_pl_mixture`: a mixture of G Plackett-Luce models.

  P(ranking) = Σ_g weights[g] · PL(ranking | log_strengths[g]).

  Components are ordered by weight, largest first: EM's labels are arbitrary
  (any permutation of the components gives the same likelihood), and this
  order makes fits from different seeds or restarts comparable.

  Attributes:
    weights: float64[G] mixing weights, summing to 1, in decreasing order.
    log_strengths: float64[G, n] each component's log-strengths, centred.
    stderr: float64[G, n] standard errors of each component's centred
      log-strengths *conditional on the responsibilities*: fit_pl's Fisher
      information of the responsibility-weighted data at the last M-step. They
      ignore the uncertainty of the class memberships and so understate the
      true standard errors, the more so the more the components overlap.
    log_likelihood: mixture log-likelihood of the data (nats, without the
      prior): Σ_u a_u log Σ_g w_g P_g(unit u), units being events (a_u their
      count) or rankers (a_u = 1, P_g the product of the ranker's events).
    bic: −2 log_likelihood + n_params · log n_obs.
    aic: −2 log_likelihood + 2 n_params.
    n_params: (G − 1) + G (n − 1) free parameters.
    n_obs: the number of units behind the BIC: the summed counts of the events
      that list an item, or the number of rankers with such an event.
    responsibilities: float64[m, G] (per event) or float64[R, G] (per ranker,
      rows in the order of `ranker_ids`): posterior class probabilities at the
      fitted parameters. Rows with no information (all padding, count 0) get
      the weights.
    ranker_ids: int[R] the sorted distinct ranker ids, or None.
    n_iter: EM iterations of the kept restart.
    converged: whether the kept restart reached the EM tolerance.
    trace: float64[n_iter] the EM objective (log-likelihood − the components'
      prior penalty) after each iteration; EM never lets it decrease.
    restart_log_likelihoods: float64[restarts] each restart's final
      log-likelihood (for the selected G).
    selection: one MixtureChoice per candidate G tried (one row when n_groups
      was an int).
    prior: the ridge precision on each component's log-strengths.
  """
  weights: np.ndarray
  log_strengths: np.ndarray
  stderr: np.ndarray
  log_likelihood: float
  bic: float
  aic: float
  n_params: int
  n_obs: float
  responsibilities: np.ndarray
  ranker_ids: np.ndarray | None
  n_iter: int
  converged: bool
  trace: np.ndarray
  restart_log_likelihoods: np.ndarray
  selection: tuple[MixtureChoice, ...]
  prior: float

  @property
  def n_groups(self) -> int:
    return int(self.weights.shape[0])

  def component_log_prob(self, rankings, where=None) -> np.ndarray:
    """float64[m, G] log P(ranking | component g) for int[m, k] top-k lists
    (−1 padding) with optional availability bool[m, n] (as `fit_pl`)."""
    n = self.log_strengths.shape[1]
    r, avail = _check_lists(rankings, n, where)
    return _component_log_prob(self.log_strengths, r, avail).T

  def log_prob(self, rankings, where=None) -> np.ndarray:
    """float64[m] exact mixture log-probability of each event,
    log Σ_g w_g P_g(ranking), by logsumexp in float64.

    Each event is scored on its own, even for a fit with `rankers=` (whose
    likelihood ties a ranker's events to one class); for a ranker's joint
    probability use `component_log_prob`, sum its rows and then logsumexp with
    log weights.
    """
    lp = self.component_log_prob(rankings, where)
    return _logsumexp(lp + np.log(self.weights), axis=1)

  def posterior(self, rankings, where=None, rankers=None) -> np.ndarray:
    """Class probabilities of new events, float64[m, G] (or [R, G] per ranker,
    rows in the order of the sorted distinct ids of `rankers`)."""
    lp = self.component_log_prob(rankings, where)
    if rankers is not None:
      _, unit = _check_rankers(rankers, lp.shape[0])
      lp = _sum_by_unit(lp, unit, int(unit.max()) + 1 if unit.size else 0)
    joint = lp + np.log(self.weights)
    return np.exp(joint - _logsumexp(joint, axis=1, keepdims=True))

  def scores(self, where=None) -> np.ndarray:
    """Item scores of the mixture: the log-probability that each item is
    chosen first, log Σ_g w_g softmax(θ_g)_i.

    For one component this orders the items as θ does; for a mixture it is the
    marginal first-choice probability a ranking metric needs.

    Args:
      where: None, bool[n] or bool[m, n]: the available items (others get −inf,
        and the softmax runs over the available ones).

    Returns:
      float64[n] (or float64[m, n] for `where` bool[m, n]).
    """
    theta = self.log_strengths
    n = theta.shape[1]
    if where is None:
      avail = np.ones(n, bool)
    else:
      avail = np.asarray(where)
      if avail.dtype != np.bool_ or avail.ndim not in (1, 2) or avail.shape[-1] != n:
        raise ShapeError(f"where must be bool[n={n}] or bool[m, n={n}], got "
                         f"{avail.dtype}{list(avail.shape)}.")
    s = np.where(avail[..., None, :], theta, -np.inf)            # [..., G, n]
    with np.errstate(invalid="ignore"):
      logp = s - _logsumexp(s, axis=-1, keepdims=True)
    logp = np.where(avail[..., None, :], logp, -np.inf)
    return _logsumexp(logp + np.log(self.weights)[:, None], axis=-2)

  def sample(self, key, n_samples: int, k: int | None = None, *, where=None,
             return_components: bool = False):
    """Rankings drawn from the mixture: a component g ~ Categorical(weights),
    then a PL list from log_strengths[g] by Gumbel-top-k (`luce.pl_sample`).

    Args:
      key: a `jax.random.key`. Same key, same samples.
      n_samples: number of lists, ≥ 1.
      k: list length (default n, full rankings); with `where`, at most the
        number of available items of every row.
      where: None, bool[n] or bool[n_samples, n]: the available items.
      return_components: also return the drawn components.

    Returns:
      int32[n_samples, k] item ids best first, and with return_components
      int32[n_samples] the component of each list.
    """
    n = self.log_strengths.shape[1]
    if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral) or n_samples < 1:
      raise InputError(f"n_samples must be an int ≥ 1, got {n_samples!r}.")
    k = n if k is None else k
    forbidden = None
    if where is not None:
      avail = np.asarray(where)
      if avail.dtype != np.bool_ or avail.shape not in ((n,), (n_samples, n)):
        raise ShapeError(f"where must be bool[n={n}] or bool[n_samples={n_samples}, n={n}], got "
                         f"{avail.dtype}{list(avail.shape)}.")
      forbidden = ~jnp.asarray(avail)
    key_g, key_r = jax.random.split(key)
    logw = jnp.log(jnp.asarray(self.weights, jnp.float32))
    comp = jax.random.categorical(key_g, logw, shape=(int(n_samples),))
    s = jnp.asarray(self.log_strengths, jnp.float32)[comp]
    out = pl_sample(key_r, s, k, forbidden=forbidden)
    return (out, comp.astype(jnp.int32)) if return_components else out


def fit_pl_mixture(rankings, n_items: int, n_groups, *, where=None, counts=None, rankers=None,
                   restarts: int = 5, seed: int = 0, prior: float = 0.01, tol: float = 1e-8,
                   max_iter: int = 500) -> PLMixtureFit:
  r"""A mixture of G Plackett-Luce models fitted by EM, G fixed or chosen by BIC.

  The model: each unit (an event, or with `rankers=` all events of one ranker)
  belongs to a latent class g with probability w_g, and its lists follow PL
  with log-strengths θ_g:

    log L = Σ_u a_u log Σ_g w_g Π_{e ∈ u} P(ranking_e | θ_g)^{c_e}.

  EM, maximising log L − prior/2 Σ_g ‖θ_g‖² (MAP-EM with fit_pl's ridge prior
  on each component):

  - E-step: responsibilities r_ug = softmax_g(log w_g + Σ_{e ∈ u} c_e log
    P(ranking_e | θ_g)), from each component's exact float64 PL
    log-probability (`luce.pl_log_prob`) and a logsumexp over g;
  - M-step: θ_g maximises fit_pl's objective with counts c_e · r_{u(e) g}
    (the weighted PL fit), and w_g ∝ Σ_u a_u r_ug. fit_pl takes no starting
    point, and six Newton steps from θ = 0 per component and iteration made EM
    slow, so the M-steps are Newton steps in float64 on fit_pl's own
    derivatives, warm-started at the previous θ_g: to convergence in the
    first iteration, then one step (with a backtracking line search) per
    iteration, which raises the expected log-likelihood (a generalised EM)
    and, near the optimum, lands within a hair of the exact M-step. The last
    iteration's M-step is fit_pl itself, which also gives the standard
    errors.

  The objective never decreases; EM stops when one iteration changes it by
  less than tol · max(1, |objective|). Each of `restarts` starts is a random
  partition of the units into G classes (from `seed`); the restart with the
  highest objective is kept. EM finds a local maximum: more restarts make
  finding the global one likelier.

  Components are ordered by weight, largest first (labels are otherwise
  arbitrary: the label-switching symmetry of mixtures).

  With a list of candidate G, each is fitted as above and the one with the
  lowest BIC = −2 log L + p log N is returned, p = (G − 1) + G (n − 1) and N
  the number of units (events' summed counts, or rankers); `selection` lists
  log L, BIC and AIC for every candidate.

  Args:
    rankings: int[m, k] item ids best first, −1 padding shorter lists (top-k
      lists: unlisted available items were not chosen).
    n_items: number of items n.
    n_groups: int G ≥ 1, or a sequence of them (e.g. range(1, 5)) to choose
      from by BIC. G may not exceed the number of units with data.
    where: bool[m, n] or None: availability per event, as in `fit_pl`.
    counts: float[m] or None, ≥ 0: how many times each row was observed (each
      copy is its own unit unless `rankers` groups them).
    rankers: int[m] or None: ranker id of each event. Events of one ranker
      share one latent class (their log-likelihoods are summed before the
      E-step), and responsibilities are per ranker.
    restarts: random starts per G, ≥ 1.
    seed: seed of the starts; same seed and data, same fit.
    prior: ridge precision on each component's log-strengths (fit_pl's
      `prior`), ≥ 0. It keeps a component finite when its class holds few
      lists; with 0 each M-step needs the plain MLE to exist.
    tol: EM tolerance on the relative increase of the objective per iteration.
    max_iter: most EM iterations per restart.

  Returns:
    PLMixtureFit.

  Raises:
    ShapeError, InputError: malformed rankings, where, counts or rankers; G < 1
      or above the number of units; bad restarts, max_iter or tol.
    ConvergenceError: no restart of some G reached `tol` within `max_iter`
      iterations (the message names G and the count).

  Example:
    >>> import numpy as np, luce
    >>> r = np.array([[0, 1, 2], [2, 1, 0]] * 20)
    >>> fit = luce.fit_pl_mixture(r, 3, 2, restarts=2)
    >>> np.round(fit.weights, 2).tolist()
    [0.5, 0.5]
  """
  r, avail = _check_lists(rankings, n_items, where)
  n = int(n_items)
  m = r.shape[0]
  c = np.ones(m) if counts is None else np.asarray(counts, np.float64)
  if c.shape != (m,):
    raise ShapeError(f"counts must be float[m={m}], got shape {list(c.shape)}.")
  bad = ~(np.isfinite(c) & (c >= 0))
  if bad.any():
    i = int(np.flatnonzero(bad)[0])
    raise InputError(f"counts[{i}] = {c[i]}; counts must be finite and ≥ 0.")
  if not (np.isfinite(prior) and prior >= 0):
    raise InputError(f"prior must be a finite number ≥ 0, got {prior}.")
  _check_int(restarts, "restarts", 1)
  _check_int(max_iter, "max_iter", 1)
  if not (np.isfinite(tol) and tol > 0):
    raise InputError(f"tol must be a finite number > 0, got {tol}.")
  candidates = _check_groups(n_groups)

  informative = (r[:, 0] >= 0) & (c > 0)
  if rankers is None:
    ids, unit = None, np.arange(m)
    n_units = m
    unit_weight = np.where(informative, c, 0.0)    # a_u: each event its count
    inner = np.ones(m)                             # events are not summed
  else:
    ids, unit = _check_rankers(rankers, m)
    n_units = ids.shape[0]
    unit_weight = np.zeros(n_units)
    unit_weight[unit[informative]] = 1.0
    inner = c
  n_obs = float(unit_weight.sum())
  n_data_units = int(np.count_nonzero(unit_weight))
  what = "events with data" if rankers is None else "rankers with data"
  for g in candidates:
    if g > n_data_units:
      raise InputError(
          f"n_groups = {g} is above the number of {what} ({n_data_units}); a mixture needs at "
          f"least one unit per component.")

  n_avail = np.full(m, n) if avail is None else avail.sum(axis=1)
  complete = (r >= 0).sum(axis=1) == n_avail
  data = _EMData(r=r, avail=avail, c=c, n=n, unit=unit, n_units=n_units,
                 unit_weight=unit_weight, inner=inner, complete=complete, per_ranker=rankers is not None,
                 prior=float(prior))
  rows, fits = [], []
  for g in candidates:
    # One BLAS thread for the small Newton solves (see fit_pl's `_solve`).
    with threadpool_limits(1):
      fit = _fit_groups(data, g, restarts, seed, tol, max_iter)
    p = (g - 1) + g * (n - 1)
    ll = fit["log_likelihood"]
    bic = -2 * ll + p * np.log(max(n_obs, 1.0))
    aic = -2 * ll + 2 * p
    rows.append(MixtureChoice(n_groups=g, log_likelihood=ll, bic=float(bic), aic=float(aic),
                              n_params=p, converged=fit["converged"]))
    fits.append(fit)
  best = int(np.argmin([row.bic for row in rows]))
  fit, row = fits[best], rows[best]
  return PLMixtureFit(
      weights=fit["weights"],
      log_strengths=fit["theta"],
      stderr=fit["stderr"],
      log_likelihood=row.log_likelihood,
      bic=row.bic,
      aic=row.aic,
      n_params=row.n_params,
      n_obs=n_obs,
      responsibilities=fit["resp"],
      ranker_ids=ids,
      n_iter=fit["n_iter"],
      converged=fit["converged"],
      trace=fit["trace"],
      restart_log_likelihoods=fit["restart_lls"],
      selection=tuple(rows),
      prior=float(prior))


@dataclasses.dataclass(frozen=True)
class _EMData:
  r: np.ndarray            # int32[m, k]
  avail: np.ndarray | None  # bool[m, n]
  c: np.ndarray            # float64[m] counts
  n: int
  unit: np.ndarray         # int[m] unit of each event
  n_units: int
  unit_weight: np.ndarray  # float64[U] a_u (0: no data)
  inner: np.ndarray        # float64[m] multiplier of log P inside a unit
  complete: np.ndarray     # bool[m] rows that list every available item
  per_ranker: bool
  prior: float


def _fit_groups(d: _EMData, g: int, restarts: int, seed: int, tol: float, max_iter: int) -> dict:
  """The best of `restarts` EM runs with g components, ordered by weight."""
  rng = np.random.default_rng([int(seed), g])
  data_units = np.flatnonzero(d.unit_weight > 0)
  best, lls, any_converged, last_change = None, [], False, np.inf
  for _ in range(restarts):
    resp = np.zeros((d.n_units, g))
    # A random partition with every class non-empty.
    labels = rng.permutation(np.arange(data_units.size) % g)
    resp[data_units, labels] = 1.0
    if g == 1:
      resp[:] = 1.0
    run = _em(d, resp, tol, max_iter)
    lls.append(run["log_likelihood"])
    any_converged |= run["converged"]
    last_change = min(last_change, run["last_change"])
    if best is None or run["objective"] > best["objective"]:
      best = run
  if not any_converged:
    raise ConvergenceError(
        f"fit_pl_mixture with n_groups = {g} did not converge in max_iter = {max_iter} EM "
        f"iterations in any of {restarts} restarts (smallest last relative change "
        f"{last_change:.3g} > tol {tol:g}); increase max_iter or tol.")
  best = _final_step(d, best)
  order = np.argsort(-best["weights"], kind="stable")
  for name in ("weights", "theta", "stderr"):
    best[name] = best[name][order]
  best["resp"] = best["resp"][:, order]
  best["restart_lls"] = np.asarray(lls)
  return best


def _final_step(d: _EMData, run: dict) -> dict:
  """One last EM iteration whose M-step is `fit_pl` itself (from θ = 0, to its
  tolerance), which also gives the standard errors conditional on the
  responsibilities."""
  resp = run["resp"]
  g = resp.shape[1]
  fits = [fit_pl(d.r, d.n, where=d.avail, prior=d.prior,
                 counts=d.c * np.maximum(resp[d.unit, j], _FLOOR)) for j in range(g)]
  theta = np.stack([f.log_strengths for f in fits])
  weights = (d.unit_weight @ resp) / d.unit_weight.sum()
  joint, ll = _e_step(d, theta, weights)
  obj = ll - 0.5 * d.prior * float(np.sum(theta * theta))
  resp = np.exp(joint - _logsumexp(joint, axis=1, keepdims=True))
  trace = np.append(run["trace"], obj)
  return dict(run, weights=weights, theta=theta, stderr=np.stack([f.stderr for f in fits]),
              resp=resp, log_likelihood=ll, objective=obj, trace=trace, n_iter=len(trace))


def _em(d: _EMData, resp: np.ndarray, tol: float, max_iter: int) -> dict:
  """One EM run from responsibilities float64[U, G]."""
  g = resp.shape[1]
  total = d.unit_weight.sum()
  trace, converged, change = [], False, np.inf
  theta = np.zeros((g, d.n))
  for it in range(max_iter):
    # M-step: each component's weighted PL fit, warm-started at the last θ.
    # After the first, one Newton step (with its line search) is enough: it
    # raises the expected log-likelihood (a generalised EM, still monotone),
    # and near the optimum it lands within a hair of the exact M-step.
    theta = _m_step(d, theta, d.c[None, :] * resp[d.unit].T, max_steps=100 if it == 0 else 1)
    weights = (d.unit_weight @ resp) / total
    # E-step.
    joint, ll = _e_step(d, theta, weights)
    obj = ll - 0.5 * d.prior * float(np.sum(theta * theta))
    resp = np.exp(joint - _logsumexp(joint, axis=1, keepdims=True))
    if trace:
      change = (obj - trace[-1]) / max(1.0, abs(obj))
    trace.append(obj)
    if g == 1 or abs(change) < tol:
      converged = True
      break
  return dict(weights=weights, theta=theta, resp=resp, log_likelihood=ll, objective=trace[-1],
              trace=np.asarray(trace), n_iter=len(trace), converged=converged,
              last_change=abs(change))


def _m_step(d: _EMData, theta, counts, max_steps: int):
  """θ float64[G, n] raising Σ_e counts[g, e] log P(e | θ_g) − prior/2 ‖θ_g‖²
  for every g: up to `max_steps` Newton steps from `theta` (fit_pl's
  derivatives; fit_pl itself always starts from θ = 0, while EM's consecutive
  M-steps are close, so a warm start needs a step or two instead of six).
  Each step backtracks until the objective rises, so EM stays monotone."""
  n, prior = d.n, d.prior
  flat = np.full((n, n), 1.0 / n)   # fixes θ + const, as fit_pl's solve does
  with jax.enable_x64(True):
    data = (jnp.asarray(d.r), None if d.avail is None else jnp.asarray(d.avail),
            jnp.asarray(counts), jnp.asarray(d.complete))

    def evaluate(th):
      # One component at a time: the compiled step depends on the data's
      # shape only (shared with fit_pl's), not on G.
      out = [_derivatives(jnp.asarray(th[j]), data[0], data[1], data[2][j], data[3], n=n)
             for j in range(th.shape[0])]
      ll, grad, hess = (np.stack([np.asarray(o[i]) for o in out]) for i in range(3))
      obj = ll - 0.5 * prior * np.sum(th * th, axis=1)
      return obj, grad - prior * th, hess + prior * np.eye(n)

    obj, grad, hess = evaluate(theta)
    for _ in range(max_steps):
      try:
        step = np.linalg.solve(hess + flat, grad[..., None])[..., 0]
      except np.linalg.LinAlgError:
        step = np.full_like(theta, np.nan)
      if not np.all(np.isfinite(step)):
        raise ConvergenceError(
            "fit_pl_mixture: a component's information matrix is singular (its class holds "
            "too little data to identify every item's strength)"
            + ("; use prior > 0." if prior == 0 else "; increase the prior."))
      dec = np.sum(grad * step, axis=1)
      todo = dec / 2 >= _NEWTON_TOL
      if not todo.any():
        break
      t = np.where(todo, 1.0, 0.0)
      while True:
        cand = theta + t[:, None] * step
        obj_c, grad_c, hess_c = evaluate(cand)
        bad = todo & (obj_c < obj + 0.25 * t * dec) & (t >= 1e-8)
        if not bad.any():
          break
        t = np.where(bad, 0.5 * t, t)
      ok = obj_c >= obj   # never accept a step that lowers the objective
      theta = np.where(ok[:, None], cand, theta)
      obj = np.where(ok, obj_c, obj)
      grad = np.where(ok[:, None], grad_c, grad)
      hess = np.where(ok[:, None, None], hess_c, hess)
      if not ok[todo].any():
        break
  # The likelihood is flat along θ + const; centring only lowers the penalty.
  return theta - theta.mean(axis=1, keepdims=True)


def _e_step(d: _EMData, theta, weights):
  """(log w_g + unit log-likelihood float64[U, G], mixture log-likelihood)."""
  lp = _component_log_prob(theta, d.r, d.avail).T * d.inner[:, None]     # [m, G]
  unit_lp = _sum_by_unit(lp, d.unit, d.n_units) if d.per_ranker else lp
  with np.errstate(divide="ignore"):
    joint = unit_lp + np.log(weights)
  ll = float(d.unit_weight @ _logsumexp(joint, axis=1))
  return joint, ll


def _component_log_prob(theta, r, avail):
  """float64[G, m] PL log-probability of each list under each component."""
  with jax.enable_x64(True):
    r, avail = jnp.asarray(r), None if avail is None else jnp.asarray(avail)
    # One component at a time: one compilation per data shape, whatever G.
    return np.stack([np.asarray(pl_log_prob(jnp.asarray(np.asarray(th, np.float64)), r,
                                            where=avail), np.float64) for th in theta])


def _logsumexp(x, axis, keepdims=False):
  """float64 log Σ exp(x) along `axis`, exact for any finite or −inf entries
  (an all −inf slice gives −inf). Here rather than scipy's so that `import
  luce` does not load scipy."""
  x = np.asarray(x, np.float64)
  top = np.max(x, axis=axis, keepdims=True)
  top = np.where(np.isfinite(top), top, 0.0)
  with np.errstate(divide="ignore"):
    out = np.log(np.sum(np.exp(x - top), axis=axis, keepdims=True)) + top
  return out if keepdims else np.squeeze(out, axis=axis)


def _sum_by_unit(lp, unit, n_units):
  out = np.zeros((n_units, lp.shape[1]))
  np.add.at(out, unit, lp)
  return out


def _check_lists(rankings, n_items, where):
  """Validated (rankings int32[m, k], where bool[m, n] or None)."""
  if isinstance(n_items, bool) or not isinstance(n_items, numbers.Integral) or n_items < 1:
    raise InputError(f"n_items must be an int ≥ 1, got {n_items!r}.")
  n = int(n_items)
  r = np.asarray(rankings)
  if r.ndim != 2:
    raise ShapeError(f"rankings must be int[m, k], got shape {list(r.shape)}.")
  if not np.issubdtype(r.dtype, np.integer):
    raise ShapeError(f"rankings must hold integer item ids, got dtype {r.dtype}.")
  m, k = r.shape
  if k > n:
    raise ShapeError(f"rankings lists {k} items per row but n_items = {n}.")
  _checks.check_item_lists(r, n, "rankings")
  avail = _checks.where_mask(where, r, n)
  return r.astype(np.int32), avail


def _check_rankers(rankers, m):
  """(sorted distinct ids, unit index int[m] of each event)."""
  a = np.asarray(rankers)
  if a.shape != (m,):
    raise ShapeError(f"rankers must be int[m={m}] (one ranker id per event), got shape "
                     f"{list(a.shape)}.")
  if not np.issubdtype(a.dtype, np.integer):
    raise ShapeError(f"rankers must hold integer ranker ids, got dtype {a.dtype}.")
  ids, unit = np.unique(a, return_inverse=True)
  return ids, unit.reshape(-1)


def _check_int(value, name, low):
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
    raise InputError(f"{name} must be an int ≥ {low}, got {value!r}.")


def _check_groups(n_groups):
  """The candidate numbers of components, as a tuple of distinct ints ≥ 1."""
  if isinstance(n_groups, numbers.Integral) and not isinstance(n_groups, bool):
    values = (n_groups,)
  else:
    try:
      values = tuple(n_groups)
    except TypeError:
      raise InputError(f"n_groups must be an int ≥ 1 or a sequence of them, got "
                       f"{n_groups!r}.") from None
    if not values:
      raise InputError("n_groups is an empty sequence; give at least one number of components.")
  for v in values:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
      raise InputError(f"n_groups must hold ints, got {v!r}.")
    if v < 1:
      raise InputError(f"n_groups = {v}: a mixture needs at least one component (G ≥ 1).")
  if len(set(values)) != len(values):
    raise InputError(f"n_groups lists a value twice: {list(values)}.")
  return tuple(int(v) for v in values)
