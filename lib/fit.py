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

# The Newton step forms the n × n Fisher information in float64.
MAX_ITEMS = 8192


@dataclasses.dataclass(frozen=True)
class PLFit:
  """Result of `fit_pl`.

  Attributes:
    log_strengths: float64[n] log-strengths θ, centred (mean 0); item i beats
      item j in a pairwise choice with probability σ(θ_i − θ_j).
    stderr: float64[n] standard errors of the centred θ from the Fisher
      information (with the prior's precision added).
    covariance: float64[n, n] covariance of the centred θ.
    log_likelihood: log-likelihood of the data at θ (without the prior), nats.
    n_iter: Newton iterations taken.
    prior: the prior precision used.
  """
  log_strengths: np.ndarray
  stderr: np.ndarray
  covariance: np.ndarray
  log_likelihood: float
  n_iter: int
  prior: float


def fit_pl(rankings, n_items: int, *, where=None, counts=None, prior: float = 0.01,
           tol: float = 1e-9, max_iter: int = 100) -> PLFit:
  r"""Maximum-likelihood Plackett-Luce strengths from top-k lists.

  Each row of `rankings` is a list best first: its first item was chosen from
  every available item, the second from those left, and so on. A full ranking
  lists every available item; a top-k list stops early, and the items it never
  lists were available but not chosen. The objective is

    Σ_r c_r log P(ranking_r | θ) − prior/2 · ‖θ‖²,

  maximised by Newton's method with a backtracking line search, in float64.
  The Fisher information is assembled in O(m·k² + n²) from sums over stages
  (plus an m·n² product when `where` is given) instead of one n × n outer
  product per stage. The prior is a Gaussian with precision `prior` on each θ_i:
  it keeps items that never won, never lost or never appeared finite (at 0
  for the latter) and has a negligible effect on well-observed items.

  Args:
    rankings: int[m, k] item ids best first, −1 padding the end of shorter
      lists.
    n_items: number of items n; ids run from 0 to n − 1.
    where: bool[m, n] or None. Availability per ranking (choice sets): False
      marks items not in that event. For complete rankings of choice sets
      (each row lists all its items), pass `where` = the items listed, e.g.
      `luce.listed_items(rankings, n_items)`.
    counts: float[m] or None, ≥ 0: how many times each row was observed.
    prior: precision of the Gaussian prior, ≥ 0. With 0 the plain MLE is
      returned if it exists (every item must both win and lose somewhere in a
      connected comparison graph); otherwise ConvergenceError says so.
    tol: stop when the Newton decrement is below tol (nats).
    max_iter: most Newton iterations.

  Returns:
    PLFit with centred log-strengths, standard errors and log-likelihood.
  """
  r, avail, c, n = _check_rankings(rankings, n_items, where, counts, prior, "fit_pl")
  m, k = r.shape

  # Drop rows that carry no information up front (all padding, zero count).
  keep = (r[:, 0] >= 0) & (c > 0)
  r, c = r[keep], c[keep]
  avail = None if avail is None else avail[keep]
  n_avail = np.full(len(r), n) if avail is None else avail.sum(axis=1)
  # Rows that list every available item have no unpicked remainder; knowing it
  # structurally keeps the remainder exactly 0 instead of a rounding residue.
  complete = (r >= 0).sum(axis=1) == n_avail

  if prior == 0:
    _check_mle_exists(r, avail, n)

  with jax.enable_x64(True):
    data = (jnp.asarray(r), None if avail is None else jnp.asarray(avail),
            jnp.asarray(c), jnp.asarray(complete))
    theta = jnp.zeros(n, jnp.float64)
    ll, grad, hess = _derivatives(theta, *data, n=n)
    obj = float(ll) - 0.5 * prior * float(theta @ theta)
    decrement = np.inf
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 (the count is reported after the loop)
      g = np.asarray(grad) - prior * np.asarray(theta)
      h = np.asarray(hess) + prior * np.eye(n)
      step = _solve(h, g)
      decrement = float(g @ step)
      if decrement / 2 < tol:
        break
      # Backtracking on the penalised log-likelihood (concave: a full step
      # almost always succeeds near the optimum).
      t = 1.0
      while True:
        cand = theta + t * step
        ll_c, grad_c, hess_c = _derivatives(cand, *data, n=n)
        obj_c = float(ll_c) - 0.5 * prior * float(cand @ cand)
        if obj_c >= obj + 0.25 * t * decrement or t < 1e-8:
          break
        t *= 0.5
      theta, ll, grad, hess, obj = cand, ll_c, grad_c, hess_c, obj_c
      if float(jnp.max(jnp.abs(theta))) > 60.0:
        break
    else:
      it = max_iter
    theta = np.asarray(theta)
    hess = np.asarray(hess)
    ll = float(ll)

  spread = theta.max() - theta.min() if n > 1 else 0.0
  if decrement / 2 >= tol or spread > 100.0:
    hint = ("some items may always win or always lose (or the comparison graph "
            "is disconnected); use prior > 0" if prior == 0 else
            "increase max_iter or the prior")
    raise ConvergenceError(
        f"fit_pl did not converge in {it} Newton iterations (Newton decrement "
        f"{decrement / 2:.3g} > tol {tol:g}, log-strength spread {spread:.3g}): {hint}.")

  centre = np.eye(n) - 1.0 / n
  cov = centre @ _inverse(hess + prior * np.eye(n)) @ centre
  return PLFit(
      log_strengths=theta - theta.mean(),
      stderr=np.sqrt(np.clip(np.diag(cov), 0.0, None)),
      covariance=cov,
      log_likelihood=ll,
      n_iter=it,
      prior=float(prior))


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
  avail = None
  if where is not None:
    avail = np.asarray(where)
    if avail.dtype != np.bool_ or avail.shape != (m, n):
      raise ShapeError(f"where must be bool[m={m}, n={n}], got {avail.dtype}{list(avail.shape)}.")
    rows, cols = np.nonzero((r >= 0) & ~np.take_along_axis(avail, np.maximum(r, 0), axis=1))
    if rows.size:
      raise InputError(
          f"rankings[{rows[0]}, {cols[0]}] = {r[rows[0], cols[0]]} is marked "
          f"unavailable by where[{rows[0]}]; a listed item must be available.")
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
  """Raise unless the MLE exists: Hunter's (2004) condition.

  The MLE exists iff the graph with an edge j → i whenever i was chosen while
  j was still in the race is strongly connected.
  """
  from scipy.sparse.csgraph import connected_components

  m, k = r.shape
  valid = r >= 0
  row, slot = np.nonzero(valid)
  picks = np.zeros((m, n))
  picks[row, r[row, slot]] = 1.0
  # beats[i, j]: i chosen while j available (every item, without `where`).
  if avail is None:
    beats = np.repeat(picks.sum(axis=0)[:, None], n, axis=1)
  else:
    beats = picks.T @ avail.astype(float)
  # ... less the times j had already been picked before i in that row.
  pair = valid[:, :, None] & valid[:, None, :] & np.triu(np.ones((k, k), bool), 1)
  row, first, second = np.nonzero(pair)
  np.subtract.at(beats, (r[row, second], r[row, first]), 1.0)
  np.fill_diagonal(beats, 0.0)
  edges = beats > 0.5
  count, _ = connected_components(edges.T, directed=True, connection="strong")
  if count > 1:
    never_won = np.flatnonzero(~edges.any(axis=1))[:5].tolist()
    never_lost = np.flatnonzero(~edges.any(axis=0))[:5].tolist()
    raise ConvergenceError(
        f"the maximum-likelihood estimate does not exist with prior=0: the "
        f"comparison graph splits into {count} parts that do not beat each "
        f"other both ways (items that never beat another: {never_won}, items "
        f"never beaten: {never_lost}, first five of each); use prior > 0.")


def _solve(h, g):
  # The log-likelihood is flat along the all-ones direction (θ + const gives
  # the same model); adding 11ᵀ/n fixes that direction without changing the
  # step in the others, since g is orthogonal to 1. One BLAS thread: BLAS
  # threads spinning against XLA's for the same cores made a 200 × 200 solve
  # up to 100× slower.
  n = h.shape[0]
  with threadpool_limits(1):
    return np.linalg.solve(h + np.full((n, n), 1.0 / n), g)


def _inverse(h):
  n = h.shape[0]
  with threadpool_limits(1):
    return np.linalg.inv(h + np.full((n, n), 1.0 / n))


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
