"""A model family: everything the one train loop and the evaluation need of a model.

A family bundles a Flax module with how it is trained and scored:

  family.model                      the Flax module; `model.apply({"params": p}, batch)`
  family.loss(out, batch)           float32[B] per-event training loss of the model's output
  family.scores(params, arrays)     float32[m, n] item scores (what hits@k and NDCG rank by)
  family.nll(params, arrays)        float64[m] per-event NLL in nats, exact or a bound
  family.nll_kind                   "exact" or "bound": which `nll` is
  family.scores_meaning             what `scores` are, in words (luce-predict writes it)
  family.sample(params, arrays, key, samples, k)   int32[m, samples, k] sampled events
  family.inclusion(params, arrays, key, draws, k)  float32[m, n] P(item in the event)

`arrays` are the event arrays of `luce.data.model_arrays` (the `BATCH_KEYS`,
leading axis events, items in catalog order); everything runs in fixed-size
chunks of `batch_size` events, the last chunk padded, so each shape compiles
once. `family.take(arrays, rows)` is the batch of those events the model reads:
the PL family gathers each event's available items (its entrants) into a
padded [batch, max_available] block (`gather_entrants`), so a race of 20
drivers costs 20 scores, not one per driver of the catalog. A family may
also have `train_take(arrays, rows, key)`, the batch a training step reads
when it differs from `take`: the PL family with `negatives=M` trains on each
event's chosen items and M sampled negatives (`luce.models.sampled_batch`, a
documented approximation), and evaluates on `take`, exactly. `luce.train`
maps `config.model.family` to a family object in one place
(`luce.train.build_family`); the neural Plackett-Luce family is here, the
Discrete Subset Diffusion family is `luce.diffusion.DiffusionFamily`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from luce.errors import ConfigError, DataError, ShapeError
from luce.losses import event_nll
from luce.models._negatives import sampled_batch
from luce.models._scorer import PLScorer, history_columns
from luce.sampling import pl_sample

# Keys of a batch every family reads (a subset of `luce.data.model_arrays`).
BATCH_KEYS = ("items", "available", "weights", "item_features", "event_features")


def take_events(arrays: dict, rows: np.ndarray, keys: Sequence[str] = BATCH_KEYS) -> dict:
  """The events `rows` of `arrays`, key by key (the catalog layout)."""
  return {key: arrays[key][rows] for key in keys}


def chunked(fn: Callable, arrays: dict, batch_size: int, *args, keys: Sequence[str] = BATCH_KEYS,
            dtype=None, take: Callable | None = None) -> np.ndarray:
  """np.concatenate of `fn(chunk, i, *args)[:rows]` over fixed-size chunks of events.

  Each chunk holds `batch_size` events (the last one padded by repeating the
  final event, then cut), so a jitted `fn` compiles once; `i` is the chunk index.
  A chunk is `take(arrays, rows)` (default: `take_events` of `keys`).
  """
  m = len(arrays["items"])
  size = min(batch_size, max(m, 1))
  out = []
  for i, start in enumerate(range(0, m, size)):
    idx = np.arange(start, start + size).clip(max=m - 1)
    chunk = take(arrays, idx) if take is not None else take_events(arrays, idx, keys)
    out.append(np.asarray(fn(chunk, i, *args), dtype)[:min(size, m - start)])
  if out:
    return np.concatenate(out)
  raise ConfigError("no events to evaluate: the split or fold is empty.")


def max_available(arrays: dict) -> int:
  """The most available items of any event of `arrays` (the entrant block's width)."""
  available = np.asarray(arrays["available"])
  return max(int(available.sum(axis=1).max(initial=0)), 1)


def entrant_slots(available, rows: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
  """(entrants int32[B, width], real bool[B, width]) of the events `rows`: each
  event's available ids first, in catalog order (a stable sort of the mask),
  then unavailable ids as padding; ShapeError when an event has more than `width`."""
  available = np.asarray(available[rows], bool)                      # [B, n]
  count = available.sum(axis=1)
  if len(rows) and count.max() > width:
    first = int(np.argmax(count > width))
    raise ShapeError(f"event row {int(rows[first])} has {int(count[first])} available items, more than the "
                     f"entrant block's width {width}: build the family from arrays holding it "
                     f"(width = luce.models.max_available(arrays)).")
  width = min(width, available.shape[1])
  order = np.argsort(~available, axis=1, kind="stable")[:, :width].astype(np.int32)
  return order, np.arange(width)[None, :] < count[:, None]


def gather_entrants(arrays: dict, rows: np.ndarray, width: int) -> dict:
  """The events `rows` with each event's available items gathered into `width` slots.

  Slot j of event e holds its j-th available item in catalog order; slots
  past the event's count are padding. Keys::

    entrants       int32[B, width]  catalog id of each slot (pads: an unavailable id)
    available      bool[B, width]   real slots (the first count of each row)
    items          [B, k]           each listed item's slot (-1 pads stay -1)
    item_features  float[B, width, f]  the features of the slot's item
    weights, event_features        as in `arrays`

  Only the gathered features are read from `arrays`. A listed item that is
  not available is a DataError naming the event row.
  """
  rows = np.asarray(rows)
  order, real = entrant_slots(arrays["available"], rows, width)
  b, n = len(rows), np.shape(arrays["available"])[1]
  width = order.shape[1]
  position = np.full((b, n), -1, np.int32)
  np.put_along_axis(position, order, np.where(real, np.arange(width, dtype=np.int32)[None], -1), 1)
  items = np.asarray(arrays["items"][rows])
  listed = items >= 0
  slots = np.where(listed, np.take_along_axis(position, np.maximum(items, 0), 1), -1)
  if (listed & (slots < 0)).any():
    r, c = np.argwhere(listed & (slots < 0))[0]
    raise DataError(f"event row {int(rows[r])}: listed item {int(items[r, c])} (position {int(c)}) "
                    f"is not among the event's available items.")
  return {"entrants": order, "available": real, "items": slots.astype(items.dtype),
          "item_features": arrays["item_features"][rows[:, None], order],
          "weights": arrays["weights"][rows], "event_features": arrays["event_features"][rows]}


def scatter_entrants(values: np.ndarray, entrants: np.ndarray, real: np.ndarray, n: int,
                     fill=-np.inf) -> np.ndarray:
  """float32[B, n]: slot values [B, width] put back at their catalog ids, `fill` elsewhere."""
  out = np.full((len(values), n), fill, np.float32)
  np.put_along_axis(out, entrants, np.where(real, values, fill).astype(np.float32), 1)
  return out


def check_negatives(negatives: int, encoder: str, width: int | None, n_items: int) -> None:
  """ConfigError unless M = `negatives` sampled negatives can train this PL scorer."""
  if negatives < 0:
    raise ConfigError(f"model.negatives={negatives} must be >= 0 (0: the exact likelihood over "
                      f"every entrant).")
  if encoder != "mlp":
    raise ConfigError(f"model.negatives={negatives} needs model.encoder='mlp', whose item scores do "
                      f"not depend on the event's other items; {encoder!r} reads them (attention, "
                      f"the field of available items or the whole catalog), so a sampled block "
                      f"would change the scores themselves. Use model.negatives=0.")
  if width is None:
    raise ConfigError(f"model.negatives={negatives} gathers each event's chosen items and its "
                      f"negatives: it needs model.entrants=True.")
  if negatives >= width:
    raise ConfigError(f"model.negatives={negatives}: the widest event has {width} available items "
                      f"(catalog {n_items}), so at most {width - 1} are unchosen, and {negatives} "
                      f"negatives score no fewer items than the exact loss: use model.negatives=0 "
                      f"(exact) or fewer than {width}.")


class PLFamily:
  """Neural Plackett-Luce: a `PLScorer` whose scores are the PL model's log-weights.

  The loss and the NLL are the exact PL likelihood of the event over its
  available items (the ordered top-k likelihood for rankings, the set
  likelihood for sets); samples are Gumbel-top-k draws from PL(scores).

  `width`: the entrant block (`gather_entrants`): every event scores only its
  available items, at most `width` of them (`max_available` of the data).
  None scores the whole catalog (what the "transformer" encoder needs: its
  time tokens hold every item's history). Both give the same scores from the
  same parameters.

  `negatives`: 0 trains on the exact likelihood over every entrant; M > 0
  trains on the sampled likelihood of each event's chosen items and M
  negatives drawn from its unchosen available items, uniformly (`proposal`
  None: the log(|U| / M) correction) or by PL sampling from the weights
  `proposal` float[n] (the log-q correction), `luce.models.sampled_batch`:
  consistent, exact when M >= |U|. Needs the "mlp" encoder (the only one
  whose item scores do not depend on the event's other items) and the
  entrant block, with M below its width. `nll`, `scores` and `sample` stay
  exact.
  """
  name = "pl"
  nll_kind = "exact"
  batch_keys = BATCH_KEYS
  scores_meaning = ("PL log-weights (P(i first) is the softmax over the available items); "
                    "-inf for unavailable items")

  def __init__(self, model_config, *, n_items: int, kind: str, k: int, item_names: Sequence[str],
               width: int | None = None, negatives: int = 0, proposal=None):
    m = model_config
    self.kind, self.k, self.n_items = kind, k, n_items
    if width is not None and m.encoder == "transformer":
      width = None  # its time tokens are vectors over the whole catalog
    self.width = width
    self.negatives = int(negatives)
    self.proposal = None if proposal is None else np.asarray(proposal, np.float64)
    if self.negatives:
      check_negatives(self.negatives, m.encoder, width, n_items)
    self.model = PLScorer(n_items=n_items, encoder=m.encoder, hidden=m.hidden, depth=m.depth,
                          heads=m.heads, embed_dim=m.embed_dim, dropout=m.dropout,
                          history_columns=history_columns(item_names), state_size=m.get("state_size", 16))
    self._apply = jax.jit(lambda p, b: self.model.apply({"params": p}, b))
    self._nll = jax.jit(lambda s, items, available: event_nll(s, items, available, kind=kind))
    self._draw = jax.jit(
        lambda key, s, forbidden, count, k: pl_sample(
            key, jnp.broadcast_to(s[:, None], (s.shape[0], count) + s.shape[1:]), k,
            forbidden=jnp.broadcast_to(forbidden[:, None], (s.shape[0], count) + s.shape[1:])),
        static_argnums=(3, 4))

  def take(self, arrays: dict, rows: np.ndarray) -> dict:
    """The model's batch of the events `rows`: gathered entrants, or the catalog layout."""
    if self.width is None:
      return take_events(arrays, rows)
    return gather_entrants(arrays, rows, self.width)

  def train_take(self, arrays: dict, rows: np.ndarray, key) -> dict:
    """A training step's batch of the events `rows`: `take`, or with `negatives`
    the chosen items and sampled negatives (`sampled_batch`) drawn from `key`."""
    if not self.negatives:
      return self.take(arrays, rows)
    return sampled_batch(arrays, rows, self.negatives, key, self.proposal)

  def loss(self, scores, batch):
    """float32[B]: the event's PL NLL in nats over the batch's layout: exact, or
    sampled when the batch has an `offset` (`sampled_batch`'s log(|U|/M) correction)."""
    if "offset" in batch:
      scores = scores + batch["offset"]
    return event_nll(scores, batch["items"], batch["available"], kind=self.kind)

  def _slot_scores(self, params, arrays, batch_size):
    """float32[m, width] model scores, masked -inf past each event's entrants."""
    def one(chunk, i):
      return jnp.where(chunk["available"], self._apply(params, chunk), -jnp.inf)
    return chunked(one, arrays, batch_size, dtype=np.float32, take=self.take)

  def scores(self, params, arrays, batch_size: int = 1024) -> np.ndarray:
    """float32[m, n] PL log-weights; -inf for the items an event does not have."""
    s = self._slot_scores(params, arrays, batch_size)
    if self.width is None:
      return s
    entrants, real = entrant_slots(arrays["available"], np.arange(len(s)), self.width)
    return scatter_entrants(s, entrants, real, self.n_items)

  def nll(self, params, arrays, batch_size: int = 1024) -> np.ndarray:
    def one(chunk, i):
      return self._nll(self._apply(params, chunk), chunk["items"], chunk["available"])
    return chunked(one, arrays, batch_size, dtype=np.float64, take=self.take)

  def sample(self, params, arrays, key, samples: int, k: int, batch_size: int = 1024) -> np.ndarray:
    """int32[m, samples, k]: Gumbel-top-k lists of each event's available items (catalog
    ids), drawn in chunks of events (about 2^22 scores a chunk); chunk c uses fold_in(key, c)."""
    m = len(arrays["items"])
    if samples == 0:
      return np.zeros((m, 0, k), np.int32)
    scores = self._slot_scores(params, arrays, batch_size)
    width = scores.shape[1]
    if self.width is None:
      forbidden = ~np.asarray(arrays["available"])
    else:
      entrants, real = entrant_slots(arrays["available"], np.arange(m), self.width)
      forbidden = ~real
    per_chunk = max(1, min(m, (1 << 22) // max(samples * width, 1)))
    work = {"items": arrays["items"], "scores": scores, "forbidden": forbidden}

    def one(chunk, i):
      return self._draw(jax.random.fold_in(key, i), chunk["scores"], chunk["forbidden"], samples, k)
    drawn = chunked(one, work, per_chunk, keys=("items", "scores", "forbidden"), dtype=np.int32)
    if self.width is None:
      return drawn
    ids = np.take_along_axis(entrants, drawn.reshape(m, -1).clip(min=0), 1)
    return np.where(drawn >= 0, ids.reshape(drawn.shape), -1).astype(np.int32)

  def inclusion(self, params, arrays, key, draws: int, k: int, batch_size: int = 1024) -> np.ndarray:
    """float32[m, n]: the fraction of `draws` PL top-k lists of each event holding each item."""
    return inclusion_counts(self.sample(params, arrays, key, draws, k, batch_size), self.n_items)


def inclusion_counts(drawn: np.ndarray, n: int) -> np.ndarray:
  """float32[m, n]: the fraction of each event's drawn lists (int[m, S, k]) holding each item.

  -1 entries (the padding of a list shorter than k) count for no item; any
  other id outside [0, n) is a ShapeError.
  """
  m, samples, k = drawn.shape
  counts = np.zeros((m, n), np.float32)
  if samples:
    ids = drawn.reshape(-1)
    if ((ids < -1) | (ids >= n)).any():
      bad = int(ids[(ids < -1) | (ids >= n)][0])
      raise ShapeError(f"drawn holds item id {bad}, outside [0, {n}) and not the -1 padding.")
    rows = np.repeat(np.arange(m), samples * k)
    real = ids >= 0
    np.add.at(counts, (rows[real], ids[real]), 1.0)
    counts /= samples
  return counts
