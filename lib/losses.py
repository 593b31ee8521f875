"""Training losses: the negative log-likelihoods of observed events.

The losses live with the likelihoods (`luce.pl`, `luce.pl_set`); the
evaluation metrics (`luce.metrics`) report the same NLL.

Shapes: scores float[m, n] (one row per event), items int[m, k] (the observed
list, best first for rankings, -1 padded), available bool[m, n].

    nll = event_nll(scores, items, available, kind="ranking")   # float32[m] nats
    loss = pl_loss("set")                                       # for luce.train's step
"""

from __future__ import annotations

from collections.abc import Callable

from luce.errors import ConfigError
from luce.pl import pl_log_prob
from luce.pl_set import pl_set_log_prob

# The event kinds luce models handle: ordered top-k lists and unordered top-k sets.
KINDS = ("ranking", "set")


def _check_kind(kind) -> None:
  if kind not in KINDS:
    raise ConfigError(f"event kind {kind!r}; luce models handle {KINDS} (a table of one kind).")


def event_nll(scores, items, available, *, kind: str):
  """Negative log-likelihood of each event, in nats.

  Args:
    scores: float[m, n] item scores.
    items: int[m, k] the observed list (best first for rankings), -1 padded.
    available: bool[m, n] items that could be picked; the likelihood runs over
      these only (an F1 race ranks its entrants, not every driver).
    kind: "ranking" (ordered top-k PL likelihood, `luce.pl_log_prob`) or "set"
      (unordered top-k set likelihood, `luce.pl_set.pl_set_log_prob`).

  Returns:
    float32[m]: -log P(event).

  Raises:
    ConfigError: `kind` is not one of KINDS.
  """
  if kind == "ranking":
    return -pl_log_prob(scores, items, where=available)
  if kind == "set":
    return -pl_set_log_prob(scores, items, where=available)
  _check_kind(kind)


def pl_loss(kind: str) -> Callable:
  """`loss(scores, batch) -> float32[B]`: the event NLL in nats (PL over the
  available items; the set likelihood for kind "set"), reading `batch["items"]`
  and `batch["available"]`. An unknown `kind` raises ConfigError here, not at
  the first step."""
  _check_kind(kind)

  def loss(scores, batch):
    return event_nll(scores, batch["items"], batch["available"], kind=kind)
  return loss
