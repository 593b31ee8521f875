"""Population training: P runs of one architecture trained at once in one jitted step.

The members differ only in learning rate, weight decay, dropout and seed
(`POPULATION_FIELDS`). Their parameters and optimizer states are stacked on a
leading axis and one `jax.jit(jax.vmap(step))` takes a step for all of them:
the learning rate and weight decay enter the optimizer as arrays
(`make_optimizer(..., learning_rate=, weight_decay=)`), dropout as a
`DropoutRate` of arrays, and each member draws its own batches
(`batch_indices` with its seed) and dropout noise. A member is the run
`luce-train` would make with its config: the same batches, initialisation and
updates (to float tolerance, tested), and its own workdir with config.json,
checkpoints/, best/, metrics.jsonl and eval_valid.json, so luce-eval and
luce-predict load it. A member that diverges, stops early or is pruned is
frozen (its state no longer changes) while the rest train on.
"""

from __future__ import annotations

import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from luce.errors import ConfigError
from luce.train._space import POPULATION_FIELDS, apply_params


def _differing(configs) -> set[str]:
  from luce.train import flatten
  flat = [flatten(c) for c in configs]
  return {k for k in flat[0] if any(f[k] != flat[0][k] for f in flat[1:])}


def train_population(config, members: list[dict], workdirs: list, *, on_eval=None, say=print,
                     progress: bool = False) -> list[dict]:
  """Train one member per entry of `members` (field -> value of POPULATION_FIELDS).

  Args:
    config: the shared config (a ConfigDict or nested dict).
    members: each member's values, e.g. {"optimizer.learning_rate": 3e-3, "seed": 1}.
    workdirs: one run folder per member (resumed when every member saved a
      common step).
    on_eval: `(member, step, validation metrics) -> bool`; True freezes the
      member from then on (a tuner's pruning).
    progress: a progress bar over the steps.

  Returns:
    One dict per member: "valid" (its best checkpoint's validation metrics
    beside the references, as `train_and_evaluate`), "best_step", "step",
    "status" ("complete", "pruned", "stopped_early" or "diverged"), "error".
  """
  from luce.models import DropoutRate
  from luce.train import (Checkpoints, Logger, baseline_scores, build_family,
                          checked_config, config_json, evaluate, host_copy, init_state,
                          make_optimizer, new_loop_state, prepare, reference_scores, write_eval)
  from luce.train._loop import batch_indices, format_table
  from luce.train._step import BAD_METRICS, train_step_fn

  if len(members) != len(workdirs) or not members:
    raise ConfigError(f"train_population: {len(members)} members and {len(workdirs)} workdirs; "
                      f"give one workdir per member, at least one.")
  base = checked_config(config)
  for m in members:
    for field in m:
      if field not in POPULATION_FIELDS:
        raise ConfigError(f"population member field {field!r}: members may differ only in "
                          f"{', '.join(POPULATION_FIELDS)}.")
  configs = [apply_params(base, m) for m in members]
  vary = _differing(configs)
  c0 = configs[0]
  if "model.dropout" in vary and (c0.model.family != "pl" or c0.model.encoder != "mlp"):
    raise ConfigError(f"population members with different model.dropout need model.family='pl' "
                      f"and model.encoder='mlp' (got {c0.model.family!r}, {c0.model.encoder!r}); "
                      f"keep model.dropout equal across members otherwise.")
  P = len(configs)
  t = c0.train
  workdirs = [pathlib.Path(w) for w in workdirs]

  t0 = time.perf_counter()
  prepared = prepare(c0)
  train = prepared.arrays["train"]
  n_train = len(train["items"])
  if n_train < t.batch_size:
    raise ConfigError(f"train.batch_size={t.batch_size} is larger than the {n_train} training events.")
  references = reference_scores(prepared, c0, "valid", baseline_scores(prepared, c0))
  family = build_family(c0, prepared)
  say(f"data: {c0.data.source} ({prepared.kind}, {len(prepared.table)} events) ready in "
      f"{time.perf_counter() - t0:.1f}s; population of {P} ({', '.join(sorted(vary)) or 'identical'})")

  example = family.take(train, np.arange(min(t.batch_size, n_train)))
  keys = [jax.random.split(jax.random.key(c.seed)) for c in configs]
  states = []
  for c, (init_key, _) in zip(configs, keys):
    optimizer = make_optimizer(c)
    states.append(jax.jit(lambda k, opt=optimizer: init_state(family.model, opt, example, k))(init_key))
  step_keys = jnp.stack([k[1] for k in keys])
  hp = {"learning_rate": jnp.asarray([c.optimizer.learning_rate for c in configs], jnp.float32),
        "weight_decay": jnp.asarray([c.optimizer.weight_decay for c in configs], jnp.float32)}
  rates = [DropoutRate.of(c.model.dropout) for c in configs]
  hp["threshold"] = jnp.asarray([r.threshold for r in rates], jnp.uint32)
  hp["keep"] = jnp.asarray([r.keep for r in rates], jnp.float32)
  dropout_varies = "model.dropout" in vary

  def member_step(state, batch, key, h, active):
    optimizer = make_optimizer(c0, learning_rate=h["learning_rate"], weight_decay=h["weight_decay"])
    model = family.model
    if dropout_varies:
      model = model.clone(dropout=DropoutRate(h["threshold"], h["keep"]))
    new, metrics = train_step_fn(model, optimizer, family.loss)(state, batch, key)
    new = jax.tree.map(lambda a, b: jnp.where(active, a, b), new, state)
    return new, metrics

  step_fn = jax.jit(jax.vmap(member_step), donate_argnums=(0,))

  # checkpoints and resume: the newest step every member saved
  ckpts = [Checkpoints(w, c) for w, c in zip(workdirs, configs)]
  for w, c in zip(workdirs, configs):
    w.mkdir(parents=True, exist_ok=True)
    (w / "config.json").write_text(c.to_json(indent=2) + "\n")
  loops = [new_loop_state() for _ in configs]
  common = set.intersection(*(set(ck.latest.all_steps()) for ck in ckpts))
  start = 0
  if common:
    start = max(common)
    for i, (ck, c) in enumerate(zip(ckpts, configs)):
      states[i], meta = ck.restore(ck.latest, start, states[i], c, prepared.data_hash)
      loops[i] = meta["loop"]
    say(f"resumed the population at step {start}")
  status = ["stopped_early" if lp["stopped_early"] else "complete" for lp in loops]
  for i, lp in enumerate(loops):
    if lp.get("status") in ("pruned", "diverged"):
      status[i] = lp["status"]
  state = jax.tree.map(lambda *x: jnp.stack(x), *states)
  active = np.array([s == "complete" for s in status])
  errors = [None] * P
  loggers = [Logger(w, start) for w in workdirs]

  def meta(i):
    lp = dict(loops[i], status=status[i])
    return {"config": config_json(configs[i]), "data_hash": prepared.data_hash, "loop": lp,
            "source": configs[i].data.source, "family": family.name}

  def member(i, tree):
    return jax.tree.map(lambda x: x[i], tree)

  def save_latest(step):
    for i in range(P):
      ckpts[i].save(ckpts[i].latest, step, member(i, state), meta(i))

  from tqdm import tqdm
  bar = tqdm(total=t.num_steps, initial=start, unit="step", leave=False, disable=not progress)
  pending = []
  rate_timer, rate_step = time.perf_counter(), start
  try:
    for step in range(start, t.num_steps):
      if not active.any():
        break
      rows = np.concatenate([batch_indices(step, n_train, t.batch_size, c.seed) for c in configs])
      batch = {k: jnp.asarray(v.reshape((P, t.batch_size) + v.shape[1:]))
               for k, v in family.take(train, rows).items()}  # one gather for all members
      state, metrics = step_fn(state, batch, step_keys, hp, jnp.asarray(active))
      pending.append(metrics)
      done = step + 1
      evaluate_now = done % t.eval_every == 0 or done == t.num_steps
      save_now = evaluate_now or done % t.checkpoint_every == 0 or done == t.num_steps
      if done % t.log_every == 0 or save_now:
        losses = np.asarray(jnp.stack([m["loss"] for m in pending]))  # [steps, P]
        pending = []
        bad = np.asarray(state.bad_step)
        now = time.perf_counter()
        rate = (done - rate_step) * t.batch_size * int(active.sum()) / max(now - rate_timer, 1e-9)
        rate_timer, rate_step = now, done
        for i in range(P):
          if not active[i]:
            continue
          if bad[i] >= 0:
            active[i], status[i] = False, "diverged"
            errors[i] = (f"member {i}: the {BAD_METRICS[int(np.asarray(state.bad_metric)[i])]} "
                         f"was not finite at step {int(bad[i])}")
            continue
          loggers[i].write(done, "train", {"loss": float(np.mean(losses[:, i])),
                                           "events_per_second": rate / max(int(active.sum()), 1)})
        bar.set_postfix(events_per_s=f"{rate:,.0f}", active=int(active.sum()))
        bar.update(done - bar.n)
      if evaluate_now:
        host = host_copy(state.params)
        for i in range(P):
          if not active[i]:
            continue
          scores = evaluate(family, member(i, host), prepared, configs[i], "valid")["model"]
          loggers[i].write(done, "valid", {k: v for k, v in scores.items() if isinstance(v, float)})
          lp = loops[i]
          if lp["best_nll"] is None or scores["nll_per_event"] < lp["best_nll"]:
            lp.update(best_nll=scores["nll_per_event"], best_step=done, evals_since_best=0)
            ckpts[i].save(ckpts[i].best, done, member(i, state), meta(i))
          else:
            lp["evals_since_best"] += 1
          if t.patience and lp["evals_since_best"] >= t.patience:
            lp["stopped_early"], active[i], status[i] = True, False, "stopped_early"
          if on_eval is not None and on_eval(i, done, scores):
            active[i], status[i] = False, "pruned"
      if save_now:
        save_latest(done)
    bar.close()
    for ck in ckpts:
      ck.wait()
    results = []
    final = host_copy(state.step)
    for i in range(P):
      ck, c = ckpts[i], configs[i]
      best_step = ck.best.latest_step()
      out = {"status": status[i], "error": errors[i], "best_step": best_step,
             "step": int(final[i]), "valid": None}
      if best_step is not None:
        restored, _ = ck.restore(ck.best, best_step, member(i, state), c, prepared.data_hash)
        out["valid"] = evaluate(family, host_copy(restored.params), prepared, c, "valid", references)
        write_eval(workdirs[i], "valid", best_step, family, c, prepared.kind, out["valid"])
      results.append(out)
  finally:
    for lg in loggers:
      lg.close()
    for ck in ckpts:
      ck.close()
  for i, r in enumerate(results):
    if r["valid"] is not None:
      say(format_table({"model": r["valid"]["model"]}, f"member {i} ({r['status']}, best step "
                       f"{r['best_step']})", c0.data.eval_k, prepared.kind, family.nll_kind))
  return results


