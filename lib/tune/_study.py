"""`tune`: an Optuna study over a config's search space, each trial a real luce run.

A trial is `luce.train.train_and_evaluate` (objective "valid": its best
validation NLL) or `luce.eval.walk_forward` over the validation events
(objective "walk_forward": their mean NLL) in WORKDIR/trials/NNNN, with its
own checkpoints, metrics and config. With the "valid" objective every
evaluation of the loop reports the validation NLL to the pruner.

The study lives in Optuna's RDB storage (an SQLite file WORKDIR/study.db by
default, or any SQLAlchemy URL), so several processes, on one machine or
many, share it: each asks the storage for its next trial, so none runs twice.
A trial whose process died is failed and queued again with the same
parameters, and its rerun resumes from the dead one's checkpoints in the same
trial folder:

- on this machine at once, when a tuner starts and finds a RUNNING trial of
  this host whose process is gone;
- elsewhere, by Optuna's heartbeat: a RUNNING trial silent for longer than
  GRACE_SECONDS is failed by the next process that starts a trial.

Samplers draw from a seed mixed from `config.seed` and the trial number, so
two processes started with one seed do not propose the same parameters, and a
rerun of a study proposes what the first run did.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import socket
import time
import warnings

import numpy as np

from luce.errors import ConfigError, NonFiniteError
from luce.train._space import Param, apply_params, parse_space

HEARTBEAT_SECONDS = 10
GRACE_SECONDS = 60
MAX_RETRIES = 2


def _optuna():
  try:
    import optuna
  except ImportError as err:  # pragma: no cover - optuna is a dependency
    raise ConfigError("luce-tune needs optuna: pip install optuna") from err
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  return optuna


def storage_url(workdir, storage: str | None = None) -> str:
  """`storage`, or sqlite:///WORKDIR/study.db."""
  if storage:
    return storage
  return f"sqlite:///{(pathlib.Path(workdir) / 'study.db').absolute()}"


def open_storage(url: str):
  """Optuna's RDBStorage at `url`, with heartbeats and the rerun of dead trials.

  SQLite waits up to a minute for another process's write lock instead of
  failing with "database is locked". Processes creating one storage at once
  race to create its tables: the loser retries (and, for SQLite, they take
  turns under a lock file beside the database).
  """
  optuna = _optuna()
  import sqlalchemy.exc
  engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
  for attempt in range(5):
    try:
      with _sqlite_lock(url), warnings.catch_warnings():  # heartbeats are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_SECONDS,
            grace_period=GRACE_SECONDS, heartbeat_stale_trial_callback=retry_failed)
    except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError) as err:
      last = err  # another process creating the tables; or the server is away
      time.sleep(0.5 * (attempt + 1))
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as err:  # a bad URL, no driver
      raise ConfigError(f"--storage={url!r}: cannot open the study storage: "
                        f"{type(err).__name__}: {err}") from None
  raise ConfigError(f"--storage={url!r}: cannot open the study storage: {type(last).__name__}: "
                    f"{last}") from None


@contextlib.contextmanager
def _sqlite_lock(url: str):
  """An exclusive lock on DB.lock beside an SQLite database (nothing for other URLs)."""
  prefix = "sqlite:///"
  if not url.startswith(prefix) or url == prefix + ":memory:":
    yield
    return
  import fcntl
  path = pathlib.Path(url[len(prefix):] + ".lock")
  path.parent.mkdir(parents=True, exist_ok=True)
  with open(path, "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def retry_failed(study, trial) -> None:
  """Queue a trial that died (not one that failed on its own) again with its
  parameters; the rerun uses the same trial folder and resumes from it."""
  root = trial.user_attrs.get("retry_of", trial.number)
  attempt = trial.user_attrs.get("attempt", 0) + 1
  if attempt > MAX_RETRIES:
    return
  study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": root, "attempt": attempt},
                      skip_if_exists=False)


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def fail_dead_trials(study, say=print) -> list[int]:
  """Fail (and queue again) the RUNNING trials of this host whose process is gone."""
  optuna = _optuna()
  host, dead = socket.gethostname(), []
  for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
    attrs = trial.user_attrs
    if attrs.get("host") != host or "pid" not in attrs or _alive(int(attrs["pid"])):
      continue
    try:
      study._storage.set_trial_user_attr(trial._trial_id, "failed_because",
                                         f"process {attrs['pid']} on {host} died")
      study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
    except (RuntimeError, optuna.exceptions.UpdateFinishedTrialError):
      continue  # another process failed it first
    retry_failed(study, trial)
    dead.append(trial.number)
  if dead:
    say(f"trials {', '.join(map(str, dead))}: their process died; failed them and queued them again "
        f"(their reruns resume from the trial folders)")
  return dead


