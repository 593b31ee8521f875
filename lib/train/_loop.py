"""The one train loop: `Trainer.fit`, and `train_and_evaluate(config, workdir)` on it.

Every run of luce trains through `Trainer.fit`: luce-train (one fit on the
training split, with validation, early stopping and the best checkpoint),
luce-eval and luce-predict (which load what it saved) and every fold of the
walk-forward backtest (one fit per fold on its window, warm-started). So a
NaN, a resume, a checkpoint, a log line and a batch are handled one way for
both model families.
"""

from __future__ import annotations

import collections
import json
import pathlib
import time

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from tqdm import tqdm

import luce.data
import luce.kernels
from luce import metrics
from luce._lazy import LazyModule
from luce.errors import CheckpointError, ConfigError, NonFiniteError
from luce.models import PLFamily, take_events
from luce.train._config import (TRAIN_REPORT_ONLY, FAMILIES, checked_config, config_json, flatten,
                                incompatible_changes)
from luce.train._data import Prepared, baseline_scores, prepare, reference_scores
from luce.train._ensemble import EnsembleFamily, fit_stacked_weights, member_model_configs
from luce.train._step import (BAD_METRICS, TrainState, batch_sharding, host_copy, init_state,
                              make_mesh, make_optimizer, make_train_step, replicated)

# Grain takes 1-3 s to import: loaded when the store pipeline is first used.
grain = LazyModule("grain")


# Tags the negatives' seed apart from the batch order's (both start from the data seed).
NEGATIVES_STREAM = 0x6E6567


def build_family(config, prepared: Prepared):
  """The family object of `config.model.family` for `prepared`'s events; an
  `EnsembleFamily` of the members when `model.ensemble` names any."""
  members = member_model_configs(config.model)
  if members:
    return EnsembleFamily([_one_family(m, prepared) for m in members], n_items=prepared.n_items,
                          kind=prepared.kind, k=prepared.k, weights=config.model.ensemble.weights)
  return _one_family(config.model, prepared)


def _one_family(model_config, prepared: Prepared):
  make = FAMILIES[model_config.family]  # checked_config refused any other name
  extra = {}
  if make is PLFamily and model_config.entrants:
    extra["width"] = prepared.max_available
    extra["negatives"] = model_config.negatives
    if model_config.negatives and model_config.negative_proposal == "popularity":
      extra["proposal"] = popularity(prepared.arrays["train"]["items"], prepared.n_items)
  return make(model_config, n_items=prepared.n_items, kind=prepared.kind, k=prepared.k,
              item_names=prepared.item_names, **extra)


def popularity(items, n_items: int) -> np.ndarray:
  """float64[n]: 1 + the times each item is listed in `items` (int[m, k], -1 padded): the
  proposal of `model.negative_proposal = "popularity"`, from the training split only."""
  items = np.asarray(items)
  return 1.0 + np.bincount(items[items >= 0], minlength=n_items)[:n_items].astype(np.float64)


# ---- batches ------------------------------------------------------------------------------------

def batch_indices(step: int, n_events: int, batch_size: int, seed) -> np.ndarray:
  """int64[batch_size]: the events (0..n_events-1) of the `step`-th batch of a fit.

  The one batch rule: an endless sequence of epochs, each a fresh permutation
  of the events drawn from (seed, epoch); batch t is elements [tB, (t+1)B) of
  it, so a batch may span two epochs and a window smaller than the batch
  works. Being a pure function of the step is what lets a resumed run see the
  batches an uninterrupted one sees. `seed` is an int or a tuple of ints.
  """
  if n_events < 1:
    raise ConfigError("no training events: the training split or window is empty.")
  seed = tuple(seed) if isinstance(seed, (tuple, list)) else (int(seed),)
  out, position, end = [], step * batch_size, (step + 1) * batch_size
  while position < end:
    epoch, offset = divmod(position, n_events)
    take = min(end - position, n_events - offset)
    out.append(_permutation(seed, epoch, n_events)[offset:offset + take])
    position += take
  return np.concatenate(out)


_perm_cache: dict = {}


def _permutation(seed: tuple, epoch: int, n: int) -> np.ndarray:
  key = (seed, epoch, n)
  if key not in _perm_cache:
    if len(_perm_cache) > 4:
      _perm_cache.clear()
    _perm_cache[key] = np.random.default_rng([*seed, epoch]).permutation(n)
  return _perm_cache[key]


