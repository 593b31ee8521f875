"""Walk-forward backtest: every event predicted by a model fit only on events before it.

Events [start, m) are cut into folds of `backtest.retrain_every` events. Before
fold f (events [s_f, e_f)) the model trains on the window [lo_f, s_f) — all
earlier events (expanding) or the last `window_events` (rolling) — for
`first_steps` steps on the first fold and `retrain_steps` steps after that,
warm-started from the checkpoint written after fold f - 1. It then scores the
fold's events with its parameters frozen. Features of event t use events < t
only (`luce.data.build_features`), so no prediction reads its own outcome or a
later one; `tests/test_backtest.py` proves it by rewriting the future.

The baselines are refit on the same windows: frequency and static PL on
[lo_f, s_f); recency PL updates online on every event before t; uniform.

Both model families walk forward. A neural PL model is scored by its PL
scores. A Discrete Subset Diffusion model (`model.family="diffusion"`, sets
with k <= luce.diffusion.EXACT_MAX_K) gives three things per event: its exact
NLL by the subset recursion, its first-pick logits (what hits@k and NDCG rank
by) and inclusion probabilities counted over `backtest.calibration_samples`
sets drawn from it (what calibration checks); so its NLL sits in the same
nats per event as the baselines' exact PL set likelihoods.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time

import jax
import ml_collections
import numpy as np

from luce.baselines import baseline_scores
from luce.errors import ConfigError
from luce.train import (BATCH_KEYS, Checkpoints, build_model, checked_config, init_state,
                        make_optimizer, make_train_step, pl_loss, predict_scores, prepare)
from luce.train._config import config_json
from luce.train._step import host_copy

# Config fields that only change how a backtest is watched (may differ on resume).
WATCH_ONLY = ("train.log_every", "train.progress_bar", "train.async_checkpoints",
              "train.eval_batch_size", "train.max_to_keep")


@dataclasses.dataclass
class WalkForward:
  """Predictions of a walk-forward backtest.

  Attributes:
    config: the checked config.
    prepared: luce.train.Prepared of the whole table.
    start: index of the first predicted event.
    folds: [(train_lo, fold_start, fold_end)] event indices of each fold.
    scores: name -> float32[m - start, n] scores of the predicted events, for
      "model" and each baseline.
    items, available: int32[m - start, k], bool[m - start, n] of those events.
    times: their times (datetime64 or int).
    nll: name -> float64[m - start] per-event NLL computed by the model itself
      ("model" of the diffusion family); absent names take the PL likelihood
      of their scores.
    inclusion: name -> float32[m - start, n] inclusion probabilities from the
      model's own samples (diffusion); absent names draw PL samples.
    seconds: {"train", "predict", "baselines", "compile"} wall time.
  """
  config: ml_collections.ConfigDict
  prepared: object
  start: int
  folds: list
  scores: dict
  items: np.ndarray
  available: np.ndarray
  times: np.ndarray
  seconds: dict
  nll: dict = dataclasses.field(default_factory=dict)
  inclusion: dict = dataclasses.field(default_factory=dict)

  @property
  def kind(self) -> str:
    return self.prepared.kind


def start_index(prepared, value: str) -> int:
  """First predicted event: `value` as an ISO date or an integer step, or "" for
  the first validation event of the config's split."""
  m = len(prepared.table)
  if value == "":
    return int(prepared.bounds[1])
  times = prepared.table.times()
  try:
    at = np.datetime64(value, "s") if np.issubdtype(times.dtype, np.datetime64) else int(value)
  except ValueError:
    raise ConfigError(f"backtest.start={value!r}: write an ISO date (YYYY-MM-DD) for dated events, "
                      f"an integer step, or \"\" for the first validation event.") from None
  return int(np.searchsorted(times, at, side="left"))


def plan_folds(m: int, start: int, retrain_every: int, window: str, window_events: int) -> list:
  """[(lo, s, e)]: fold events [s, e), trained on [lo, s)."""
  if window not in ("expanding", "rolling"):
    raise ConfigError(f"backtest.window={window!r}; valid: expanding, rolling.")
  if window == "rolling" and window_events < 1:
    raise ConfigError(f"backtest.window=rolling needs backtest.window_events >= 1 (got {window_events}).")
  if retrain_every < 1:
    raise ConfigError(f"backtest.retrain_every={retrain_every} must be >= 1.")
  if not 1 <= start < m:
    raise ConfigError(f"backtest.start is event {start} of {m}: the backtest needs at least one "
                      f"earlier event to train on and one event to predict.")
  folds = []
  for s in range(start, m, retrain_every):
    lo = 0 if window == "expanding" else max(0, s - window_events)
    folds.append((lo, s, min(s + retrain_every, m)))
  return folds


