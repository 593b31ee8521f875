"""Baselines every model is compared with: scores per event from history alone.

Each baseline maps the full time-ordered table's arrays and the number of
training events to float32[m, n] scores for every event (rows of the
validation and test events are what the evaluation reads):

- `uniform`: every available item equally likely.
- `frequency`: static PL strengths from stage counts on the training events,
  w_i = (chosen_i + a r) / (could_i + a): the times i was chosen over the
  stages at which it could have been (the one-pass "frequency" estimate of
  PL), shrunk by a = PRIOR_STAGES pseudo-stages towards the mean rate r, so an
  item seen once is not the favourite.
- `recency`: the same counts with exponential forgetting (half-life in
  events), updated online with every event before t (no look-ahead).
- `static`: the PL maximum-likelihood fit on the training events
  (`luce.fit_pl` for rankings; L-BFGS on the exact set likelihood for sets).
- `conditional_logit`: `luce.fit_cl` on the training events: item effects
  plus one slope per numeric covariate, s_ti = θ_i + x_ti · β (rankings
  only).
- `grid`: `luce.fit_cl` without item effects on the covariate `grid` alone:
  PL scores from the starting position, one fitted slope (rankings only).
- `openskill`: the rating peer race forecasters use: openskill's PlackettLuce
  (Weng-Lin) ratings updated event by event over every event before t, mu as
  log-strength with one temperature fitted on the training events
  (`luce.ratings.openskill_scores`).

The two covariate baselines take the events' raw covariates and standardise
each with its mean and standard deviation over the available items of the
training events only, so nothing of a predicted event enters its own scores.
"""

from __future__ import annotations

import functools
import numpy as np

from luce.errors import ConfigError, InputError, ShapeError
from luce.fit import fit_cl, fit_pl
from luce.ratings import openskill_scores

NAMES = ("uniform", "frequency", "recency", "static", "conditional_logit", "grid", "openskill")
# The baselines that need no refit per window: uniform, or updated online over events < t
# (a walk-forward scores them once over all events, fitting on the events before its start).
ONLINE_BASELINES = ("uniform", "recency", "openskill")
# The baselines that need `covariates` (and rankings).
COVARIATE_BASELINES = ("conditional_logit", "grid")
PRIOR_STAGES = 5.0
# Which data sources give per-item covariates, for the error messages.
COVARIATE_SOURCES = ("ergast: gives grid and pit_lane (numeric) and constructor (categorical); "
                     "long:PATH?covariates=COL,... gives the named columns")