class TrialSeeded:
  """An Optuna sampler whose randomness is a function of (seed, trial number).

  Before each trial it makes a fresh sampler from `make(seed)` with a seed
  mixed from the study seed and the trial's number, and hands it every call
  of that trial. TPE still models the study's finished trials; only its
  random draws are per trial. Trial 0 takes `first` (field -> value: the
  config's own values) where given: exactly one trial of a study has number
  0, however many processes start it at once.
  """

  def __init__(self, make, seed: int, first: dict | None = None):
    self._make, self._seed, self._first = make, int(seed), first or {}
    self._inner = make(self._mix(-1))

  def _mix(self, number: int) -> int:
    return int(np.random.SeedSequence([self._seed, number + 1]).generate_state(1)[0])

  def __getattr__(self, name):
    return getattr(self._inner, name)

  def infer_relative_search_space(self, study, trial):
    if trial.number == 0 and self._first:
      return {}
    return self._inner.infer_relative_search_space(study, trial)

  def sample_relative(self, study, trial, search_space):
    return self._inner.sample_relative(study, trial, search_space)

  def sample_independent(self, study, trial, name, distribution):
    if trial.number == 0 and name in self._first:
      return self._first[name]
    return self._inner.sample_independent(study, trial, name, distribution)

  def before_trial(self, study, trial):
    self._inner = self._make(self._mix(trial.number))
    self._inner.before_trial(study, trial)

  def after_trial(self, study, trial, state, values):
    self._inner.after_trial(study, trial, state, values)

  def reseed_rng(self):
    self._inner.reseed_rng()


def make_sampler(params: list[Param], tune, seed: int, first: dict | None = None):
  """The Optuna sampler of `tune.sampler` (`first`: trial 0's values, `TrialSeeded`;
  a grid visits its own points only)."""
  optuna = _optuna()
  s = optuna.samplers
  if tune.sampler == "grid":
    grid = {p.field: p.grid(tune.grid_points) for p in params}
    return s.GridSampler(grid, seed=seed)
  if tune.sampler == "random":
    base = s.RandomSampler
    return TrialSeeded(lambda k: base(seed=k), seed, first)
  startup = tune.startup_trials
  return TrialSeeded(lambda k: s.TPESampler(seed=k, n_startup_trials=startup, multivariate=True,
                                            constant_liar=True), seed, first)