def _backtest_checks(config) -> None:
  b = config.backtest
  if config.model.family not in ("pl", "diffusion"):
    raise ConfigError(f"model.family={config.model.family!r}; valid: pl, diffusion.")
  for name in ("first_steps", "retrain_steps", "bootstrap_samples", "calibration_samples",
               "calibration_bins", "portfolio_k"):
    if b[name] < 1:
      raise ConfigError(f"backtest.{name}={b[name]} must be >= 1.")
  if b.block < 0:
    raise ConfigError(f"backtest.block={b.block} must be >= 0 (0: n^(1/3)).")


def walk_forward(config, workdir, *, progress: bool = True, say=print) -> WalkForward:
  """Run the walk-forward backtest of `config` (see the module docstring).

  Writes WORKDIR/backtest/checkpoints/ (the state after each fold, for the warm
  start and for resuming) and WORKDIR/backtest/progress.npz (the predictions so
  far); running again with the same config resumes after the last finished fold.

  Returns a WalkForward with the model's and every baseline's scores.
  """
  config = checked_config(config)
  _backtest_checks(config)
  b = config.backtest
  workdir = pathlib.Path(workdir)
  out_dir = workdir / "backtest"
  out_dir.mkdir(parents=True, exist_ok=True)
  seconds = {"train": 0.0, "predict": 0.0, "baselines": 0.0, "compile": 0.0}

  t0 = time.perf_counter()
  prepared = prepare(config)
  arrays = prepared.arrays["all"]
  m, n = arrays["available"].shape
  start = start_index(prepared, b.start)
  folds = plan_folds(m, start, b.retrain_every, b.window, b.window_events)
  say(f"data: {config.data.source} ({prepared.kind}, {m} events, {n} items) ready in "
      f"{time.perf_counter() - t0:.1f}s; walk-forward over events {start}..{m - 1} in "
      f"{len(folds)} folds of {b.retrain_every} ({b.window} window)")

  # Constant learning rate after warmup: each refit continues the last one, so a
  # schedule decaying over one fit would leave later folds untrained.
  train_config = ml_collections.ConfigDict(config.to_dict())
  train_config.optimizer.schedule = "constant"
  diffusion = config.model.family == "diffusion"
  if diffusion:
    from luce import diffusion as dsd
    k_event = arrays["items"].shape[1]
    if k_event > dsd.EXACT_MAX_K:
      raise ConfigError(f"model.family=diffusion: the backtest scores each event by its exact NLL, "
                        f"which needs k <= {dsd.EXACT_MAX_K}; these events have k = {k_event}.")
    if config.data.eval_k != k_event:
      raise ConfigError(f"model.family=diffusion draws whole sets of k = {k_event}: set "
                        f"data.eval_k={k_event} (got {config.data.eval_k}).")
    model = dsd.build_diffusion_model(config, prepared)  # raises for rankings
    loss = lambda out, batch: out  # the model's output is its MD4 loss per event
  else:
    model = build_model(config, prepared)
    loss = pl_loss(prepared.kind)
  optimizer = make_optimizer(train_config)
  batch_size = config.train.batch_size
  init_key, step_key = jax.random.split(jax.random.key(config.seed))
  example = {k: arrays[k][:batch_size] for k in BATCH_KEYS}
  state = jax.jit(lambda key: init_state(model, optimizer, example, key))(init_key)
  step_fn = make_train_step(model, optimizer, loss)

  checkpoints = Checkpoints(out_dir, config)
  meta = {"config": config_json(config), "data_hash": prepared.data_hash, "start": start}
  progress_path = out_dir / "progress.npz"
  scores = np.full((m - start, n), np.nan, np.float32)
  # A diffusion model's own exact NLL and sampled inclusion probabilities.
  own = ({"nll": np.full(m - start, np.nan),
          "inclusion": np.full((m - start, n), np.nan, np.float32)} if diffusion else {})
  done_folds = 0
  latest = checkpoints.latest.latest_step()
  if latest is not None and progress_path.exists():
    saved = checkpoints.meta(checkpoints.latest, latest)
    changed = _changed(json.loads(saved["config"]), json.loads(meta["config"]))
    if changed or saved["data_hash"] != meta["data_hash"]:
      raise ConfigError(f"{out_dir} holds a backtest of another config or data "
                        f"({'; '.join(changed) or 'data hash differs'}); use a new --workdir.")
    with np.load(progress_path) as z:
      # An interrupted fold may have saved its checkpoint but not its predictions.
      if int(z["folds_done"]) in checkpoints.latest.all_steps():
        done_folds = int(z["folds_done"])
        scores[:] = z["scores"]
        for name, values in own.items():
          values[:] = z[name]
  if done_folds:
    state, _ = checkpoints.restore(checkpoints.latest, done_folds, state, config, prepared.data_hash)
    say(f"resumed after fold {done_folds} of {len(folds)} ({checkpoints.latest.directory})")

  from tqdm import tqdm
  bar = tqdm(total=len(folds), initial=done_folds, unit="fold", dynamic_ncols=True,
             disable=not progress)
  compiled = None
  for f in range(done_folds, len(folds)):
    lo, s, e = folds[f]
    if f > 0:  # warm start: the state written after the previous fold
      state, _ = checkpoints.restore(checkpoints.latest, f, state, config, prepared.data_hash)
    t_train = time.perf_counter()
    steps = b.first_steps if f == 0 else b.retrain_steps
    rng = np.random.default_rng([config.seed, f])
    # Batches drawn with replacement from the window: one shape for every fold.
    picks = rng.integers(lo, s, size=(steps, batch_size))
    pending = []
    for step in range(steps):
      batch = {k: arrays[k][picks[step]] for k in BATCH_KEYS}
      if compiled is None:
        t_c = time.perf_counter()
        compiled = step_fn.lower(state, batch, step_key).compile()
        seconds["compile"] = time.perf_counter() - t_c
      state, metrics = compiled(state, batch, step_key)
      pending.append(metrics["loss"])
    loss = float(np.mean(jax.device_get(pending))) if pending else float("nan")
    if int(state.bad_step) >= 0:
      raise ConfigError(f"fold {f}: the training loss went non-finite at step {int(state.bad_step)}; "
                        f"lower optimizer.learning_rate.")
    seconds["train"] += time.perf_counter() - t_train
    checkpoints.save(checkpoints.latest, f + 1, state, {**meta, "fold": f + 1})
    checkpoints.wait()

    t_pred = time.perf_counter()
    # A fixed chunk of retrain_every rows (the last fold padded): one compilation.
    rows = np.arange(s, s + b.retrain_every).clip(max=e - 1)
    chunk = {k: arrays[k][rows] for k in BATCH_KEYS}
    params = host_copy(state.params)
    if diffusion:
      scores[s - start:e - start] = dsd.first_pick_scores(model, params, chunk)[:e - s]
      own["nll"][s - start:e - start] = dsd.exact_nll(chunk, model=model, params=params)[:e - s]
      key = jax.random.fold_in(jax.random.key(config.seed), 1_000_003 + f)
      drawn = dsd.sample_for_events(model, params, chunk, key, b.calibration_samples)[:e - s]
      own["inclusion"][s - start:e - start] = _inclusion(drawn, n)
    else:
      fold_scores = predict_scores(model, params, chunk, b.retrain_every)
      scores[s - start:e - start] = fold_scores[:e - s]
    seconds["predict"] += time.perf_counter() - t_pred
    np.savez(progress_path, scores=scores, folds_done=f + 1, **own)
    bar.set_postfix(train_loss=f"{loss:.3f}", train_events=s - lo)
    bar.update(1)
  bar.close()
  checkpoints.close()

  t_base = time.perf_counter()
  all_scores = {"model": scores, **_baselines(config, prepared, folds, start)}
  seconds["baselines"] = time.perf_counter() - t_base
  times = prepared.table.times()[start:]
  return WalkForward(config, prepared, start, folds, all_scores, arrays["items"][start:],
                     arrays["available"][start:], times, seconds,
                     nll={"model": own["nll"]} if own else {},
                     inclusion={"model": own["inclusion"]} if own else {})


