"""luce.eval: metrics, significance, portfolio accounting and the walk-forward backtest.

    >>> import tempfile, luce.eval, luce.train
    >>> config = luce.train.base_config()             # or configs/sp500.py's get_config()
    >>> config.data.source = "synthetic:set?n_items=8&k=3&n_events=120"
    >>> config.data.eval_k = 3
    >>> config.model.update(hidden=8, depth=1)
    >>> config.train.update(batch_size=16, progress_bar=False)
    >>> config.backtest.update(start="80", retrain_every=20, first_steps=4, retrain_steps=2,
    ...                        bootstrap_samples=100, calibration_samples=16)
    >>> workdir = tempfile.mkdtemp()
    >>> wf = luce.eval.walk_forward(config, workdir, progress=False)  # doctest: +ELLIPSIS
    data: ... walk-forward over events 80..119 in 2 folds of 20 (expanding window)
    ...
    >>> result = luce.eval.score_backtest(wf)         # metrics.json's numbers
    >>> result["models"]["uniform"]["hits"]           # k²/n on sets too
    1.125
    >>> path = luce.eval.write_report(result, wf.times, f"{workdir}/report")

Metrics are `luce.metrics` (re-exported here): jit-able JAX functions over a
batch of events (`nll`, `hits`, `precision_at_k`, `recall_at_k`, `ndcg_at_k`,
`reciprocal_rank`, `inclusion_probabilities`, `calibration`, `summary`), ties
counted in expectation; significance and portfolio
accounting are vectorised numpy (`compare`, `block_bootstrap_means`,
`diebold_mariano`, `portfolio_backtest`, `run_weights`, `extremes`: whether a
ranking's skill is direction or only size of moves).
"""

from luce.metrics import (NLL_KINDS, calibration, calibration_of, event_metrics, hits, hits_at_k,
                          inclusion_probabilities, ndcg_at_k, nll, precision_at_k, recall_at_k,
                          reciprocal_rank, summary, top_k_items)
from luce.eval._significance import (block_bootstrap_means, compare, default_block,
                                     diebold_mariano, verdict)
from luce.eval._portfolio import (PERIODS_PER_YEAR, describe_extremes, equal_weights, extremes,
                                  run_weights, sharpe, sharpe_difference, top_k_weights)
from luce.eval._portfolio import backtest as portfolio_backtest, tradable_before
from luce.eval._portfolio import summary as portfolio_summary
from luce.eval._walk_forward import (WalkForward, feature_groups, fold_steps, plan_folds, start_index,
                                     walk_forward)
from luce.eval._report import asset_returns, score_backtest, summary_table, write_report
from luce.eval._compare import compare_markdown, compare_models, parse_variant, write_compare
