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


def train_diffusion(config, workdir=None, *, log=print) -> dict:
  """Train the diffusion family with luce.train's step and evaluate it on the
  validation split next to the baselines and (synthetic) the oracle, all in
  exact nats per event (`exact_nll`).

  With a `workdir` it is a luce-train run: config.json, metrics.jsonl (train
  loss every train.log_every steps, exact validation NLL every
  train.eval_every), orbax checkpoints in checkpoints/ and best/ (luce.train's
  `Checkpoints`: state + config + data hash), resumed from the latest one,
  and eval_valid.json at the end.

  Returns {"model": DiffusionModel, "params" (the best), "prepared",
  "valid": name -> nll_summary, "events_per_second", "compile_seconds", "step"}.
  """
  import json
  import pathlib
  from luce.train import (checked_config, init_state, make_mesh, make_optimizer, make_train_step,
                          prepare, reference_scores, batch_indices, Checkpoints)
  from luce.train._config import config_json
  from luce.train._loop import global_batch
  from luce.train._step import batch_sharding, replicated, host_copy

  config = checked_config(config)
  prepared = prepare(config)
  train = prepared.arrays["train"]
  valid = prepared.arrays["valid"]
  model = build_diffusion_model(config, prepared)
  optimizer = make_optimizer(config)
  mesh = make_mesh(config.mesh.data)
  batch_size, t = config.train.batch_size, config.train
  init_key, step_key = jax.random.split(jax.random.key(config.seed))
  example = {key: train[key][:batch_size] for key in _KEYS}
  with jax.set_mesh(mesh):
    state = jax.jit(lambda key: init_state(model, optimizer, example, key),
                    out_shardings=replicated(mesh))(init_key)
  checkpoints, start, best = None, 0, {"nll": None, "step": None, "evals_since_best": 0}
  if workdir is not None:
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    checkpoints = Checkpoints(workdir, config)
    latest = checkpoints.latest.latest_step()
    if latest is not None:
      state, meta = checkpoints.restore(checkpoints.latest, latest, state, config, prepared.data_hash)
      start, best = int(host_copy(state.step)), meta["loop"]
      log(f"resumed from {checkpoints.latest.directory}/{latest} (step {start})")
    (workdir / "config.json").write_text(config.to_json(indent=2) + "\n")
    metrics_path = workdir / "metrics.jsonl"
    if metrics_path.exists():  # a resumed run rewrites what came after its checkpoint
      kept = [line for line in metrics_path.read_text().splitlines()
              if line and json.loads(line)["step"] <= start]
      metrics_path.write_text("".join(line + "\n" for line in kept))

  def write(step, split, values):
    if workdir is not None:
      with metrics_path.open("a") as f:
        f.write(json.dumps({"step": step, "split": split, **values}) + "\n")

  def meta():
    return {"config": config_json(config), "data_hash": prepared.data_hash, "loop": dict(best),
            "source": config.data.source, "family": "diffusion"}

  n_train = len(train["items"])
  rate, compile_s = None, None
  with jax.set_mesh(mesh):
    step_fn = make_train_step(model, optimizer, lambda out, batch: out, mesh=mesh)
    sharding = batch_sharding(mesh)
    if start < t.num_steps:
      batch = global_batch(train, batch_indices(start, n_train, batch_size, config.seed), sharding)
      t0 = time.perf_counter()
      compiled = step_fn.lower(state, batch, step_key).compile()
      compile_s = time.perf_counter() - t0
      log(f"compiled the diffusion train step in {compile_s:.2f}s")
    losses, timer = [], (start, time.perf_counter())
    for step in range(start, t.num_steps):
      batch = global_batch(train, batch_indices(step, n_train, batch_size, config.seed), sharding)
      state, metrics = compiled(state, batch, step_key)
      losses.append(metrics["loss"])
      done = step + 1
      if done % t.log_every == 0 or done == t.num_steps:
        loss = float(np.mean(jax.device_get(losses)))
        now = time.perf_counter()
        rate = (done - timer[0]) * batch_size / max(now - timer[1], 1e-9)
        losses, timer = [], (done, now)
        write(done, "train", {"loss": loss, "events_per_second": rate})
        log(f"step {done}: MD4 loss {loss:.4f} ({rate:,.0f} events/s)")
      if checkpoints is not None and (done % t.eval_every == 0 or done == t.num_steps):
        nll = float(exact_nll(valid, model=model, params=host_copy(state.params)).mean())
        write(done, "valid", {"nll_per_event": nll})
        if best["nll"] is None or nll < best["nll"]:
          best.update(nll=nll, step=done, evals_since_best=0)
          checkpoints.save(checkpoints.best, done, state, meta())
        else:
          best["evals_since_best"] = best.get("evals_since_best", 0) + 1
      stop = bool(t.patience) and best.get("evals_since_best", 0) >= t.patience
      if checkpoints is not None and (done % t.checkpoint_every == 0 or done == t.num_steps or stop):
        checkpoints.save(checkpoints.latest, done, state, meta())
      if stop:
        log(f"stopped early at step {done}: no better validation NLL in {t.patience} evaluations "
            f"(best {best['nll']:.4f} at step {best['step']})")
        break
  if int(host_copy(state.bad_step)) >= 0:
    raise FloatingPointError(f"diffusion training hit a non-finite loss at step "
                             f"{int(host_copy(state.bad_step))}; lower optimizer.learning_rate.")
  params = host_copy(state.params)
  if checkpoints is not None:
    checkpoints.wait()
    if best["step"] is not None:
      restored, _ = checkpoints.restore(checkpoints.best, best["step"], state, config, prepared.data_hash)
      params = host_copy(restored.params)
    checkpoints.close()
  results = {"diffusion": nll_summary(exact_nll(valid, model=model, params=params))}
  for name, s in reference_scores(prepared, config, "valid").items():
    results[name] = nll_summary(exact_nll(valid, scores=s))
  which = f"best step {best['step']}" if best["step"] is not None else f"final step {t.num_steps}"
  log(format_nll_table(results, f"validation ({which}): {len(valid['items'])} "
                                f"events, exact NLL in nats per event (diffusion: exact, by the "
                                f"subset recursion)"))
  if workdir is not None:
    (workdir / "eval_valid.json").write_text(json.dumps(
        {"split": "valid", "step": best["step"], "source": config.data.source, "kind": "set",
         "family": "diffusion", "nll": "exact", "models": results}, indent=2) + "\n")
  return {"model": model, "params": params, "prepared": prepared, "valid": results,
          "events_per_second": rate, "compile_seconds": compile_s, "step": int(host_copy(state.step))}


