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
  (`luce.fit_pl` for rankings; gradient ascent on the set likelihood for sets).
"""

from __future__ import annotations

import numpy as np

from luce.errors import ConfigError
from luce.fit import fit_pl

NAMES = ("uniform", "frequency", "recency", "static")
PRIOR_STAGES = 5.0


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


def _fit_set(items, available, prior, steps: int = 300) -> np.ndarray:
  """MLE of static PL strengths from unordered sets (Adam on the set likelihood)."""
  import jax
  import jax.numpy as jnp
  import optax
  from luce.pl_set import pl_set_log_prob

  n = available.shape[1]
  items_j, avail_j = jnp.asarray(items), jnp.asarray(available)

  def loss(theta):
    s = jnp.broadcast_to(theta, avail_j.shape)
    return -jnp.mean(pl_set_log_prob(s, items_j, where=avail_j)) + 0.5 * prior * jnp.sum(theta ** 2) / len(items)

  opt = optax.adam(0.05)

  @jax.jit
  def run(theta):
    def body(carry, _):
      theta, state = carry
      g = jax.grad(loss)(theta)
      updates, state = opt.update(g, state)
      return (optax.apply_updates(theta, updates), state), None
    (theta, _), _ = jax.lax.scan(body, (theta, opt.init(theta)), None, length=steps)
    return theta

  theta = np.asarray(run(jnp.zeros(n, jnp.float32)), np.float64)
  return theta - theta.mean()


def baseline_scores(name: str, items: np.ndarray, available: np.ndarray, n_train: int, kind: str,
                    *, half_life: float = 50.0, prior: float = 0.01) -> np.ndarray:
  """float32[m, n] scores of baseline `name` (one of NAMES) for every event.

  Args:
    items: int[m, k] every event's list in time order, -1 padded.
    available: bool[m, n].
    n_train: the first n_train events are the training events; static
      baselines fit on them only.
    kind: "ranking" or "set".
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
  raise ConfigError(f"baseline {name!r}; valid: {', '.join(NAMES)}.")