def _stage_counts(items: np.ndarray, available: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
  """(chosen float64[m, n], could_choose float64[m, n]) per event.

  For rankings an item listed at position p could be chosen at stages 0..p, an
  unlisted available item at every stage; for sets every available item at
  each of the k stages counts once per event (the order is unknown).
  """
  m, n = available.shape
  k = items.shape[1]
  valid = items >= 0
  lengths = valid.sum(axis=1)
  chosen = np.zeros((m, n))
  rows = np.repeat(np.arange(m), k).reshape(m, k)
  np.add.at(chosen, (rows[valid], items[valid]), 1.0)
  if kind == "set":
    could = available * lengths[:, None].astype(np.float64)
  else:
    could = available * lengths[:, None].astype(np.float64)
    position = np.broadcast_to(np.arange(k), (m, k))
    # A listed item at position p could be chosen at p + 1 stages, not all.
    np.add.at(could, (rows[valid], items[valid]), (position + 1 - lengths[:, None])[valid])
  return chosen, could


def _shrunk_rate(chosen: np.ndarray, could: np.ndarray) -> np.ndarray:
  mean = chosen.sum() / could.sum() if could.sum() > 0 else 1.0
  return (chosen + PRIOR_STAGES * mean) / (could + PRIOR_STAGES)


def uniform(items, available, n_train, kind) -> np.ndarray:
  return np.zeros(available.shape, np.float32)


def frequency(items, available, n_train, kind) -> np.ndarray:
  chosen, could = _stage_counts(items[:n_train], available[:n_train], kind)
  w = _shrunk_rate(chosen.sum(0), could.sum(0))
  return np.broadcast_to(np.log(w).astype(np.float32), available.shape).copy()


def recency(items, available, n_train, kind, *, half_life: float = 50.0) -> np.ndarray:
  """Scores of event t from exponentially forgotten counts of events < t."""
  chosen, could = _stage_counts(items, available, kind)
  decay = 0.5 ** (1.0 / half_life)
  m, n = available.shape
  out = np.empty((m, n), np.float32)
  c = np.zeros(n)
  a = np.zeros(n)
  for t in range(m):
    out[t] = np.log(_shrunk_rate(c, a))
    c = decay * c + chosen[t]
    a = decay * a + could[t]
  return out


def static(items, available, n_train, kind, *, prior: float = 0.01) -> np.ndarray:
  n = available.shape[1]
  if kind == "ranking":
    theta = fit_pl(items[:n_train], n, where=available[:n_train], prior=prior).log_strengths
  else:
    theta = _fit_set(items[:n_train], available[:n_train], prior)
  return np.broadcast_to(np.asarray(theta, np.float32), available.shape).copy()


def _fit_set(items, available, prior, max_iter: int = 100, tol: float = 1e-6) -> np.ndarray:
  """MLE of static PL strengths from unordered sets: L-BFGS on the exact set
  likelihood (ridge `prior`), stopped when the gradient's largest entry is
  below `tol` (per event) or after `max_iter` iterations.

  Was 300 Adam steps: the same optimum to 1e-4 in 2.6x less time on 800 sets
  of 20 of 80 (benchmarks/RESULTS.md, "static set baseline")."""
  import jax.numpy as jnp
  items, available = np.asarray(items), np.asarray(available, bool)
  m = len(items)
  # Windows padded to a multiple of 256 events with empty sets (log P = 0, no
  # gradient), so the expanding windows of a walk-forward share compilations.
  rows = -(-max(m, 1) // 256) * 256
  padded_items = np.full((rows, items.shape[1]), -1, items.dtype)
  padded_items[:m] = items
  padded_available = np.ones((rows, available.shape[1]), bool)
  padded_available[:m] = available
  theta = _fit_set_jit(jnp.asarray(padded_items), jnp.asarray(padded_available), jnp.float32(prior),
                       jnp.float32(max(m, 1)), int(max_iter), float(tol))
  theta = np.asarray(theta, np.float64)
  return theta - theta.mean()


@functools.cache
def _make_fit_set_jit():
  import jax
  import jax.numpy as jnp
  import optax
  from luce.pl_set import pl_set_log_prob

  @functools.partial(jax.jit, static_argnums=(4, 5))
  def fit(items, available, prior, m, max_iter, tol):
    """m: the real events (the rest of the rows are empty padding)."""
    n = available.shape[1]

    def loss(theta):
      s = jnp.broadcast_to(theta, available.shape)
      return (-jnp.sum(pl_set_log_prob(s, items, where=available)) / m
              + 0.5 * prior * jnp.sum(theta ** 2) / m)

    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(loss)

    def step(carry):
      theta, state, _, i = carry
      value, grad = value_and_grad(theta, state=state)
      updates, state = opt.update(grad, state, theta, value=value, grad=grad, value_fn=loss)
      return optax.apply_updates(theta, updates), state, jnp.max(jnp.abs(grad)), i + 1

    theta = jnp.zeros(n, jnp.float32)
    carry = (theta, opt.init(theta), jnp.float32(jnp.inf), 0)
    theta, *_ = jax.lax.while_loop(lambda c: (c[2] > tol) & (c[3] < max_iter), step, carry)
    return theta

  return fit


def _fit_set_jit(*args):
  """The jitted L-BFGS fit, made once per process (one compile per window shape);
  built on first use, so importing luce.baselines loads no JAX."""
  return _make_fit_set_jit()(*args)


def standardised_covariates(covariates: np.ndarray, available: np.ndarray, n_train: int,
                            names=()) -> np.ndarray:
  """float64[m, n, p]: each covariate minus its mean over the available items of
  the training events [0, n_train), over their standard deviation (1 if
  constant); 0 at unavailable items."""
  x = np.asarray(covariates, np.float64)
  seen = available[:n_train]
  out = np.zeros_like(x)
  for j in range(x.shape[2]):
    values = x[:n_train, :, j][seen]
    if values.size == 0:
      name = f" {names[j]!r}" if j < len(names) else ""
      raise ConfigError(f"covariate {j}{name}: no available item in the {n_train} training "
                        f"events to take its mean and standard deviation from.")
    mean, std = values.mean(), values.std()
    std = std if std > 0 else 1.0
    out[:, :, j] = np.where(available, (x[:, :, j] - mean) / std, 0.0)
  return out


def covariate_model(name: str, items, available, n_train, kind, covariates, covariate_names=(),
                    *, prior: float = 0.01) -> np.ndarray:
  """float32[m, n] scores of the `conditional_logit` or `grid` baseline.

  Fits `luce.fit_cl` on the training events [0, n_train) with the covariates
  standardised on those events (`standardised_covariates`) and scores every
  event with its own covariates. `conditional_logit` uses every covariate
  with item effects (a covariate constant among every training event's
  available items gets slope 0; training data separable along a covariate
  direction get a ridge on the slopes, see `luce.fit_cl`); `grid` the
  covariate named "grid" (or "cov_grid") alone, without item effects.
  """
  if kind != "ranking":
    raise ConfigError(f"baseline {name!r} fits a Plackett-Luce ranking likelihood and takes "
                      f"rankings only; this table holds kind {kind!r}. Drop {name!r} from "
                      f"baselines.names for set data.")
  if covariates is None or np.asarray(covariates).ndim != 3 or np.asarray(covariates).shape[2] == 0:
    what = "none" if covariates is None else f"shape {list(np.shape(covariates))}"
    need = "the covariate 'grid' (the starting grid slot)" if name == "grid" else \
        "per-item covariates"
    raise ConfigError(f"baseline {name!r} needs {need}: covariates=float[m, n, p] with "
                      f"covariate_names, got {what}. Data sources with covariates: "
                      f"{COVARIATE_SOURCES}.")
  x = np.asarray(covariates)
  m, n = available.shape
  if x.shape[:2] != (m, n):
    raise ShapeError(f"covariates must be float[m={m}, n={n}, p], got shape {list(x.shape)}.")
  names = tuple(covariate_names)
  if len(names) != x.shape[2]:
    raise ShapeError(f"covariate_names has {len(names)} names for the {x.shape[2]} covariates "
                     f"(covariates.shape[2]); give one name per covariate.")
  if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
    raise ShapeError(f"covariates must be numeric, got dtype {x.dtype}; encode categorical "
                     f"covariates before passing them.")
  bad = ~np.isfinite(x.astype(np.float64)) & available[:, :, None]
  if bad.any():
    t, i, j = (int(v) for v in np.argwhere(bad)[0])
    raise InputError(f"covariates[{t}, {i}, {j}] ({names[j]!r}) = {x[t, i, j]} at an available "
                     f"item; covariates of available items must be finite.")
  if name == "grid":
    column = [j for j, c in enumerate(names) if c in ("grid", "cov_grid")]
    if not column:
      raise ConfigError(f"baseline 'grid' needs the covariate named 'grid' (the starting grid "
                        f"slot); covariate_names = {names}. ergast: gives grid (read with "
                        f"?covariates=grid); long:PATH?covariates=grid,... for other files.")
    x, names = x[:, :, column[:1]], names[column[0]:column[0] + 1]
  z = standardised_covariates(x, available, n_train, names)
  fit = fit_cl(items[:n_train], z[:n_train], n, where=available[:n_train],
               item_effects=name != "grid", prior=prior)
  return fit.scores(z).astype(np.float32)


def baseline_scores(name: str, items: np.ndarray, available: np.ndarray, n_train: int, kind: str,
                    *, covariates=None, covariate_names=(), half_life: float = 50.0,
                    prior: float = 0.01) -> np.ndarray:
  """float32[m, n] scores of baseline `name` (one of NAMES) for every event.

  Args:
    items: int[m, k] every event's list in time order, -1 padded.
    available: bool[m, n].
    n_train: the first n_train events are the training events; static
      baselines fit on them only.
    kind: "ranking" or "set".
    covariates: float[m, n, p] or None: the events' raw numeric per-item
      covariates (0 where unavailable), for `conditional_logit` and `grid`
      (ignored by the others). They are standardised with statistics of the
      training events only.
    covariate_names: their p names, e.g. ("grid", "pit_lane").
    half_life: the recency baseline's half-life in events.
    prior: ridge precision of the fitted baselines (`static`, and θ of
      `conditional_logit`; see `luce.fit_cl`).
  """
  items, available = np.asarray(items), np.asarray(available, bool)
  if name == "uniform":
    return uniform(items, available, n_train, kind)
  if name == "frequency":
    return frequency(items, available, n_train, kind)
  if name == "recency":
    return recency(items, available, n_train, kind, half_life=half_life)
  if name == "static":
    return static(items, available, n_train, kind, prior=prior)
  if name in COVARIATE_BASELINES:
    return covariate_model(name, items, available, n_train, kind, covariates, covariate_names,
                           prior=prior)
  if name == "openskill":
    return openskill_scores(items, available, n_train, kind)[0]
  raise ConfigError(f"baseline {name!r}; valid: {', '.join(NAMES)}.")
