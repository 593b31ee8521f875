"""Online rating systems as a peer of luce's models: ratings updated event by event.

`openskill_scores` runs openskill's PlackettLuce model (Weng & Lin 2011,
Algorithm 4: Bayesian Gaussian ratings, mu and sigma per item) over the time
ordered events and turns each event's ratings into Plackett-Luce scores, so
the rating system is scored in nats per event with the same `luce.metrics` as
luce's models and `luce.baselines`.
"""

from __future__ import annotations

import math

import numpy as np
import openskill
from openskill.models import PlackettLuce

from luce._checks import check_item_lists
from luce.errors import ConfigError, InputError, ShapeError
from luce.pl import pl_log_prob
from luce.pl_set import pl_set_log_prob

KINDS = ("ranking", "set")
# The bounded search range of the temperature T (log T is searched); mu is in
# openskill's units (start mu = 25, sigma = 25/3), where a T outside this range
# would make every event uniform (large T) or deterministic (small T).
T_BOUNDS = (1e-3, 1e5)


def _check_inputs(items, available, n_train, kind, temperature) -> tuple[np.ndarray, np.ndarray]:
  items, available = np.asarray(items), np.asarray(available)
  if items.ndim != 2:
    raise ShapeError(f"items must be int[m, k] (one -1 padded list per event), got shape {items.shape}.")
  if not np.issubdtype(items.dtype, np.integer):
    raise ShapeError(f"items must hold integer item ids, got dtype {items.dtype}; convert it with "
                     f"items.astype(int) if the values are whole numbers.")
  if available.ndim != 2:
    raise ShapeError(f"available must be bool[m, n] (the items available in each event), got shape "
                     f"{available.shape}.")
  if available.dtype != np.bool_:
    raise ShapeError(f"available must be a bool array, got dtype {available.dtype}; pass "
                     f"available.astype(bool) if it holds 0/1.")
  if items.shape[0] != available.shape[0]:
    raise ShapeError(f"items {items.shape} and available {available.shape} must have the same number of "
                     f"events (rows).")
  m, n = available.shape
  check_item_lists(items, n, "items")
  rows, cols = np.nonzero(items >= 0)
  off = ~available[rows, items[rows, cols]]
  if off.any():
    t, j = int(rows[off][0]), int(cols[off][0])
    raise InputError(f"items[{t}, {j}] = {int(items[t, j])} is not available in event {t} "
                     f"(available[{t}, {int(items[t, j])}] is False); a listed item must be available.")
  if kind not in KINDS:
    raise ConfigError(f"kind {kind!r}; valid: {', '.join(KINDS)}.")
  if isinstance(n_train, bool) or not isinstance(n_train, (int, np.integer)) or not 0 <= n_train <= m:
    raise ConfigError(f"n_train={n_train!r} must be an integer in [0, {m}] (m = {m} events).")
  if temperature is None:
    if n_train == 0:
      raise ConfigError("n_train=0 leaves no training event to fit the temperature on; pass n_train >= 1 "
                        "or fix it with temperature=.")
  elif not (isinstance(temperature, (int, float, np.floating, np.integer)) and math.isfinite(temperature)
            and temperature > 0):
    raise ConfigError(f"temperature={temperature!r} must be a finite number > 0 (or None to fit it on "
                      f"the training events).")
  return items.astype(np.int64), available


def _event_ranks(items_t: np.ndarray, available_t: np.ndarray, kind: str) -> tuple[list[int], list[int]]:
  """(item ids, openskill ranks, 0 best) of one event's participants.

  Rankings: a listed item's rank is its position; the available items the list
  does not name tie last. Sets: every listed item ties first, the rest last.
  """
  listed = [int(i) for i in items_t if i >= 0]
  rest = np.flatnonzero(available_t)
  rest = [int(i) for i in rest[~np.isin(rest, listed)]]
  if kind == "set":
    ranks = [0] * len(listed) + [1] * len(rest)
  else:
    ranks = list(range(len(listed))) + [len(listed)] * len(rest)
  return listed + rest, ranks


def _online_ratings(items: np.ndarray, available: np.ndarray, kind: str, model=None):
  """(mu float64[m, n], sigma float64[m, n]): every item's rating before event t.

  Row t holds the ratings after events 0..t-1 only; event t is rated after its
  row is written. An event with fewer than two rank groups (nothing ordered)
  leaves the ratings unchanged.
  """
  model = PlackettLuce() if model is None else model
  m, n = available.shape
  mu = np.full(n, model.mu)
  sigma = np.full(n, model.sigma)
  mus = np.empty((m, n))
  sigmas = np.empty((m, n))
  for t in range(m):
    mus[t], sigmas[t] = mu, sigma
    ids, ranks = _event_ranks(items[t], available[t], kind)
    if len(set(ranks)) < 2:
      continue
    teams = [[model.rating(mu=float(mu[i]), sigma=float(sigma[i]))] for i in ids]
    new = model.rate(teams, ranks=ranks)
    mu[ids] = [team[0].mu for team in new]
    sigma[ids] = [team[0].sigma for team in new]
  return mus, sigmas


