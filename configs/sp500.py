"""S&P 500 daily asset ranking (skfolio's 20 stocks, 1990-2022): the embedded default.

    luce-train --config=configs/sp500.py --workdir=/tmp/luce-sp500

    luce-backtest --config=configs/sp500.py --workdir=/tmp/luce-bt-sp500

Reads `prices:sp500` (shipped inside the skfolio wheel, works offline): each day
ranks the 20 assets by that day's return, and carries each asset's trailing
20-day volatility, 60-day momentum and 5-day reversal from earlier prices (the
default `?covariates=` of prices:). Trains an MLP PL scorer on 80% of the days,
evaluates on the next 10%, and prints the validation NLL (nats per day) of the
model beside uniform, frequency PL, recency PL and static PL. Takes under a
minute on 2 CPU cores. Daily return ranks are close to noise: expect the model
and static PL near 42.1-42.2 nats per day, uniform at log 20! = 42.34. The
backtest (2005-2022) prints the model's skill over each baseline: on
2026-12-02 +0.061 nats per day over static PL, 95% CI [+0.047, +0.074], from
ranking quiet stocks first, not from picking the day's winners.

`:ARG` picks the encoder: `configs/sp500.py:itransformer`, `:transformer`.
"""

from luce.train import base_config


def get_config(arg: str = "mlp"):
  c = base_config()
  c.data.source = "prices:sp500"
  c.data.eval_k = 5
  c.model.encoder = arg or "mlp"
  c.model.dropout = 0.1
  c.train.batch_size = 128
  c.train.num_steps = 1000
  c.train.eval_every = 100
  c.train.checkpoint_every = 100
  c.optimizer.learning_rate = 3e-4
  c.optimizer.weight_decay = 1e-2
  # Beside the four history baselines: conditional logit on the price covariates.
  c.baselines.names = ("uniform", "frequency", "recency", "static", "conditional_logit")
  # luce-backtest: 2005-2022 predicted day by day, refit yearly (about 250 trading days).
  c.backtest.start = "2005-01-01"
  c.backtest.retrain_every = 250
  c.backtest.first_steps = 1000
  c.backtest.retrain_steps = 200
  # luce-tune's default space (the config's own values lie inside it: trial 0).
  c.tune.space = ("optimizer.learning_rate=loguniform(1e-4, 3e-3)",
                  "optimizer.weight_decay=loguniform(1e-4, 1e-1)",
                  "model.dropout=uniform(0.0, 0.4)",
                  "model.hidden=categorical(32, 64, 128)")
  return c
