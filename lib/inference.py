"""Inference on a static Plackett-Luce fit: constraints, quasi-variances, worths, tests.

The functions take a fit by its attributes (`log_strengths`, `covariance`,
`log_likelihood`, `n_obs`, and `log_tie` where the fit has tie parameters),
so they serve `luce.fit_pl`'s `PLFit` and any fit that reports the same
fields. Everything is float64 numpy.

The covariance a fit reports is that of the centred log-strengths (the
sum-to-zero constraint). Every contrast cᵀθ (Σ c = 0) has the same variance
under any identifying constraint, so the covariance under another constraint
follows from it: with D = I − 1 wᵀ (w the weights of the constraint wᵀθ = 0),
Dθ is the constrained parameter and its covariance is D V Dᵀ.
"""

from __future__ import annotations

import dataclasses
import numpy as np

from luce import _checks
from luce.errors import InputError, ShapeError


# ---------------------------------------------------------------------------
# Connectivity of the comparison network.


@dataclasses.dataclass(frozen=True)
class Connectivity:
  """Result of `check_connected`.

  The win graph has an edge i → j when item i was chosen while item j was
  still available (i beat j). The maximum-likelihood estimate exists iff
  this graph is strongly connected (Hunter 2004); the Fisher information is
  non-singular (every contrast has a finite standard error) iff it is weakly
  connected.

  Attributes:
    connected: whether the win graph is strongly connected (the MLE exists).
    labels: int[n] strongly connected component of each item, 0..K−1.
    components: K int arrays, the items of each component, largest first
      (the component of `labels[i]` is `components[labels[i]]`).
    weak_labels: int[n] weakly connected component of each item (items that
      never meet have different labels).
    never_won: items that never beat another item.
    never_lost: items never beaten by another item.
    unbeaten: components that no item outside them ever beat; without a
      prior their log-strengths grow to +∞ (K > 1 only).
    unbeating: components that never beat an item outside them; their
      log-strengths fall to −∞ (K > 1 only).
  """
  connected: bool
  labels: np.ndarray
  components: tuple[np.ndarray, ...]
  weak_labels: np.ndarray
  never_won: np.ndarray
  never_lost: np.ndarray
  unbeaten: tuple[int, ...]
  unbeating: tuple[int, ...]

  @property
  def n_components(self) -> int:
    return len(self.components)

  @property
  def weakly_connected(self) -> bool:
    return int(self.weak_labels.max(initial=0)) == 0

  def describe(self, names=None, limit: int = 5) -> str:
    """One sentence naming the components and items that break the MLE."""
    def items(ids):
      ids = [int(i) for i in ids]
      shown = [str(names[i]) if names is not None else str(i) for i in ids[:limit]]
      more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
      return "[" + ", ".join(shown) + more + "]"
    if self.connected:
      return "the win graph is strongly connected"
    parts = [f"the win graph splits into {self.n_components} strongly connected components"]
    if not self.weakly_connected:
      parts.append(f"{int(self.weak_labels.max()) + 1} groups of items never meet")
    if self.unbeaten:
      parts.append("never beaten from outside: " + "; ".join(
          f"component {c} {items(self.components[c])}" for c in self.unbeaten[:limit]))
    if self.unbeating:
      parts.append("never beat an item outside: " + "; ".join(
          f"component {c} {items(self.components[c])}" for c in self.unbeating[:limit]))
    if self.never_won.size:
      parts.append(f"items that never beat another: {items(self.never_won)}")
    if self.never_lost.size:
      parts.append(f"items never beaten: {items(self.never_lost)}")
    return "; ".join(parts)


def win_matrix(rankings, n_items: int, where=None, counts=None) -> np.ndarray:
  """float64[n, n]: wins[i, j] = Σ counts of the stages where item i was
  chosen while item j was still available (j ≠ i).

  Args:
    rankings: int[m, k] item ids best first, −1 padding.
    n_items: n.
    where: bool[m, n] or None: the items available in each event (all when
      None).
    counts: float[m] or None: weight of each row (1 when None).
  """
  r, avail, c, n = _check_lists(rankings, n_items, where, counts)
  m, k = r.shape
  valid = r >= 0
  row, slot = np.nonzero(valid)
  picks = np.zeros((m, n))
  picks[row, r[row, slot]] = c[row]
  if avail is None:
    wins = np.repeat(picks.sum(axis=0)[:, None], n, axis=1)
  else:
    wins = picks.T @ avail.astype(np.float64)
  # Less the pairs where j had been chosen before i in that row.
  pair = valid[:, :, None] & valid[:, None, :] & np.triu(np.ones((k, k), bool), 1)
  row, first, second = np.nonzero(pair)
  np.subtract.at(wins, (r[row, second], r[row, first]), c[row])
  np.fill_diagonal(wins, 0.0)
  return np.maximum(wins, 0.0)


