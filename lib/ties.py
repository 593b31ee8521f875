r"""Plackett-Luce with ties: the Davidson-Luce model of R's PlackettLuce.

A ranking with ties is a sequence of choice sets (blocks of tied items), best
first. At each stage the block S of size d is chosen from the items A still
available with probability

  P(S | A) = δ_d (∏_{i∈S} α_i)^{1/d} / Z(A),
  Z(A)     = Σ_{d'=1}^{min(D, |A|)} δ_{d'} Σ_{T⊆A, |T|=d'} (∏_{i∈T} α_i)^{1/d'},

with worths α = e^θ, δ_1 = 1 and one tie parameter δ_d per tie order
d = 2..D (Firth, Kosmidis and Turner 2019; Turner et al. 2020). D = 1 is
Plackett-Luce. The inner sum of Z is the elementary symmetric polynomial
e_d of the values α_i^{1/d} over A; it is computed from power sums
p_t = Σ_{i∈A} α_i^{t/d} (t ≤ d) by Newton's identities, never by
enumerating subsets, so the cost per stage is O(D²) after O(n) power sums.

Arrays: `rankings` int[..., k] item ids best first, −1 padding the end, and
`tied` bool[..., k], True where an item is tied with the one before it (so a
block is one untied position followed by its tied ones). As in `fit_pl`, a
list that stops before every available item is a top-k list: the unlisted
items were available at every stage and never chosen; pass `where` (e.g.
`luce.listed_items(rankings, n)`) to rank only the listed items, as
PlackettLuce does with partial rankings.
"""

from __future__ import annotations

import dataclasses
import fractions
import functools

import numpy as np
from threadpoolctl import threadpool_limits
import jax
import jax.numpy as jnp
from jax import lax

from luce import _checks
from luce.errors import ConvergenceError, InputError, ShapeError

# The Newton step forms the dense (n + D − 1)² information in float64.
MAX_ITEMS = 8192
# Elements of one block's largest per-row arrays (rows are processed in blocks of B).
_BLOCK = 1 << 18


# ---- shared pieces -------------------------------------------------------------------------

def _exponents(max_tie_order: int) -> tuple[np.ndarray, dict]:
  """(float64[S] the distinct exponents t/d, 1 ≤ t ≤ d ≤ D, and (t, d) -> index)."""
  fr = sorted({fractions.Fraction(t, d) for d in range(1, max_tie_order + 1)
               for t in range(1, d + 1)})
  index = {(t, d): fr.index(fractions.Fraction(t, d)) for d in range(1, max_tie_order + 1)
           for t in range(1, d + 1)}
  return np.array([float(f) for f in fr]), index


def _esps(p: list, d: int) -> list:
  """e_0..e_d from the power sums p[0..d−1] = p_1..p_d (Newton's identities)."""
  e = [1.0]
  for j in range(1, d + 1):
    acc = 0.0
    for i in range(1, j + 1):
      acc = acc + e[j - i] * p[i - 1] if i % 2 else acc - e[j - i] * p[i - 1]
    e.append(acc / j)
  return e


def _stage_z(pa, log_tie, nrem, *, index, max_tie_order, derivatives=False):
  """Z of each stage from the power sums of its remaining items.

  pa: [..., S] power sums Σ_{i∈A} α_i^{c_s}; log_tie: list of D − 1 arrays
  broadcasting to pa[..., 0]; nrem: items in A. Returns Z, or with
  derivatives (Z, ∂Z/∂q list of Q arrays, ∂²Z/∂q² Q × Q nested list), q = (the
  S power sums, log δ_2..log δ_D). By Newton's identities
  ∂e_d/∂p_t = (−1)^{t−1} e_{d−t}/t, so ∂²e_d/∂p_t∂p_u = (−1)^{t+u} e_{d−t−u}/(t u).
  """
  n_exp = pa.shape[-1]
  nq = n_exp + max_tie_order - 1
  z = pa[..., index[(1, 1)]]
  zero = jnp.zeros_like(z)
  dz = [zero] * nq
  dzz = [[zero] * nq for _ in range(nq)]
  dz[index[(1, 1)]] = jnp.ones_like(z)
  for d in range(2, max_tie_order + 1):
    e = _esps([pa[..., index[(t, d)]] for t in range(1, d + 1)], d)
    on = (nrem >= d) & (e[d] > 0)
    coef = jnp.where(on, jnp.exp(log_tie[d - 2]), 0.0)
    term = coef * jnp.where(on, e[d], 0.0)
    z = z + term
    if not derivatives:
      continue
    lq = n_exp + d - 2
    dz[lq] = dz[lq] + term
    dzz[lq][lq] = dzz[lq][lq] + term
    for t in range(1, d + 1):
      it = index[(t, d)]
      first = coef * ((-1) ** (t - 1) / t) * e[d - t]
      dz[it] = dz[it] + first
      dzz[it][lq] = dzz[it][lq] + first
      dzz[lq][it] = dzz[lq][it] + first
      for t2 in range(1, d - t + 1):
        i2 = index[(t2, d)]
        dzz[it][i2] = dzz[it][i2] + coef * ((-1) ** (t + t2) / (t * t2)) * e[d - t - t2]
  if not derivatives:
    return z
  return z, dz, dzz


@jax.jit
def _blocks(valid, tied):
  """(start bool[..., k], block size at starts int[..., k] (0 elsewhere),
  size of each position's block int[..., k]) from the valid and tied flags."""
  k = valid.shape[-1]
  ax = valid.ndim - 1
  pos = jnp.broadcast_to(jnp.arange(k), valid.shape)
  start = valid & ~(tied & (pos > 0))
  cand = jnp.where(start, pos, k)
  after = jnp.concatenate([cand[..., 1:], jnp.full(valid.shape[:-1] + (1,), k)], axis=-1)
  after = lax.cummin(after, axis=ax, reverse=True)
  end = jnp.minimum(after, jnp.sum(valid, axis=-1, keepdims=True))
  size = jnp.where(start, end - pos, 0)
  first = lax.cummax(jnp.where(start, pos, 0), axis=ax)
  dpos = jnp.where(valid, jnp.take_along_axis(size, first, axis=-1), 1)
  return start, size, dpos