def local_global_batch(host: dict, global_size: int, sharding, take=take_events) -> dict:
  """This process's `host` batch (`global_size / process_count` events, from its own
  share of a store: `luce.data.store_dataset`) as its slice of the global jax.Arrays."""
  local = take(host, np.arange(len(host["items"])))
  return {key: jax.make_array_from_process_local_data(sharding, value, (global_size,) + value.shape[1:])
          for key, value in local.items()}


class _IteratorState:
  """A saved input-pipeline state (bytes) in the shape Grain's orbax handler saves and
  restores (`get_state`, `set_state`, `start_prefetch`)."""

  def __init__(self, state: bytes = b""):
    self.state = state

  def get_state(self) -> bytes:
    return self.state

  def set_state(self, state: bytes) -> None:
    self.state = state

  def start_prefetch(self) -> None:
    pass


def global_batch(arrays: dict, indices: np.ndarray, sharding, take=take_events) -> dict:
  """The batch of `indices` as global jax.Arrays sharded by `sharding`.

  `take(arrays, rows)` builds the host batch (a family's `take`: gathered
  entrants for PL). With several processes each one builds only its own slice
  of the global batch (`jax.make_array_from_process_local_data`).
  """
  count, index = jax.process_count(), jax.process_index()
  local = np.array_split(indices, count)[index]
  return {key: jax.make_array_from_process_local_data(sharding, host, (len(indices),) + host.shape[1:])
          for key, host in take(arrays, local).items()}


# ---- checkpoints and logs -----------------------------------------------------------------------

