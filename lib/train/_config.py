"""The config schema of every luce run: its fields, their defaults and their checks.

The library owns the schema; `configs/NAME.py` files are experiments that start
from `base_config()` and change what their data needs. Every field the code
reads is listed here (and nowhere else), so a typo in a config file or on the
command line (`--config.train.num_step=5`) fails with a suggestion instead of
being ignored.
"""

from __future__ import annotations

import difflib
import json

import ml_collections

from luce.baselines import NAMES as BASELINE_NAMES
from luce.data import STORE_DTYPES, STORE_ENGINES
from luce.diffusion import MIXERS, DiffusionFamily
from luce.errors import ConfigError
from luce.models import ENCODERS, PLFamily

# The one place a `model.family` name becomes a family object (`luce.train.build_family`).
FAMILIES = {"pl": PLFamily, "diffusion": DiffusionFamily}
# Where training batches come from (`data.pipeline`).
PIPELINES = ("memory", "store")
# How sampled negatives are drawn (`model.negative_proposal`, luce.models.sampled_batch).
NEGATIVE_PROPOSALS = ("uniform", "popularity")


def base_config() -> ml_collections.ConfigDict:
  """Every field of a luce config with its default (an unlocked ConfigDict)."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  # A luce.data source string (`luce.data.read`), e.g. "prices:sp500",
  # "ergast:rankings/f1_1950_2019" or "synthetic:ranking?n_items=20&k=5".
  c.data.source = "prices:sp500"
  # Time split: fractions (train, valid, test) of the events, unless valid_from /
  # test_from (ISO dates, "YYYY-MM-DD", or integer steps) give the cuts.
  c.data.split = (0.8, 0.1, 0.1)
  c.data.valid_from = ""
  c.data.test_from = ""
  c.data.test_until = ""                  # drop events at or after this time ("" keeps all)
  c.data.eval_k = 5                       # k of hits@k and NDCG@k
  # Where training batches come from: "memory" (every feature in memory; small data) or
  # "store" (luce.data.build_store: features built store_dtype in chunks of chunk_events
  # events into the on-disk store in store_dir, "" = WORKDIR/features, reused while the data
  # and features are unchanged; batches read by a Grain pipeline, sharded per process,
  # prefetched by `workers` worker processes, 0 = in the training process, its state saved
  # in each checkpoint). luce-train only: backtests read in memory.
  c.data.pipeline = "memory"
  c.data.store_dir = ""
  c.data.store_dtype = "bfloat16"         # item features on disk: float32, float16 or bfloat16
  c.data.chunk_events = 65_536
  c.data.workers = 0
  # Who builds the store: "local" (this process) or "ray" (luce.data.build_store_distributed:
  # one Ray task per chunk, the same files; ray_address "" = a Ray started in this process,
  # else "auto", "HOST:PORT" or "ray://HOST:10001" of a cluster whose nodes see store_dir).
  c.data.store_engine = "local"
  c.data.ray_address = ""
  # Item history (last L events, rates over horizons), calendar, catalog features and
  # the per-event item covariates (`cov_*` columns: value, cross-sectional z-score,
  # and for categorical ones the group's results over `group_horizons` events).
  c.data.features = ml_collections.ConfigDict(dict(
      last=4, horizons=(10, 50, 200), since_last=True, calendar=True, static=True,
      covariates=True, group_horizons=(5, 20)))

  # encoder: "mlp", "transformer", "itransformer", "s5" (a diagonal state-space stack
  # over each item's last data.features.last outcomes; state_size complex states a
  # layer) or "deepar" (stacked GRUs over the same); see luce.models.PLScorer.
  c.model = ml_collections.ConfigDict(dict(
      encoder="mlp", hidden=64, depth=2, heads=4, embed_dim=16, dropout=0.0, state_size=16))
  # "pl" (neural Plackett-Luce) or "diffusion" (luce.diffusion: the same encoder for the
  # base logits plus a subset denoiser; sets and rankings, scored by the exact recursion for k <= 12, the MD4 bound beyond).
  c.model.family = "pl"
  # PL scores each event's available items only, gathered into a [batch, most available]
  # block; False scores the whole catalog (the same scores, slower when events have few
  # of the catalog's items). The "transformer" encoder always scores the catalog.
  c.model.entrants = True
  # Sampled negatives for wide events (a catalog of 10,000 items): 0 trains on the exact PL
  # likelihood over every entrant; M > 0 on each event's chosen items plus M negatives drawn
  # uniformly from its unchosen available items, the sum over the unchosen estimated with the
  # log(|U|/M) correction (luce.models.sampled_batch: consistent, exact when M >= |U|).
  # PL family, "mlp" encoder and entrants only; evaluation stays exact. negative_proposal:
  # "uniform", or "popularity" (drawn by PL sampling from q_i = 1 + the times item i was
  # listed in the training split, with the log-q correction; lower variance when a few
  # items take most of the weight).
  c.model.negatives = 0
  c.model.negative_proposal = "uniform"
  # The diffusion denoiser: how the visible items are mixed ("deepsets" or
  # "transformer") and its depth.
  c.model.mixer = "deepsets"
  c.model.denoiser_depth = 1
  # An ensemble (luce.train.EnsembleFamily): members are model-field overrides, one string
  # each ("encoder=s5", "family=diffusion, depth=1", "" for this model), each trained
  # `seeds` times from different initialisations; events are scored by the mixture of the
  # members' probabilities, with `weights` "equal" or "stacked" (fitted on events the members
  # did not train on: the walk-forward's earlier folds, or the validation split). No members
  # and seeds 1: a single model.
  c.model.ensemble = ml_collections.ConfigDict(dict(members=(), seeds=1, weights="equal"))

  c.optimizer = ml_collections.ConfigDict(dict(
      learning_rate=3e-3, warmup_steps=50, schedule="cosine",  # or "constant"
      weight_decay=1e-4, clip_norm=1.0, b1=0.9, b2=0.999))

  c.train = ml_collections.ConfigDict(dict(
      batch_size=128, num_steps=1000, log_every=50, eval_every=200, checkpoint_every=200,
      max_to_keep=2, patience=0,             # evaluations without improvement before stopping (0: never)
      eval_batch_size=1024, progress_bar=True, async_checkpoints=True))

  c.mesh = ml_collections.ConfigDict(dict(data=-1))  # devices on the data axis; -1: all

  # JAX's persistent compilation cache, which the launchers turn on
  # (`use_compilation_cache`): "default" is $JAX_COMPILATION_CACHE_DIR when set, else
  # $LUCE_CACHE_DIR/jax, else ~/.cache/luce/jax; "" turns it off. Functions that took
  # less than min_compile_secs to compile are not written.
  c.compile_cache = ml_collections.ConfigDict(dict(dir="default", min_compile_secs=0.0))

  c.baselines = ml_collections.ConfigDict(dict(
      names=("uniform", "frequency", "recency", "static"), recency_half_life=50.0, static_prior=0.01))
  # luce-backtest (luce.eval.walk_forward): predict each event from [start, end) with the
  # model last retrained on the events before it. `start`: ISO date or integer step of the
  # first predicted event ("": the first validation event of data.split / data.valid_from).
  c.backtest = ml_collections.ConfigDict(dict(
      start="", window="expanding",          # or "rolling": the last window_events events only
      window_events=0, retrain_every=250,    # refit (warm-started) every this many events
      first_steps=1000, retrain_steps=200,   # train steps of the first fit and of each refit
      portfolio_k=5, cost_bps=10.0,          # asset rankings: long top-k (and long-short), costs
      bootstrap_samples=2000, block=0, level=0.95,  # block 0: n^(1/3) events
      calibration_samples=256, calibration_bins=10,
      importance=True))                      # permutation importance of each feature group
  # luce-tune (luce.tune): the search space, one "field=distribution" per entry:
  # uniform(lo, hi), loguniform(lo, hi), int(lo, hi[, step]), logint(lo, hi),
  # categorical(a, b, ...). Sampler "tpe", "random" or "grid" (continuous ranges
  # get grid_points points); pruner "median", "hyperband" or "none" on the
  # validation NLL of each evaluation; objective "valid" (the best validation
  # NLL of a luce-train run) or "walk_forward" (the mean NLL of a walk-forward
  # over the validation events).
  c.tune = ml_collections.ConfigDict(dict(
      space=(), sampler="tpe", pruner="median", objective="valid", grid_points=3,
      startup_trials=5, population=1))
  return c


# Fields that change how a run is watched or reported, never what it trains: they
# may differ between a run and the run (or backtest) it resumes.
REPORT_ONLY = (
    "train.log_every", "train.progress_bar", "train.async_checkpoints", "train.eval_batch_size",
    "train.max_to_keep", "train.checkpoint_every", "backtest.portfolio_k", "backtest.cost_bps",
    "backtest.bootstrap_samples", "backtest.block", "backtest.level", "backtest.calibration_bins",
    "compile_cache.dir", "compile_cache.min_compile_secs",
    # The store's place and chunking change nothing it holds (chunks equal the whole).
    "data.store_dir", "data.chunk_events", "data.store_engine", "data.ray_address",
    *(f"tune.{name}" for name in base_config().tune))
# What a luce-train run never reads when it trains: it resumes whatever they are
# (the backtest section; data.eval_k, which only its report uses, while a
# backtest's calibration draws of rankings depend on it).
TRAIN_REPORT_ONLY = tuple(f"backtest.{name}" for name in base_config().backtest) + ("data.eval_k",)


def flatten(config, prefix: str = "") -> dict:
  """{"train.batch_size": 128, ...} from a (nested) ConfigDict or dict; tuples as lists."""
  out = {}
  items = config.items() if hasattr(config, "items") else []
  for key, value in items:
    name = f"{prefix}{key}"
    if isinstance(value, (dict, ml_collections.ConfigDict)):
      out.update(flatten(value, name + "."))
    else:
      out[name] = list(value) if isinstance(value, tuple) else value
  return out


def checked_config(config) -> ml_collections.ConfigDict:
  """`config` laid over `base_config()`, locked, its values checked.

  Accepts a ConfigDict or a nested dict naming any subset of the fields (the
  rest keep their defaults). Unknown fields raise ConfigError naming the
  closest known one.
  """
  base = base_config()
  known = flatten(base)
  for name, value in flatten(config).items():
    if name not in known:
      close = difflib.get_close_matches(name, list(known), n=1)
      hint = f" Did you mean {close[0]!r}?" if close else ""
      raise ConfigError(f"config field {name!r} does not exist.{hint} The fields are listed in "
                        f"luce.train.base_config().")
    *path, leaf = name.split(".")
    node = base
    for part in path:
      node = node[part]
    try:
      node[leaf] = tuple(value) if isinstance(known[name], list) else value
    except (TypeError, ValueError) as e:
      raise ConfigError(f"config field {name!r}={value!r}: {e}") from None
  _check_values(base)
  base.lock()
  return base


def _need(ok, message):
  if not ok:
    raise ConfigError(message)


def _check_model(m, where: str = "") -> None:
  """The model section's values; `where` names an ensemble member in the message."""
  def need(ok, message):
    _need(ok, message + (f" (in {where})" if where else ""))
  need(m.family in FAMILIES, f"model.family={m.family!r}; valid: {', '.join(FAMILIES)}.")
  need(m.encoder in ENCODERS, f"model.encoder={m.encoder!r}; valid: {', '.join(ENCODERS)}.")
  need(m.mixer in MIXERS, f"model.mixer={m.mixer!r}; valid: {', '.join(MIXERS)}.")
  for name in ("hidden", "heads", "denoiser_depth", "state_size"):
    need(m[name] >= 1, f"model.{name}={m[name]} must be >= 1.")
  need(m.hidden % m.heads == 0, f"model.hidden={m.hidden} must be a multiple of model.heads={m.heads}.")
  need(0 <= m.dropout < 1, f"model.dropout={m.dropout} must be in [0, 1).")
  need(m.negatives >= 0, f"model.negatives={m.negatives} must be >= 0 (0: the exact likelihood "
       "over every entrant).")
  need(m.negative_proposal in NEGATIVE_PROPOSALS, f"model.negative_proposal={m.negative_proposal!r}; "
       f"valid: {', '.join(NEGATIVE_PROPOSALS)}.")
  if m.negatives:
    need(m.family == "pl", f"model.negatives={m.negatives} samples the PL likelihood's unchosen "
         f"items; model.family={m.family!r} cannot: the diffusion denoiser's loss is a softmax over "
         "every available item at each of its k slots, conditioned on the visible ones, and luce "
         "has no sampled form of it. Use model.negatives=0.")
    need(m.encoder == "mlp", f"model.negatives={m.negatives} needs model.encoder='mlp', whose item "
         f"scores do not depend on the event's other items; {m.encoder!r} reads them, so a "
         "sampled block would change the scores themselves. Use model.negatives=0.")
    need(m.entrants, f"model.negatives={m.negatives} gathers each event's chosen items and its "
         "negatives: it needs model.entrants=True.")