def _remaining_sums(t, u, valid, complete, expo):
  """(e^{c_s t_l} at listed positions [..., k, S], power sums of each stage's
  remaining items [..., k, S]). t: [..., k] shifted log-worths of the listed
  items; u: [..., S] power sums over every available item; complete:
  rows that list every available item (no unlisted remainder: exactly 0
  rather than a rounding residue)."""
  ex = jnp.where(valid[..., None], jnp.exp(t[..., None] * expo), 0.0)
  suffix = jnp.flip(jnp.cumsum(jnp.flip(ex, -2), axis=-2), -2)
  rest = jnp.where(complete[..., None], 0.0, jnp.maximum(u - suffix[..., 0, :], 0.0))
  return ex, rest[..., None, :] + suffix


def _log_denominators(t, u, log_tie, valid, start, nrem, complete, *, expo, index, max_tie_order):
  """Σ over the stages of log Z(A_j) (shifted worths).

  t: [..., k] log-worths of the listed items minus the shift (0 at pads);
  u: [..., S] power sums Σ_{i available} e^{c_s t_i} (c_s = expo[s]);
  log_tie: list of D − 1 arrays broadcasting to [..., k] (log δ_2..log δ_D);
  valid, start: bool[..., k]; nrem: int[..., k] items left at each position;
  complete: bool[...].
  """
  _, pa = _remaining_sums(t, u, valid, complete, expo)
  z = _stage_z(pa, log_tie, nrem, index=index, max_tie_order=max_tie_order)
  return jnp.sum(jnp.where(start, jnp.log(jnp.where(start, z, 1.0)), 0.0), axis=-1)


def _tie_errors(rankings: np.ndarray, tied: np.ndarray, max_tie_order: int | None,
                what: str) -> int:
  """Check the tie flags of concrete [m, k] arrays; return the largest tie order."""
  valid = rankings >= 0
  if tied.shape[-1] and tied[..., 0].any():
    idx = tuple(int(i) for i in np.argwhere(tied[..., 0])[0])
    raise InputError(f"tied[{', '.join(map(str, idx + (0,)))}] is True: the first item of a "
                     f"list cannot be tied with an item before it (there is none).")
  bad = tied & ~valid
  if bad.any():
    idx = ", ".join(str(int(i)) for i in np.argwhere(bad)[0])
    raise InputError(f"tied[{idx}] is True but rankings[{idx}] is -1 (padding); only listed "
                     f"items can be tied.")
  start, size, _ = (np.asarray(a) for a in _blocks(jnp.asarray(valid), jnp.asarray(tied)))
  top = int(size.max(initial=1))
  if max_tie_order is not None and top > max_tie_order:
    idx = np.argwhere(size > max_tie_order)[0]
    row, pos = tuple(int(i) for i in idx[:-1]), int(idx[-1])
    d = int(size[tuple(idx)])
    items = rankings[row][pos:pos + d].tolist()
    raise InputError(
        f"rankings[{', '.join(map(str, row))}] ties {d} items at positions {pos}..{pos + d - 1} "
        f"(items {items}), above the maximum tie order {max_tie_order} ({what}); raise it or "
        f"split the tie.")
  return top


# ---- the log-probability -------------------------------------------------------------------

def pl_tie_log_prob(log_strengths, rankings, tied, log_tie, where=None):
  r"""Log-probability of rankings with ties under the Davidson-Luce model.

    log P = Σ_blocks [ log δ_d + (1/d) Σ_{i∈S} θ_i − log Z(A) ]

  (see the module docstring for Z). Stages are the blocks of tied items; A is
  the set of available items not listed in an earlier block (the unlisted
  items of a top-k list stay in A throughout).

  Args:
    log_strengths: float[..., n] log-worths θ (float32, or float64 under
      `jax_enable_x64`, computed in that precision). −inf marks an
      unavailable item.
    rankings: int[..., k] item ids best first, −1 padding the end.
    tied: bool[..., k], True where the item is tied with the one before it;
      never at position 0 or on padding.
    log_tie: float[..., D − 1] log δ_2..log δ_D (D − 1 = 0: Plackett-Luce).
    where: bool[..., n] or None: False marks an item not available in that
      event (as `luce.pl_log_prob`).

  Returns:
    float[...] log-probabilities (0 for an all-padding list).

  Raises (on concrete arrays): ShapeError for shapes that do not fit;
  InputError for NaN or +inf log-strengths, bad item lists, `tied` on the
  first position or on padding, a tie of more than D items.

  Example:
    >>> import jax.numpy as jnp, luce
    >>> th = jnp.zeros(3)
    >>> lp = luce.pl_tie_log_prob(th, jnp.array([0, 1, 2]), jnp.array([False, True, False]),
    ...                           jnp.zeros(1))
    >>> round(float(jnp.exp(lp)), 6)  # δ_2 / (3 + 3 δ_2), then 1
    0.166667
  """
  s = _checks.float_array(log_strengths, "log_strengths")
  r = _checks.int_array(rankings, "rankings")
  tie = jnp.asarray(tied)
  if tie.dtype != jnp.bool_ or tie.shape != r.shape:
    raise ShapeError(f"tied must be bool with the shape of rankings {tuple(r.shape)}, got "
                     f"{tie.dtype}{tuple(tie.shape)}.")
  lt = jnp.asarray(log_tie)
  if lt.ndim < 1:
    raise ShapeError("log_tie must be float[..., D − 1] (log δ_2..log δ_D), got a scalar; "
                     "pass jnp.array([x]) for D = 2.")
  if not jnp.issubdtype(lt.dtype, jnp.floating):
    lt = lt.astype(jnp.float32)
  big_d = lt.shape[-1] + 1
  n, k = s.shape[-1], r.shape[-1]
  if k > n:
    raise ShapeError(f"rankings lists {k} items per event but log_strengths has only n = {n}.")
  shapes = [s.shape[:-1], r.shape[:-1], lt.shape[:-1]]
  if where is not None:
    w = jnp.asarray(where)
    if w.dtype != jnp.bool_ or w.ndim < 1 or w.shape[-1] != n:
      raise ShapeError(f"where must be bool[..., n={n}], got {w.dtype}{tuple(w.shape)}.")
    shapes.append(w.shape[:-1])
  try:
    batch = np.broadcast_shapes(*shapes)
  except ValueError:
    raise ShapeError(f"batch axes of log_strengths {tuple(s.shape)}, rankings "
                     f"{tuple(r.shape)}, log_tie {tuple(lt.shape)}"
                     + ("" if where is None else f", where {tuple(w.shape)}")
                     + " do not broadcast.") from None
  _checks.check_no_nan(s, "log_strengths")
  _checks.check_no_pos_inf(s, "log_strengths")
  _checks.check_item_lists(r, n, "rankings")
  if _checks.is_concrete(r, tie):
    _tie_errors(np.asarray(r), np.asarray(tie), big_d,
                f"log_tie has {big_d - 1} entries, for δ_2..δ_{big_d}")

  dtype = jnp.float64 if s.dtype == jnp.float64 else jnp.float32
  return _tie_log_prob(s.astype(dtype), r, tie, lt.astype(dtype), None if where is None else w,
                       batch=tuple(batch))


