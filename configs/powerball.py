"""Powerball white balls (5 of 69, 2015-2026): a fair lottery, the no-skill check.

    luce-train --config=configs/powerball.py --workdir=/tmp/luce-powerball

Each draw is an unordered set: the likelihood is the PL set likelihood
(luce.pl_set.pl_set_log_prob), not the draw order. Prints the validation NLL per
draw of the model beside uniform (log C(69,5) = 16.23 nats), frequency,
recency and static PL; on a fair lottery nothing should beat uniform by more
than noise, and a model that does is overfitting. Needs the shared data
($LUCE_SHARED_DATA, default ../shared/data).
"""

from luce.train import base_config


def get_config(arg: str = "mlp"):
  c = base_config()
  c.data.source = "draws:draws/powerball.csv"
  c.data.eval_k = 5
  c.data.features.last = 4
  c.model.encoder = arg or "mlp"
  c.model.hidden = 32
  c.model.embed_dim = 4
  c.optimizer.learning_rate = 1e-3
  c.optimizer.weight_decay = 1e-2
  c.train.batch_size = 32
  c.train.num_steps = 400
  c.train.eval_every = 50
  c.train.checkpoint_every = 50
  c.train.patience = 3
  # luce-backtest: the draws from 2021 on (about half), refit every 100 draws.
  c.backtest.start = "2021-01-01"
  c.backtest.retrain_every = 100
  c.backtest.first_steps = 400
  c.backtest.retrain_steps = 100
  # luce-tune's default space (the config's own values lie inside it: trial 0).
  c.tune.space = ("optimizer.learning_rate=loguniform(1e-4, 1e-2)",
                  "optimizer.weight_decay=loguniform(1e-4, 1e-1)",
                  "model.dropout=uniform(0.0, 0.5)",
                  "model.hidden=categorical(16, 32, 64)")
  return c