def tune_population(study, config, params, workdir, *, trials: int, max_trials: int, progress: bool,
                    say=print) -> None:
  """Run `trials` trials of the study `population` at a time (`train_population`),
  each member a trial: asked together, pruned one by one, told its best NLL."""
  import optuna
  from luce.tune._study import _finished, claim, trial_values
  P = config.tune.population
  if config.tune.objective != "valid":
    raise ConfigError("tune.population > 1 trains on the validation objective only "
                      "(tune.objective='valid').")
  left = trials
  while left > 0 and not (max_trials and _finished(study) >= max_trials):
    size = min(P, left)
    asked = [study.ask() for _ in range(size)]
    members, folders = [], []
    for trial in asked:
      folders.append(claim(trial, workdir))
      members.append(trial_values(trial, params))
    t0 = time.perf_counter()

    def on_eval(i, step, scores, asked=asked):
      asked[i].report(float(scores["nll_per_event"]), step)
      return asked[i].should_prune()

    results = train_population(config, members, folders, on_eval=on_eval, say=lambda *a, **k: None,
                               progress=progress)
    seconds = time.perf_counter() - t0
    for trial, r in zip(asked, results):
      trial.set_user_attr("seconds", seconds / size)
      if r["status"] == "pruned":
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
      elif r["status"] == "diverged" or r["valid"] is None:
        trial.set_user_attr("failed_because", r["error"] or "no evaluation")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
      else:
        study.tell(trial, float(r["valid"]["model"]["nll_per_event"]))
    say(f"population of {size}: {seconds:.0f}s, best of it "
        f"{min((r['valid']['model']['nll_per_event'] for r in results if r['valid']), default=float('nan')):.4f}")
    left -= size