@functools.partial(jax.jit, static_argnames=("batch",))
def _tie_log_prob(s, r, tie, lt, w, *, batch):
  n, k, big_d = s.shape[-1], r.shape[-1], lt.shape[-1] + 1
  dtype = s.dtype
  s = jnp.broadcast_to(s.astype(dtype), batch + (n,))
  if w is not None:
    s = jnp.where(w, s, -jnp.inf)
  r = jnp.broadcast_to(r, batch + (k,))
  tie = jnp.broadcast_to(tie, batch + (k,))
  lt = jnp.broadcast_to(lt.astype(dtype), batch + (big_d - 1,))
  expo, index = _exponents(big_d)
  avail = s > -jnp.inf
  shift = lax.stop_gradient(jnp.max(jnp.where(avail, s, -jnp.inf), axis=-1, keepdims=True))
  shift = jnp.where(jnp.isfinite(shift), shift, 0.0)
  th = s - shift
  valid = r >= 0
  t = jnp.where(valid, jnp.take_along_axis(th, jnp.maximum(r, 0), axis=-1), 0.0)
  start, size, dpos = _blocks(valid, tie)
  u = jnp.sum(jnp.where(avail[..., None], jnp.exp(jnp.where(avail, th, 0.0)[..., None]
                                                  * jnp.asarray(expo, dtype)), 0.0), axis=-2)
  n_avail = jnp.sum(avail, axis=-1, keepdims=True)
  nrem = n_avail - jnp.arange(k)
  complete = jnp.sum(valid, axis=-1) == n_avail[..., 0]
  log_tie_k = [lt[..., d - 2:d - 1] for d in range(2, big_d + 1)]
  den = _log_denominators(t, u, log_tie_k, valid, start, nrem, complete,
                          expo=jnp.asarray(expo, dtype), index=index, max_tie_order=big_d)
  lt_pad = jnp.concatenate([jnp.zeros(batch + (1,), dtype), lt], axis=-1)
  num = (jnp.sum(jnp.where(valid, t / dpos, 0.0), axis=-1)
         + jnp.sum(jnp.where(start, jnp.take_along_axis(lt_pad, jnp.maximum(size - 1, 0), -1),
                             0.0), axis=-1))
  return num - den


# ---- the fit -------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PLTieFit:
  """Result of `fit_pl_tied`.

  Attributes:
    log_strengths: float64[n] log-worths θ, centred (mean 0).
    stderr: float64[n] standard errors of the centred θ.
    covariance: float64[n, n] covariance of the centred θ (sum-to-zero).
    log_likelihood: log-likelihood of the rankings (no prior, no
      pseudo-rankings), nats.
    n_iter: Newton iterations taken.
    prior: the prior on θ: a float precision or a normal prior object.
    log_tie: float64[D − 1] log δ_d for d = 2..D.
    log_tie_stderr: float64[D − 1] their standard errors.
    joint_covariance: float64[n + D − 1, n + D − 1] covariance of
      (centred θ, log δ).
    max_tie_order: D.
    npseudo: pseudo-rankings per item and direction (0: none).
    log_posterior: the maximised objective, nats.
    n_obs: number of informative rankings counted with their counts.
  """
  log_strengths: np.ndarray
  stderr: np.ndarray
  covariance: np.ndarray
  log_likelihood: float
  n_iter: int
  prior: object
  log_tie: np.ndarray
  log_tie_stderr: np.ndarray
  joint_covariance: np.ndarray
  max_tie_order: int
  npseudo: float = 0.0
  log_posterior: float = float("nan")
  n_obs: float = float("nan")


def _prior(prior, n):
  """(mean float64[n], ridge, precision float64[n, n] or None, record). A
  normal prior is any object with `mean_vector()` and `precision_matrix()`
  (luce.NormalPrior)."""
  if hasattr(prior, "precision_matrix") and hasattr(prior, "mean_vector"):
    mean, lam = np.asarray(prior.mean_vector(), np.float64), np.asarray(prior.precision_matrix())
    if mean.shape != (n,) or lam.shape != (n, n):
      raise ShapeError(f"the normal prior is over {mean.shape[0]} items but n_items = {n}.")
    return mean, 0.0, lam, prior
  if isinstance(prior, (bool, np.bool_)) or not isinstance(prior, (int, float, np.integer,
                                                                   np.floating)):
    raise InputError(f"prior must be a float precision ≥ 0 or a luce.NormalPrior, got "
                     f"{type(prior).__name__} {prior!r}.")
  p = float(prior)
  if not (np.isfinite(p) and p >= 0):
    raise InputError(f"prior must be a finite number ≥ 0, got {prior}.")
  return np.zeros(n), p, None, p


