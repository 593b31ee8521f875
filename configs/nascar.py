"""NASCAR 2002 (Hunter 2004): 36 races ranking 43 of 87 drivers.

    luce-train --config=configs/nascar.py --workdir=/tmp/luce-nascar

Time split 60/20/20 of the races (22/7/7). Prints the validation NLL per race
of the model beside uniform, frequency, recency and static PL. The file lists no
entrants, so all 87 drivers count as available in every race and uniform (and
any model that does not learn who races) pays for the 44 who did not start.
Needs the shared data ($LUCE_SHARED_DATA, default ../shared/data).
"""

from luce.train import base_config


def get_config(arg: str = "mlp"):
  c = base_config()
  c.data.source = "rankings:rankings/nascar2002_orderings.csv"
  c.data.split = (0.6, 0.2, 0.2)
  c.data.eval_k = 5
  c.data.features.horizons = (5, 10)
  c.data.features.calendar = False
  c.model.encoder = arg or "mlp"
  c.model.hidden = 32
  c.model.embed_dim = 8
  c.model.dropout = 0.1
  c.optimizer.weight_decay = 1e-2
  c.train.batch_size = 8
  c.train.num_steps = 300
  c.train.eval_every = 25
  c.train.checkpoint_every = 25
  c.train.patience = 4
  c.baselines.recency_half_life = 10.0
  # luce-backtest: the last 14 races (validation and test) from one fit on the 22 before,
  # as long as luce-train's (the base config's 1000 steps overfit 22 races: every model fell
  # below uniform, benchmarks/MODELS.md).
  c.backtest.first_steps = 300
  # luce-tune's default space (the config's own values lie inside it: trial 0).
  c.tune.space = ("optimizer.learning_rate=loguniform(3e-4, 3e-2)",
                  "optimizer.weight_decay=loguniform(1e-4, 1e-1)",
                  "model.dropout=uniform(0.0, 0.5)",
                  "model.hidden=categorical(16, 32, 64)")
  return c