class Checkpoints:
  """Orbax CheckpointManagers in a folder: `checkpoints/` (the latest, for
  resuming) and, with `best=True`, `best/` (the best by validation NLL).

  Each checkpoint holds the TrainState and a JSON `meta` with the config, the
  data hash and the loop's early-stopping counters, so a restore can refuse a
  checkpoint made from other data or an incompatible config. With
  `data.pipeline = "store"` the latest checkpoints also hold `data`: the Grain
  pipeline's state after the checkpoint's last batch, one file per process.
  """

  def __init__(self, workdir: pathlib.Path, config, *, best: bool = True):
    self.workdir = pathlib.Path(workdir)
    options = dict(cleanup_tmp_directories=True,
                   enable_async_checkpointing=bool(config.train.async_checkpoints))
    self.with_data = config.data.pipeline == "store"
    self.latest = ocp.CheckpointManager(
        (self.workdir / "checkpoints").absolute(),
        item_names=("state", "meta", "data") if self.with_data else ("state", "meta"),
        options=ocp.CheckpointManagerOptions(max_to_keep=config.train.max_to_keep, **options))
    self.best = None
    if best:
      self.best = ocp.CheckpointManager(
          (self.workdir / "best").absolute(), item_names=("state", "meta"),
          options=ocp.CheckpointManagerOptions(max_to_keep=1, **options))

  def _managers(self):
    return [m for m in (self.latest, self.best) if m is not None]

  def save(self, manager, step: int, state, meta: dict, data_state: bytes | None = None) -> None:
    if step in manager.all_steps():
      return  # a resumed run re-reaching a saved step computes the same state
    # One save in flight at a time: orbax names its multi-process barriers by
    # step, so best/ and checkpoints/ saving the same step at once would collide.
    for other in self._managers():
      if other is not manager:
        other.wait_until_finished()
    items = dict(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    if manager is self.latest and self.with_data:
      if data_state is None:
        raise CheckpointError(f"step {step}: no input-pipeline state to save with the checkpoint.")
      items["data"] = grain.checkpoint.CheckpointSave(_IteratorState(data_state))
    manager.save(step, args=ocp.args.Composite(**items))

  def data_state(self, step: int) -> bytes:
    """The input pipeline's state saved with latest checkpoint `step` (store pipeline)."""
    try:
      restored = self.latest.restore(step, args=ocp.args.Composite(
          data=grain.checkpoint.CheckpointRestore(_IteratorState())))
    except Exception as err:  # noqa: BLE001 (orbax and Grain errors of a missing or damaged item)
      raise CheckpointError(f"checkpoint {self.latest.directory}/{step} holds no readable input-"
                            f"pipeline state ({type(err).__name__}: {err}); it cannot resume the "
                            f"store pipeline bit for bit. Use a new --workdir.") from None
    return restored["data"].get_state()

  def meta(self, manager, step: int) -> dict:
    return manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]

  def restore(self, manager, step: int, target, config, data_hash: str, *,
              ignore: tuple = ()) -> tuple[TrainState, dict]:
    """State and meta of `step`, after checking that they fit this data and config
    (fields in `ignore` and `REPORT_ONLY` may differ)."""
    meta = self.meta(manager, step)
    where = f"{manager.directory}/{step}"
    saved = json.loads(meta["config"])
    saved_source = saved.get("data.source")
    if saved_source is not None and saved_source != config.data.source:
      raise ConfigError(f"checkpoint {where} was trained on data.source={saved_source!r}, but this "
                        f"config reads data.source={config.data.source!r}: the source changed. Set "
                        f"it back to resume, or use a new --workdir for the new source.")
    if meta["data_hash"] != data_hash:
      raise ConfigError(f"checkpoint {where} was trained on data with hash {meta['data_hash'][:16]}..., "
                        f"but {config.data.source!r} now hashes to {data_hash[:16]}...: the data "
                        f"changed. Use a new --workdir to train on it.")
    changes = incompatible_changes(saved, flatten(config), ignore=ignore)
    if changes:
      raise ConfigError(f"checkpoint {where} was written with another config; these fields "
                        f"differ: {'; '.join(changes)}. Resume with the same config or use a new "
                        f"--workdir.")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))
    return restored["state"], meta

  def restore_newest(self, manager, target, config, data_hash: str, *, ignore: tuple = (),
                     say=print) -> tuple[int | None, TrainState | None, dict | None]:
    """(step, state, meta) of the newest step of `manager` that reads back whole;
    (None, None, None) when the folder has no step.

    A step that does not read (a truncated array file, an empty step folder, an
    emptied metadata file) is skipped with a message naming it and why, and
    moved aside to `unreadable-STEP` in the same folder (never deleted), so
    the resumed run can write that step again. A step of other data or an
    incompatible config is a ConfigError, as `restore` says. When no step
    reads: CheckpointError naming the folder and each step's reason.
    """
    folder = pathlib.Path(manager.directory)
    reasons = []
    for step in sorted(manager.all_steps(), reverse=True):
      try:
        state, meta = self.restore(manager, step, target, config, data_hash, ignore=ignore)
      except ConfigError:
        raise
      except Exception as err:  # noqa: BLE001 (orbax, tensorstore and JSON errors of a damaged step)
        reason = " ".join(str(err).split())[:200] or type(err).__name__
        reasons.append(f"step {step}: {type(err).__name__}: {reason}")
        aside = folder / f"unreadable-{step}"
        if jax.process_index() == 0 and (folder / str(step)).exists() and not aside.exists():
          (folder / str(step)).rename(aside)
          where = f"moved to {aside}"
        else:
          where = "left in place"
        say(f"checkpoint {folder}/{step} is unreadable ({type(err).__name__}: {reason[:120]}); "
            f"skipped it ({where}, not deleted)")
        continue
      if reasons:
        manager.reload()
      return step, state, meta
    if reasons:
      manager.reload()
      raise CheckpointError(f"no checkpoint in {folder} reads back whole: {'; '.join(reasons)}. "
                            f"Use a new --workdir, or restore the folder from a backup.")
    return None, None, None

  def wait(self) -> None:
    for manager in self._managers():
      manager.wait_until_finished()

  def close(self) -> None:
    for manager in self._managers():
      manager.close()


def _summary_writer():
  """tensorboardX's SummaryWriter, imported on first use. Its import imports torch
  when torch is installed (1.6 s here), only to accept torch tensors, which luce never
  passes: unless torch is already loaded, the import runs with torch hidden."""
  import sys
  if "torch" in sys.modules or "tensorboardX" in sys.modules:
    from tensorboardX import SummaryWriter
    return SummaryWriter
  sys.modules["torch"] = None   # `import torch` raises ImportError meanwhile
  try:
    from tensorboardX import SummaryWriter
  finally:
    del sys.modules["torch"]
  return SummaryWriter


