"""The fields every luce training config has, with their defaults.

A config file's `get_config(arg)` starts from `base_config()` and changes what
its data needs. Every field is listed here (and nowhere else), so a typo in a
config file or on the command line (`--config.train.num_step=5`) fails with a
suggestion instead of being ignored.
"""

from __future__ import annotations

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  # A luce.data source string (`luce.data.read`), or "synthetic" for events from
  # the known model of `data.synthetic` (luce.models.synthetic_pl).
  c.data.source = "prices:sp500"
  # Time split: fractions (train, valid, test) of the events, unless valid_from /
  # test_from (ISO dates, "YYYY-MM-DD", or integer steps) give the cuts.
  c.data.split = (0.8, 0.1, 0.1)
  c.data.valid_from = ""
  c.data.test_from = ""
  c.data.test_until = ""                  # drop events at or after this time ("" keeps all)
  c.data.eval_k = 5                       # k of hits@k and NDCG@k
  c.data.features = ml_collections.ConfigDict(dict(
      last=4, horizons=(10, 50, 200), since_last=True, calendar=True, static=True))
  c.data.synthetic = ml_collections.ConfigDict(dict(
      n_items=20, k=5, n_events=4000, kind="ranking", item_spread=1.0, momentum=1.0,
      rank_momentum=1.0, seed=0))

  c.model = ml_collections.ConfigDict(dict(
      encoder="mlp", hidden=64, depth=2, heads=4, embed_dim=16, dropout=0.0))
  # "pl" (neural Plackett-Luce) or "diffusion" (luce.diffusion: the same encoder for the
  # base logits plus a subset denoiser; sets only, scored by the exact subset recursion).
  c.model.family = "pl"

  c.optimizer = ml_collections.ConfigDict(dict(
      learning_rate=3e-3, warmup_steps=50, schedule="cosine",  # or "constant"
      weight_decay=1e-4, clip_norm=1.0, b1=0.9, b2=0.999))

  c.train = ml_collections.ConfigDict(dict(
      batch_size=128, num_steps=1000, log_every=50, eval_every=200, checkpoint_every=200,
      max_to_keep=2, patience=0,             # evaluations without improvement before stopping (0: never)
      eval_batch_size=1024, progress_bar=True, async_checkpoints=True))

  c.mesh = ml_collections.ConfigDict(dict(data=-1))  # devices on the data axis; -1: all

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
      calibration_samples=256, calibration_bins=10))
  return c


# Fields that may differ between a run and the run it resumes: they change how
# the run is watched, not what it computes.
RESUMABLE_CHANGES = ("train.log_every", "train.progress_bar", "train.async_checkpoints",
                     "train.eval_batch_size", "train.max_to_keep")
# The backtest section does not change what luce-train computes (runs written before it existed resume).
RESUMABLE_CHANGES += tuple(f"backtest.{name}" for name in base_config().backtest)
