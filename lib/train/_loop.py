"""The train loop: `train_and_evaluate(config, workdir)`, evaluation and checkpoints."""

from __future__ import annotations

import collections
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from luce import eval_metrics
from luce.errors import ConfigError, NonFiniteError
from luce.models import PLScorer, history_columns
from luce.train._config import checked_config, config_json, flatten, incompatible_changes
from luce.train._data import Prepared, baseline_scores, prepare
from luce.train._step import (BAD_METRICS, BATCH_KEYS, TrainState, batch_sharding, host_copy,
                              init_state, make_mesh, make_optimizer, make_train_step, pl_loss,
                              replicated)


def build_model(config, prepared: Prepared) -> PLScorer:
  m = config.model
  return PLScorer(n_items=prepared.n_items, encoder=m.encoder, hidden=m.hidden, depth=m.depth,
                  heads=m.heads, embed_dim=m.embed_dim, dropout=m.dropout,
                  history_columns=history_columns(prepared.item_names))


def batch_indices(step: int, n_events: int, batch_size: int, seed: int) -> np.ndarray:
  """int64[batch_size]: the training events of `step`, a pure function of it.

  Each epoch is a fresh permutation from (seed, epoch); the last partial batch
  of an epoch is dropped. Being a function of the step is what lets a resumed
  run see the batches an uninterrupted one sees.
  """
  per_epoch = n_events // batch_size
  epoch, position = divmod(step, per_epoch)
  order = _permutation(seed, epoch, n_events)
  return order[position * batch_size:(position + 1) * batch_size]


_perm_cache: dict = {}


def _permutation(seed: int, epoch: int, n: int) -> np.ndarray:
  key = (seed, epoch, n)
  if key not in _perm_cache:
    _perm_cache.clear()
    _perm_cache[key] = np.random.default_rng([seed, epoch]).permutation(n)
  return _perm_cache[key]


def global_batch(arrays: dict, indices: np.ndarray, sharding) -> dict:
  """The batch of `indices` as global jax.Arrays sharded by `sharding`.

  With several processes each one builds only its own slice of the global
  batch (`jax.make_array_from_process_local_data`).
  """
  count, index = jax.process_count(), jax.process_index()
  local = np.array_split(indices, count)[index]
  out = {}
  for key in BATCH_KEYS:
    host = arrays[key][local]
    out[key] = jax.make_array_from_process_local_data(sharding, host,
                                                      (len(indices),) + host.shape[1:])
  return out


def predict_scores(model, params, arrays: dict, batch_size: int) -> np.ndarray:
  """float32[m, n] model scores of every event of `arrays`, computed locally in
  fixed-size chunks (the last one padded) so there is one compilation."""
  m = len(arrays["items"])
  apply = _jitted_apply(model)
  out = []
  size = min(batch_size, max(m, 1))
  for start in range(0, m, size):
    idx = np.arange(start, start + size).clip(max=m - 1)
    chunk = {k: arrays[k][idx] for k in BATCH_KEYS}
    out.append(np.asarray(apply(params, chunk))[:min(size, m - start)])
  n = arrays["available"].shape[1]
  return np.concatenate(out) if out else np.zeros((0, n), np.float32)


_apply_cache: dict = {}


def _jitted_apply(model):
  if model not in _apply_cache:
    _apply_cache[model] = jax.jit(lambda p, b: model.apply({"params": p}, b))
  return _apply_cache[model]


def evaluate(prepared: Prepared, config, split: str, scores: dict[str, np.ndarray]) -> dict:
  """Metrics of each named score array on `split`.

  Args:
    scores: name -> float32[m_split, n] scores of the split's events (the
      model's, a baseline's, the oracle's).

  Returns:
    name -> {"nll_per_event", "hits_at_k", "ndcg_at_k", "events"}.
  """
  arrays = prepared.arrays[split]
  return {name: eval_metrics.summary(s, arrays["items"], arrays["available"], arrays["weights"],
                                     kind=prepared.kind, k=config.data.eval_k)
          for name, s in scores.items()}


