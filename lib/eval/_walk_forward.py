"""Walk-forward backtest: every event predicted by a model fit only on events before it.

Events [start, m) are cut into folds of `backtest.retrain_every` events. Before
fold f (events [s_f, e_f)) the model trains on the window [lo_f, s_f) — all
earlier events (expanding) or the last `window_events` (rolling) — for
`first_steps` steps on the first fold and `retrain_steps` steps after that,
warm-started from the checkpoint written after fold f - 1. It then scores the
fold's events with its parameters frozen. Features of event t use events < t
only (`luce.data.build_features`), so no prediction reads its own outcome or a
later one; `tests/test_backtest.py` proves it by rewriting the future.

The baselines are refit on the same windows: frequency, static PL,
conditional logit and grid order on [lo_f, s_f); recency PL and the openskill
rating update online on every event before t (openskill's temperature fitted
on the events before the first prediction); uniform.

Every fold trains through the one loop (`luce.train.Trainer.fit`, the loop
luce-train runs): the same batch rule, NaN guard, checkpoints (every
`train.checkpoint_every` steps and at each fold's end, so a killed backtest
resumes mid-fold) and JSON-lines/TensorBoard logs (WORKDIR/backtest/). Fold f
trains global steps up to `first_steps + f * retrain_steps`, its batches
drawn by `luce.train.batch_indices` from seed (config.seed, f) over its window.

Both model families walk forward, through their family object: per event the
family's own NLL (`family.nll`: exact PL for the PL family, the exact subset
recursion for diffusion), its scores (what hits@k and NDCG rank by) and its
inclusion probabilities counted over `backtest.calibration_samples` events
sampled from it (what calibration checks).
"""

from __future__ import annotations

import dataclasses
import pathlib
import time

import jax
import ml_collections
import numpy as np
from tqdm import tqdm

from luce.baselines import ONLINE_BASELINES, baseline_scores
from luce.errors import ConfigError
from luce.models import BATCH_KEYS
from luce.train import (Checkpoints, Logger, Trainer, build_family, checked_config, config_json,
                        host_copy, make_mesh, new_loop_state, numeric_covariates, prepare,
                        stack_weights)


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
    nll: name -> float64[m - start] per-event NLL computed by the model's
      family ("model"); absent names take the PL likelihood of their scores.
    nll_kind: "exact" or "bound": what the model's NLL is.
    inclusion: name -> float32[m - start, n] inclusion probabilities from the
      model's own samples ("model"); absent names draw PL samples.
    seconds: {"train", "predict", "baselines", "compile"} wall time.
    importance: feature group -> float64[m - start], the increase of the
      model's per-event NLL when that group's features are shuffled across
      the fold's events (permutation importance; `backtest.importance`).
    member_nll, fold_weights: a stacked ensemble's (model.ensemble.weights =
      "stacked") float64[M, m - start] per-member NLLs and float64[folds, M]
      weights, fold f's fitted on the member NLLs of folds 0..f-1 only; None
      otherwise.
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
  nll_kind: str = "exact"
  importance: dict = dataclasses.field(default_factory=dict)
  member_nll: np.ndarray | None = None
  fold_weights: np.ndarray | None = None

  @property
  def kind(self) -> str:
    return self.prepared.kind


def start_index(prepared, value: str) -> int:
  """First predicted event: `value` as an ISO date or an integer step, or "" for
  the first validation event of the config's split."""
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


def fold_steps(folds: list, first_steps: int, retrain_steps: int) -> list[tuple[int, int]]:
  """[(first global step, last global step)] of each fold's fit."""
  return [(0 if f == 0 else first_steps + (f - 1) * retrain_steps, first_steps + f * retrain_steps)
          for f in range(len(folds))]


def feature_groups(item_names, n_event_features: int) -> dict[str, tuple[str, list[int]]]:
  """group -> ("item_features" or "event_features", column indices): the feature
  groups permutation importance shuffles together."""
  groups: dict[str, tuple[str, list[int]]] = {}

  def add(name, where, j):
    groups.setdefault(name, (where, []))[1].append(j)

  for j, name in enumerate(item_names):
    if name.startswith(("in_last_", "rank_last_")):
      add("recent results (last L events)", "item_features", j)
    elif name.startswith("rate_") or name == "since_last":
      add("pick rates and recency", "item_features", j)
    elif name.startswith(("cov_", "covz_")):
      add(f"covariate {name.split('_', 1)[1]}", "item_features", j)
    elif name.startswith("grp_"):
      add(f"group history of {name[4:].rsplit('_rate_', 1)[0].removesuffix('_new')}",
          "item_features", j)
    else:
      add("catalog attributes", "item_features", j)
  if n_event_features:
    groups["calendar"] = ("event_features", list(range(n_event_features)))
  return groups


