"""luce.train: the train step, the train loop, checkpoints and evaluation of a run.

    config = luce.configs.sp500.get_config()         # or a nested dict of overrides
    result = luce.train.train_and_evaluate(config, "/tmp/luce-sp500")
    result["valid"]["model"]["nll_per_event"]

`make_train_step(model, optimizer, loss)` is the pure jitted step the loop runs;
use it directly to write another loop.
"""

from luce.train._config import checked_config, incompatible_changes
from luce.train._data import Prepared, baseline_scores, prepare, split_bounds
from luce.train._loop import (Checkpoints, NonFiniteError, Run, evaluate_run, load_run, batch_indices, build_model, evaluate,
                              format_table, predict_scores, reference_scores, train_and_evaluate)
from luce.train._step import (BATCH_KEYS, TrainState, init_state, make_mesh, make_optimizer,
                              make_train_step, pl_loss)
from luce.train._predict import predict