def make_pruner(tune, config):
  optuna = _optuna()
  evals = max(config.train.num_steps // config.train.eval_every, 1)
  if tune.pruner == "median":
    return optuna.pruners.MedianPruner(n_startup_trials=max(tune.startup_trials, 1),
                                       n_warmup_steps=config.train.eval_every)
  if tune.pruner == "hyperband":
    return optuna.pruners.HyperbandPruner(min_resource=config.train.eval_every,
                                          max_resource=config.train.num_steps,
                                          reduction_factor=3 if evals >= 3 else 2)
  return optuna.pruners.NopPruner()


def trial_values(trial, params: list[Param]) -> dict:
  """Each searched field's value for `trial` (suggested, or fixed by enqueue)."""
  out = {}
  for p in params:
    if p.kind == "categorical":
      out[p.field] = trial.suggest_categorical(p.field, list(p.choices))
    elif p.kind in ("int", "logint"):
      out[p.field] = trial.suggest_int(p.field, p.low, p.high, step=p.step or 1,
                                       log=p.kind == "logint")
    else:
      out[p.field] = trial.suggest_float(p.field, p.low, p.high, log=p.kind == "loguniform")
  return out


def defaults_of(config, params: list[Param]) -> dict | None:
  """The config's own values of the searched fields, when every one lies in
  its range (trial 0 of a study: the default to beat)."""
  out = {}
  for p in params:
    node = config
    for part in p.field.split("."):
      node = node[part]
    value = node
    if p.kind == "categorical":
      if value not in p.choices:
        return None
    elif not p.low <= value <= p.high or (p.step and (value - p.low) % p.step):
      return None
    out[p.field] = value
  return out


@dataclasses.dataclass
class TuneResult:
  """What `tune` leaves: the study, the best trial's values and the files written."""
  study: object
  best_value: float | None
  best_params: dict
  default_value: float | None
  files: dict
  held_out: dict | None = None


def walk_forward_window(config) -> dict:
  """Overrides that make a walk-forward predict the validation events only."""
  from luce.train import prepare
  prepared = prepare(config)
  times = prepared.table.times()
  valid, test = prepared.split_range("valid"), prepared.split_range("test")
  if len(valid) == 0:
    raise ConfigError("tune.objective=walk_forward needs validation events (data.split or "
                      "data.valid_from).")

  def fmt(t):
    return str(np.datetime64(t, "s")) if np.issubdtype(times.dtype, np.datetime64) else str(int(t))
  out = {"backtest.start": fmt(times[valid.start])}
  if len(test):
    out["data.test_until"] = fmt(times[test.start])
  return out


def run_trial(config, trial_dir: pathlib.Path, *, objective: str, report=None, say=print) -> float:
  """One trial's objective in `trial_dir` (resumed if it holds a run)."""
  if objective == "walk_forward":
    from luce.eval import walk_forward
    from luce.losses import event_nll
    result = walk_forward(config, trial_dir, progress=False, say=say)
    if "model" in result.nll:
      per_event = np.asarray(result.nll["model"], np.float64)
    else:
      per_event = np.asarray(event_nll(result.scores["model"], result.items, result.available,
                                       kind=result.kind), np.float64)
    return float(per_event.mean())
  from luce.train import train_and_evaluate
  out = train_and_evaluate(config, trial_dir, on_eval=report, say=say)
  return float(out["valid"]["model"]["nll_per_event"])


def tune(config, workdir, *, study_name: str = "luce", storage: str | None = None, trials: int = 20,
         max_trials: int = 0, progress: bool = True, say=print,
         config_path: str | None = None) -> TuneResult:
  """Run `trials` trials of `config.tune.space` in the study `study_name`.

  Args:
    config: a config whose `tune` section declares the space (`parse_space`).
    workdir: the tuning folder: study.db (by default), trials/NNNN (one run
      each), best.flags, trials.csv and report/.
    study_name: the study in the storage; processes naming the same study
      share its trials.
    storage: a SQLAlchemy URL (postgresql://..., mysql://..., sqlite:///...);
      default sqlite:///WORKDIR/study.db.
    trials: how many trials this process runs (finished, pruned or failed).
    max_trials: stop once the study holds this many complete or pruned trials
      (all processes together; 0: no cap). A restarted tuner with the same
      cap finishes what the killed one left.
  """
  from luce.train import checked_config
  optuna = _optuna()
  config = checked_config(config)
  tune_cfg = config.tune
  params = parse_space(tune_cfg.space, population=tune_cfg.population > 1)
  if not params:
    raise ConfigError("tune.space is empty: declare what to search in the config, e.g. "
                      "c.tune.space = ('optimizer.learning_rate=loguniform(1e-4, 1e-2)',).")
  if trials < 0 or max_trials < 0:
    raise ConfigError(f"--trials={trials} and --max_trials={max_trials} must be >= 0.")
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  url = storage_url(workdir, storage)
  defaults = defaults_of(config, params)
  storage = open_storage(url)
  with _sqlite_lock(url):  # one process at a time creates the study and records its space
    study = optuna.create_study(study_name=study_name, storage=storage, direction="minimize",
                                sampler=make_sampler(params, tune_cfg, config.seed, defaults),
                                pruner=make_pruner(tune_cfg, config), load_if_exists=True)
    _check_same_space(study, params)
  fail_dead_trials(study, say=say)
  before = len(study.trials)
  window = walk_forward_window(config) if tune_cfg.objective == "walk_forward" else {}
  say(f"study {study_name!r} at {url}: {before} trials so far; this process runs "
      f"{trials} ({tune_cfg.sampler} sampler, {tune_cfg.pruner} pruner, objective "
      f"{tune_cfg.objective})")

  if tune_cfg.population > 1:
    from luce.tune._population import tune_population
    tune_population(study, config, params, workdir, trials=trials, max_trials=max_trials,
                    progress=progress, say=say)
  else:
    _optimize(study, config, params, workdir, window, trials=trials, max_trials=max_trials,
              progress=progress, say=say)
  from luce.tune._report import write_outputs
  return write_outputs(study, config, params, workdir, say=say, config_path=config_path)


def _check_same_space(study, params: list[Param]) -> None:
  """A study keeps one space: refuse to add trials of another space to it."""
  described = [p.describe() for p in params]
  saved = study.user_attrs.get("space")
  if saved is None:
    study.set_user_attr("space", described)
  elif saved != described:
    raise ConfigError(f"study {study.study_name!r} was created with the space {saved}, this config "
                      f"declares {described}: use the same tune.space, or another --study.")


def trial_dir(workdir: pathlib.Path, trial) -> pathlib.Path:
  """WORKDIR/trials/NNNN of the trial (a rerun uses the folder of the trial it reruns)."""
  return pathlib.Path(workdir) / "trials" / f"{int(trial.user_attrs.get('retry_of', trial.number)):04d}"


def claim(trial, workdir) -> pathlib.Path:
  """Record this host and process on `trial` (how a dead trial is found) and
  return its folder."""
  folder = trial_dir(workdir, trial)
  trial.set_user_attr("host", socket.gethostname())
  trial.set_user_attr("pid", os.getpid())
  trial.set_user_attr("workdir", str(folder))
  return folder


def _finished(study) -> int:
  optuna = _optuna()
  return len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,
                                                      optuna.trial.TrialState.PRUNED)))


