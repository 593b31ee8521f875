"""Events drawn from a known context-dependent Plackett-Luce model.

The generating model scores item i at event t as

    s_{t,i} = θ_i + α · in_last_1_{t,i} + γ · rank_last_1_{t,i}

with θ_i ~ N(0, item_spread²), in_last_1 = 1 if i was in event t-1 and
rank_last_1 = (k - position)/k its rank score there (the `luce.data`
features of the same names), and draws each event's top-k list from PL(s_t)
(Gumbel-top-k). A model that reads those features can match it exactly, so the
generating model's NLL (`oracle`) is the floor a trained model approaches.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from luce.data import EventTable
from luce.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class SyntheticPL:
  """A drawn data set and the scores that generated it.

  Attributes:
    table: EventTable of m events (times 0..m-1), kind "ranking" or "set".
    scores: float32[m, n] the generating scores of every event (the oracle).
  """
  table: EventTable
  scores: np.ndarray


def synthetic_pl(*, n_items: int = 20, k: int = 5, n_events: int = 4000, kind: str = "ranking",
                 item_spread: float = 1.0, momentum: float = 1.0, rank_momentum: float = 1.0,
                 seed: int = 0) -> SyntheticPL:
  """Draw `n_events` top-k events over `n_items` items (see the module docstring).

  Args:
    n_items, k: n and k (1 <= k <= n).
    n_events: m.
    kind: "ranking" (ordered top-k lists) or "set" (the same draws, order dropped).
    item_spread: standard deviation of the static strengths θ.
    momentum: α, the score bonus of being in the previous event.
    rank_momentum: γ, the extra bonus per unit of previous rank score
      (rankings only; sets carry no rank).
    seed: the draw's seed; the same arguments give the same table.
  """
  if not 1 <= k <= n_items:
    raise ConfigError(f"synthetic data: k={k} must be between 1 and n_items={n_items}.")
  if kind not in ("ranking", "set"):
    raise ConfigError(f"synthetic data: kind={kind!r}; valid: ranking, set.")
  rng = np.random.default_rng(seed)
  theta = rng.normal(0.0, item_spread, n_items)
  gamma = rank_momentum if kind == "ranking" else 0.0
  items = np.empty((n_events, k), np.int32)
  scores = np.empty((n_events, n_items), np.float32)
  last_in = np.zeros(n_items)
  last_rank = np.zeros(n_items)
  for t in range(n_events):
    s = theta + momentum * last_in + gamma * last_rank
    scores[t] = s
    picks = np.argsort(-(s + rng.gumbel(size=n_items)))[:k]
    items[t] = picks
    last_in = np.zeros(n_items)
    last_in[picks] = 1.0
    last_rank = np.zeros(n_items)
    last_rank[picks] = (k - np.arange(k)) / k
  table = EventTable.from_arrays(items, catalog=n_items, kind=kind,
                                 metadata={"source": "synthetic", "k": str(k)})
  return SyntheticPL(table, scores)