def reference_scores(prepared: Prepared, config, split: str,
                     baselines: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
  """The baselines' (and, for synthetic data, the oracle's) scores on `split`."""
  rows = prepared.split_range(split)
  baselines = baselines if baselines is not None else baseline_scores(prepared, config)
  out = {name: s[rows.start:rows.stop] for name, s in baselines.items()}
  if prepared.oracle is not None:
    out["oracle"] = prepared.oracle[rows.start:rows.stop]
  return out


def format_table(results: dict, split: str, k: int, kind: str) -> str:
  """A text table: one row per model, NLL first."""
  first = next(iter(results.values()), {"events": 0})
  # Every row is an exact likelihood: PL rows by the PL formulas, a diffusion
  # row by the subset recursion over its conditionals.
  what = "exact set likelihood" if kind == "set" else "exact likelihood"
  lines = [f"{split}: {first['events']} events, NLL in nats per event ({what})",
           f"  {'':<12}{'nll':>12}{f'hits@{k}':>10}{f'ndcg@{k}':>10}"]
  for name, r in results.items():
    lines.append(f"  {name:<12}{r['nll_per_event']:>12.4f}{r['hits_at_k']:>10.3f}{r['ndcg_at_k']:>10.3f}")
  return "\n".join(lines)


class Checkpoints:
  """Two orbax CheckpointManagers in the workdir: `checkpoints/` (the latest,
  for resuming) and `best/` (the best by validation NLL, for evaluation).

  Each checkpoint holds the TrainState and a JSON `meta` with the config, the
  data hash and the loop's early-stopping counters, so a restore can refuse a
  checkpoint made from other data or an incompatible config.
  """

  def __init__(self, workdir: pathlib.Path, config):
    self.workdir = workdir
    options = dict(cleanup_tmp_directories=True,
                   enable_async_checkpointing=bool(config.train.async_checkpoints))
    self.latest = ocp.CheckpointManager(
        (workdir / "checkpoints").absolute(), item_names=("state", "meta"),
        options=ocp.CheckpointManagerOptions(max_to_keep=config.train.max_to_keep, **options))
    self.best = ocp.CheckpointManager(
        (workdir / "best").absolute(), item_names=("state", "meta"),
        options=ocp.CheckpointManagerOptions(max_to_keep=1, **options))

  def save(self, manager, step: int, state, meta: dict) -> None:
    if step in manager.all_steps():
      return  # a resumed run re-reaching a saved step computes the same state
    # One save in flight at a time: orbax names its multi-process barriers by
    # step, so best/ and checkpoints/ saving the same step at once would collide.
    (self.best if manager is self.latest else self.latest).wait_until_finished()
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                meta=ocp.args.JsonSave(meta)))

  def meta(self, manager, step: int) -> dict:
    return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def restore(self, manager, step: int, target, config, data_hash: str) -> tuple[TrainState, dict]:
    """State and meta of `step`, after checking that they fit this data and config."""
    meta = self.meta(manager, step)
    where = f"{manager.directory}/{step}"
    if meta["data_hash"] != data_hash:
      raise ConfigError(f"checkpoint {where} was trained on data with hash {meta['data_hash'][:16]}..., "
                        f"but {config.data.source!r} now hashes to {data_hash[:16]}...: the data "
                        f"changed. Use a new --workdir to train on it.")
    changes = incompatible_changes(json.loads(meta["config"]), flatten(config))
    if changes:
      raise ConfigError(f"checkpoint {where} was written with another config; these fields "
                        f"differ: {'; '.join(changes)}. Resume with the same config or use a new "
                        f"--workdir.")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    return restored["state"], meta

  def wait(self) -> None:
    self.latest.wait_until_finished()
    self.best.wait_until_finished()

  def close(self) -> None:
    self.latest.close()
    self.best.close()


