"""Subset diffusion on luce.train's pipeline: the model over a batch, its train
objective and its evaluation in exact nats per event.

`DiffusionModel` reuses the neural PL model (`luce.models.PLScorer`, any of its
encoders) for the base logits and feeds the item features as the denoiser's
context; its `__call__` returns the per-event MD4 loss (drawing r and A from
the "dropout" rng stream the train step already provides), so
`luce.train.make_train_step(model, optimizer, lambda out, batch: out)` is its
train step unchanged. Evaluation (`exact_nll`) runs the exact subset recursion
for the diffusion model and, through `pl_logits_fn`, for every score-based
model (the oracle, the baselines, the neural PL model): one path, one unit.
"""

from __future__ import annotations

import math
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from luce.diffusion._denoiser import SubsetDenoiser
from luce.diffusion._likelihood import EXACT_MAX_K, diffusion_loss, exact_set_log_prob, pl_logits_fn
from luce.errors import ConfigError
from luce.models import PLScorer


class DiffusionModel(nn.Module):
  """PL encoder for the base logits + `SubsetDenoiser` with the item features as context.

  Attributes: as `PLScorer` (n_items, encoder, hidden, depth, heads,
  embed_dim, dropout, history_columns), plus k (set size), mixer and
  denoiser_depth of the denoiser.

  Batch: `items` int[B, k], `available` bool[B, n], `item_features`
  float[B, n, f], `event_features` float[B, g].
  """
  n_items: int
  k: int
  encoder: str = "mlp"
  hidden: int = 64
  depth: int = 2
  heads: int = 4
  embed_dim: int = 16
  dropout: float = 0.0
  history_columns: tuple = ((), ())
  mixer: str = "deepsets"
  denoiser_depth: int = 1

  def setup(self):
    self.scorer = PLScorer(n_items=self.n_items, encoder=self.encoder, hidden=self.hidden,
                           depth=self.depth, heads=self.heads, embed_dim=self.embed_dim,
                           dropout=self.dropout, history_columns=self.history_columns)
    self.denoiser = SubsetDenoiser(n_items=self.n_items, k=self.k, hidden=self.hidden,
                                   depth=self.denoiser_depth, mixer=self.mixer, heads=self.heads)

  def encode(self, batch, deterministic: bool = True):
    """Per-event encoding (`SubsetDenoiser.encode` with the PL scores as base)."""
    base = self.scorer(batch, deterministic=deterministic)
    return self.denoiser.encode(batch["item_features"], base)

  def denoise(self, enc, visible, slots_left):
    return self.denoiser.denoise(enc, visible, slots_left)

  def __call__(self, batch, deterministic: bool = True):
    """float32[B]: the one-sample MD4 loss of each event (r, A from the "dropout" rng)."""
    enc = self.encode(batch, deterministic)
    key = jax.random.key(0) if deterministic else self.make_rng("dropout")
    items = jnp.asarray(batch["items"], jnp.int32)
    return diffusion_loss(lambda v, r: self.denoiser.denoise(enc, v, r), items, self.n_items, key,
                          available=batch["available"])


def build_diffusion_model(config, prepared) -> DiffusionModel:
  """The config's model section as a DiffusionModel (family "diffusion")."""
  from luce.models import history_columns
  if prepared.kind != "set":
    raise ConfigError(f"model.family='diffusion' trains on unordered sets; {config.data.source} "
                      f"holds {prepared.kind}s (the ordered variant is "
                      f"luce.diffusion.ordered_diffusion_loss, not wired to luce-train yet).")
  k = int(prepared.arrays["train"]["items"].shape[1])
  m = config.model
  return DiffusionModel(n_items=prepared.n_items, k=k, encoder=m.encoder, hidden=m.hidden,
                        depth=m.depth, heads=m.heads, embed_dim=m.embed_dim, dropout=m.dropout,
                        history_columns=history_columns(prepared.item_names),
                        mixer=m.get("mixer", "deepsets"), denoiser_depth=m.get("denoiser_depth", 1))


_KEYS = ("items", "available", "weights", "item_features", "event_features")


def exact_nll(arrays, *, model=None, params=None, scores=None, batch_size: int = 256) -> np.ndarray:
  """float64[m]: exact -log p(S) of every event of `arrays`, in nats.

  Give either a DiffusionModel and its params, or float[m, n] scores of a PL
  model (the oracle, a baseline, the neural PL scorer): both go through
  `exact_set_log_prob`, fixed-size chunks (one compile).
  """
  items = np.asarray(arrays["items"])
  m, k = items.shape
  if k > EXACT_MAX_K:
    raise ConfigError(f"exact NLL needs k <= {EXACT_MAX_K} (2^k calls per event); k = {k}.")
  n = arrays["available"].shape[1]
  fn = _nll_fn(model, n) if model is not None else _pl_nll
  out = []
  size = min(batch_size, max(m, 1))
  for start in range(0, m, size):
    idx = np.arange(start, start + size).clip(max=m - 1)
    chunk = {key: arrays[key][idx] for key in _KEYS}
    if model is None:
      value = fn(jnp.asarray(np.asarray(scores)[idx], jnp.float32), chunk)
    else:
      value = fn(params, chunk)
    out.append(np.asarray(value, np.float64)[:min(size, m - start)])
  return np.concatenate(out) if out else np.zeros(0)