def _check_fit_inputs(rankings, n_items, tied, where, counts):
  n = int(n_items)
  if n < 1:
    raise InputError(f"n_items must be ≥ 1, got {n_items}.")
  if n > MAX_ITEMS:
    raise InputError(f"n_items = {n} is above fit_pl_tied's limit of {MAX_ITEMS}: the Newton "
                     f"step forms the dense information matrix.")
  r = np.asarray(rankings)
  if r.ndim != 2:
    raise ShapeError(f"rankings must be int[m, k], got shape {r.shape}.")
  r = np.asarray(_checks.int_array(r, "rankings")).astype(np.int64)
  m, k = r.shape
  if k > n:
    raise ShapeError(f"rankings lists {k} items per row but n_items = {n}.")
  _checks.check_item_lists(r, n, "rankings")
  tie = np.asarray(tied)
  if tie.dtype != np.bool_ or tie.shape != r.shape:
    raise ShapeError(f"tied must be bool[m={m}, k={k}] like rankings, got "
                     f"{tie.dtype}{list(tie.shape)}.")
  avail = _checks.where_mask(where, r, n)
  c = np.ones(m) if counts is None else np.asarray(counts, np.float64)
  if c.shape != (m,):
    raise ShapeError(f"counts must be float[m={m}], got shape {c.shape}.")
  if not np.all(np.isfinite(c) & (c >= 0)):
    bad = int(np.flatnonzero(~(np.isfinite(c) & (c >= 0)))[0])
    raise InputError(f"counts[{bad}] = {c[bad]}; counts must be finite and ≥ 0.")
  return r, tie, avail, c, n