class _Logger:
  """Metrics as JSON lines (`metrics.jsonl`) and TensorBoard event files, from process 0."""

  def __init__(self, workdir: pathlib.Path, start_step: int, enabled: bool):
    self.enabled = enabled
    if not enabled:
      return
    self.path = workdir / "metrics.jsonl"
    if self.path.exists():  # a resumed run rewrites what came after its checkpoint
      kept = [line for line in self.path.read_text().splitlines()
              if line and json.loads(line)["step"] <= start_step]
      self.path.write_text("".join(line + "\n" for line in kept))
    from tensorboardX import SummaryWriter
    self.writer = SummaryWriter(str(workdir / "tensorboard"), purge_step=start_step or None)

  def write(self, step: int, split: str, values: dict) -> None:
    if not self.enabled:
      return
    with self.path.open("a") as f:
      f.write(json.dumps({"step": step, "split": split, **values}) + "\n")
    for name, value in values.items():
      if isinstance(value, (int, float)):
        self.writer.add_scalar(f"{split}/{name}", value, step)

  def close(self) -> None:
    if self.enabled:
      self.writer.close()


def _check_finite(state, pending: list, first_step: int, checkpoints: Checkpoints) -> dict:
  """Mean of the pending step metrics; raises NonFiniteError after a NaN/inf step."""
  values = jax.device_get(pending)
  bad = int(host_copy(state.bad_step))
  if bad >= 0:
    metric = BAD_METRICS[int(host_copy(state.bad_metric))]
    row = values[bad - first_step] if 0 <= bad - first_step < len(values) else {}
    shown = ", ".join(f"{k}={float(v):.4g}" for k, v in row.items() if k in ("loss", "grad_norm"))
    latest = checkpoints.latest.latest_step()
    kept = (f"the last good checkpoint is step {latest} in {checkpoints.latest.directory}"
            if latest is not None else "no checkpoint was written before it")
    raise NonFiniteError(f"step {bad}: {metric} is not finite ({shown}); training stopped and the "
                         f"parameters were not updated from that step on; {kept}. Lower "
                         f"optimizer.learning_rate or optimizer.clip_norm, or check the data for "
                         f"NaN features.")
  return {k: float(np.mean([v[k] for v in values])) for k in values[0]} if values else {}


