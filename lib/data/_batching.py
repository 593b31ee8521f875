"""Time-ordered splits and a batch iterator that prefetches to the device."""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterator, Mapping

import numpy as np

from luce.data._features import Features
from luce.data._table import EventTable
from luce.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class TimeSplit:
  """Consecutive index ranges [0, a), [a, b), [b, m) of a time-ordered table."""
  train: EventTable
  valid: EventTable
  test: EventTable
  bounds: tuple[int, int, int, int]

  def ranges(self) -> dict[str, range]:
    a, b, c, d = self.bounds
    return {"train": range(a, b), "valid": range(b, c), "test": range(c, d)}


def split_by_time(table: EventTable, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> TimeSplit:
  """Split by time into train, validation and test (fractions of the events).

  A cut never separates events with the same time (it moves later), so every
  validation event comes strictly after every training event.
  """
  if len(fractions) != 3 or any(f < 0 for f in fractions) or not np.isclose(sum(fractions), 1):
    raise ConfigError(f"split fractions {fractions} must be three non-negative numbers summing to 1.")
  m = len(table)
  times = table.times()
  times = times.astype(np.int64) if times.dtype.kind == "M" else times
  cuts = []
  for c in np.cumsum(fractions[:2]):
    i = int(round(c * m))
    while 0 < i < m and times[i] == times[i - 1]:
      i += 1
    cuts.append(i)
  a, b = cuts[0], max(cuts)
  return TimeSplit(table.slice(0, a), table.slice(a, b), table.slice(b, m), (0, a, b, m))


def model_arrays(table: EventTable, features: Features | None = None) -> dict[str, np.ndarray]:
  """The arrays a model step reads, leading axis the event.

  Returns: `items` int32[m, k_max] (-1 pads), `lengths` int32[m], `available`
  bool[m, n], `weights` float32[m], `index` int64[m] (row in the table) and,
  with features, `item_features` [m, n, f] and `event_features` float32[m, g].
  """
  out = {
      "items": table.items_array(),
      "lengths": table.lengths().astype(np.int32),
      "available": features.available if features is not None else table.available_mask(),
      "weights": table.weights().astype(np.float32),
      "index": np.arange(len(table), dtype=np.int64),
  }
  if features is not None:
    out["item_features"] = features.item
    out["event_features"] = features.event
  return out


def batches(arrays: Mapping[str, np.ndarray], batch_size: int, *, shuffle: bool = False,
            seed: int = 0, epochs: int | None = 1, drop_remainder: bool = False,
            prefetch: int = 2, sharding=None, device=None) -> Iterator[dict]:
  """Batches of `arrays` (sliced along axis 0) as JAX arrays on the device.

  Args:
    arrays: name -> array with the same leading size m.
    batch_size: events per batch.
    shuffle: a fresh permutation each epoch (from `seed` and the epoch), else
      time order.
    epochs: passes over the data; None repeats forever.
    drop_remainder: drop the last short batch of an epoch.
    prefetch: batches kept in flight; `jax.device_put` is asynchronous, so the
      copy of batch i+1 overlaps the step on batch i.
    sharding, device: where to put the batch (a `jax.sharding.Sharding`, e.g.
      NamedSharding over the data axis, or a device); default the default device.

  Yields:
    dict name -> jax.Array [batch, ...].
  """
  import jax  # imported here: luce.data works without starting a JAX backend

  sizes = {k: len(v) for k, v in arrays.items()}
  if len(set(sizes.values())) != 1:
    raise ConfigError(f"batches: arrays have different leading sizes {sizes}.")
  if batch_size < 1:
    raise ConfigError(f"batches: batch_size={batch_size} must be positive.")
  m = next(iter(sizes.values()))
  target = sharding if sharding is not None else device

  def host_batches():
    epoch = 0
    while epochs is None or epoch < epochs:
      order = np.random.default_rng([seed, epoch]).permutation(m) if shuffle else None
      stop = m - m % batch_size if drop_remainder else m
      for start in range(0, stop, batch_size):
        idx = slice(start, min(start + batch_size, m)) if order is None else \
            order[start:start + batch_size]
        yield {k: v[idx] for k, v in arrays.items()}
      epoch += 1

  queue: collections.deque = collections.deque()
  source = host_batches()
  for batch in source:
    queue.append(jax.device_put(batch, target))
    if len(queue) > prefetch:
      yield queue.popleft()
  while queue:
    yield queue.popleft()