class Logger:
  """Metrics as JSON lines (`metrics.jsonl`) and TensorBoard event files, from process 0 only."""

  def __init__(self, folder: pathlib.Path, start_step: int):
    self.enabled = jax.process_index() == 0
    if not self.enabled:
      return
    folder.mkdir(parents=True, exist_ok=True)
    self.path = folder / "metrics.jsonl"
    if self.path.exists():  # a resumed run rewrites what came after its checkpoint
      kept = [line for line in self.path.read_text().splitlines()
              if line and json.loads(line)["step"] <= start_step]
      self.path.write_text("".join(line + "\n" for line in kept))
    self.writer = _summary_writer()(str(folder / "tensorboard"), purge_step=start_step or None)

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


def _check_finite(state, pending: list, first_step: int, checkpoints, label: str) -> dict:
  """Mean of the pending step metrics; raises NonFiniteError after a NaN/inf step."""
  values = jax.device_get(pending)
  bad = int(host_copy(state.bad_step))
  if bad >= 0:
    metric = BAD_METRICS[int(host_copy(state.bad_metric))]
    row = values[bad - first_step] if 0 <= bad - first_step < len(values) else {}
    shown = ", ".join(f"{k}={float(v):.4g}" for k, v in row.items() if k in ("loss", "grad_norm"))
    latest = checkpoints.latest.latest_step() if checkpoints is not None else None
    kept = (f"the last good checkpoint is step {latest} in {checkpoints.latest.directory}"
            if latest is not None else "no checkpoint was written before it")
    raise NonFiniteError(f"{label}step {bad}: {metric} is not finite ({shown}); training stopped "
                         f"and the parameters were not updated from that step on; {kept}. Lower "
                         f"optimizer.learning_rate or optimizer.clip_norm, or check the data for "
                         f"NaN features.")
  return {k: float(np.mean([v[k] for v in values])) for k in values[0]} if values else {}


def new_loop_state() -> dict:
  """The early-stopping counters a fit carries (saved in every checkpoint's meta)."""
  return {"best_nll": None, "best_step": None, "evals_since_best": 0, "stopped_early": False}


# ---- the trainer --------------------------------------------------------------------------------