def _log_likelihood(scores: np.ndarray, items: np.ndarray, available: np.ndarray, kind: str) -> float:
  """Sum over events of the exact PL log-probability (float32 terms, float64 sum)."""
  if kind == "set":
    lp = pl_set_log_prob(scores.astype(np.float32), items.astype(np.int32), where=available)
  else:
    lp = pl_log_prob(scores.astype(np.float32), items.astype(np.int32), where=available)
  return float(np.sum(np.asarray(lp, np.float64)))


def _fit_temperature(centred_mu, items, available, kind) -> float:
  def nll(log_t):
    return -_log_likelihood(centred_mu / math.exp(log_t), items, available, kind)

  lo, hi = (math.log(b) for b in T_BOUNDS)
  from scipy.optimize import minimize_scalar  # here: scipy.optimize takes ~0.4 s to import
  res = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6, "maxiter": 200})
  return float(math.exp(res.x))


def openskill_scores(items, available, n_train: int, kind: str, *,
                     temperature: float | None = None) -> tuple[np.ndarray, dict]:
  r"""Scores of every event from openskill's PlackettLuce ratings of the events before it.

  Every item starts at openskill's default rating (mu_0 = 25, sigma = 25/3;
  `openskill.models.PlackettLuce()` with its defaults). Events are rated in
  order: the scores of event t come from the ratings after events 0..t-1 only
  (no look-ahead), then event t updates the ratings of its participants with
  `PlackettLuce.rate`, each available item a one-player team whose rank is

  - rankings: its position in the list (0 best); when the list names only the
    top k of the available items, the available-but-unlisted items are tied
    last (rank k), so a top-k list also says they lost to the k listed;
  - sets: every listed item ties first, the unlisted available items tie last.

  Unavailable items sit the event out (their ratings do not move); an event
  that orders nothing (fewer than two rank groups, e.g. one available item)
  leaves every rating unchanged.

  The ratings become a Plackett-Luce distribution by reading mu as a
  log-strength with one fitted temperature (this is NOT openskill's own
  `predict_rank` / `predict_win`):

    s_ti = (mu_ti - mu_0) / T,

  (the shift by mu_0 is one constant per event, which PL ignores; it keeps the
  float32 scores small, and makes every score 0 before an item is rated).
  T > 0 maximises the exact PL log-likelihood of the training events [0,
  n_train) over each event's available items (`luce.pl_log_prob` for
  rankings, `luce.pl_set_log_prob` for sets): a bounded 1-D search on log T
  over `T_BOUNDS` (`scipy.optimize.minimize_scalar`). The validation and test
  events only ever see a T fitted on the training events.

  Cost: one `rate` call per event, O(a^2) in the a available items of the
  event (pure Python loops in openskill), plus about 25 likelihood passes over
  the training events for T. F1 since 1996 (437 races of 22 of 848 drivers)
  takes about 0.3 s on a 2-core CPU machine.

  Args:
    items: int[m, k] every event's list in time order, best first, -1 padded.
    available: bool[m, n] the items available in each event; every listed item
      must be available.
    n_train: the first n_train events are the training events (T is fitted on
      them only; the ratings are online over all events).
    kind: "ranking" (ordered lists) or "set" (unordered top-k sets).
    temperature: fixes T (a finite number > 0) instead of fitting it.

  Returns:
    (scores, info): scores float32[m, n] (finite for every item, available or
    not; mask with `available`); info {"temperature": T, "model":
    "openskill.PlackettLuce", "version": openskill.__version__}.

  Raises:
    ShapeError for items not int[m, k], available not bool[m, n], or a
    different number of rows; InputError for ids outside [0, n), holes,
    repeats or a listed item that is not available; ConfigError for kind not
    "ranking"/"set", n_train outside [0, m] (or 0 with no temperature), or a
    temperature that is not a finite number > 0.
  """
  items, available = _check_inputs(items, available, n_train, kind, temperature)
  model = PlackettLuce()
  mu, _ = _online_ratings(items, available, kind, model)
  centred = mu - model.mu
  if temperature is None:
    temperature = _fit_temperature(centred[:n_train], items[:n_train], available[:n_train], kind)
  temperature = float(temperature)
  scores = (centred / temperature).astype(np.float32)
  return scores, {"temperature": temperature, "model": "openskill.PlackettLuce",
                  "version": openskill.__version__}
