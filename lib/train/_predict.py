"""Batch predictions of a trained run (what `luce-predict` writes)."""

from __future__ import annotations

import json

import jax
import numpy as np
import pyarrow as pa

import luce
from luce import metrics
from luce.errors import ConfigError
from luce.train._data import reference_scores
from luce.train._ensemble import fit_stacked_weights


def predict(run, split: str, *, samples: int, draws: int, k: int, seed: int):
  """(pyarrow.Table of predictions, {name: mean hits@k}) for `split`'s events.

  One row per event: `event_id`, `time`, `inclusion_prob` (float32[n]: each
  item's probability of being in the event, counted over `draws` events
  sampled from the model), `top_k` (int32[k]: the k available items with the
  highest scores, best first, ties by lower item id), `top_k_labels` (their
  catalog labels, e.g. "39" for ball 39), `samples` (S sampled events of k
  items) and `scores` (float32[n]: the family's item scores, what hits@k
  ranks by). The table's schema metadata says what each column is and holds
  the catalog (`luce.catalog_labels`, `luce.catalog_names`, in id order), the
  luce version, the checkpoint and step, the data hash and the run's config.

  The hits are `luce.metrics.hits_at_k` of the model's scores and of every
  baseline (ties in expectation: a constant scorer gets exactly k²/n when the
  event lists k of n items) — the same numbers luce-eval reports.
  """
  arrays = run.prepared.split_arrays(split)
  rows = run.prepared.split_range(split)
  fewest = int(arrays["available"].sum(axis=1).min())
  if not 1 <= k <= fewest:
    raise ConfigError(f"--k={k} must be between 1 and the fewest available items in an event "
                      f"of {split} ({fewest}).")
  if samples < 0:
    raise ConfigError(f"--samples={samples} must be >= 0.")
  if draws < 1:
    raise ConfigError(f"--draws={draws} must be >= 1: inclusion_prob is counted over the draws.")
  family, params = run.family, run.params
  fit_stacked_weights(family, params, run.prepared, run.config.train.eval_batch_size)
  key_samples, key_draws = jax.random.split(jax.random.key(seed))
  size = run.config.train.eval_batch_size
  scores = family.scores(params, arrays, size)
  inclusion = family.inclusion(params, arrays, key_draws, draws, k)
  drawn = family.sample(params, arrays, key_samples, samples, k)
  top = np.asarray(metrics.top_k_items(scores, arrays["available"], k))
  hits = {}
  for name, s in {"model": scores, **reference_scores(run.prepared, run.config, split)}.items():
    hits[name] = float(np.mean(np.asarray(
        metrics.hits_at_k(s, arrays["items"], arrays["available"], k=k), np.float64)))
  table = run.prepared.table.slice(rows.start, rows.stop)

  def lists(a, dtype):
    return pa.array([x.tolist() for x in a], type=pa.list_(dtype))

  labels = np.asarray(run.prepared.table.catalog.labels, dtype=object)

  def label_lists(ids):
    return pa.array([[labels[i] if i >= 0 else None for i in row] for row in ids.tolist()],
                    type=pa.list_(pa.string()))
  out = pa.table({
      "event_id": table.events.column("event_id"),
      "time": table.events.column("time"),
      "inclusion_prob": lists(inclusion, pa.float32()),
      "top_k": lists(top, pa.int32()),
      "top_k_labels": label_lists(top),
      "samples": pa.array([x.tolist() for x in drawn], type=pa.list_(pa.list_(pa.int32()))),
      "scores": lists(scores, pa.float32()),
  })
  described = {
      "luce.family": family.name, "luce.split": split, "luce.step": str(run.step),
      "luce.k": str(k), "luce.draws": str(draws), "luce.seed": str(seed),
      "luce.source": run.config.data.source,
      "luce.items": "item ids are the catalog's: id i is luce.catalog_labels[i]",
      "luce.catalog_labels": json.dumps(list(run.prepared.table.catalog.labels)),
      "luce.catalog_names": json.dumps(list(run.prepared.table.catalog.names)),
      "luce.top_k_labels": "the catalog labels of top_k (the source's own item identifiers)",
      "luce.version": luce.__version__,
      "luce.checkpoint": f"{run.checkpoint} (step {run.step})",
      "luce.data_hash": run.prepared.data_hash,
      "luce.config": run.config.to_json(),
      "luce.inclusion_prob": f"fraction of {draws} sampled events holding each item",
      "luce.top_k": f"the {k} available items with the highest scores, ties by lower id",
      "luce.scores": family.scores_meaning,
  }
  return out.replace_schema_metadata(described), hits