class Trainer:
  """One family, optimizer and mesh, and the step compiled once for all its fits.

  Args:
    config: a checked config (`checked_config`); `train` and `optimizer` are read.
    family: a family object (`build_family`).
    example: a batch of the events' arrays (shapes only: `init_state`).
    mesh: the data mesh (`make_mesh`).
  """

  def __init__(self, config, family, example: dict, *, mesh):
    self.config, self.family, self.mesh = config, family, mesh
    self.optimizer = make_optimizer(config)
    self.example = family.take(example, np.arange(min(config.train.batch_size,
                                                      len(example["items"]))))
    self.step_fn = make_train_step(family.model, self.optimizer, family.loss, mesh=mesh)
    self.sharding = batch_sharding(mesh)
    self.compiled = None
    self.compile_seconds = None
    self.first_step_done = None   # perf_counter() when the first step's results were ready
    self.events_per_second = None
    batch_size = config.train.batch_size
    if batch_size % mesh.size or batch_size % jax.process_count():
      raise ConfigError(f"train.batch_size={batch_size} must be a multiple of the {mesh.size} "
                        f"devices on the data axis and of the {jax.process_count()} processes.")

  def init_state(self, key) -> TrainState:
    """A fresh TrainState, replicated over the mesh."""
    model, optimizer, example = self.family.model, self.optimizer, self.example
    with jax.set_mesh(self.mesh):
      return jax.jit(lambda k: init_state(model, optimizer, example, k),
                     out_shardings=replicated(self.mesh))(key)

  def _train_take(self, data_seed, step: int):
    """`(arrays, rows) -> batch` of training step `step`: the family's `train_take`
    (sampled negatives) keyed by (data seed, step, process), else its `take`."""
    if not hasattr(self.family, "train_take"):
      return self.family.take
    seed = tuple(data_seed) if isinstance(data_seed, (tuple, list)) else (int(data_seed),)
    key = (*seed, step, jax.process_index(), NEGATIVES_STREAM)
    return lambda arrays, rows: self.family.train_take(arrays, rows, key)

  def fit(self, state: TrainState, arrays: dict, rows: range, *, until: int, first_step: int,
          data_seed, step_key, checkpoints: Checkpoints | None = None, logger: Logger | None = None,
          valid=None, loop: dict | None = None, meta=None, progress: bool = False, say=print,
          label: str = "", on_eval=None, stream=None) -> tuple[TrainState, dict]:
    """Train `state` on the events `rows` of `arrays` until `state.step == until`.

    Args:
      state: the state to continue (its `step` may already be past `first_step`: a resume).
      arrays: event arrays (BATCH_KEYS, leading axis events).
      rows: the training events (a window for a walk-forward fold).
      until: the global step to stop at.
      first_step: the global step this fit began at; batch t of the fit is step
        first_step + t, drawn by `batch_indices(t, len(rows), batch_size, data_seed)`.
      data_seed: int or tuple of ints of the batch order.
      step_key: the base rng key of the step (dropout, diffusion noise).
      checkpoints: where to save every `train.checkpoint_every` steps, after
        each evaluation and at `until` (None: nowhere).
      logger: where train (and valid) metrics go every `train.log_every` steps.
      valid: None, or `params -> {"nll_per_event", ...}` run every
        `train.eval_every` steps and at `until`; the best is saved to
        `checkpoints.best` and `train.patience` evaluations without a better
        NLL stop the fit.
      loop: the early-stopping counters (`new_loop_state()`), updated in place.
      meta: `loop -> dict`, the JSON saved with each checkpoint.
      progress: show a progress bar over the steps (process 0 only).
      label: prefix of messages (e.g. "fold 3: ").
      on_eval: None, or `(step, scores) -> None` called after each evaluation
        (its best checkpoint saved); what it raises ends the fit (a tuner's
        pruning), after the latest checkpoint of that step is saved.
      stream: None (batches from `arrays` by `batch_indices`), or a
        `luce.data.StoreBatches` positioned at `state.step`: each process's
        share of each batch comes from it, and its state after a checkpoint's
        last batch is saved with the checkpoint (`arrays` and `rows` then only
        size the fit).

    Returns:
      (state, {"loss": the last logged mean train loss or None, "stopped_early": bool}).
    """
    t = self.config.train
    batch_size = t.batch_size
    loop = new_loop_state() if loop is None else loop
    start = int(host_copy(state.step))
    info = {"loss": None, "stopped_early": bool(loop["stopped_early"])}
    if start >= until or loop["stopped_early"]:
      return state, info
    n_rows = len(rows)
    is_main = jax.process_index() == 0
    meta = meta or (lambda loop: {})

    def indices(step):
      return rows.start + batch_indices(step - first_step, n_rows, batch_size, data_seed)

    queue: collections.deque = collections.deque()

    def batch_of(step):  # (the global batch of `step`, the stream's state after it)
      take = self._train_take(data_seed, step)
      if stream is None:
        return global_batch(arrays, indices(step), self.sharding, take), None
      host, data_state = stream.next()
      return local_global_batch(host, batch_size, self.sharding, take), data_state

    def fill(next_step: int) -> int:  # prefetch: two batches ahead of the device
      while len(queue) < 2 and next_step < until:
        queue.append(batch_of(next_step))
        next_step += 1
      return next_step

    with jax.set_mesh(self.mesh):
      queued = fill(start)
      if self.compiled is None:
        t0 = time.perf_counter()
        self.compiled = self.step_fn.lower(state, queue[0][0], step_key).compile()
        self.compile_seconds = time.perf_counter() - t0
        say(f"compiled the train step in {self.compile_seconds:.2f}s ({self.mesh.size} device(s), "
            f"{jax.process_count()} process(es))")
      bar = tqdm(total=until, initial=start, unit="step", dynamic_ncols=True, leave=False,
                 disable=not (is_main and progress))
      pending, first_pending = [], start
      timer_step, timer = start, time.perf_counter()
      data_state = None
      for step in range(start, until):
        batch, data_state = queue.popleft()
        queued = fill(queued)
        state, step_metrics = self.compiled(state, batch, step_key)
        if self.first_step_done is None:
          jax.block_until_ready(step_metrics)
          self.first_step_done = time.perf_counter()
        pending.append(step_metrics)
        done = step + 1
        evaluate_now = valid is not None and (done % t.eval_every == 0 or done == until)
        save_now = checkpoints is not None and (
            evaluate_now or done % t.checkpoint_every == 0 or done == until)
        if done % t.log_every == 0 or save_now or done == until:
          train_metrics = _check_finite(state, pending, first_pending, checkpoints, label)
          now = time.perf_counter()
          rate = (done - timer_step) * batch_size / max(now - timer, 1e-9)
          train_metrics["events_per_second"] = rate
          if done - start > t.log_every or start + t.log_every >= until:
            self.events_per_second = rate  # skip the first interval (warm-up)
          if logger is not None:
            logger.write(done, "train", train_metrics)
          info["loss"] = train_metrics["loss"]
          bar.set_postfix(loss=f"{train_metrics['loss']:.3f}", events_per_s=f"{rate:,.0f}")
          bar.update(done - bar.n)
          pending, first_pending = [], done
          timer_step, timer = done, now
        if evaluate_now:
          scores = valid(host_copy(state.params))
          if logger is not None:
            logger.write(done, "valid", _scalars(scores))
          if loop["best_nll"] is None or scores["nll_per_event"] < loop["best_nll"]:
            loop.update(best_nll=scores["nll_per_event"], best_step=done, evals_since_best=0)
            if checkpoints is not None and checkpoints.best is not None:
              checkpoints.save(checkpoints.best, done, state, meta(loop))
          else:
            loop["evals_since_best"] += 1
          if t.patience and loop["evals_since_best"] >= t.patience:
            loop["stopped_early"] = True
        if checkpoints is not None and (save_now or loop["stopped_early"]):
          checkpoints.save(checkpoints.latest, done, state, meta(loop), data_state)
        if evaluate_now and on_eval is not None:
          on_eval(done, scores)
        if loop["stopped_early"]:
          say(f"\n{label}stopped early at step {done}: no better validation NLL in {t.patience} "
              f"evaluations (best {loop['best_nll']:.4f} at step {loop['best_step']})")
          break
      bar.close()
    info["stopped_early"] = bool(loop["stopped_early"])
    return state, info