@jax.jit
def _pl_nll(scores, chunk):
  items = jnp.asarray(chunk["items"], jnp.int32)
  return -exact_set_log_prob(pl_logits_fn(scores), items, scores.shape[1],
                             available=chunk["available"])


_nll_cache: dict = {}


def _nll_fn(model, n):
  if model not in _nll_cache:
    def nll(params, chunk):
      enc = model.apply({"params": params}, chunk, method="encode")
      fn = lambda v, r: model.apply({"params": params}, enc, v, r, method="denoise")
      return -exact_set_log_prob(fn, jnp.asarray(chunk["items"], jnp.int32), n,
                                 available=chunk["available"])
    _nll_cache[model] = jax.jit(nll)
  return _nll_cache[model]


def nll_summary(nll, weights=None, *, resamples: int = 2000, seed: int = 0) -> dict:
  """Mean NLL per event with a bootstrap 95% interval (events resampled)."""
  nll = np.asarray(nll, np.float64)
  rng = np.random.default_rng(seed)
  means = nll[rng.integers(0, len(nll), (resamples, len(nll)))].mean(axis=1)
  lo, hi = np.quantile(means, [0.025, 0.975])
  return {"nll_per_event": float(nll.mean()), "ci95": (float(lo), float(hi)), "events": len(nll)}


def train_diffusion(config, *, log=print) -> dict:
  """Train the diffusion family on the config's data with luce.train's step and
  evaluate on the validation split, next to the baselines and (synthetic) the
  oracle, all in exact nats per event.

  Returns {"model": DiffusionModel, "params", "prepared", "valid": name ->
  nll_summary, "events_per_second", "compile_seconds"}. No checkpoints yet.
  """
  from luce.train import (checked_config, init_state, make_mesh, make_optimizer, make_train_step,
                          prepare, reference_scores, batch_indices)
  from luce.train._loop import global_batch
  from luce.train._step import batch_sharding, replicated, host_copy

  config = checked_config(config)
  prepared = prepare(config)
  train = prepared.arrays["train"]
  model = build_diffusion_model(config, prepared)
  optimizer = make_optimizer(config)
  mesh = make_mesh(config.mesh.data)
  batch_size = config.train.batch_size
  init_key, step_key = jax.random.split(jax.random.key(config.seed))
  example = {key: train[key][:batch_size] for key in _KEYS}
  with jax.set_mesh(mesh):
    state = jax.jit(lambda key: init_state(model, optimizer, example, key),
                    out_shardings=replicated(mesh))(init_key)
    step_fn = make_train_step(model, optimizer, lambda out, batch: out, mesh=mesh)
    sharding = batch_sharding(mesh)
    n_train = len(train["items"])
    batch = global_batch(train, batch_indices(0, n_train, batch_size, config.seed), sharding)
    t0 = time.perf_counter()
    compiled = step_fn.lower(state, batch, step_key).compile()
    compile_s = time.perf_counter() - t0
    losses, t_start = [], None
    for step in range(config.train.num_steps):
      if step == 10:
        jax.block_until_ready(state)
        t_start = time.perf_counter()
      batch = global_batch(train, batch_indices(step, n_train, batch_size, config.seed), sharding)
      state, metrics = compiled(state, batch, step_key)
      losses.append(metrics["loss"])
      if (step + 1) % config.train.log_every == 0:
        log(f"step {step + 1}: MD4 loss {float(np.mean(jax.device_get(losses[-config.train.log_every:]))):.4f}")
    jax.block_until_ready(state)
    rate = ((config.train.num_steps - 10) * batch_size / (time.perf_counter() - t_start)
            if t_start else None)
  if int(host_copy(state.bad_step)) >= 0:
    raise FloatingPointError(f"diffusion training hit a non-finite loss at step {int(state.bad_step)}.")
  params = host_copy(state.params)
  valid = prepared.arrays["valid"]
  results = {"diffusion": nll_summary(exact_nll(valid, model=model, params=params))}
  for name, s in reference_scores(prepared, config, "valid").items():
    results[name] = nll_summary(exact_nll(valid, scores=s))
  return {"model": model, "params": params, "prepared": prepared, "valid": results,
          "events_per_second": rate, "compile_seconds": compile_s}


def format_nll_table(results: dict, title: str) -> str:
  lines = [title, f"  {'':<12}{'nll':>10}  {'95% CI':>19}"]
  for name, r in results.items():
    lo, hi = r["ci95"]
    lines.append(f"  {name:<12}{r['nll_per_event']:>10.4f}  [{lo:>8.4f}, {hi:>8.4f}]")
  return "\n".join(lines)