def check_connected(rankings, n_items: int, where=None) -> Connectivity:
  """Strongly connected components of the win graph of top-k lists.

  Item i beats item j whenever i is chosen while j is still available (for
  a top-k list, every unlisted available item is beaten by every listed one).
  The Plackett-Luce MLE exists iff every item can reach every other through
  a chain of wins, i.e. the graph is strongly connected (Hunter 2004); when
  it is not, the components that are never beaten from outside go to +∞ and
  those that never beat an outsider to −∞.

  Args:
    rankings: int[m, k] item ids best first, −1 padding the end of shorter
      lists.
    n_items: number of items n.
    where: bool[m, n] or None: availability per event (every item when None).

  Returns:
    Connectivity with the components, the items that never won or never
    lost, and the components that break the MLE.
  """
  from scipy.sparse.csgraph import connected_components
  wins = win_matrix(rankings, n_items, where)
  n = wins.shape[0]
  edges = wins > 0
  count, labels = connected_components(edges, directed=True, connection="strong")
  _, weak = connected_components(edges, directed=True, connection="weak")
  # Relabel: largest component first, ties by smallest item id.
  sizes = np.bincount(labels, minlength=count)
  first = np.full(count, n)
  np.minimum.at(first, labels, np.arange(n))
  order = np.lexsort((first, -sizes))
  relabel = np.empty(count, np.int64)
  relabel[order] = np.arange(count)
  labels = relabel[labels]
  components = tuple(np.flatnonzero(labels == c) for c in range(count))
  unbeaten, unbeating = (), ()
  if count > 1:
    # between[a, b]: some item of component a beat some item of component b.
    onehot = np.zeros((n, count))
    onehot[np.arange(n), labels] = 1.0
    between = (onehot.T @ edges.astype(np.float64) @ onehot) > 0
    np.fill_diagonal(between, False)
    unbeaten = tuple(int(c) for c in np.flatnonzero(~between.any(axis=0)))
    unbeating = tuple(int(c) for c in np.flatnonzero(~between.any(axis=1)))
  _, weak = np.unique(weak, return_inverse=True)
  return Connectivity(
      connected=count == 1,
      labels=labels,
      components=components,
      weak_labels=weak.reshape(-1),
      never_won=np.flatnonzero(~edges.any(axis=1)),
      never_lost=np.flatnonzero(~edges.any(axis=0)),
      unbeaten=unbeaten,
      unbeating=unbeating)


def _check_lists(rankings, n_items, where, counts):
  n = int(n_items)
  if n < 1:
    raise InputError(f"n_items must be ≥ 1, got {n_items}.")
  r = np.asarray(rankings)
  if r.ndim != 2:
    raise ShapeError(f"rankings must be int[m, k], got shape {r.shape}.")
  r = np.asarray(_checks.int_array(r, "rankings"))
  m = r.shape[0]
  _checks.check_item_lists(r, n, "rankings")
  avail = None
  if where is not None:
    avail = np.asarray(where)
    if avail.dtype != np.bool_ or avail.shape != (m, n):
      raise ShapeError(f"where must be bool[m={m}, n={n}], got {avail.dtype}{list(avail.shape)}.")
  c = np.ones(m) if counts is None else np.asarray(counts, np.float64)
  if c.shape != (m,):
    raise ShapeError(f"counts must be float[m={m}], got shape {c.shape}.")
  return r, avail, c, n


# ---------------------------------------------------------------------------
# Covariance under a constraint, quasi-variances, item parameters.


def _constraint(n: int, ref) -> np.ndarray:
  """float64[n] weights w of the identifying constraint wᵀθ = 0."""
  if ref is None:
    return np.full(n, 1.0 / n)
  ids = np.atleast_1d(np.asarray(ref))
  if ids.ndim != 1 or ids.size == 0 or not np.issubdtype(ids.dtype, np.integer):
    raise InputError(f"ref must be None (sum to zero), an item id or a list of item ids, got {ref!r}.")
  bad = ids[(ids < 0) | (ids >= n)]
  if bad.size:
    raise InputError(f"ref names item {int(bad[0])}, outside 0..{n - 1}.")
  if np.unique(ids).size != ids.size:
    raise InputError(f"ref lists an item twice: {ids.tolist()}.")
  w = np.zeros(n)
  w[ids] = 1.0 / ids.size
  return w