def _scalars(values: dict) -> dict:
  return {k: v for k, v in values.items() if isinstance(v, (int, float))}


# ---- evaluation ---------------------------------------------------------------------------------

def evaluate(family, params, prepared: Prepared, config, split: str,
             references: dict[str, np.ndarray] | None = None) -> dict:
  """Metrics of the family's model (row "model") and of each reference on `split`.

  The model's NLL is the family's own (`family.nll`: exact, or a bound where
  `family.nll_kind` says so); its hits@k and NDCG@k rank by `family.scores`.
  References (baselines, the oracle) are score arrays scored by the exact PL
  likelihood. Every row is `luce.metrics.summary`: weighted by the event
  weights, ties counted in expectation.

  Returns:
    name -> {"nll_per_event", "nll_ci95", "hits_at_k", "ndcg_at_k", "events"}.
  """
  arrays = prepared.split_arrays(split)
  size, k = config.train.eval_batch_size, config.data.eval_k

  def summary(scores, nll=None):
    return metrics.summary(scores, arrays["items"], arrays["available"], arrays["weights"],
                           kind=prepared.kind, k=k, nll=nll)

  # A stacked ensemble's weights come from the validation split (its NLL there is in-sample
  # for them); its members' validation NLLs serve that split's row too.
  valid_nll = fit_stacked_weights(family, params, prepared, size)
  nll = (family.mixture(valid_nll) if valid_nll is not None and split == "valid"
         else family.nll(params, arrays, size))
  out = {"model": summary(family.scores(params, arrays, size), nll)}
  for name, scores in (references or {}).items():
    out[name] = summary(scores)
  return out


def format_table(results: dict, split: str, k: int, kind: str, nll_kind: str = "exact") -> str:
  """A text table: one row per model, NLL and its 95% interval first."""
  first = next(iter(results.values()), {"events": 0})
  width = max(12, *(len(name) + 1 for name in results)) if results else 12
  what = ("exact likelihood" if nll_kind == "exact" else
          "the model's row an upper bound (MD4 ELBO), the rest exact")
  lines = [f"{split}: {first['events']} events, NLL in nats per event ({what}; "
           f"{'set' if kind == 'set' else 'ranking'} likelihood)",
           f"  {'':<{width}}{'nll':>12}  {'95% CI':>19}{f'hits@{k}':>10}{f'ndcg@{k}':>10}"]
  for name, r in results.items():
    lo, hi = r["nll_ci95"]
    lines.append(f"  {name:<{width}}{r['nll_per_event']:>12.4f}  [{lo:>8.4f}, {hi:>8.4f}]"
                 f"{r['hits_at_k']:>10.3f}{r['ndcg_at_k']:>10.3f}")
  return "\n".join(lines)