def format_nll_table(results: dict, title: str) -> str:
  lines = [title, f"  {'':<12}{'nll':>10}  {'95% CI':>19}"]
  for name, r in results.items():
    lo, hi = r["ci95"]
    lines.append(f"  {name:<12}{r['nll_per_event']:>10.4f}  [{lo:>8.4f}, {hi:>8.4f}]")
  return "\n".join(lines)


def first_pick_scores(model, params, arrays, batch_size: int = 256) -> np.ndarray:
  """float32[m, n]: the denoiser's logits with nothing visible (r = k), the
  scores hits@k and NDCG@k rank items by."""
  m = len(arrays["items"])
  key = (model, "first")
  if key not in _nll_cache:
    def first(params, chunk):
      enc = model.apply({"params": params}, chunk, method="encode")
      vis = jnp.zeros(chunk["available"].shape, bool)
      r = jnp.full(vis.shape[:1], model.k, jnp.int32)
      return model.apply({"params": params}, enc, vis, r, method="denoise")
    _nll_cache[key] = jax.jit(first)
  out, size = [], min(batch_size, max(m, 1))
  for start in range(0, m, size):
    idx = np.arange(start, start + size).clip(max=m - 1)
    chunk = {name: arrays[name][idx] for name in _KEYS}
    out.append(np.asarray(_nll_cache[key](params, chunk))[:min(size, m - start)])
  return np.concatenate(out)


def evaluate_diffusion_run(run, split: str) -> dict:
  """`luce.train.evaluate_run` for a diffusion run: the model's exact NLL (subset
  recursion), hits@k / NDCG@k from its first-pick logits, and the baselines
  (and oracle) as luce.train evaluates them (the same recursion)."""
  from luce import eval_metrics
  from luce.train import evaluate, reference_scores
  if split not in run.prepared.arrays:
    run.prepared.split_range(split)  # raises with the valid names
  arrays = run.prepared.arrays[split]
  model = eval_metrics.summary(first_pick_scores(run.model, run.params, arrays), arrays["items"],
                               arrays["available"], arrays["weights"], kind="set",
                               k=run.config.data.eval_k)
  nll = exact_nll(arrays, model=run.model, params=run.params)
  weights = np.asarray(arrays["weights"], np.float64)
  model["nll_per_event"] = float(np.sum(nll * weights) / max(np.sum(weights), 1e-12))
  return {"model": model, **evaluate(run.prepared, run.config, split,
                                     reference_scores(run.prepared, run.config, split))}


def sample_for_events(model, params, arrays, key, samples: int, *, steps=None,
                      batch_size: int = 256) -> np.ndarray:
  """int32[m, samples, k]: sets drawn from a DiffusionModel for every event of
  `arrays`, each a valid k-set of the event's available items (the
  `sample_sets` loop, context encoded once per event).

  What `luce-predict`'s `samples` and `inclusion_prob` columns need for this family.
  """
  m = len(arrays["items"])
  k = model.k
  cache_key = (model, "sample", samples, steps)
  if cache_key not in _nll_cache:
    def draw(params, chunk, key):
      enc = model.apply({"params": params}, chunk, method="encode")
      enc = jax.tree.map(lambda x: jnp.repeat(x, samples, axis=0) if x.shape[0] > 1 else x, enc)
      avail = jnp.repeat(chunk["available"], samples, axis=0)
      fn = lambda v, r: model.apply({"params": params}, enc, v, r, method="denoise")
      rows = avail.shape[0]
      # the feasibility check ran on the concrete availability (below)
      from luce.diffusion._sampler import _sample
      from luce.kernels import topk_sample
      return _sample(key, fn, model.n_items, k, rows, steps or k, avail, None, None,
                     topk_sample.resolve_impl("auto"))
    _nll_cache[cache_key] = jax.jit(draw)
  short = np.asarray(arrays["available"]).sum(axis=1) < k
  if short.any():
    from luce.errors import InfeasibleError
    raise InfeasibleError(f"event {int(np.argmax(short))} has fewer than k = {k} available items.")
  out, size = [], min(batch_size, max(m, 1))
  for i, start in enumerate(range(0, m, size)):
    idx = np.arange(start, start + size).clip(max=m - 1)
    chunk = {name: arrays[name][idx] for name in _KEYS}
    sets = np.asarray(_nll_cache[cache_key](params, chunk, jax.random.fold_in(key, i)))
    out.append(sets.reshape(size, samples, k)[:min(size, m - start)])
  return np.concatenate(out)