def vcov(fit, ref=None) -> np.ndarray:
  """float64[n, n] covariance of the log-strengths under a constraint.

  Args:
    fit: a fit with `covariance` (of the centred log-strengths), e.g. a PLFit.
    ref: None for sum-to-zero (the fit's own covariance); an item id to fix
      that item at 0 (its row and column are then 0, as in R's
      vcov.PlackettLuce(ref=i)); a list of ids to make their mean 0.

  Returns:
    The covariance D V Dᵀ of Dθ, D = I − 1 wᵀ.
  """
  v = np.asarray(fit.covariance, np.float64)
  n = v.shape[0]
  d = np.eye(n) - np.outer(np.ones(n), _constraint(n, ref))
  out = d @ v @ d.T
  return 0.5 * (out + out.T)


def log_strengths(fit, ref=None) -> np.ndarray:
  """float64[n] log-strengths θ under the constraint of `ref` (see `vcov`)."""
  theta = np.asarray(fit.log_strengths, np.float64)
  return theta - _constraint(theta.shape[0], ref) @ theta


@dataclasses.dataclass(frozen=True)
class QuasiVariances:
  """Result of `quasi_variances`.

  Attributes:
    quasi_var: float64[n] quasi-variances q (one may be negative).
    quasi_se: float64[n] √q (NaN where q < 0).
    relative_errors: float64[n, n] sqrt((q_i + q_j) / var(θ_i − θ_j)) − 1 for
      every pair (0 on the diagonal), qvcalc's `relerrs`.
    iterations: Gauss-Newton iterations taken.
  """
  quasi_var: np.ndarray
  quasi_se: np.ndarray
  relative_errors: np.ndarray
  iterations: int

  @property
  def worst_relative_errors(self) -> tuple[float, float]:
    off = self.relative_errors[~np.eye(self.relative_errors.shape[0], dtype=bool)]
    return float(off.min()), float(off.max())


def quasi_variances(fit_or_cov, tol: float = 1e-12, max_iter: int = 200) -> QuasiVariances:
  r"""Quasi-variances of item effects (Firth 2003; Firth and de Menezes 2004).

  Quasi-variances q_1..q_n make q_i + q_j approximate the variance of every
  simple contrast, v_ij = var(θ_i − θ_j), whatever constraint identifies θ.
  As R's qvcalc, they minimise the squared relative error on the log scale

    Σ_{i<j} (log(q_i + q_j) − log v_ij)²,

  here by Gauss-Newton with a Levenberg damping, in O(n²) per iteration.
  Exact for n ≤ 3 (then q solves q_i + q_j = v_ij).

  Args:
    fit_or_cov: a fit with `covariance`, or a float[n, n] covariance of the
      item effects under any constraint.
    tol: stop when the relative decrease of the criterion is below tol.
    max_iter: most iterations.

  Returns:
    QuasiVariances.
  """
  cov = np.asarray(getattr(fit_or_cov, "covariance", fit_or_cov), np.float64)
  if cov.ndim != 2 or cov.shape[0] != cov.shape[1]:
    raise ShapeError(f"the covariance must be float[n, n], got shape {list(cov.shape)}.")
  n = cov.shape[0]
  if n < 3:
    raise InputError(f"quasi-variances need at least 3 items, got {n}.")
  if not np.all(np.isfinite(cov)):
    raise InputError("the covariance has non-finite entries (an item effect the data do not "
                     "identify); quasi-variances need every contrast's variance.")
  d = np.diag(cov)
  v = d[:, None] + d[None, :] - 2 * cov
  off = ~np.eye(n, dtype=bool)
  if np.any(v[off] <= 0):
    i, j = np.argwhere((v <= 0) & off)[0]
    raise InputError(f"var(θ_{i} − θ_{j}) = {v[i, j]:.3g} ≤ 0: quasi-variances need every "
                     f"simple contrast to have positive variance.")
  logv = np.where(off, np.log(np.where(off, v, 1.0)), 0.0)
  # Start from the least-squares fit of q_i + q_j ≈ v_ij itself (closed form:
  # with s_i = Σ_j v_ij, q = (s − Σs / (2(n−1))) / (n−2)).
  s = np.where(off, v, 0.0).sum(axis=1)
  q = (s - s.sum() / (2 * (n - 1))) / (n - 2)
  if np.any(q[:, None] + q[None, :] <= 0):
    q = np.full(n, np.median(v[off]) / 2)

  def criterion(q):
    t = q[:, None] + q[None, :]
    if np.any(t[off] <= 0):
      return np.inf, None, None
    res = np.where(off, np.log(np.where(off, t, 1.0)) - logv, 0.0)
    return 0.25 * float(np.sum(res * res)), res, t    # each pair counted twice

  obj, res, t = criterion(q)
  lam, it = 1e-3, 0
  for it in range(1, max_iter + 1):  # noqa: B007 (reported)
    jw = np.where(off, 1.0 / t, 0.0)                 # ∂res_ij/∂q_i = ∂res_ij/∂q_j
    grad = np.sum(jw * res, axis=1)                  # Jᵀr over pairs i<j
    jtj = np.diag(np.sum(jw * jw, axis=1)) + jw * jw
    while True:
      step = np.linalg.solve(jtj + lam * np.diag(np.diag(jtj)), -grad)
      obj_c, res_c, t_c = criterion(q + step)
      if obj_c <= obj:
        break
      lam *= 10.0
      if lam > 1e12:
        break
    if obj_c > obj:
      break
    done = obj - obj_c <= tol * max(obj, 1e-300) or obj_c == 0.0
    q, obj, res, t = q + step, obj_c, res_c, t_c
    lam = max(lam / 10.0, 1e-12)
    if done:
      break
  t = q[:, None] + q[None, :]
  ratio = np.where(off, t, 1.0) / np.where(off, v, 1.0)
  rel = np.where(off, np.sqrt(ratio) - 1.0, 0.0)
  with np.errstate(invalid="ignore"):
    se = np.sqrt(q)
  return QuasiVariances(quasi_var=q, quasi_se=se, relative_errors=rel, iterations=it)