def walk_forward(config, workdir, *, progress: bool = True, say=print) -> WalkForward:
  """Run the walk-forward backtest of `config` (see the module docstring).

  Writes WORKDIR/backtest/checkpoints/ (the train state, for the warm start
  and for resuming), WORKDIR/backtest/metrics.jsonl and tensorboard/ (the
  train loss of every fold) and WORKDIR/backtest/progress.npz (the
  predictions so far); running again with the same config resumes where it
  stopped, mid-fold included, and ends where an uninterrupted run ends.
  Settings that only change the report (REPORT_ONLY: costs, bootstrap
  samples, calibration bins, ...) may change on a resume.

  Returns a WalkForward with the model's and every baseline's scores.
  """
  config = checked_config(config)
  b = config.backtest
  workdir = pathlib.Path(workdir)
  out_dir = workdir / "backtest"
  is_main = jax.process_index() == 0
  if is_main:
    out_dir.mkdir(parents=True, exist_ok=True)
  seconds = {"train": 0.0, "predict": 0.0, "baselines": 0.0, "compile": 0.0}

  t0 = time.perf_counter()
  prepared = prepare(config)
  arrays = prepared.arrays["all"]
  m, n = arrays["available"].shape
  start = start_index(prepared, b.start)
  folds = plan_folds(m, start, b.retrain_every, b.window, b.window_events)
  if start != prepared.fit_until:  # covariate statistics from the events before the first prediction
    prepared = prepare(config, fit_until=start, loaded=(prepared.table, prepared.oracle))
    arrays = prepared.arrays["all"]
  say(f"data: {config.data.source} ({prepared.kind}, {m} events, {n} items) ready in "
      f"{time.perf_counter() - t0:.1f}s; walk-forward over events {start}..{m - 1} in "
      f"{len(folds)} folds of {b.retrain_every} ({b.window} window)")

  family = build_family(config, prepared)  # refuses what a family cannot model
  # Calibration compares P(item in the event) with what happened: the observed
  # set for sets (draws of the set's size), the observed top eval_k for rankings.
  draw_k = prepared.k if prepared.kind == "set" else config.data.eval_k
  # Constant learning rate after warmup: each refit continues the last one, so a
  # schedule decaying over one fit would leave later folds untrained.
  train_config = ml_collections.ConfigDict(config.to_dict())
  train_config.optimizer.schedule = "constant"
  train_config.train.num_steps = b.first_steps + (len(folds) - 1) * b.retrain_steps
  trainer = Trainer(checked_config(train_config), family, arrays, mesh=make_mesh(config.mesh.data))
  init_key, step_key = jax.random.split(jax.random.key(config.seed))
  state = trainer.init_state(init_key)
  steps = fold_steps(folds, b.first_steps, b.retrain_steps)

  checkpoints = Checkpoints(out_dir, config, best=False)
  progress_path = out_dir / "progress.npz"
  scores = np.full((m - start, n), np.nan, np.float32)
  nll = np.full(m - start, np.nan)
  inclusion = np.full((m - start, n), np.nan, np.float32)
  groups = (feature_groups(prepared.item_names, arrays["event_features"].shape[1])
            if b.importance else {})
  importance = np.full((len(groups), m - start), np.nan)
  # A stacked ensemble: its members' out-of-sample NLLs, from which each fold's weights
  # are fitted (on the folds before it only), and those weights.
  stacked = bool(getattr(family, "stacked", False))
  n_members = len(family.members) if stacked else 0
  member_nll = np.full((n_members, m - start), np.nan)
  fold_weights = np.full((len(folds), n_members), np.nan)
  done_folds = 0
  latest, restored, _ = checkpoints.restore_newest(checkpoints.latest, state, config,
                                                   prepared.data_hash, say=say)
  if latest is not None:
    state = restored
    if progress_path.exists():
      with np.load(progress_path) as z:
        done_folds = int(z["folds_done"])
        scores[:], nll[:], inclusion[:] = z["scores"], z["nll"], z["inclusion"]
        importance[:] = z["importance"]
        if stacked:
          member_nll[:], fold_weights[:] = z["member_nll"], z["fold_weights"]
    training = next(f for f, (_, end) in enumerate(steps + [(0, np.inf)]) if latest <= end)
    if not training <= done_folds <= training + 1 or (done_folds == training + 1 and
                                                       latest != steps[training][1]):
      raise ConfigError(f"{out_dir}: its checkpoint (step {latest}, fold {training}) and "
                        f"progress.npz ({done_folds} folds predicted) disagree; one of them was "
                        f"removed or copied from another backtest. Use a new --workdir.")
    say(f"resumed at step {latest} ({done_folds} of {len(folds)} folds predicted; "
        f"{checkpoints.latest.directory})")

  def meta(loop) -> dict:
    return {"config": config_json(config), "data_hash": prepared.data_hash, "start": start,
            "source": config.data.source, "family": family.name}

  logger = Logger(out_dir, int(host_copy(state.step)))
  bar = tqdm(total=len(folds), initial=done_folds, unit="fold", dynamic_ncols=True,
             disable=not (progress and is_main))
  try:
    for f in range(done_folds, len(folds)):
      lo, s, e = folds[f]
      t_train = time.perf_counter()
      state, info = trainer.fit(state, arrays, range(lo, s), until=steps[f][1],
                                first_step=steps[f][0], data_seed=(config.seed, f),
                                step_key=step_key, checkpoints=checkpoints, logger=logger,
                                loop=new_loop_state(), meta=meta, say=say, label=f"fold {f}: ")
      checkpoints.wait()
      seconds["train"] += time.perf_counter() - t_train

      t_pred = time.perf_counter()
      # A fixed chunk of retrain_every rows (the last fold padded): one compilation.
      rows = np.arange(s, s + b.retrain_every).clip(max=e - 1)
      chunk = {key: arrays[key][rows] for key in BATCH_KEYS}
      params = host_copy(state.params)
      size = b.retrain_every
      part = slice(s - start, e - start)
      if stacked:
        seen = slice(0, s - start)  # the earlier folds' events, predicted out of sample
        family.set_weights(stack_weights(member_nll[:, seen], arrays["weights"][start:s])
                           if s > start else np.full(n_members, 1.0 / n_members))
        fold_weights[f] = family.weights
        member_nll[:, part] = family.member_nll(params, chunk, size)[:, :e - s]
        say(f"fold {f}: stacked weights {np.round(family.weights, 3).tolist()}")
      scores[part] = family.scores(params, chunk, size)[:e - s]
      nll[part] = (family.mixture(member_nll[:, part]) if stacked
                   else family.nll(params, chunk, size)[:e - s])
      key = jax.random.fold_in(jax.random.key(config.seed), 1_000_003 + f)
      inclusion[part] = family.inclusion(params, chunk, key, b.calibration_samples, draw_k)[:e - s]
      rng = np.random.default_rng([config.seed, 7, f])
      for g, (where, cols) in enumerate(groups.values()):
        order = np.concatenate([rng.permutation(e - s), np.arange(e - s, len(rows))])
        shuffled = dict(chunk)
        shuffled[where] = chunk[where].copy()
        shuffled[where][..., cols] = chunk[where][order][..., cols]
        importance[g, part] = family.nll(params, shuffled, size)[:e - s] - nll[part]
      seconds["predict"] += time.perf_counter() - t_pred
      if is_main:
        np.savez(progress_path, scores=scores, nll=nll, inclusion=inclusion, importance=importance,
                 folds_done=f + 1, **({"member_nll": member_nll, "fold_weights": fold_weights}
                                      if stacked else {}))
      loss = "–" if info["loss"] is None else f"{info['loss']:.3f}"
      bar.set_postfix(train_loss=loss, train_events=s - lo)
      bar.update(1)
  finally:
    bar.close()
    logger.close()
    checkpoints.close()
  seconds["compile"] = trainer.compile_seconds or 0.0

  t_base = time.perf_counter()
  all_scores = {"model": scores, **_baselines(config, prepared, folds, start,
                                              progress=progress and is_main, say=say)}
  seconds["baselines"] = time.perf_counter() - t_base
  times = prepared.table.times()[start:]
  return WalkForward(config, prepared, start, folds, all_scores, arrays["items"][start:],
                     arrays["available"][start:], times, seconds, nll={"model": nll},
                     inclusion={"model": inclusion}, nll_kind=family.nll_kind,
                     importance=dict(zip(groups, importance)),
                     member_nll=member_nll if stacked else None,
                     fold_weights=fold_weights if stacked else None)