def fit_pl_tied(rankings, n_items: int, *, tied, max_tie_order: int | None = None, where=None,
                counts=None, prior=None, npseudo: float = 0.0, tol: float = 1e-9,
                max_iter: int = 100) -> PLTieFit:
  r"""Maximum-likelihood (or MAP) worths and tie parameters of the Davidson-Luce model.

  Maximises, jointly over θ (log-worths) and λ_d = log δ_d (d = 2..D),

    Σ_r c_r log P(ranking_r, tied_r | θ, δ)
      + npseudo Σ_i [θ_i − 2 log(1 + e^{θ_i})] − ½ (θ − μ)ᵀ Λ (θ − μ)

  by Newton's method with a backtracking line search in float64. The
  negative log-likelihood is convex in (θ, λ) (each log Z is a log-sum-exp
  of functions affine in them), so Newton's method is well founded; the
  information is exact. Each row's likelihood depends on θ only through its
  listed items and the power sums Σ_{i available} α_i^{c} (c = t/d), so the
  exact Hessian is assembled from small per-row Hessians (jax autodiff)
  by the chain rule, in O(m·(k + S)² + n²) without `where` (O(m·S·n²) with
  it), S the number of distinct exponents t/d (2 for D = 2, 4 for D = 3).

  The arguments are those of `luce.fit_pl` plus `tied` and `max_tie_order`
  (`fit_pl(..., tied=...)` calls this). A list stopping before every
  available item is a top-k list (its unlisted items were available at each
  stage); pass `where=luce.listed_items(rankings, n)` for PlackettLuce's
  reading of partial rankings (only the listed items compete).

  Args:
    rankings: int[m, k] item ids best first, −1 padding the end.
    n_items: number of items n.
    tied: bool[m, k], True where an item is tied with the one before it.
    max_tie_order: D, the largest tie order modelled (≥ 1), or None: the
      largest in the data. A tie of more items is an InputError, and so is
      an order in 2..D the data never show (its δ_d would be 0: no finite
      estimate).
    where: bool[m, n] or None: availability per ranking.
    counts: float[m] or None, ≥ 0: how many times each row was observed.
    prior: None, a float precision ≥ 0 on each θ_i, or a luce.NormalPrior.
      None is 0.01 without pseudo-rankings and 0 with them. λ has no prior.
    npseudo: pseudo-rankings per item and direction against a ghost item at
      θ = 0 (as `fit_pl`; the log-likelihood and standard errors are those of
      the real rankings).
    tol: stop when the Newton decrement is below tol (nats).
    max_iter: most Newton iterations.

  Returns:
    PLTieFit (centred θ, standard errors, covariance, log_tie and its
    standard errors, log-likelihood).

  Raises:
    ShapeError / InputError for malformed inputs, `tied` on the first
    position or on padding, a tie above max_tie_order, a row whose listed
    items are all tied (one block: it says nothing of an order among them;
    drop it), an unobserved tie order; ConvergenceError when Newton does not
    converge.
  """
  if not (isinstance(npseudo, (int, float, np.integer, np.floating)) and np.isfinite(npseudo)
          and npseudo >= 0):
    raise InputError(f"npseudo must be a finite number ≥ 0, got {npseudo!r}.")
  npseudo = float(npseudo)
  if prior is None:
    prior = 0.01 if npseudo == 0 else 0.0
  r, tie, avail, c, n = _check_fit_inputs(rankings, n_items, tied, where, counts)
  mu, ridge, lam, record = _prior(prior, n)
  if max_tie_order is not None:
    if isinstance(max_tie_order, (bool, np.bool_)) or not isinstance(
        max_tie_order, (int, np.integer)) or max_tie_order < 1:
      raise InputError(f"max_tie_order must be an integer ≥ 1, got {max_tie_order!r}.")
    max_tie_order = int(max_tie_order)
  top = _tie_errors(r, tie, max_tie_order, "max_tie_order")
  big_d = top if max_tie_order is None else max_tie_order
  valid = r >= 0
  start, size, dpos = (np.asarray(a) for a in _blocks(jnp.asarray(valid), jnp.asarray(tie)))
  nblocks = start.sum(axis=1)
  one = np.flatnonzero((nblocks == 1) & (valid.sum(axis=1) >= 2))
  if one.size:
    i = int(one[0])
    raise InputError(f"rankings[{i}] = {r[i][valid[i]].tolist()}: all its items are tied (one "
                     f"block); such a list orders nothing. Drop it ({one.size} such rows).")

  keep = valid[:, 0] & (c > 0)
  r, tie, c, valid, start, size, dpos = (a[keep] for a in (r, tie, c, valid, start, size, dpos))
  avail = None if avail is None else avail[keep]
  m, k = r.shape
  n_obs = float(c.sum())
  order_counts = np.array([float(c @ (size == d).sum(axis=1)) for d in range(2, big_d + 1)])
  missing = [d for d, x in zip(range(2, big_d + 1), order_counts) if x == 0]
  if missing:
    raise InputError(
        f"no tie of order {', '.join(map(str, missing))} in the data (max_tie_order = {big_d}): "
        f"its δ_d has no finite estimate (the likelihood grows as δ_d → 0); lower "
        f"max_tie_order to the largest order observed or leave it None.")

  n_avail = np.full(m, n) if avail is None else avail.sum(axis=1)
  nrem = n_avail[:, None] - np.arange(k)[None, :]
  complete = valid.sum(axis=1) == n_avail
  # The linear (numerator) part: Σ c (1/d) per listed item, Σ c per tie order.
  wins = np.zeros(n)
  np.add.at(wins, r[valid], np.broadcast_to(c[:, None], r.shape)[valid] / dpos[valid])
  expo, index = _exponents(big_d)
  n_exp = len(expo)
  nq = n_exp + big_d - 1
  per_row = k * nq * nq + k * k + (0 if avail is None else 2 * n * n_exp)
  bsz = max(1, min(_BLOCK // per_row, 1 << int(np.ceil(np.log2(max(m, 1))))))
  nb = -(-m // bsz)
  pad = nb * bsz - m

  def blocks(a, fill):
    a = np.concatenate([a, np.full((pad,) + a.shape[1:], fill, a.dtype)]) if pad else a
    return a.reshape((nb, bsz) + a.shape[1:])

  no_prior = ridge == 0 and (lam is None or not np.any(lam))
  free_shift = ridge == 0 and (lam is None or np.abs(lam.sum(axis=1)).max()
                               <= 1e-12 * max(1.0, np.abs(lam).max()))
  flat = npseudo == 0 and free_shift
  npar = n + big_d - 1
  diag = np.diag_indices(n)

  def penalty(theta):
    return prior_penalty(theta, mu, ridge, lam, npseudo)

  with jax.enable_x64(True):
    data = (jnp.asarray(blocks(r, -1)), jnp.asarray(blocks(valid, False)),
            jnp.asarray(blocks(start, False)), jnp.asarray(blocks(nrem, 0)),
            jnp.asarray(blocks(complete, True)), jnp.asarray(blocks(c, 0.0)),
            None if avail is None else jnp.asarray(blocks(avail, False)))
    linear = (jnp.asarray(wins), jnp.asarray(order_counts))
    kw = dict(n=n, max_tie_order=big_d, expo=tuple(expo), index=tuple(sorted(index.items())),
              mixed=bool(complete.any()))

    def evaluate(x):
      ll, g, h = _tie_derivatives(jnp.asarray(x[:n]), jnp.asarray(x[n:]), *data, *linear, **kw)
      return float(ll), np.asarray(g), np.asarray(h)

    x = np.concatenate([mu, _initial_log_tie(start, size, nrem, c, big_d)])
    ll, grad, hess = evaluate(x)
    pen, pgrad, phess = penalty(x[:n])
    obj = ll + pen
    decrement, it = np.inf, 0
    for it in range(1, max_iter + 1):  # noqa: B007 (reported after the loop)
      g = grad.copy()
      g[:n] += pgrad
      h = hess.copy()
      h[diag] += phess
      if lam is not None:
        h[:n, :n] += lam
      step = _solve(h, g, n, flat)
      decrement = float(g @ step)
      if decrement / 2 < tol:
        break
      t = 1.0
      while True:
        cand = x + t * step
        ll_c, grad_c, hess_c = evaluate(cand)
        pen_c = penalty(cand[:n])
        obj_c = ll_c + pen_c[0]
        if obj_c >= obj + 0.25 * t * decrement or t < 1e-8:
          break
        t *= 0.5
      x, ll, grad, hess, obj = cand, ll_c, grad_c, hess_c, obj_c
      pen, pgrad, phess = pen_c
      if float(np.max(np.abs(x[:n] - x[:n].mean()))) > 60.0 or np.abs(x[n:]).max(initial=0) > 60:
        break
    else:
      it = max_iter

  theta = x[:n]
  spread = theta.max() - theta.min() if n > 1 else 0.0
  if decrement / 2 >= tol or spread > 100.0 or np.abs(x[n:]).max(initial=0) > 60:
    hint = ("some items may always win or always lose, or the comparison graph is "
            "disconnected; use prior > 0 or npseudo > 0" if no_prior and npseudo == 0 else
            "increase max_iter or the prior")
    raise ConvergenceError(
        f"fit_pl_tied did not converge in {it} Newton iterations (Newton decrement "
        f"{decrement / 2:.3g} > tol {tol:g}, log-strength spread {spread:.3g}, log δ "
        f"{np.round(x[n:], 3).tolist()}): {hint}.")

  info = hess.copy()
  info[diag] += ridge
  if lam is not None:
    info[:n, :n] += lam
  t_mat = np.eye(npar)
  t_mat[:n, :n] -= 1.0 / n
  try:
    with threadpool_limits(1):
      inv = np.linalg.inv(_flat_fix(info, n, free_shift))
  except np.linalg.LinAlgError:
    # Pseudo-rankings without a prior can fit items the real rankings never
    # connect: their information is singular (as `fit_pl`, covariance NaN).
    inv = np.full((npar, npar), np.nan)
  cov = t_mat @ inv @ t_mat.T
  cov = 0.5 * (cov + cov.T)
  se = np.where(np.isnan(np.diag(cov)), np.inf, np.sqrt(np.clip(np.diag(cov), 0.0, None)))
  return PLTieFit(
      log_strengths=theta - theta.mean(), stderr=se[:n], covariance=cov[:n, :n],
      log_likelihood=float(ll), n_iter=it, prior=record, log_tie=x[n:].copy(),
      log_tie_stderr=se[n:], joint_covariance=cov, max_tie_order=big_d, npseudo=npseudo,
      log_posterior=float(obj), n_obs=n_obs)


def _initial_log_tie(start, size, nrem, counts, max_tie_order):
  """A start for log δ_d: with equal worths a stage of |A| items ties d of
  them with probability ∝ δ_d C(|A|, d), so δ_d ≈ (ties of order d / single
  choices) · |A| / C(|A|, d) at the mean |A|. Saves Newton steps from 0."""
  if max_tie_order < 2:
    return np.zeros(0)
  w = np.where(start, counts[:, None], 0.0)
  a = max(float((w * nrem).sum() / max(w.sum(), 1e-300)), float(max_tie_order))
  singles = max(float((w * (size == 1)).sum()), 1.0)
  out = []
  for d in range(2, max_tie_order + 1):
    nd = max(float((w * (size == d)).sum()), 0.5)
    log_choose = float(np.sum(np.log(a - np.arange(d)) - np.log(np.arange(1, d + 1))))
    out.append(np.log(nd / singles) + np.log(a) - log_choose)
  return np.array(out)


def _flat_fix(h, n, flat):
  # The likelihood is flat along θ + const (λ fixed): adding vvᵀ with
  # v = (1/√n, …, 0) fixes that direction without changing the step in the
  # others (the gradient is orthogonal to v).
  if not flat:
    return h
  h = h.copy()
  h[:n, :n] += 1.0 / n
  return h


def _solve(h, g, n, flat):
  with threadpool_limits(1):
    return np.linalg.solve(_flat_fix(h, n, flat), g)


@functools.partial(jax.jit, static_argnames=("n", "max_tie_order", "expo", "index", "mixed"))
def _tie_derivatives(theta, log_tie, rankings, valid, start, nrem, complete, counts, avail, wins,
                     order_counts, *, n, max_tie_order, expo, index, mixed=True):
  """Log-likelihood, gradient and information (negative Hessian) over (θ, λ).

  Arrays are in blocks [nb, B, ...]. Each stage's log Z is a function of
  q = (p, λ), p the power sums of its remaining items, with closed-form
  derivatives (`_stage_z`); p_j = u − Σ_{l<j} e^{c t_l} for a top-k row
  (u: the power sums over every available item) and Σ_{l≥j} e^{c t_l} for a
  complete one, so the chain rule to (t, u, λ) per row needs cumulative sums
  over the stages only, and from there to θ (t_l = θ_{π_l} − shift, u_s =
  Σ_{i available} e^{c_s (θ_i − shift)}) sums over rows. mixed=False: every
  row is a top-k row (none complete), which skips the complete rows' terms.
  """
  index = dict(index)
  expo = jnp.asarray(expo)
  n_exp = expo.shape[0]
  nb, bsz, k = rankings.shape
  nl = max_tie_order - 1
  shift = jnp.max(theta)
  th = theta - shift
  ew = jnp.exp(th[:, None] * expo[None, :])       # [n, S] e^{c_s t_i}
  gmat = (ew * expo).T                              # [S, n] ∂u_s/∂θ_i
  total = jnp.sum(ew, axis=0)
  lt = [log_tie[j] for j in range(nl)]
  before = jnp.arange(k)[:, None] <= jnp.arange(k)[None, :]   # l ≤ l'

  def body(carry, blk):
    ll, g, h = carry
    r, v, st, nr, cp, c, a = blk
    idx = jnp.maximum(r, 0)
    t = jnp.where(v, th[idx], 0.0)
    u = jnp.broadcast_to(total, (bsz, n_exp)) if a is None else a.astype(th.dtype) @ ew
    ex, pa = _remaining_sums(t, u, v, cp, expo)
    z, zq, zqq = _stage_z(pa, lt, nr, index=index, max_tie_order=max_tie_order,
                          derivatives=True)
    w = jnp.where(st, c[:, None], 0.0)                # stage weights [B, k]
    zs = jnp.where(st, z, 1.0)
    ll = ll - jnp.sum(w * jnp.log(zs))
    f = jnp.stack(zq, axis=-1) / zs[..., None]        # ∂ log Z/∂q [B, k, Q]
    kq = jnp.stack([jnp.stack(row, axis=-1) for row in zqq], axis=-2) / zs[..., None, None]
    kq = kq - f[..., :, None] * f[..., None, :]       # ∂² log Z/∂q² [B, k, Q, Q]
    wf = w[..., None] * f
    wk = w[..., None, None] * kq
    # Over the stages j at each position l: Σ_{j>l} (top-k rows: an item
    # listed at l < j has left the remainder of stage j, ∂p_j/∂t_l = −e^{ct})
    # or Σ_{j≤l} (complete rows: ∂p_j/∂t_l = +e^{ct} while l ≥ j).
    upto_f, upto_k = jnp.cumsum(wf, axis=1), jnp.cumsum(wk, axis=1)
    later_f, later_k = upto_f[:, -1:] - upto_f, upto_k[:, -1:] - upto_k
    inc = ~cp
    sel = cp[:, None, None]
    gsum = jnp.where(sel, upto_f, -later_f)           # [B, k, Q]
    da = ex * expo                                    # ∂ e^{c t_l}/∂t_l [B, k, S]
    p_ = slice(0, n_exp)
    gt = jnp.sum(da * gsum[..., p_], axis=-1)
    gu = jnp.where(inc[:, None], upto_f[:, -1, p_], 0.0)
    gl = upto_f[:, -1, n_exp:]
    # t–t: Σ_j σ_jl σ_jl' daᵀ K_j da' with σσ' = [j > max(l, l')] (top-k) or
    # [j ≤ min(l, l')] (complete).
    y_inc = jnp.einsum("bmst,bmt->bms", later_k[..., p_, p_], da)
    upper = jnp.einsum("bls,bms->blm", da, y_inc)
    if mixed:
      y_cmp = jnp.einsum("blst,blt->bls", upto_k[..., p_, p_], da)
      upper = jnp.where(sel, jnp.einsum("bls,bms->blm", y_cmp, da), upper)
    tt = jnp.where(before, upper, jnp.swapaxes(upper, 1, 2))
    tt = tt + jnp.eye(k) * jnp.sum(da * expo * gsum[..., p_], axis=-1)[:, :, None]
    tu = jnp.where(sel, 0.0, -y_inc)
    gl_k = jnp.where(sel[..., None], upto_k[..., p_, n_exp:], -later_k[..., p_, n_exp:])
    tl = jnp.einsum("bls,blsq->blq", da, gl_k)
    uu = jnp.where(inc[:, None, None], upto_k[:, -1, p_, p_], 0.0)
    ul = jnp.where(inc[:, None, None], upto_k[:, -1, p_, n_exp:], 0.0)
    ll_ = upto_k[:, -1, n_exp:, n_exp:]
    vm = v.astype(th.dtype)
    flat_i = idx.reshape(-1)
    # Gradient of Σ c log Z in θ.
    g_th = jnp.zeros(n).at[flat_i].add((gt * vm).reshape(-1))
    pair = (idx[:, :, None] * n + idx[:, None, :]).reshape(-1)
    h_tt = jnp.zeros(n * n).at[pair].add((tt * vm[:, :, None] * vm[:, None, :]).reshape(-1))
    h_tt = h_tt.reshape(n, n)
    b_tu = jnp.zeros((n, n_exp)).at[flat_i].add((tu * vm[:, :, None]).reshape(bsz * k, n_exp))
    h_tl = jnp.zeros((n, nl)).at[flat_i].add((tl * vm[:, :, None]).reshape(bsz * k, nl))
    if a is None:
      su = jnp.sum(gu, axis=0)
      g_th = g_th + gmat.T @ su
      cross = b_tu @ gmat
      h_uu = gmat.T @ jnp.sum(uu, axis=0) @ gmat
      h_diag = (ew * expo * expo) @ su
      h_ul = gmat.T @ jnp.sum(ul, axis=0)
    else:
      af = a.astype(th.dtype)
      au = af.T @ gu                                  # [n, S]
      g_th = g_th + jnp.sum(au * gmat.T, axis=1)
      q = af[:, None, :] * gmat[None, :, :]           # [B, S, n]
      # Σ_rows Σ_s P[r, i, s] q[r, s, j] with P the t–u block scattered to items.
      p = jnp.zeros((bsz, n, n_exp)).at[jnp.arange(bsz)[:, None], idx].add(
          tu * vm[:, :, None])
      cross = p.transpose(0, 2, 1).reshape(-1, n).T @ q.reshape(-1, n)
      hq = jnp.einsum("bst,btj->bsj", uu, q)
      h_uu = q.reshape(-1, n).T @ hq.reshape(-1, n)
      h_diag = jnp.sum(au * (ew * expo * expo), axis=1)
      h_ul = jnp.einsum("bsj,bsl->jl", q, ul)
    h_th = h_tt + cross + cross.T + h_uu + jnp.diag(h_diag)
    h_thl = h_tl + h_ul
    top = jnp.concatenate([h_th, h_thl], axis=1)
    bottom = jnp.concatenate([h_thl.T, jnp.sum(ll_, axis=0)], axis=1)
    g = g - jnp.concatenate([g_th, jnp.sum(gl, axis=0)])
    h = h + jnp.concatenate([top, bottom], axis=0)
    return (ll, g, h), None

  npar = n + nl
  init = (jnp.zeros(()), jnp.zeros(npar), jnp.zeros((npar, npar)))
  if avail is None:
    def body_none(carry, blk):
      return body(carry, blk + (None,))
    (ll, g, h), _ = lax.scan(body_none, init, (rankings, valid, start, nrem, complete, counts))
  else:
    (ll, g, h), _ = lax.scan(body, init, (rankings, valid, start, nrem, complete, counts, avail))
  ll = ll + wins @ th + order_counts @ log_tie
  g = g + jnp.concatenate([wins, order_counts])
  return ll, g, h


# ---- sampling ------------------------------------------------------------------------------

def sample_pl_tied(key, log_strengths, log_tie, n_samples: int, *, k: int | None = None,
                   where=None):
  r"""Exact samples of (top-k) rankings with ties from the Davidson-Luce model.

  Stage by stage from the remaining set A: the size d of the next block is
  drawn with probability ∝ δ_d e_d(α_A^{1/d}) (d ≤ min(D, |A|)), then the
  block T ⊆ A of size d with probability ∝ ∏_{i∈T} α_i^{1/d}, item by item
  (include i with probability y_i e_{r−1}(y after i) / e_r(y from i), r the
  places left). Elementary symmetric polynomials are accumulated by the
  stable recursion e_j ← e_j + y e_{j−1}. Sampling stops once k items are
  listed (the last block may run past k), so each output's probability is
  exactly `pl_tie_log_prob` of it.

  Args:
    key: a jax.random key.
    log_strengths: float[n] or float[n_samples, n] log-worths (−inf:
      unavailable).
    log_tie: float[D − 1] log δ_2..log δ_D.
    n_samples: number of rankings.
    k: list at least this many items (default: every available item).
    where: bool[n] or bool[n_samples, n] availability, or None.

  Returns:
    (rankings int32[n_samples, w], tied bool[n_samples, w]) with
    w = min(n, k + D − 1), −1 padding (and tied False) after each list.
  """
  s = _checks.float_array(log_strengths, "log_strengths")
  if s.ndim not in (1, 2) or (s.ndim == 2 and s.shape[0] != n_samples):
    raise ShapeError(f"log_strengths must be float[n] or float[n_samples={n_samples}, n], got "
                     f"{tuple(s.shape)}.")
  _checks.check_no_nan(s, "log_strengths")
  _checks.check_no_pos_inf(s, "log_strengths")
  lt = jnp.asarray(log_tie)
  if lt.ndim != 1:
    raise ShapeError(f"log_tie must be float[D − 1], got shape {tuple(lt.shape)}.")
  n = s.shape[-1]
  big_d = lt.shape[0] + 1
  kk = n if k is None else int(k)
  if not 1 <= kk <= n:
    raise InputError(f"k must be in 1..n={n}, got {k}.")
  dtype = jnp.float64 if s.dtype == jnp.float64 else jnp.float32
  s = jnp.broadcast_to(s.astype(dtype), (n_samples, n))
  if where is not None:
    w = jnp.asarray(where)
    if w.dtype != jnp.bool_ or w.shape not in ((n,), (n_samples, n)):
      raise ShapeError(f"where must be bool[n={n}] or bool[n_samples, n], got "
                       f"{w.dtype}{tuple(w.shape)}.")
    s = jnp.where(w, s, -jnp.inf)
  width = min(n, kk + big_d - 1)
  return _sample(key, s, lt.astype(dtype), kk=kk, width=width, big_d=big_d)


@functools.partial(jax.jit, static_argnames=("kk", "width", "big_d"))
def _sample(key, s, lt, *, kk, width, big_d):
  m, n = s.shape
  avail = s > -jnp.inf
  shift = jnp.max(jnp.where(avail, s, -jnp.inf), axis=1, keepdims=True)
  th = jnp.where(avail, s - jnp.where(jnp.isfinite(shift), shift, 0.0), -jnp.inf)
  orders = jnp.arange(1, big_d + 1, dtype=s.dtype)
  log_delta = jnp.concatenate([jnp.zeros(1, s.dtype), lt])

  def esp(y):
    """e_0..e_D of y [.., n] over the items: [.., D + 1], forward accumulation."""
    def step(e, yi):
      shifted = jnp.concatenate([jnp.zeros_like(e[..., :1]), e[..., :-1]], axis=-1)
      return e + yi[..., None] * shifted, None
    e0 = jnp.zeros(y.shape[:-1] + (big_d + 1,), y.dtype).at[..., 0].set(1.0)
    return lax.scan(step, e0, jnp.moveaxis(y, -1, 0))[0]

  def suffix_esp(y):
    """[n + 1, m, D + 1]: e_j of y over items i.. (row n: the empty set)."""
    def step(e, yi):
      shifted = jnp.concatenate([jnp.zeros_like(e[..., :1]), e[..., :-1]], axis=-1)
      new = e + yi[..., None] * shifted
      return new, new
    e0 = jnp.zeros((m, big_d + 1), y.dtype).at[:, 0].set(1.0)
    _, out = lax.scan(step, e0, y.T[::-1])
    return jnp.concatenate([out[::-1], e0[None]], axis=0)

  def stage(_, carry):
    key, rank, tied, left, placed = carry
    key, k_size, k_items = jax.random.split(key, 3)
    live = (placed < kk) & jnp.any(left, axis=1)
    y_all = jnp.where(left[:, None, :], jnp.exp(th[:, None, :] / orders[None, :, None]), 0.0)
    e = esp(y_all)                                         # [m, D, D + 1]
    e_d = jnp.take_along_axis(e, jnp.arange(1, big_d + 1)[None, :, None], axis=2)[..., 0]
    logits = jnp.where(e_d > 0, log_delta + jnp.log(jnp.where(e_d > 0, e_d, 1.0)), -jnp.inf)
    d = jax.random.categorical(k_size, logits, axis=1) + 1  # [m]
    y = jnp.take_along_axis(y_all, (d - 1)[:, None, None], axis=1)[:, 0, :]
    suf = suffix_esp(y)                                     # [n + 1, m, D + 1]
    u = jax.random.uniform(k_items, (n, m), s.dtype)

    def pick(slots, inp):
      yi, here, nxt, ui = inp
      r_ = jnp.maximum(slots, 1)
      num = yi * jnp.take_along_axis(nxt, (r_ - 1)[:, None], axis=1)[:, 0]
      den = jnp.take_along_axis(here, r_[:, None], axis=1)[:, 0]
      take = (slots > 0) & (yi > 0) & (ui * den < num)
      return slots - take, take

    _, sel = lax.scan(pick, d, (y.T, suf[:-1], suf[1:], u))
    sel = sel.T & live[:, None]                             # [m, n]
    slot = placed[:, None] + jnp.cumsum(sel, axis=1) - 1
    slot = jnp.where(sel, slot, width)
    rows = jnp.broadcast_to(jnp.arange(m)[:, None], (m, n))
    items = jnp.broadcast_to(jnp.arange(n, dtype=jnp.int32)[None, :], (m, n))
    rank = rank.at[rows, slot].set(items, mode="drop")
    tied = tied.at[rows, slot].set(slot > placed[:, None], mode="drop")
    left = left & ~sel
    placed = placed + jnp.sum(sel, axis=1).astype(jnp.int32)
    return key, rank, tied, left, placed

  carry = (key, jnp.full((m, width), -1, jnp.int32), jnp.zeros((m, width), bool), avail,
           jnp.zeros(m, jnp.int32))
  _, rank, tied, _, _ = lax.fori_loop(0, kk, stage, carry)
  return rank, tied


def prior_penalty(theta, mu, ridge, lam, npseudo):
  """Value, gradient and negative-Hessian diagonal at θ of the Gaussian prior
  (ridge·I + lam, mean mu) and the pseudo-rankings against a ghost at 0 (the
  prior's full precision `lam`, if any, enters the Hessian separately)."""
  n = theta.shape[0]
  d = theta - mu
  lam_d = ridge * d if lam is None else ridge * d + lam @ d
  val = -0.5 * float(d @ lam_d)
  grad = -lam_d
  hdiag = np.full(n, float(ridge))
  if npseudo:
    sig = 0.5 * (1.0 + np.tanh(0.5 * theta))
    val += npseudo * float(np.sum(theta - 2.0 * np.logaddexp(0.0, theta)))
    grad = grad + npseudo * (1.0 - 2.0 * sig)
    hdiag = hdiag + 2.0 * npseudo * sig * (1.0 - sig)
  return val, grad, hdiag