def write_eval(workdir: pathlib.Path, split: str, step, family, config, kind: str, results: dict,
               **extra) -> pathlib.Path:
  """WORKDIR/eval_SPLIT.json: the table's numbers, saying which NLL each row is."""
  path = pathlib.Path(workdir) / f"eval_{split}.json"
  if jax.process_index() == 0:
    path.write_text(json.dumps(
        {"split": split, "step": step, "source": config.data.source, "kind": kind,
         "family": family.name, "nll": family.nll_kind, **extra, "models": results},
        indent=2) + "\n")
  return path


# ---- luce-train ---------------------------------------------------------------------------------

def train_and_evaluate(config, workdir, *, devices=None, on_eval=None, say=None) -> dict:
  """Train the config's model in `workdir` (resuming from its latest
  checkpoint) and evaluate it on the validation split against the baselines.

  Args:
    config: a ConfigDict from `configs/*.py` (or a nested dict naming some of
      the fields of `base_config()`; the rest keep their defaults).
    workdir: folder for checkpoints/, best/, metrics.jsonl, tensorboard/,
      config.json and eval_valid.json; created if absent.
    devices: devices of the data mesh (default all, or `config.mesh.data` of them).
    on_eval: `(step, validation metrics) -> None` after each evaluation
      (`Trainer.fit`; luce-tune reports to its pruner there).
    say: where its messages go (default print on process 0).

  Returns:
    {"valid": name -> metrics (model, baselines, oracle), "family", "nll"
     ("exact" or "bound": the model row's NLL), "step": steps done,
     "best_step", "final_params", "compile_seconds", "events_per_second":
     steady-state training rate, "seconds_to_first_step": from the call to the
     first step's results (data, baselines, initialisation, compiles; None when
     a resumed run had no step left)} — the same keys for every family.
  """
  t_start = time.perf_counter()
  config = checked_config(config)
  workdir = pathlib.Path(workdir)
  is_main = jax.process_index() == 0
  if is_main:
    workdir.mkdir(parents=True, exist_ok=True)
  say = (say or print) if is_main else (lambda *a, **k: None)

  t_data = time.perf_counter()
  prepared = prepare(config, store_dir=workdir / "features", say=say)
  train = prepared.arrays["train"]
  n_train = len(train["items"])
  if n_train < config.train.batch_size:
    raise ConfigError(f"train.batch_size={config.train.batch_size} is larger than the {n_train} "
                      f"training events.")
  say(f"data: {config.data.source} ({prepared.kind}, {len(prepared.table)} events, "
      f"{prepared.n_items} items; train/valid/test {n_train}/{len(prepared.split_range('valid'))}/"
      f"{len(prepared.split_range('test'))}) ready in {time.perf_counter() - t_data:.1f}s")
  say(luce.kernels.info_line())   # which pl_nll / topk_sample / pl_set kernels run here, once

  family = build_family(config, prepared)
  mesh = make_mesh(config.mesh.data, devices)
  trainer = Trainer(config, family, train, mesh=mesh)
  init_key, step_key = jax.random.split(jax.random.key(config.seed))
  state = trainer.init_state(init_key)
  checkpoints = Checkpoints(workdir, config)
  loop = new_loop_state()
  latest, restored, saved = checkpoints.restore_newest(checkpoints.latest, state, config,
                                                       prepared.data_hash, ignore=TRAIN_REPORT_ONLY,
                                                       say=say)
  if latest is not None:
    state = restored
    loop = saved["loop"]
    say(f"resumed from {checkpoints.latest.directory}/{latest} (step {int(host_copy(state.step))})")
  if is_main:
    (workdir / "config.json").write_text(config.to_json(indent=2) + "\n")

  def meta(loop) -> dict:
    return {"config": config_json(config), "data_hash": prepared.data_hash, "loop": dict(loop),
            "source": config.data.source, "family": family.name}

  def valid(params):
    return evaluate(family, params, prepared, config, "valid")["model"]

  stream = None
  if prepared.store is not None:
    stream = luce.data.StoreBatches(luce.data.store_dataset(
        prepared.rows_of, range(n_train), config.train.batch_size // jax.process_count(),
        seed=config.seed, process_index=jax.process_index(), process_count=jax.process_count(),
        workers=config.data.workers))
    if latest is not None:
      stream.restore(checkpoints.data_state(latest))
  logger = Logger(workdir, int(host_copy(state.step)))
  try:
    state, _ = trainer.fit(state, train, range(n_train), until=config.train.num_steps, first_step=0,
                           data_seed=config.seed, step_key=step_key, checkpoints=checkpoints,
                           logger=logger, valid=valid, loop=loop, meta=meta,
                           progress=bool(config.train.progress_bar), say=say, on_eval=on_eval,
                           stream=stream)
    if stream is not None:
      stream.close()
    checkpoints.wait()
    final_params = host_copy(state.params)
    # Report the best checkpoint's validation metrics beside the references (fitted
    # here, after training, so that the first step does not wait for them).
    references = reference_scores(prepared, config, "valid", baseline_scores(prepared, config))
    best_step = checkpoints.best.latest_step()
    params = final_params
    if best_step is not None:
      best, _ = checkpoints.restore(checkpoints.best, best_step, state, config, prepared.data_hash,
                                    ignore=TRAIN_REPORT_ONLY)
      params = host_copy(best.params)
    results = evaluate(family, params, prepared, config, "valid", references)
  finally:
    logger.close()
    checkpoints.close()
  say(format_table(results, f"validation (best step {best_step})", config.data.eval_k,
                   prepared.kind, family.nll_kind))
  write_eval(workdir, "valid", best_step, family, config, prepared.kind, results)
  return {"valid": results, "family": family.name, "nll": family.nll_kind,
          "step": int(host_copy(state.step)), "best_step": best_step, "final_params": final_params,
          "compile_seconds": trainer.compile_seconds, "events_per_second": trainer.events_per_second,
          "seconds_to_first_step": (None if trainer.first_step_done is None
                                    else trainer.first_step_done - t_start)}