@dataclasses.dataclass(frozen=True)
class ItemParameters:
  """Result of `itempar`.

  Attributes:
    estimates: float64[n] worths α (summing to 1) or log-strengths.
    stderr: float64[n] delta-method standard errors (0 for a reference item).
    covariance: float64[n, n] their covariance.
    log: whether the estimates are log-strengths.
    ref: the constraint (None: worths sum to 1 / log-strengths sum to 0).
  """
  estimates: np.ndarray
  stderr: np.ndarray
  covariance: np.ndarray
  log: bool
  ref: object


def itempar(fit, log: bool = False, ref=None) -> ItemParameters:
  r"""Item parameters on the worth or log scale, as psychotools' itempar.

  On the worth scale α_i = exp θ_i / Σ_j exp θ_j (the probability that item
  i is chosen first from all items), with covariance J V Jᵀ by the delta
  method, J = diag(α) − α αᵀ (J 1 = 0, so any constraint on θ gives the same
  result). On the log scale: θ under the constraint of `ref` (see `vcov`).

  Args:
    fit: a fit with `log_strengths` and `covariance`.
    log: False for worths, True for log-strengths.
    ref: log scale only: None (sum to zero), an item id fixed at 0, or ids
      whose mean is 0.
  """
  theta = np.asarray(fit.log_strengths, np.float64)
  if not log:
    if ref is not None:
      raise InputError("ref applies to log=True only: worths are normalised to sum to 1.")
    a = np.exp(theta - theta.max())
    a /= a.sum()
    jac = np.diag(a) - np.outer(a, a)
    cov = jac @ np.asarray(fit.covariance, np.float64) @ jac.T
    cov = 0.5 * (cov + cov.T)
    est = a
  else:
    est, cov = log_strengths(fit, ref), vcov(fit, ref)
  with np.errstate(invalid="ignore"):
    se = np.sqrt(np.clip(np.diag(cov), 0.0, None))
  se = np.where(np.isnan(np.diag(cov)), np.nan, se)
  return ItemParameters(estimates=est, stderr=se, covariance=cov, log=bool(log), ref=ref)


# ---------------------------------------------------------------------------
# Information criteria and the likelihood-ratio test.


def n_parameters(fit) -> int:
  """Free parameters: the fit's own count where it reports one (`n_params`:
  a mixture's (G − 1) + G(n − 1)), else n − 1 log-strengths (one is fixed by
  the constraint) plus any others the fit reports (`log_tie`: one per tie
  order)."""
  own = getattr(fit, "n_params", None)
  if own is not None:
    return int(own)
  n = int(np.asarray(fit.log_strengths).shape[-1])
  extra = getattr(fit, "log_tie", None)
  return n - 1 + (0 if extra is None else int(np.asarray(extra).size))


