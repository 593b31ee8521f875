"""luce.eval: metrics, significance, portfolio accounting and the walk-forward backtest.

    wf = luce.eval.walk_forward(luce.configs.sp500.get_config(), "/tmp/luce-bt")
    result = luce.eval.score_backtest(wf)          # metrics.json's numbers
    luce.eval.write_report(result, wf.times, "/tmp/luce-bt/report")

Metrics are jit-able JAX functions over a batch of events (`nll`, `hits`,
`precision_at_k`, `recall_at_k`, `ndcg_at_k`, `reciprocal_rank`,
`inclusion_probabilities`, `calibration`); significance and portfolio
accounting are vectorised numpy (`compare`, `block_bootstrap_means`,
`diebold_mariano`, `portfolio_backtest`, `run_weights`, `extremes`: whether a
ranking's skill is direction or only size of moves).
"""

from luce.eval._metrics import (NLL_KINDS, calibration, calibration_of, event_metrics, hits,
                                hits_at_k, inclusion_probabilities, ndcg_at_k, nll, precision_at_k,
                                recall_at_k, reciprocal_rank, top_k_items)
from luce.eval._significance import (block_bootstrap_means, compare, default_block,
                                     diebold_mariano, verdict)
from luce.eval._portfolio import (PERIODS_PER_YEAR, describe_extremes, equal_weights, extremes,
                                  run_weights, sharpe, sharpe_difference, top_k_weights)
from luce.eval._portfolio import backtest as portfolio_backtest
from luce.eval._portfolio import summary as portfolio_summary
from luce.eval._walk_forward import WalkForward, plan_folds, start_index, walk_forward
from luce.eval._report import asset_returns, score_backtest, summary_table, write_report