def _inclusion(drawn, n: int) -> np.ndarray:
  """float32[E, n]: the fraction of each event's drawn sets (int[E, S, k]) holding each item."""
  events, samples, _ = drawn.shape
  counts = np.zeros((events, n), np.float32)
  rows = np.repeat(np.arange(events), drawn.shape[1] * drawn.shape[2])
  np.add.at(counts, (rows, drawn.reshape(-1)), 1.0)
  return counts / samples


def _changed(saved: dict, current: dict) -> list[str]:
  return [f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in sorted(set(saved) | set(current))
          if k not in WATCH_ONLY and saved.get(k) != current.get(k)]


def _baselines(config, prepared, folds, start) -> dict[str, np.ndarray]:
  """name -> float32[m - start, n]: each baseline refit on each fold's window."""
  arrays = prepared.arrays["all"]
  items, available = arrays["items"], arrays["available"]
  opts = dict(half_life=config.baselines.recency_half_life, prior=config.baselines.static_prior)
  out = {}
  for name in config.baselines.names:
    if name in ("uniform", "recency"):  # no fit: uniform, or online over events < t
      out[name] = baseline_scores(name, items, available, start, prepared.kind, **opts)[start:]
      continue
    parts = []
    for lo, s, e in folds:
      parts.append(baseline_scores(name, items[lo:e], available[lo:e], s - lo, prepared.kind,
                                   **opts)[s - lo:])
    out[name] = np.concatenate(parts)
  return out