def aic(fit) -> float:
  """Akaike's criterion −2 log L + 2 p, p = `n_parameters(fit)`."""
  return -2.0 * float(fit.log_likelihood) + 2.0 * n_parameters(fit)


def bic(fit) -> float:
  """Schwarz's criterion −2 log L + p log N, N = the fit's `n_obs` (the
  number of rankings, counted with their weights, as R's nobs)."""
  n_obs = float(fit.n_obs)
  if not n_obs > 0:
    raise InputError(f"bic needs the number of observations; the fit reports n_obs = {n_obs}.")
  return -2.0 * float(fit.log_likelihood) + n_parameters(fit) * np.log(n_obs)


@dataclasses.dataclass(frozen=True)
class LRTest:
  """Result of `likelihood_ratio_test`: statistic 2 (log L₁ − log L₀), its
  degrees of freedom p₁ − p₀ and the chi-square upper-tail p-value."""
  statistic: float
  df: int
  p_value: float


def likelihood_ratio_test(null, alternative, tol: float = 1e-6) -> LRTest:
  """Likelihood-ratio test of a fit against a larger one that nests it.

  For example a Plackett-Luce fit (null) against the tie model on the same
  rankings (alternative), or a fit with some items' strengths tied together
  against the free fit. The fits should be plain MLEs (prior 0, no
  pseudo-rankings): a penalised fit's log-likelihood is not maximal and the
  chi-square reference does not hold exactly.

  Args:
    null: the smaller fit (fewer free parameters).
    alternative: the larger fit.
    tol: how far below the null's log-likelihood the alternative's may be
      (rounding) before the pair is declared misordered.

  Returns:
    LRTest(statistic, df, p_value).
  """
  p0, p1 = n_parameters(null), n_parameters(alternative)
  n0, n1 = getattr(null, "n_obs", None), getattr(alternative, "n_obs", None)
  if n0 is not None and n1 is not None and not np.isclose(float(n0), float(n1)):
    raise InputError(f"likelihood_ratio_test: the fits are of different data (n_obs {n0} and "
                     f"{n1}); nested fits share their rankings.")
  if p1 <= p0:
    raise InputError(
        f"likelihood_ratio_test: the alternative has {p1} free parameters and the null {p0}; "
        f"pass the smaller (nested) fit first and the larger second, and not two fits of the "
        f"same size (those are not nested: compare them with aic/bic).")
  ll0, ll1 = float(null.log_likelihood), float(alternative.log_likelihood)
  stat = 2.0 * (ll1 - ll0)
  if stat < -2.0 * tol * max(1.0, abs(ll0)):
    raise InputError(
        f"likelihood_ratio_test: the larger fit's log-likelihood {ll1:.6g} is below the smaller "
        f"one's {ll0:.6g}, impossible for nested maximum-likelihood fits: they are not nested, "
        f"misordered, or one did not reach its maximum (a prior or pseudo-rankings).")
  stat = max(stat, 0.0)
  from scipy import stats  # here, not at import: scipy.stats takes ~0.6 s to import
  return LRTest(statistic=stat, df=p1 - p0, p_value=float(stats.chi2.sf(stat, p1 - p0)))


def summary_table(fit, ref=None, quasi: bool = True) -> dict[str, np.ndarray]:
  """PlackettLuce-style coefficient table: estimate, SE, z, p, quasi-SE.

  Args:
    fit: a fit with `log_strengths` and `covariance`.
    ref: the constraint of the estimates (see `vcov`).
    quasi: add the quasi standard errors (NaN when they cannot be computed).

  Returns:
    dict of float64[n] columns `estimate`, `se`, `z`, `p` (two-sided normal,
    H₀: the estimate is 0 under the constraint) and `quasi_se`.
  """
  est = log_strengths(fit, ref)
  se = np.sqrt(np.clip(np.diag(vcov(fit, ref)), 0.0, None))
  with np.errstate(divide="ignore", invalid="ignore"):
    z = np.where(se > 0, est / se, np.nan)
  from scipy import stats
  p = 2.0 * stats.norm.sf(np.abs(z))
  qse = np.full(est.shape, np.nan)
  if quasi and est.shape[0] >= 3:
    try:
      qse = quasi_variances(fit).quasi_se
    except InputError:
      pass
  return {"estimate": est, "se": se, "z": z, "p": p, "quasi_se": qse}


__all__ = ["Connectivity", "ItemParameters", "LRTest", "QuasiVariances", "aic", "bic",
           "check_connected", "itempar", "likelihood_ratio_test", "log_strengths",
           "n_parameters", "quasi_variances", "summary_table", "vcov", "win_matrix"]
