"""Batch predictions of a trained run (what `luce-predict` writes)."""

from __future__ import annotations


def predict(run, split: str, *, samples: int, draws: int, k: int, seed: int):
  """(pyarrow.Table of predictions, mean hits@k of top_k) for `split`'s events."""
  import jax
  import numpy as np
  import pyarrow as pa

  from luce import eval_metrics
  from luce.errors import ConfigError

  arrays = run.prepared.arrays[split]
  rows = run.prepared.split_range(split)
  if not 1 <= k <= int(arrays["available"].sum(axis=1).min()):
    raise ConfigError(f"--k={k} must be between 1 and the fewest available items in an event "
                      f"({int(arrays['available'].sum(axis=1).min())}).")
  if samples < 0 or draws < 1:
    raise ConfigError(f"--samples={samples} must be >= 0 and --draws={draws} >= 1.")
  key_samples, key_draws = jax.random.split(jax.random.key(seed))
  if run.config.model.family == "diffusion":
    scores, inclusion, drawn = _predict_diffusion(run, arrays, k, samples, draws,
                                                  key_samples, key_draws)
  else:
    scores, inclusion, drawn = _predict_pl(run, arrays, k, samples, draws, key_samples, key_draws)
  top = eval_metrics.top_k(scores, arrays["available"], k)
  hits = float(eval_metrics.hits_at_k(scores, arrays["items"], arrays["available"], k).mean())
  table = run.prepared.table.slice(rows.start, rows.stop)

  def lists(a, dtype):
    return pa.array([x.tolist() for x in a], type=pa.list_(dtype))

  out = pa.table({
      "event_id": table.events.column("event_id"),
      "time": table.events.column("time"),
      "inclusion_prob": lists(inclusion, pa.float32()),
      "top_k": lists(top, pa.int32()),
      "samples": pa.array([x.tolist() for x in drawn], type=pa.list_(pa.list_(pa.int32()))),
      "scores": lists(scores, pa.float32()),
  })
  return out, hits


def _predict_pl(run, arrays, k, samples, draws, key_samples, key_draws):
  """Scores, Monte Carlo inclusion probabilities and sampled lists of a PL run."""
  import jax
  import numpy as np

  import luce
  from luce.train import predict_scores

  n = run.prepared.n_items
  scores = predict_scores(run.model, run.params, arrays, run.config.train.eval_batch_size)
  forbidden = ~arrays["available"]
  sample = jax.jit(lambda key, s, f, count: luce.pl_sample(
      key, jax.numpy.broadcast_to(s, (count,) + s.shape), k, forbidden=f), static_argnums=3)
  inclusion = np.zeros((len(scores), n), np.float32)
  drawn = np.zeros((len(scores), samples, k), np.int32)
  for i in range(len(scores)):
    lists = np.asarray(sample(jax.random.fold_in(key_draws, i), scores[i], forbidden[i], draws))
    np.add.at(inclusion[i], lists.reshape(-1), 1.0 / draws)
    if samples:
      drawn[i] = np.asarray(sample(jax.random.fold_in(key_samples, i), scores[i], forbidden[i], samples))
  return scores, inclusion, drawn


def _predict_diffusion(run, arrays, k, samples, draws, key_samples, key_draws):
  """The same columns for a Discrete Subset Diffusion run: inclusion
  probabilities from `draws` sampled sets per event, `scores` = their log
  (−inf for items never drawn), samples from the exact (steps = k) sampler."""
  import numpy as np

  from luce.diffusion import sample_for_events
  from luce.errors import ConfigError

  if k != run.model.k:
    raise ConfigError(f"--k={k}: a diffusion model samples sets of exactly k = {run.model.k} "
                      f"items; leave --k out or pass --k={run.model.k}.")
  # Each chunk holds events × draws sampler rows: keep it near 20k rows.
  sets = sample_for_events(run.model, run.params, arrays, key_draws, draws,
                           batch_size=max(1, 20000 // draws))
  m, n = len(sets), run.prepared.n_items
  inclusion = np.zeros((m, n), np.float32)
  np.add.at(inclusion, (np.repeat(np.arange(m), draws * k), sets.reshape(-1)), 1.0 / draws)
  drawn = np.zeros((m, samples, k), np.int32)
  if samples:
    drawn = sample_for_events(run.model, run.params, arrays, key_samples, samples)
  with np.errstate(divide="ignore"):
    scores = np.where(arrays["available"], np.log(inclusion), -np.inf).astype(np.float32)
  return scores, inclusion, drawn