def train_and_evaluate(config, workdir, *, devices=None) -> dict:
  """Train the config's model in `workdir` (resuming from its latest
  checkpoint) and evaluate it on the validation split against the baselines.

  Args:
    config: a ConfigDict from `configs/*.py` (or a nested dict naming some of
      the fields of configs/common.py; the rest keep their defaults).
    workdir: folder for checkpoints/, best/, metrics.jsonl, tensorboard/,
      config.json and eval_valid.json; created if absent.
    devices: devices of the data mesh (default all, or `config.mesh.data` of them).

  Returns:
    {"valid": name -> metrics (model, baselines, oracle), "step": steps done,
     "compile_seconds": ..., "events_per_second": steady-state training rate}.
  """
  config = checked_config(config)
  if config.model.family not in ("pl", "diffusion"):
    raise ConfigError(f"model.family={config.model.family!r}; valid: pl, diffusion.")
  if config.model.family == "diffusion":  # same step, checkpoints and metrics; its own eval
    from luce.diffusion import train_diffusion
    return train_diffusion(config, workdir)
  workdir = pathlib.Path(workdir)
  is_main = jax.process_index() == 0
  if is_main:
    workdir.mkdir(parents=True, exist_ok=True)
  say = print if is_main else (lambda *a, **k: None)

  t_data = time.perf_counter()
  prepared = prepare(config)
  train = prepared.arrays["train"]
  mesh = make_mesh(config.mesh.data, devices)
  batch_size, n_train = config.train.batch_size, len(train["items"])
  if batch_size % mesh.size or batch_size % jax.process_count():
    raise ConfigError(f"train.batch_size={batch_size} must be a multiple of the {mesh.size} devices "
                      f"on the data axis and of the {jax.process_count()} processes.")
  if n_train < batch_size:
    raise ConfigError(f"train.batch_size={batch_size} is larger than the {n_train} training events.")
  baselines = baseline_scores(prepared, config)
  references = reference_scores(prepared, config, "valid", baselines)
  say(f"data: {config.data.source} ({prepared.kind}, {len(prepared.table)} events, "
      f"{prepared.n_items} items; train/valid/test {n_train}/{len(prepared.split_range('valid'))}/"
      f"{len(prepared.split_range('test'))}) ready in {time.perf_counter() - t_data:.1f}s")

  model = build_model(config, prepared)
  optimizer = make_optimizer(config)
  init_key, step_key = jax.random.split(jax.random.key(config.seed))
  example = {k: train[k][:batch_size] for k in BATCH_KEYS}
  with jax.set_mesh(mesh):
    state = jax.jit(lambda key: init_state(model, optimizer, example, key),
                    out_shardings=replicated(mesh))(init_key)
  checkpoints = Checkpoints(workdir, config)
  loop = {"best_nll": None, "best_step": None, "evals_since_best": 0, "stopped_early": False}
  start = 0
  latest = checkpoints.latest.latest_step()
  if latest is not None:
    state, meta = checkpoints.restore(checkpoints.latest, latest, state, config, prepared.data_hash)
    loop = meta["loop"]
    start = int(host_copy(state.step))
    say(f"resumed from {checkpoints.latest.directory}/{latest} (step {start})")
  if is_main:
    (workdir / "config.json").write_text(config.to_json(indent=2) + "\n")

  def meta() -> dict:
    return {"config": config_json(config), "data_hash": prepared.data_hash, "loop": dict(loop),
            "source": config.data.source}

  logger = _Logger(workdir, start, is_main)
  step_fn = make_train_step(model, optimizer, pl_loss(prepared.kind), mesh=mesh)
  sharding = batch_sharding(mesh)
  num_steps, t = config.train.num_steps, config.train
  result = {"step": start, "compile_seconds": None, "events_per_second": None}

  with jax.set_mesh(mesh):
    queue: collections.deque = collections.deque()

    def fill(next_step: int) -> int:
      while len(queue) < 2 and next_step < num_steps:
        queue.append(global_batch(train, batch_indices(next_step, n_train, batch_size, config.seed),
                                  sharding))
        next_step += 1
      return next_step

    if start < num_steps and not loop["stopped_early"]:
      queued = fill(start)
      t0 = time.perf_counter()
      step_compiled = step_fn.lower(state, queue[0], step_key).compile()
      result["compile_seconds"] = time.perf_counter() - t0
      say(f"compiled the train step in {result['compile_seconds']:.2f}s "
          f"({mesh.size} device(s), {jax.process_count()} process(es))")
      from tqdm import tqdm
      bar = tqdm(total=num_steps, initial=start, unit="step", dynamic_ncols=True,
                 disable=not (is_main and t.progress_bar))
      pending, first_pending = [], start
      timer_step, timer = start, time.perf_counter()
      for step in range(start, num_steps):
        batch = queue.popleft()
        queued = fill(queued)
        state, metrics = step_compiled(state, batch, step_key)
        pending.append(metrics)
        done = step + 1
        evaluate_now = done % t.eval_every == 0 or done == num_steps
        save_now = evaluate_now or done % t.checkpoint_every == 0
        if done % t.log_every == 0 or save_now:
          train_metrics = _check_finite(state, pending, first_pending, checkpoints)
          now = time.perf_counter()
          rate = (done - timer_step) * batch_size / max(now - timer, 1e-9)
          train_metrics["events_per_second"] = rate
          if done - start > t.log_every or start + t.log_every >= num_steps:
            result["events_per_second"] = rate  # skip the first interval (warm-up)
          logger.write(done, "train", train_metrics)
          bar.set_postfix(loss=f"{train_metrics['loss']:.3f}", events_per_s=f"{rate:,.0f}")
          bar.update(done - bar.n)
          pending, first_pending = [], done
          timer_step, timer = done, now
        if evaluate_now:
          params = host_copy(state.params)
          scores = predict_scores(model, params, prepared.arrays["valid"], t.eval_batch_size)
          valid = evaluate(prepared, config, "valid", {"model": scores})["model"]
          logger.write(done, "valid", valid)
          if loop["best_nll"] is None or valid["nll_per_event"] < loop["best_nll"]:
            loop.update(best_nll=valid["nll_per_event"], best_step=done, evals_since_best=0)
            checkpoints.save(checkpoints.best, done, state, meta())
          else:
            loop["evals_since_best"] += 1
          if t.patience and loop["evals_since_best"] >= t.patience:
            loop["stopped_early"] = True
        if save_now or loop["stopped_early"]:
          checkpoints.save(checkpoints.latest, done, state, meta())
        if loop["stopped_early"]:
          say(f"\nstopped early at step {done}: no better validation NLL in {t.patience} "
              f"evaluations (best {loop['best_nll']:.4f} at step {loop['best_step']})")
          break
      bar.close()
  checkpoints.wait()
  result["step"] = int(host_copy(state.step))
  result["final_params"] = host_copy(state.params)

  # Report the best checkpoint's validation metrics beside the references.
  best_step = checkpoints.best.latest_step()
  params = result["final_params"]
  if best_step is not None:
    params = checkpoints.restore(checkpoints.best, best_step, state, config, prepared.data_hash)[0].params
    params = host_copy(params)
  scores = predict_scores(model, params, prepared.arrays["valid"], t.eval_batch_size)
  valid = evaluate(prepared, config, "valid", {"model": scores, **references})
  result["valid"] = valid
  result["best_step"] = best_step
  say(format_table(valid, f"validation (best step {best_step})", config.data.eval_k, prepared.kind))
  if is_main:
    (workdir / "eval_valid.json").write_text(json.dumps(
        {"split": "valid", "step": best_step, "source": config.data.source, "kind": prepared.kind,
         "nll": "exact", "models": valid}, indent=2) + "\n")
  logger.close()
  checkpoints.close()
  return result


