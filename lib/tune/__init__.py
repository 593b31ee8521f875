"""luce.tune: hyperparameter search on Optuna, and population training with vmap.

A config declares its search space in `tune.space` (`parse_space`); `tune`
runs trials of it in an Optuna study shared through RDB storage (SQLite in the
workdir by default, any SQLAlchemy URL for many machines), each trial a real
luce run with its own checkpoints; `train_population` trains P members that
differ in learning rate, weight decay, dropout and seed in one jitted step.
The console script is luce-tune.

    >>> from luce.tune import parse_space
    >>> [p.describe() for p in parse_space(("optimizer.learning_rate=loguniform(1e-4, 1e-2)",
    ...                                     "model.hidden=int(32, 128, 32)"))]
    ['optimizer.learning_rate=loguniform(0.0001, 0.01)', 'model.hidden=int(32, 128, 32)']
"""

from luce.train._space import KINDS, POPULATION_FIELDS, Param, apply_params, parse_space
from luce.tune._study import TuneResult, open_storage, storage_url, tune
from luce.tune._population import train_population