def _check_values(c) -> None:
  need = _need
  _check_model(c.model)
  need(c.model.ensemble.seeds >= 1, f"model.ensemble.seeds={c.model.ensemble.seeds} must be >= 1.")
  need(c.model.ensemble.weights in ("equal", "stacked"),
       f"model.ensemble.weights={c.model.ensemble.weights!r} must be 'equal' or 'stacked'.")
  from luce.train._ensemble import member_model_configs  # imports nothing of this module
  members = member_model_configs(c.model)
  for spec_index, member in enumerate(members):
    spec = (list(c.model.ensemble.members) or [""])[spec_index // c.model.ensemble.seeds]
    _check_model(member, f"model.ensemble.members entry {spec!r}")
  need(not (c.model.negatives and members), f"model.negatives={c.model.negatives} with "
       "model.ensemble: the members train on one batch, and sampled negatives are drawn for a "
       "single PL model only. Use model.negatives=0 or no ensemble.")
  need(not (c.model.negatives and c.tune.population > 1), f"model.negatives={c.model.negatives} "
       f"with tune.population={c.tune.population}: population training gathers exact batches. "
       "Use tune.population=1.")
  for name in ("batch_size", "num_steps", "log_every", "eval_every", "checkpoint_every",
               "max_to_keep", "eval_batch_size"):
    need(c.train[name] >= 1, f"train.{name}={c.train[name]} must be >= 1.")
  need(c.train.patience >= 0, f"train.patience={c.train.patience} must be >= 0 (0: no early stop).")
  need(c.optimizer.learning_rate > 0, f"optimizer.learning_rate={c.optimizer.learning_rate} must be > 0.")
  need(c.optimizer.schedule in ("cosine", "constant"),
       f"optimizer.schedule={c.optimizer.schedule!r}; valid: cosine, constant.")
  need(c.data.eval_k >= 1, f"data.eval_k={c.data.eval_k} must be >= 1.")
  need(c.data.pipeline in PIPELINES, f"data.pipeline={c.data.pipeline!r}; valid: {', '.join(PIPELINES)}.")
  need(c.data.store_dtype in STORE_DTYPES,
       f"data.store_dtype={c.data.store_dtype!r}; valid: {', '.join(STORE_DTYPES)}.")
  need(isinstance(c.data.store_dir, str), f"data.store_dir={c.data.store_dir!r} must be a path or "
       "'' (WORKDIR/features).")
  need(c.data.store_engine in STORE_ENGINES,
       f"data.store_engine={c.data.store_engine!r}; valid: {', '.join(STORE_ENGINES)}.")
  need(isinstance(c.data.ray_address, str) and (c.data.store_engine == "ray" or not c.data.ray_address),
       f"data.ray_address={c.data.ray_address!r} must be '' (a Ray in this process), 'auto', "
       "'HOST:PORT' or 'ray://HOST:PORT', and is read only with data.store_engine='ray'.")
  need(c.data.chunk_events >= 1, f"data.chunk_events={c.data.chunk_events} must be >= 1.")
  need(c.data.workers >= 0, f"data.workers={c.data.workers} must be >= 0 (0: read in the training "
       "process).")
  for name in c.baselines.names:
    need(name in BASELINE_NAMES, f"baselines.names has {name!r}; valid: {', '.join(BASELINE_NAMES)}.")
  b = c.backtest
  need(b.window in ("expanding", "rolling"), f"backtest.window={b.window!r}; valid: expanding, rolling.")
  need(b.window != "rolling" or b.window_events >= 1,
       f"backtest.window=rolling needs backtest.window_events >= 1 (got {b.window_events}).")
  for name in ("retrain_every", "first_steps", "retrain_steps", "bootstrap_samples",
               "calibration_samples", "calibration_bins", "portfolio_k"):
    need(b[name] >= 1, f"backtest.{name}={b[name]} must be >= 1.")
  need(b.block >= 0, f"backtest.block={b.block} must be >= 0 (0: n^(1/3)).")
  u = c.tune
  need(u.sampler in ("tpe", "random", "grid"), f"tune.sampler={u.sampler!r}; valid: tpe, random, grid.")
  need(u.pruner in ("median", "hyperband", "none"),
       f"tune.pruner={u.pruner!r}; valid: median, hyperband, none.")
  need(u.objective in ("valid", "walk_forward"),
       f"tune.objective={u.objective!r}; valid: valid, walk_forward.")
  for name in ("grid_points", "population"):
    need(u[name] >= 1, f"tune.{name}={u[name]} must be >= 1.")
  need(u.startup_trials >= 0, f"tune.startup_trials={u.startup_trials} must be >= 0.")
  need(isinstance(c.compile_cache.dir, str), f"compile_cache.dir={c.compile_cache.dir!r} must be a "
       "path, 'default' or '' (off).")
  need(c.compile_cache.min_compile_secs >= 0,
       f"compile_cache.min_compile_secs={c.compile_cache.min_compile_secs} must be >= 0.")
  from luce.train._space import parse_space  # imports this module: resolved at call time
  parse_space(u.space, population=u.population > 1)


def config_json(config) -> str:
  return json.dumps(flatten(config), sort_keys=True)


def incompatible_changes(saved: dict, current: dict, *, ignore: tuple = ()) -> list[str]:
  """Fields (outside REPORT_ONLY and `ignore`) whose values differ, as 'name: old -> new'.

  `train.num_steps` may change (train longer) when both use the constant
  schedule; the cosine schedule's shape depends on it.
  """
  out = []
  constant = saved.get("optimizer.schedule") == current.get("optimizer.schedule") == "constant"
  defaults = flatten(base_config())
  for name in sorted(set(saved) | set(current)):
    if name in REPORT_ONLY or name in ignore or (constant and name == "train.num_steps"):
      continue
    if name not in saved and name in defaults and current.get(name) == defaults[name]:
      continue  # a field newer than the checkpoint, at its default
    if saved.get(name) != current.get(name):
      change = f"{name}: {saved.get(name)!r} -> {current.get(name)!r}"
      if name == "train.num_steps" and current.get("optimizer.schedule") == "cosine":
        change += (" (the cosine schedule decays over num_steps, so a run cannot be extended "
                   "under it: train longer in a new --workdir, or use optimizer.schedule="
                   "'constant' from the start, which may be extended)")
      out.append(change)
  return out