class Run:
  """A trained run loaded from its workdir: config, data, model and parameters.

  Attributes: config, prepared (Prepared), model (PLScorer), params (numpy
  pytree), step (the checkpoint's step), checkpoint ("best" or "latest").
  """

  def __init__(self, config, prepared, model, params, step, checkpoint):
    self.config, self.prepared, self.model = config, prepared, model
    self.params, self.step, self.checkpoint = params, step, checkpoint


def load_run(workdir, *, checkpoint: str = "best") -> Run:
  """Load the run in `workdir`: its saved config, its data (checked against the
  checkpoint's data hash) and the parameters of the best (or latest) checkpoint.

  Raises ConfigError when `workdir` holds no run or the data changed.
  """
  workdir = pathlib.Path(workdir)
  config_path = workdir / "config.json"
  if not config_path.exists():
    raise ConfigError(f"--workdir={workdir}: no config.json there; it is not a luce-train run "
                      f"folder (train one with luce-train --config=... --workdir={workdir}).")
  import ml_collections
  config = checked_config(ml_collections.ConfigDict(json.loads(config_path.read_text())))
  prepared = prepare(config)
  model = build_model(config, prepared)
  if config.model.family == "diffusion":
    from luce.diffusion import build_diffusion_model
    model = build_diffusion_model(config, prepared)
  optimizer = make_optimizer(config)
  example = {k: prepared.arrays["train"][k][:1] for k in BATCH_KEYS}
  state = jax.jit(lambda key: init_state(model, optimizer, example, key))(jax.random.key(0))
  checkpoints = Checkpoints(workdir, config)
  try:
    manager = checkpoints.best if checkpoint == "best" else checkpoints.latest
    step = manager.latest_step()
    if step is None and checkpoint == "best":
      manager, checkpoint = checkpoints.latest, "latest"
      step = manager.latest_step()
    if step is None:
      raise ConfigError(f"--workdir={workdir}: no checkpoint in best/ or checkpoints/ yet.")
    state, _ = checkpoints.restore(manager, step, state, config, prepared.data_hash)
  finally:
    checkpoints.close()
  return Run(config, prepared, model, host_copy(state.params), step, checkpoint)


def evaluate_run(run: Run, split: str) -> dict:
  """Metrics of the run's model, every baseline and (synthetic data) the oracle on `split`."""
  if run.config.model.family == "diffusion":
    from luce.diffusion import evaluate_diffusion_run
    return evaluate_diffusion_run(run, split)
  arrays = run.prepared.arrays[split] if split in run.prepared.arrays else None
  if arrays is None:
    run.prepared.split_range(split)  # raises with the valid names
  scores = predict_scores(run.model, run.params, arrays, run.config.train.eval_batch_size)
  return evaluate(run.prepared, run.config, split,
                  {"model": scores, **reference_scores(run.prepared, run.config, split)})
