"""luce.train: the config schema, the one train loop, checkpoints and evaluation of a run.

    >>> import tempfile, luce.train
    >>> config = luce.train.base_config()             # or configs/NAME.py's get_config()
    >>> config.data.source = "synthetic:ranking?n_items=8&k=3&n_events=200"
    >>> config.data.eval_k = 3
    >>> config.train.update(batch_size=16, num_steps=4, eval_every=2, checkpoint_every=2,
    ...                     progress_bar=False)
    >>> config.baselines.names = ("uniform",)
    >>> result = luce.train.train_and_evaluate(config, tempfile.mkdtemp())  # doctest: +ELLIPSIS
    data: synthetic:ranking?n_items=8&k=3&n_events=200 (ranking, 200 events, 8 items; ...
    >>> sorted(result["valid"]), result["family"], result["nll"]
    (['model', 'oracle', 'uniform'], 'pl', 'exact')
    >>> result["valid"]["uniform"]["hits_at_k"]       # k²/n: ties count in expectation
    1.125

`model.family` ("pl" or "diffusion") picks the family object (`build_family`,
from the `FAMILIES` table); `Trainer.fit` trains any family, for luce-train
and for every walk-forward fold, and both families return the same keys.
`make_train_step(model, optimizer, loss)` is the pure jitted step it runs;
use it directly to write another loop.
"""

from luce.train._config import (TRAIN_REPORT_ONLY, FAMILIES, REPORT_ONLY, base_config,
                                checked_config, config_json, flatten, incompatible_changes)
from luce.train._data import (SPLITS, Prepared, baseline_scores, numeric_covariates, prepare,
                              reference_scores, split_bounds)
from luce.train._loop import (Checkpoints, Logger, Run, Trainer, batch_indices,
                              build_family, evaluate, evaluate_run, format_table, global_batch,
                              load_run, new_loop_state, train_and_evaluate, write_eval)
from luce.train._step import (TrainState, host_copy, init_state, make_mesh, make_optimizer,
                              make_train_step)
from luce.train._predict import predict
from luce.train._cache import CompilationCacheWarning, default_cache_dir, use_compilation_cache
from luce.train._ensemble import EnsembleFamily, EnsembleModel, mixture_nll, stack_weights
from luce.models import BATCH_KEYS
from luce.errors import NonFiniteError