def _optimize(study, config, params, workdir, window, *, trials, max_trials, progress, say):
  optuna = _optuna()
  objective_name = config.tune.objective
  bar = _bar(trials, progress)

  def objective(trial):
    folder = claim(trial, workdir)
    values = trial_values(trial, params)
    first = trial.user_attrs.get("retry_of", trial.number) == 0
    if first and config.tune.sampler != "grid" and values == defaults_of(config, params):
      trial.set_user_attr("default", True)
    trial_config = apply_params(config, {**values, **window, "train.progress_bar": False})
    t0 = time.perf_counter()

    def report(step, scores):
      trial.report(float(scores["nll_per_event"]), step)
      if trial.should_prune():
        raise optuna.TrialPruned(f"pruned at step {step}: validation NLL "
                                 f"{scores['nll_per_event']:.4f}")

    try:
      value = run_trial(trial_config, folder, objective=objective_name,
                        report=report if objective_name == "valid" else None, say=_silent)
    except optuna.TrialPruned:
      say(f"trial {trial.number}: pruned ({_short(values)})")
      raise
    except NonFiniteError as err:
      trial.set_user_attr("failed_because", str(err))
      say(f"trial {trial.number}: failed, the loss diverged ({_short(values)})")
      raise
    trial.set_user_attr("seconds", time.perf_counter() - t0)
    say(f"trial {trial.number}: NLL {value:.4f} in {time.perf_counter() - t0:.0f}s ({_short(values)})")
    return value

  def cap(study, trial):
    bar.update(1)
    best = _best_value(study)
    if best is not None:
      bar.set_postfix(best=f"{best:.4f}")
    if max_trials and _finished(study) >= max_trials:
      study.stop()

  if max_trials and _finished(study) >= max_trials:
    say(f"the study already holds {max_trials} finished trials (--max_trials)")
  elif trials:
    study.optimize(objective, n_trials=trials, callbacks=[cap], catch=(NonFiniteError,),
                   gc_after_trial=True)
  bar.close()


def _best_value(study):
  try:
    return study.best_value
  except ValueError:
    return None


def _short(values: dict) -> str:
  return ", ".join(f"{k.rsplit('.', 1)[-1]}={_fmt(v)}" for k, v in values.items())


def _fmt(value) -> str:
  return f"{value:.4g}" if isinstance(value, float) else str(value)


def _bar(total: int, progress: bool):
  from tqdm import tqdm
  return tqdm(total=total, unit="trial", dynamic_ncols=True, leave=False, disable=not progress)


def _silent(*args, **kwargs) -> None:
  """Trials run quietly: their own lines would bury the tuner's."""