# ---- loading a run (luce-eval, luce-predict) ----------------------------------------------------

class Run:
  """A trained run loaded from its workdir: config, data, family and parameters.

  Attributes: config, prepared (Prepared), family (its `model` is the Flax
  module), params (numpy pytree), step (the checkpoint's step), checkpoint
  ("best" or "latest").
  """

  def __init__(self, config, prepared, family, params, step, checkpoint):
    self.config, self.prepared, self.family = config, prepared, family
    self.params, self.step, self.checkpoint = params, step, checkpoint

  @property
  def model(self):
    return self.family.model


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
  config = checked_config(ml_collections.ConfigDict(json.loads(config_path.read_text())))
  prepared = prepare(config, store_dir=workdir / "features")
  family = build_family(config, prepared)
  trainer = Trainer(config, family, prepared.arrays["train"], mesh=make_mesh(1))
  state = trainer.init_state(jax.random.key(0))
  checkpoints = Checkpoints(workdir, config)
  try:
    manager = checkpoints.best if checkpoint == "best" else checkpoints.latest
    try:
      step, restored, _ = checkpoints.restore_newest(manager, state, config, prepared.data_hash,
                                                     ignore=TRAIN_REPORT_ONLY)
    except CheckpointError as err:
      if checkpoint != "best":
        raise
      print(f"{err} Loading the newest of checkpoints/ instead.")
      step = None
    if step is None and checkpoint == "best":
      manager, checkpoint = checkpoints.latest, "latest"
      step, restored, _ = checkpoints.restore_newest(manager, state, config, prepared.data_hash,
                                                     ignore=TRAIN_REPORT_ONLY)
    if step is None:
      raise ConfigError(f"--workdir={workdir}: no checkpoint in best/ or checkpoints/ yet.")
    state = restored
  finally:
    checkpoints.close()
  return Run(config, prepared, family, host_copy(state.params), step, checkpoint)


def evaluate_run(run: Run, split: str) -> dict:
  """Metrics of the run's model, every baseline and (synthetic data) the oracle on `split`."""
  references = reference_scores(run.prepared, run.config, split)
  return evaluate(run.family, run.params, run.prepared, run.config, split, references)