def _baselines(config, prepared, folds, start, *, progress: bool = False,
               say=print) -> dict[str, np.ndarray]:
  """name -> float32[m - start, n]: each baseline refit on each fold's window.

  A progress bar over (baseline, fold) refits, and one line per baseline with
  its time, so the phase is never silent."""
  arrays = prepared.arrays["all"]
  items, available = arrays["items"], arrays["available"]
  covariates, names = numeric_covariates(prepared.table)
  opts = dict(half_life=config.baselines.recency_half_life, prior=config.baselines.static_prior,
              covariate_names=names)
  refits = sum(1 if name in ONLINE_BASELINES else len(folds) for name in config.baselines.names)
  bar = tqdm(total=refits, unit="fit", desc="baselines", dynamic_ncols=True, leave=False,
             disable=not progress)
  out = {}
  for name in config.baselines.names:
    t0 = time.perf_counter()
    bar.set_postfix(baseline=name)
    if name in ONLINE_BASELINES:  # no refit: uniform, or updated online over events < t
      out[name] = baseline_scores(name, items, available, start, prepared.kind,
                                  covariates=covariates, **opts)[start:]
      bar.update(1)
    else:
      parts = []
      for lo, s, e in folds:
        parts.append(baseline_scores(name, items[lo:e], available[lo:e], s - lo, prepared.kind,
                                     covariates=covariates[lo:e], **opts)[s - lo:])
        bar.update(1)
      out[name] = np.concatenate(parts)
    if progress:
      say(f"baseline {name}: {'online' if name in ONLINE_BASELINES else f'{len(folds)} refits'} "
          f"in {time.perf_counter() - t0:.1f}s")
  bar.close()
  return out
