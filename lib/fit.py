"""Static Plackett-Luce fit: item strengths from a table of (partial) rankings."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
from threadpoolctl import threadpool_limits
import jax
import jax.numpy as jnp

from luce import _checks
from luce.errors import ConvergenceError, InputError, ShapeError
from luce.inference import check_connected
from luce.ties import fit_pl_tied, prior_penalty

# The Newton step forms the n × n Fisher information in float64.
MAX_ITEMS = 8192


@dataclasses.dataclass(frozen=True)
class NormalPrior:
  r"""A multivariate normal prior on the log-strengths θ ~ N(mean, cov).

  Give the covariance or its inverse, the precision (not both). A float
  `prior=p` of `fit_pl` is NormalPrior(0, precision=p·I).

  Attributes:
    mean: float or float[n]: prior mean of θ (a float is the same for every
      item).
    cov: float[n, n] symmetric positive-definite covariance, or None.
    precision: float[n, n] symmetric positive-semidefinite precision, or
      None. A singular precision leaves some directions flat (e.g. a prior
      on contrasts only); the data must identify those.
  """
  mean: object = 0.0
  cov: object = None
  precision: object = None

  def __post_init__(self):
    if (self.cov is None) == (self.precision is None):
      raise InputError("NormalPrior takes exactly one of cov= (covariance) and precision=.")
    name = "cov" if self.cov is not None else "precision"
    mat = np.asarray(self.cov if self.cov is not None else self.precision, np.float64)
    if mat.ndim != 2 or mat.shape[0] != mat.shape[1] or mat.shape[0] == 0:
      raise ShapeError(f"NormalPrior {name} must be a square float[n, n] matrix, got shape "
                       f"{list(mat.shape)}.")
    if not np.all(np.isfinite(mat)):
      raise InputError(f"NormalPrior {name} has non-finite entries.")
    if not np.allclose(mat, mat.T, rtol=1e-10, atol=1e-12 * max(1.0, np.abs(mat).max())):
      i, j = np.argwhere(~np.isclose(mat, mat.T, rtol=1e-10))[0]
      raise InputError(f"NormalPrior {name} is not symmetric: {name}[{i}, {j}] = {mat[i, j]:.6g} "
                       f"but {name}[{j}, {i}] = {mat[j, i]:.6g}.")
    mat = 0.5 * (mat + mat.T)
    lam = np.linalg.eigvalsh(mat)
    scale = max(float(np.abs(lam).max()), 1e-300)
    if name == "cov" and lam[0] <= 1e-12 * scale:
      raise InputError(f"NormalPrior cov must be positive definite; its smallest eigenvalue is "
                       f"{lam[0]:.3g} (largest {lam[-1]:.3g}). For a prior that is flat in some "
                       f"directions pass precision= instead.")
    if name == "precision" and lam[0] < -1e-10 * scale:
      raise InputError(f"NormalPrior precision must be positive semidefinite; its smallest "
                       f"eigenvalue is {lam[0]:.3g}.")
    mean = np.asarray(self.mean, np.float64)
    if mean.ndim > 1 or (mean.ndim == 1 and mean.shape[0] != mat.shape[0]):
      raise ShapeError(f"NormalPrior mean must be a float or float[n={mat.shape[0]}], got shape "
                       f"{list(mean.shape)}.")
    if not np.all(np.isfinite(mean)):
      raise InputError("NormalPrior mean has non-finite entries.")

  @property
  def n_items(self) -> int:
    return int(np.asarray(self.cov if self.cov is not None else self.precision).shape[0])

  def mean_vector(self) -> np.ndarray:
    """float64[n] the prior mean."""
    return np.broadcast_to(np.asarray(self.mean, np.float64), (self.n_items,)).copy()

  def precision_matrix(self) -> np.ndarray:
    """float64[n, n] the prior precision (the inverse covariance)."""
    if self.precision is not None:
      mat = np.asarray(self.precision, np.float64)
      return 0.5 * (mat + mat.T)
    with threadpool_limits(1):
      cov = np.asarray(self.cov, np.float64)
      inv = np.linalg.inv(0.5 * (cov + cov.T))
    return 0.5 * (inv + inv.T)


@dataclasses.dataclass(frozen=True)
class PLFit:
  """Result of `fit_pl`.

  Attributes:
    log_strengths: float64[n] log-strengths θ, centred (mean 0); item i beats
      item j in a pairwise choice with probability σ(θ_i − θ_j).
    stderr: float64[n] standard errors of the centred θ from the Fisher
      information of the rankings (with the prior's precision added; never
      the pseudo-rankings': see `fit_pl`).
    covariance: float64[n, n] covariance of the centred θ (sum-to-zero
      constraint; `luce.vcov` gives it under another).
    log_likelihood: log-likelihood of the rankings at θ (without the prior
      or the pseudo-rankings), nats.
    n_iter: Newton iterations taken.
    prior: the prior used: a float precision on each θ_i, or a NormalPrior.
    npseudo: pseudo-rankings per item and direction (0: none).
    log_posterior: the maximised objective: log-likelihood of the rankings
      plus that of the pseudo-rankings minus ½ (θ − μ)ᵀ Λ (θ − μ), at the
      fitted θ (uncentred, the ghost item at 0), nats.
    n_obs: number of rankings that carry information, counted with their
      counts (R's nobs; the N of BIC).
  """
  log_strengths: np.ndarray
  stderr: np.ndarray
  covariance: np.ndarray
  log_likelihood: float
  n_iter: int
  prior: object
  npseudo: float = 0.0
  log_posterior: float = float("nan")
  n_obs: float = float("nan")


def fit_pl(rankings, n_items: int, *, where=None, counts=None, prior=None, npseudo: float = 0.0,
           tol: float = 1e-9, max_iter: int = 100, tied=None, max_tie_order=None) -> PLFit:
  r"""Maximum-likelihood (or MAP) Plackett-Luce strengths from top-k lists.

  Each row of `rankings` is a list best first: its first item was chosen from
  every available item, the second from those left, and so on. A full ranking
  lists every available item; a top-k list stops early, and the items it never
  lists were available but not chosen. The objective is::

    Σ_r c_r log P(ranking_r | θ)
      + npseudo Σ_i [θ_i − 2 log(1 + e^{θ_i})]      (pseudo-rankings)
      − ½ (θ − μ)ᵀ Λ (θ − μ)                          (prior),

  maximised by Newton's method with a backtracking line search, in float64.
  The Fisher information is assembled in O(m·k² + n²) from sums over stages
  (plus an m·n² product when `where` is given) instead of one n × n outer
  product per stage.

  Pseudo-rankings (`npseudo` = N > 0) are those of R's PlackettLuce: a ghost
  item with log-strength fixed at 0 that each item beats N times and loses to
  N times in pairwise rankings. They connect any comparison network, so the
  estimate always exists, and shrink θ towards the ghost. The ghost's
  parameter is dropped from the result and, as PlackettLuce reports them,
  `log_likelihood` is that of the real rankings only (at the fitted θ) and
  `covariance`/`stderr` come from the real rankings' Fisher information (plus
  the prior's precision): where the real rankings leave groups of items that
  never meet (no prior), those are not finite (`covariance` NaN, `stderr`
  inf). `log_posterior` is the objective with the pseudo-rankings.

  The prior is a Gaussian N(μ, Λ⁻¹) on θ: `prior=p` (a float) is N(0, I/p),
  a ridge that keeps items that never won, never lost or never appeared
  finite (at 0 for the latter) and has a negligible effect on well-observed
  items; `prior=luce.NormalPrior(mean, cov=...)` (or `precision=`) is any
  normal prior, as PlackettLuce's `normal = list(mu, Sigma)`. The result is
  then the posterior mode (MAP) and its covariance the inverse of the
  information plus Λ.

  Args:
    rankings: int[m, k] item ids best first, −1 padding the end of shorter
      lists.
    n_items: number of items n; ids run from 0 to n − 1.
    where: bool[m, n] or None. Availability per ranking (choice sets): False
      marks items not in that event. For complete rankings of choice sets
      (each row lists all its items), pass `where` = the items listed, e.g.
      `luce.listed_items(rankings, n_items)`.
    counts: float[m] or None, ≥ 0: how many times each row was observed.
    prior: None, a float precision ≥ 0, or a NormalPrior over the n items.
      None is 0.01 without pseudo-rankings and 0 with them. With 0 and no
      pseudo-rankings the plain MLE is returned if it exists (the win graph
      must be strongly connected, `luce.check_connected`); otherwise
      ConvergenceError names the components and items that break it.
    npseudo: pseudo-rankings per item and direction, ≥ 0 (PlackettLuce's
      default is 0.5).
    tol: stop when the Newton decrement is below tol (nats).
    max_iter: most Newton iterations.
    tied: bool[m, k] or None. With it, the tie model of `luce.ties.fit_pl_tied`
      (PlackettLuce's ties: True marks an item tied with the one before it;
      `EventTable.tied_array()` of a reader's `?ties=keep`), fitted jointly
      with one tie parameter per order 2..max_tie_order; returns a
      `luce.PLTieFit` (with `log_tie` and its standard errors).
    max_tie_order: D, the largest tie (None: the largest in `tied`).

  Returns:
    PLFit with centred log-strengths, standard errors and log-likelihood
    (a PLTieFit when `tied` is given).
  """
  if tied is not None:
    return fit_pl_tied(rankings, n_items, tied=tied, max_tie_order=max_tie_order, where=where,
                       counts=counts, prior=prior, npseudo=npseudo, tol=tol, max_iter=max_iter)
  if max_tie_order is not None:
    raise InputError("max_tie_order is the tie model's: pass tied= (bool[m, k]) with it.")
  if not (isinstance(npseudo, (int, float, np.integer, np.floating)) and np.isfinite(npseudo)
          and npseudo >= 0):
    raise InputError(f"npseudo must be a finite number ≥ 0 (pseudo-rankings per item), got "
                     f"{npseudo!r}.")
  npseudo = float(npseudo)
  if prior is None:
    prior = 0.01 if npseudo == 0 else 0.0
  r, avail, c, n = _check_rankings(rankings, n_items, where, counts, 0.0, "fit_pl")
  mu, ridge, lam, record = _prior_terms(prior, n)

  # Drop rows that carry no information up front (all padding, zero count).
  keep = (r[:, 0] >= 0) & (c > 0)
  r, c = r[keep], c[keep]
  avail = None if avail is None else avail[keep]
  n_avail = np.full(len(r), n) if avail is None else avail.sum(axis=1)
  # Rows that list every available item have no unpicked remainder; knowing it
  # structurally keeps the remainder exactly 0 instead of a rounding residue.
  complete = (r >= 0).sum(axis=1) == n_avail
  # A row whose only choice is forced (one available item) still counts.
  n_obs = float(c.sum())

  no_prior = ridge == 0 and (lam is None or not np.any(lam))
  if no_prior and npseudo == 0:
    _check_mle_exists(r, avail, n)
  # The likelihood is flat along θ + const; the prior (Λ1 ≠ 0) or the ghost
  # may fix that direction.
  free_shift = ridge == 0 and (lam is None or np.abs(lam.sum(axis=1)).max()
                               <= 1e-12 * max(1.0, np.abs(lam).max()))
  flat = npseudo == 0 and free_shift
  diag = np.diag_indices(n)

  def penalty(theta):
    return prior_penalty(theta, mu, ridge, lam, npseudo)

  with jax.enable_x64(True):
    data = (jnp.asarray(r), None if avail is None else jnp.asarray(avail),
            jnp.asarray(c), jnp.asarray(complete))
    theta = mu.copy()
    ll, grad, hess = _derivatives(jnp.asarray(theta), *data, n=n)
    pen, pgrad, phess = penalty(theta)
    obj = float(ll) + pen
    decrement = np.inf
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 (the count is reported after the loop)
      g = np.asarray(grad) + pgrad
      h = np.array(hess)
      h[diag] += phess
      if lam is not None:
        h += lam
      step = _solve(h, g, flat)
      decrement = float(g @ step)
      if decrement / 2 < tol:
        break
      # Backtracking on the penalised log-likelihood (concave: a full step
      # almost always succeeds near the optimum).
      t = 1.0
      while True:
        cand = theta + t * step
        ll_c, grad_c, hess_c = _derivatives(jnp.asarray(cand), *data, n=n)
        pen_c = penalty(cand)
        obj_c = float(ll_c) + pen_c[0]
        if obj_c >= obj + 0.25 * t * decrement or t < 1e-8:
          break
        t *= 0.5
      theta, ll, grad, hess, obj = cand, ll_c, grad_c, hess_c, obj_c
      pen, pgrad, phess = pen_c
      if float(np.max(np.abs(theta - theta.mean()))) > 60.0:
        break
    else:
      it = max_iter
    hess = np.asarray(hess)
    ll = float(ll)

  spread = theta.max() - theta.min() if n > 1 else 0.0
  if decrement / 2 >= tol or spread > 100.0:
    hint = ("some items may always win or always lose (or the comparison graph "
            "is disconnected); use prior > 0 or npseudo > 0" if no_prior and npseudo == 0 else
            "increase max_iter or the prior")
    raise ConvergenceError(
        f"fit_pl did not converge in {it} Newton iterations (Newton decrement "
        f"{decrement / 2:.3g} > tol {tol:g}, log-strength spread {spread:.3g}): {hint}.")

  # Standard errors from the real rankings' information plus the prior's
  # precision (not the pseudo-rankings', as PlackettLuce's vcov).
  centre = np.eye(n) - 1.0 / n
  singular = False
  if npseudo and no_prior and n > 1:
    singular = not check_connected(r, n, avail).weakly_connected
  if singular:
    cov = np.full((n, n), np.nan)
    stderr = np.full(n, np.inf)
  else:
    info = np.array(hess)
    info[diag] += ridge
    if lam is not None:
      info += lam
    cov = centre @ _inverse(info, free_shift) @ centre
    cov = 0.5 * (cov + cov.T)
    stderr = np.sqrt(np.clip(np.diag(cov), 0.0, None))
  return PLFit(
      log_strengths=theta - theta.mean(),
      stderr=stderr,
      covariance=cov,
      log_likelihood=ll,
      n_iter=it,
      prior=record,
      npseudo=npseudo,
      log_posterior=float(obj),
      n_obs=n_obs)


def _prior_terms(prior, n):
  """(mean float64[n], ridge ≥ 0, precision float64[n, n] or None, the prior
  to record): the prior's precision is ridge·I + precision."""
  if isinstance(prior, NormalPrior):
    if prior.n_items != n:
      raise ShapeError(f"the NormalPrior is over {prior.n_items} items but n_items = {n}; its "
                       f"mean and covariance must be float[{n}] and float[{n}, {n}].")
    return prior.mean_vector(), 0.0, prior.precision_matrix(), prior
  if isinstance(prior, (bool, np.bool_)) or not isinstance(prior, (int, float, np.integer, np.floating)):
    raise InputError(f"prior must be a float precision ≥ 0 or a luce.NormalPrior, got "
                     f"{type(prior).__name__} {prior!r}.")
  p = float(prior)
  if not (np.isfinite(p) and p >= 0):
    raise InputError(f"prior must be a finite number ≥ 0, got {prior}.")
  return np.zeros(n), p, None, p


def _check_rankings(rankings, n_items, where, counts, prior, fn: str):
  """Validated (rankings int[m, k], where bool[m, n] or None, counts float64[m], n)."""
  n = int(n_items)
  if n < 1:
    raise InputError(f"n_items must be ≥ 1, got {n_items}.")
  if n > MAX_ITEMS:
    raise InputError(
        f"n_items = {n} is above {fn}'s limit of {MAX_ITEMS}: the Newton step "
        f"forms the dense n × n Fisher information.")
  r = np.asarray(rankings)
  if r.ndim != 2:
    raise ShapeError(f"rankings must be int[m, k], got shape {r.shape}.")
  r = np.asarray(_checks.int_array(r, "rankings"))
  m, k = r.shape
  if k > n:
    raise ShapeError(f"rankings lists {k} items per row but n_items = {n}.")
  _checks.check_item_lists(r, n, "rankings")
  if not (np.isfinite(prior) and prior >= 0):
    raise InputError(f"prior must be a finite number ≥ 0, got {prior}.")
  avail = _checks.where_mask(where, r, n)
  c = np.ones(m) if counts is None else np.asarray(counts, np.float64)
  if c.shape != (m,):
    raise ShapeError(f"counts must be float[m={m}], got shape {c.shape}.")
  if not np.all(np.isfinite(c) & (c >= 0)):
    bad = int(np.flatnonzero(~(np.isfinite(c) & (c >= 0)))[0])
    raise InputError(f"counts[{bad}] = {c[bad]}; counts must be finite and ≥ 0.")
  return r, avail, c, n


def listed_items(rankings, n_items: int) -> np.ndarray:
  """bool[m, n]: True where a row of `rankings` lists the item (−1 ignored)."""
  r = np.asarray(rankings)
  out = np.zeros((r.shape[0], int(n_items)), bool)
  rows, cols = np.nonzero(r >= 0)
  out[rows, r[rows, cols]] = True
  return out


def _check_mle_exists(r, avail, n):
  """Raise unless the MLE exists: the win graph is strongly connected
  (Hunter 2004; see `luce.check_connected`)."""
  conn = check_connected(r, n, avail)
  if not conn.connected:
    raise ConvergenceError(
        f"the maximum-likelihood estimate does not exist with prior=0 and npseudo=0: "
        f"{conn.describe()}; use prior > 0 or npseudo > 0 (pseudo-rankings).")


def _solve(h, g, flat: bool = True):
  # The log-likelihood is flat along the all-ones direction (θ + const gives
  # the same model); unless the prior or the ghost item fixes it, adding
  # 11ᵀ/n fixes that direction without changing the step in the others, since
  # g is then orthogonal to 1. One BLAS thread: BLAS threads spinning against
  # XLA's for the same cores made a 200 × 200 solve up to 100× slower.
  n = h.shape[0]
  with threadpool_limits(1):
    return np.linalg.solve(h + np.full((n, n), 1.0 / n) if flat else h, g)


def _inverse(h, flat: bool = True):
  n = h.shape[0]
  with threadpool_limits(1):
    return np.linalg.inv(h + np.full((n, n), 1.0 / n) if flat else h)


@functools.partial(jax.jit, static_argnames=("n",))
def _derivatives(theta, rankings, avail, counts, complete, *, n):
  """Log-likelihood, gradient and negative Hessian (Fisher information) at θ.

  For row r and stage j, Z_rj = U_r + Σ_{l ≥ j} w_{π_l} (U_r: weight of the
  available items never picked), with w = exp(θ − max θ).
  """
  m, k = rankings.shape
  valid = rankings >= 0
  idx = jnp.where(valid, rankings, 0)
  w = jnp.exp(theta - jnp.max(theta))
  pw = jnp.where(valid, w[idx], 0.0)
  if avail is None:
    base = jnp.full((m,), jnp.sum(w))
  else:
    base = avail.astype(w.dtype) @ w
  unpicked = jnp.where(complete, 0.0, jnp.maximum(base - jnp.sum(pw, axis=1), 0.0))
  suffix = jnp.cumsum(pw[:, ::-1], axis=1)[:, ::-1]
  z = jnp.where(valid, unpicked[:, None] + suffix, 1.0)
  cz = counts[:, None] * valid / z          # c_r / Z_rj, 0 on pads
  cz2 = cz / z                              # c_r / Z_rj²

  shift = jnp.max(theta)
  logw = jnp.where(valid, theta[idx] - shift, 0.0)
  ll = jnp.sum(counts[:, None] * jnp.where(valid, logw - jnp.log(z), 0.0))

  wins = jnp.zeros(n).at[idx.reshape(-1)].add((counts[:, None] * valid).reshape(-1))
  total = jnp.sum(cz, axis=1)                # Σ_j c/Z over all stages
  prefix = jnp.cumsum(cz, axis=1)            # Σ_{j ≤ m} c/Z
  # An item picked at stage m leaves the race after it: it is not in the
  # denominators of stages m+1.., which are (total − prefix).
  gone = jnp.where(valid, total[:, None] - prefix, 0.0)
  if avail is None:
    seen = jnp.full((n,), jnp.sum(total))
  else:
    seen = avail.astype(w.dtype).T @ total
  seen = seen - jnp.zeros(n).at[idx.reshape(-1)].add(gone.reshape(-1))
  expected = w * seen
  grad = wins - expected

  # Σ_stages c p pᵀ with p = (w ⊙ a_r − q_rj)/Z_rj, q_rj the picked-before mass.
  b = jnp.sum(cz2, axis=1)
  after = jnp.where(valid, jnp.sum(cz2, axis=1, keepdims=True) - jnp.cumsum(cz2, axis=1), 0.0)
  if avail is None:
    term1 = jnp.sum(b) * jnp.outer(w, w)
    v = jnp.zeros(n).at[idx.reshape(-1)].add((pw * after).reshape(-1))
    cross = jnp.outer(w, v)
  else:
    a = avail.astype(w.dtype)
    term1 = (w[:, None] * (a.T @ (a * b[:, None]))) * w[None, :]
    vd = jnp.zeros((m, n)).at[jnp.arange(m)[:, None], idx].add(pw * after)
    cross = w[:, None] * (a.T @ vd)
  # Pairs of picks (l, l') share the stages after both: Σ_{j > max(l, l')} c/Z².
  later = after[:, jnp.maximum(jnp.arange(k)[:, None], jnp.arange(k)[None, :])]
  pair = pw[:, :, None] * pw[:, None, :] * later
  flat = (idx[:, :, None] * n + idx[:, None, :]).reshape(-1)
  term3 = jnp.zeros(n * n).at[flat].add(pair.reshape(-1)).reshape(n, n)
  outer = term1 - cross - cross.T + term3
  fisher = jnp.diag(expected) - outer
  return ll, grad, fisher


# ---------------------------------------------------------------------------
# Conditional logit: Plackett-Luce with per-event item covariates.

# Elements of the per-block [B, A, A] stage-sum product of `_cl_derivatives`
# (A: most items available in one event); events are processed in blocks of B.
_CL_BLOCK = 1 << 22


@dataclasses.dataclass(frozen=True)
class CLFit:
  """Result of `fit_cl`.

  Attributes:
    beta: float64[p] covariate slopes β (score per unit of each covariate).
    beta_stderr: float64[p] their standard errors (inf for the covariates in
      `unidentified`).
    log_strengths: float64[n] item effects θ, centred (mean 0); zeros when
      item_effects=False.
    stderr: float64[n] standard errors of the centred θ (zeros when
      item_effects=False).
    covariance: float64[n + p, n + p] covariance of all parameters, θ first
      then β, from the inverse Fisher information with the priors' precision
      added (the θ block is centred; θ rows are zero when item_effects=False;
      rows of unidentified covariates are NaN).
    log_likelihood: log-likelihood of the data at (θ, β), without priors, nats.
    iterations: Newton iterations taken.
    prior: precision of the ridge prior on θ.
    beta_prior: precision of the ridge prior on β actually used (0 unless the
      data are separable along some covariate direction, see `fit_cl`).
    separating_direction: float64[p] or None: a direction d along which the
      data are separable (found before fitting), the reason β was penalised.
    unidentified: indices of covariates whose slope the data cannot identify:
      alone or in a linear combination with others they are constant among
      every event's available items. β is 0 along those directions.
    item_effects: whether θ was fitted.
  """
  beta: np.ndarray
  beta_stderr: np.ndarray
  log_strengths: np.ndarray
  stderr: np.ndarray
  covariance: np.ndarray
  log_likelihood: float
  iterations: int
  prior: float
  beta_prior: float
  separating_direction: np.ndarray | None
  unidentified: tuple[int, ...]
  item_effects: bool

  def scores(self, covariates) -> np.ndarray:
    """float64[m, n] scores s_ti = θ_i + x_ti · β of events with covariates
    float[m, n, p]. Unavailable items get a score too (NaN if their covariate
    is NaN): mask them with the events' availability."""
    x = np.asarray(covariates, np.float64)
    n, p = self.log_strengths.shape[0], self.beta.shape[0]
    if x.ndim != 3 or x.shape[1:] != (n, p):
      raise ShapeError(f"covariates must be float[m, n={n}, p={p}], got shape {list(x.shape)}.")
    return self.log_strengths[None, :] + x @ self.beta


def fit_cl(rankings, covariates, n_items: int, *, where=None, counts=None,
           item_effects: bool = True, prior: float = 0.01, beta_prior: float | None = None,
           tol: float = 1e-9, max_iter: int = 100) -> CLFit:
  r"""Conditional-logit Plackett-Luce: item effects plus covariate slopes.

  The score of item i in event t is

    s_ti = θ_i + x_ti · β,

  with x_ti = covariates[t, i] (float[p], what is known of item i before
  event t), θ the item effects (centred; left out with item_effects=False)
  and β the slopes shared by all items. Each row of `rankings` is a top-k
  list best first, as `fit_pl` takes them: its j-th item was chosen from the
  event's available items (`where`) not listed before it, with probability
  softmax(s_t) over those. The objective

    Σ_t c_t log P(ranking_t | θ, β) − prior/2 · ‖θ‖² − beta_prior/2 · ‖β‖²

  is maximised by Newton's method in float64 with a backtracking line search
  (step halving), stopping when the Newton decrement gᵀ I⁻¹ g / 2 (the
  gradient in the metric of the inverse information) is below `tol`.
  Only rankings are taken (top-k lists); unordered sets have no ranking
  likelihood of this form here.

  Gradient and information come from stage sums: per stage j of event t,
  ∂/∂s_t = onehot(π_j) − p_tj and −∂²/∂s_t² = diag p_tj − p_tj p_tjᵀ, with
  p_tj the softmax over the items still available. Each event's available
  items are laid out in slots (its listed items in order, then the unlisted
  ones), so stage j's choice set is the slots ≥ j: log Z_tj is one reverse
  cumulative logsumexp, and the chain rule to (θ, β) needs arrays of at most
  [B, k, A] and [B, A, A] (B events per block, A the most items available in
  one event) — never [m, k, n, n]. The cost is O(m·k·A·p + m·A²) per
  iteration plus an (n + p)³ Cholesky factorisation.

  Existence. θ has a ridge prior (`prior`, as in `fit_pl`); β is
  unpenalised unless the MLE would not exist:

  - a covariate direction d that is constant among every event's available
    items carries no information (a flat direction): β is fitted in the
    identified subspace and those covariates are reported in `unidentified`
    with infinite standard errors;
  - a separable direction d (the listed order never contradicts x · d: each
    listed item has x · d ≥ every item left when it was chosen, strictly
    somewhere) makes the likelihood increase without bound along d. It is
    found before fitting by a linear program. With beta_prior=None (the
    default) β then gets the ridge prior `prior` too, enough for existence,
    and the fit reports `separating_direction`; with beta_prior=0 it raises
    ConvergenceError naming the direction.

  With prior=0 and item effects, θ is unpenalised as well and the same
  linear program covers (θ, β): separable data raise ConvergenceError.

  Args:
    rankings: int[m, k] item ids best first, −1 padding shorter lists.
    covariates: float[m, n, p] per-event item covariates (values of
      unavailable items are ignored; NaN or inf at an available item is an
      InputError). p may be 0 with item effects (then this is `fit_pl`).
    n_items: number of items n.
    where: bool[m, n] or None (every item available in every event; costs
      O(m·n²) per iteration then). Listed items must be available.
    counts: float[m] or None, ≥ 0: how many times each row was observed.
    item_effects: fit θ; False scores items by their covariates alone.
    prior: precision of the Gaussian prior on each θ_i, ≥ 0.
    beta_prior: precision of a Gaussian prior on each β_j, ≥ 0, or None:
      0 unless the data are separable, then `prior`.
    tol: stop when the Newton decrement is below tol (nats).
    max_iter: most Newton iterations.

  Returns:
    CLFit (β, θ, standard errors, covariance, log-likelihood, `scores`).

  Raises:
    ShapeError / InputError: malformed inputs (the argument is named).
    ConvergenceError: no convergence in max_iter iterations, a stalled line
      search, a singular information matrix (prior=0) or, with beta_prior=0
      or prior=0, separable data.
  """
  r, avail, c, n = _check_rankings(rankings, n_items, where, counts, prior, "fit_cl")
  m = r.shape[0]
  x = np.asarray(covariates)
  if x.ndim != 3 or x.shape[:2] != (m, n):
    raise ShapeError(f"covariates must be float[m={m}, n={n}, p] (one row of p values per event "
                     f"and item), got shape {list(x.shape)}.")
  if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)
          or x.dtype == np.bool_):
    raise ShapeError(f"covariates must be a float array, got dtype {x.dtype}.")
  x = x.astype(np.float64)
  p = x.shape[2]
  if p == 0 and not item_effects:
    raise InputError("covariates has p = 0 columns and item_effects=False: there is nothing to "
                     "fit; pass at least one covariate or item_effects=True.")
  if (n if item_effects else 0) + p > MAX_ITEMS:
    raise InputError(f"n_items + p = {n + p} is above fit_cl's limit of {MAX_ITEMS}: the Newton "
                     f"step forms the dense (n + p)² information matrix.")
  if beta_prior is not None and not (np.isfinite(beta_prior) and beta_prior >= 0):
    raise InputError(f"beta_prior must be None or a finite number ≥ 0, got {beta_prior}.")
  av = np.ones((m, n), bool) if avail is None else avail
  bad = ~np.isfinite(x) & av[:, :, None]
  if bad.any():
    t, i, j = (int(v) for v in np.argwhere(bad)[0])
    raise InputError(f"covariates[{t}, {i}, {j}] = {x[t, i, j]} at an available item "
                     f"(where[{t}, {i}] is True); covariates of available items must be finite.")

  keep = (r[:, 0] >= 0) & (c > 0)
  r, c, av, x = r[keep], c[keep], av[keep], x[keep]
  idx, xc, lengths = _cl_layout(r, av, x)
  rows, d = _cl_chain(idx, xc, lengths)

  q, unidentified = _cl_identified(d)
  dq = d @ q
  pen_beta = 0.0 if beta_prior is None else float(beta_prior)
  direction = None
  if q.shape[1] and pen_beta == 0:
    delta = _cl_separating(dq)
    if delta is not None:
      direction = q @ delta
      direction /= np.abs(direction).max()
      where_ = ", ".join(f"{v:+.3g}·covariates[..., {j}]" for j, v in enumerate(direction)
                         if abs(v) > 1e-6)
      if beta_prior is not None or prior == 0:
        raise ConvergenceError(
            f"fit_cl: the data are separable along the covariate direction {where_}: every "
            f"listed item scores at least as high along it as each item still available when "
            f"it was chosen, so the likelihood grows without bound as β moves along it and no "
            f"finite MLE exists; pass beta_prior > 0 (beta_prior=None uses `prior` > 0 here), "
            f"or drop the covariate.")
      pen_beta = float(prior)
  if item_effects and prior == 0:
    _cl_check_joint(idx, rows, dq if pen_beta == 0 else dq[:, :0], n)

  xq = xc @ q
  n_t = n if item_effects else 0
  rq = q.shape[1]
  pen = np.concatenate([np.full(n_t, float(prior)), np.zeros(rq)])
  pen_mat = np.diag(pen)
  pen_mat[n_t:, n_t:] += pen_beta * (q.T @ q)
  fix = np.zeros((n_t + rq, n_t + rq))
  if item_effects:
    fix[:n_t, :n_t] = 1.0 / n      # the flat all-ones direction of θ

  kk = int(lengths.max()) if len(lengths) else 1
  blocks = _cl_blocks(idx, xq, lengths, c)

  # One BLAS thread for the Cholesky factorisations (see `_solve`).
  with jax.enable_x64(True), threadpool_limits(1):
    data = tuple(jnp.asarray(b) for b in blocks)

    def evaluate(phi, derivatives=True):
      out = _cl_derivatives(jnp.asarray(phi[:n_t] if item_effects else np.zeros(1)),
                            jnp.asarray(phi[n_t:]), *data, n=n, k=kk, with_theta=item_effects,
                            derivatives=derivatives)
      ll = float(out[0])
      obj = ll - 0.5 * float(phi @ pen_mat @ phi)
      if not derivatives:
        return ll, None, None, obj
      g_t, g_b, f_tt, f_tb, f_bb = (np.asarray(o) for o in out[1:])
      info = np.empty((n_t + rq, n_t + rq))
      info[:n_t, :n_t], info[:n_t, n_t:], info[n_t:, :n_t], info[n_t:, n_t:] = (
          f_tt, f_tb, f_tb.T, f_bb)
      return ll, np.concatenate([g_t, g_b]), info, obj

    phi = np.zeros(n_t + rq)
    ll, grad, info, obj = evaluate(phi)
    decrement, it, reason = np.inf, 0, None
    for it in range(max_iter + 1):
      if not np.isfinite(obj):
        reason = f"the objective is {obj} (a non-finite value)"
        break
      g = grad - pen_mat @ phi
      h = info + pen_mat + fix
      chol = _cl_cholesky(h, prior, item_effects)
      step = _cl_cho_solve(chol, g)
      decrement = float(g @ step)
      if decrement / 2 < tol:
        break
      if it == max_iter:
        reason = f"max_iter = {max_iter} Newton iterations were not enough"
        break
      t = 1.0
      slack = 8 * np.finfo(float).eps * max(abs(obj), 1.0)
      while True:
        cand = phi + t * step
        obj_c = evaluate(cand, derivatives=False)[3]
        if np.isfinite(obj_c) and obj_c >= obj + 0.25 * t * decrement - slack:
          break
        t *= 0.5
        if t < 1e-10:
          break
      if t < 1e-10:
        reason = "the line search found no ascent step (step halved to < 1e-10)"
        break
      phi = cand
      ll, grad, info, obj = evaluate(phi)
  if reason is not None or not decrement / 2 < tol:
    raise ConvergenceError(
        f"fit_cl did not converge: {reason} (Newton decrement {decrement / 2:.3g}, tol "
        f"{tol:g}, after {it} iterations); increase max_iter or the prior, or standardise "
        f"the covariates.")

  # Covariance of (θ centred, β = q γ).
  with threadpool_limits(1):
    inv = _cl_cho_solve(chol, np.eye(n_t + rq))
  jac = np.zeros((n + p, n_t + rq))
  if item_effects:
    jac[:n, :n] = np.eye(n) - 1.0 / n
  jac[n:, n_t:] = q
  cov = jac @ inv @ jac.T
  cov = 0.5 * (cov + cov.T)
  var = np.clip(np.diag(cov), 0.0, None)
  if unidentified:
    bad = n + np.asarray(unidentified)
    cov[bad, :] = np.nan
    cov[:, bad] = np.nan
    var[bad] = np.inf
  se = np.sqrt(var)
  theta = phi[:n_t] - phi[:n_t].mean() if item_effects else np.zeros(n)
  return CLFit(
      beta=q @ phi[n_t:],
      beta_stderr=se[n:],
      log_strengths=theta,
      stderr=se[:n] if item_effects else np.zeros(n),
      covariance=cov,
      log_likelihood=ll,
      iterations=it,
      prior=float(prior),
      beta_prior=pen_beta,
      separating_direction=direction,
      unidentified=unidentified,
      item_effects=bool(item_effects))


def _cl_layout(r, av, x):
  """Each event's available items in slots: listed ones in order, then the rest.

  Returns idx int[m, A] (item per slot, −1 past the event's items), the
  covariates float64[m, A, p] per slot (0 on padding) and lengths int[m]
  (listed items). Stage j's choice set is then the valid slots ≥ j.
  """
  m, n = av.shape
  k = r.shape[1]
  a_max = max(int(av.sum(axis=1).max()), 1) if m else 1
  key = np.broadcast_to(k + np.arange(n), (m, n)).copy()
  rows, slots = np.nonzero(r >= 0)
  key[rows, r[rows, slots]] = slots
  key[~av] = k + n
  order = np.argsort(key, axis=1, kind="stable")[:, :a_max]
  valid = np.take_along_axis(av, order, axis=1)
  idx = np.where(valid, order, -1).astype(np.int32)
  xc = np.where(valid[:, :, None], x[np.arange(m)[:, None], order], 0.0)
  return idx, xc, (r >= 0).sum(axis=1).astype(np.int32)


def _cl_chain(idx, xc, lengths):
  """The pairwise comparisons that imply every stage's: each listed item over
  the next, the last listed over every unlisted one.

  Returns (rows: (event, winner slot, loser slot) int arrays, d float64[R, p]
  = x_winner − x_loser).
  """
  m, a = idx.shape
  slot = np.arange(1, a)
  parent = np.minimum(slot[None, :] - 1, lengths[:, None] - 1)
  t, b = np.nonzero(idx[:, 1:] >= 0)
  win, lose = parent[t, b], b + 1
  return (t, win, lose), xc[t, win] - xc[t, lose]


def _cl_identified(d):
  """(q float64[p, r], unidentified): β = q γ spans the directions the data
  identify (those not constant among every event's available items)."""
  p = d.shape[1]
  if p == 0:
    return np.zeros((0, 0)), ()
  scale = np.sqrt(np.sum(d * d, axis=0))
  nz = scale > 0
  if nz.all():
    g = (d / scale).T @ (d / scale)
    lam, vec = np.linalg.eigh(g)
    if lam[0] > 1e-10 * max(lam[-1], 1.0):
      return np.eye(p), ()
  q = np.zeros((p, 0))
  flat = ~nz
  if nz.any():
    dn = d[:, nz] / scale[nz]
    lam, vec = np.linalg.eigh(dn.T @ dn)
    ok = lam > 1e-10 * max(lam[-1], 1.0)
    q = np.zeros((p, int(ok.sum())))
    q[nz] = vec[:, ok] / scale[nz][:, None]
    flat[np.flatnonzero(nz)] = np.sum(vec[:, ~ok] ** 2, axis=1) > 1e-8
  return q, tuple(int(j) for j in np.flatnonzero(flat))


def _cl_separating(d):
  """A direction δ with d δ ≥ 0 everywhere and > 0 somewhere, or None.

  Solves max 1ᵀ d δ s.t. d δ ≥ 0, |δ| ≤ 1 (columns scaled to unit max), then
  checks the direction it returns.
  """
  from scipy.optimize import linprog

  if d.shape[0] == 0:
    return None
  scale = np.abs(d).max(axis=0)
  scale = np.where(scale > 0, scale, 1.0)
  dn = d / scale
  res = linprog(-dn.sum(axis=0), A_ub=-dn, b_ub=np.zeros(len(dn)), bounds=(-1, 1),
                method="highs")
  if res.status != 0 or res.x is None:
    return None
  delta = res.x
  v = dn @ delta
  size = np.abs(v).max() if v.size else 0.0
  if size < 1e-7 or v.min() < -1e-9 * max(size, 1.0):
    return None
  return delta / scale


def _cl_check_joint(idx, rows, d, n):
  """With prior=0 and item effects: raise unless no (θ, β) direction separates."""
  import scipy.sparse as sp
  from scipy.optimize import linprog

  t, win, lose = rows
  nr = len(t)
  if nr == 0:
    return
  scale = np.abs(d).max(axis=0) if d.shape[1] else np.zeros(0)
  scale = np.where(scale > 0, scale, 1.0)
  theta_part = sp.csr_matrix(
      (np.concatenate([np.ones(nr), -np.ones(nr)]),
       (np.concatenate([np.arange(nr)] * 2), np.concatenate([idx[t, win], idx[t, lose]]))),
      shape=(nr, n))
  a = sp.hstack([theta_part, sp.csr_matrix(d / scale)]).tocsr()
  res = linprog(-np.asarray(a.sum(axis=0)).ravel(), A_ub=-a, b_ub=np.zeros(nr), bounds=(-1, 1),
                method="highs")
  if res.status != 0 or res.x is None:
    return
  v = a @ res.x
  size = np.abs(v).max()
  if size < 1e-7 or v.min() < -1e-9 * max(size, 1.0):
    return
  dt = res.x[:n]
  top = np.argsort(-dt)[:5].tolist()
  raise ConvergenceError(
      f"fit_cl: with prior=0 the maximum-likelihood estimate does not exist: a direction of "
      f"(item effects, slopes) never contradicts the listed order (items pushed up most: {top}), "
      f"so the likelihood grows without bound along it; use prior > 0.")


def _cl_blocks(idx, xq, lengths, counts):
  """Pad the events to nb × B (zero-count rows) so a block's [B, A, A] fits _CL_BLOCK."""
  m, a = idx.shape
  cap = max(1, _CL_BLOCK // (a * a))
  b = min(1 << max(m - 1, 0).bit_length(), cap) if m <= cap else cap
  nb = max(1, -(-m // b))
  pad = nb * b - m

  def fill(v, value):
    v = np.concatenate([v, np.full((pad,) + v.shape[1:], value, v.dtype)])
    return v.reshape((nb, b) + v.shape[1:])
  return (fill(idx, -1), fill(xq, 0.0), fill(lengths, 0), fill(counts.astype(np.float64), 0.0))


def _cl_cholesky(h, prior, item_effects):
  from scipy.linalg import cho_factor

  try:
    chol = cho_factor(h, lower=True, check_finite=True)
  except (np.linalg.LinAlgError, ValueError):
    chol = None
  if chol is not None:
    diag = np.diag(chol[0]) ** 2
    if diag.size == 0 or diag.min() > 1e-13 * max(diag.max(), 1.0):
      return chol
  hint = ("with prior=0 some item effects are not identified (items that never meet, or a "
          "covariate constant per item, collinear with the item effects); use prior > 0"
          if prior == 0 and item_effects else "standardise the covariates")
  raise ConvergenceError(f"fit_cl: the information matrix is singular or not finite: {hint}.")


def _cl_cho_solve(chol, g):
  from scipy.linalg import cho_solve

  return cho_solve(chol, g, check_finite=False)


@functools.partial(jax.jit, static_argnames=("n", "k", "with_theta", "derivatives"))
def _cl_derivatives(theta, gamma, idx, x, lengths, counts, *, n, k, with_theta,
                    derivatives=True):
  """Log-likelihood, gradient and Fisher information of the conditional logit.

  Arrays are in blocks of B events: idx int[nb, B, A] (item per slot, −1
  padding), x float64[nb, B, A, r], lengths int[nb, B], counts float64[nb, B].
  Returns (ll, g_θ[n], g_γ[r], I_θθ[n, n], I_θγ[n, r], I_γγ[r, r]); the θ
  parts are empty when with_theta is False; only (ll,) when derivatives is
  False (the line search).
  """
  nb, b, a = idx.shape
  r = x.shape[-1]
  nt = n if with_theta else 0
  slots = jnp.arange(a)
  later = slots[None, None, :] >= jnp.arange(k)[None, :, None]          # [1, k, A]

  def block(carry, blk):
    ll, g_t, g_b, f_tt, f_tb, f_bb = carry
    idx_b, x_b, len_b, c_b = blk
    valid = idx_b >= 0
    ii = jnp.maximum(idx_b, 0)
    s = x_b @ gamma
    if with_theta:
      s = s + theta[ii]
    s = jnp.where(valid, s, -jnp.inf)
    stage = jnp.arange(k)[None, :] < len_b[:, None]                      # [B, k]
    logz = jnp.where(stage, jax.lax.cumlogsumexp(s, axis=1, reverse=True)[:, :k], 0.0)
    ll = ll + jnp.sum(c_b[:, None] * jnp.where(stage, s[:, :k] - logz, 0.0))
    if not derivatives:
      return (ll, g_t, g_b, f_tt, f_tb, f_bb), None
    keep = stage[:, :, None] & later & valid[:, None, :]
    # p_tj over the slots still in the race at stage j: [B, k, A].
    prob = jnp.exp(jnp.where(keep, s[:, None, :] - logz[:, :, None], -jnp.inf))
    cprob = c_b[:, None, None] * prob
    expected = jnp.sum(cprob, axis=1)                                    # Σ_j c p_tj
    picked = jnp.where(slots[None, :] < len_b[:, None], c_b[:, None], 0.0)
    gs = picked - expected                                               # ∂ll/∂s [B, A]
    u = jnp.einsum("bja,bar->bjr", prob, x_b)                            # E_p[x] per stage
    x_flat = x_b.reshape(b * a, r)
    xe = expected.reshape(b * a, 1) * x_flat
    g_b = g_b + gs.reshape(-1) @ x_flat
    f_bb = f_bb + xe.T @ x_flat - jnp.einsum("b,bjr,bjq->rq", c_b, u, u)
    if with_theta:
      flat_i = ii.reshape(-1)
      g_t = g_t.at[flat_i].add(gs.reshape(-1))
      rows = expected[..., None] * x_b - jnp.einsum("bja,bjr->bar", cprob, u)
      f_tb = f_tb.at[flat_i].add(rows.reshape(b * a, r))
      outer = jnp.einsum("bja,bjc->bac", cprob, prob)                    # Σ_j c p pᵀ [B, A, A]
      pair = (ii[:, :, None] * n + ii[:, None, :]).reshape(-1)
      f_flat = f_tt.reshape(-1).at[pair].add(-outer.reshape(-1))
      f_flat = f_flat.at[flat_i * (n + 1)].add(expected.reshape(-1))
      f_tt = f_flat.reshape(n, n)
    return (ll, g_t, g_b, f_tt, f_tb, f_bb), None

  f64 = x.dtype
  init = (jnp.zeros((), f64), jnp.zeros(nt, f64), jnp.zeros(r, f64), jnp.zeros((nt, nt), f64),
          jnp.zeros((nt, r), f64), jnp.zeros((r, r), f64))
  if not derivatives:
    init = (init[0],) + tuple(jnp.zeros((0,), f64) for _ in range(5))
  out, _ = jax.lax.scan(block, init, (idx, x, lengths, counts))
  return out[:1] if not derivatives else out
