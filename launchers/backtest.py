"""luce-backtest: walk-forward backtest of a config's model against every baseline.

    luce-backtest --config=configs/sp500.py --workdir=/tmp/luce-bt-sp500
    luce-backtest --config=configs/f1.py --workdir=/tmp/luce-bt-f1
    luce-backtest --config=configs/powerball.py --workdir=/tmp/luce-bt-powerball
    luce-backtest --config=configs/powerball.py --config.model.family=diffusion --workdir=/tmp/luce-bt-pb-dsd

Each event from `backtest.start` on is predicted by the model trained only on
earlier events, retrained (warm-started from the last checkpoint) every
`backtest.retrain_every` events; uniform, frequency, recency and static PL are
refit on the same windows. Shows a progress bar over the folds, then writes
WORKDIR/report/{report.md, report.html, metrics.json, *.png} and prints the
report's path and a short table: NLL (nats per event, exact), the model's skill
over each baseline with its block-bootstrap interval and Diebold-Mariano
p-value, the verdict in words and, for asset rankings, the top-k portfolio
after costs against equal weight. Running again resumes after the last fold.
Either model family walks forward: a diffusion model (sets, or rankings by its
ordered variant) is scored by its exact NLL (the subset recursion, k <= 12; the
MD4 bound beyond, said in the table) and calibrated on its own samples.
"""

from __future__ import annotations

import pathlib
import time

from absl import app, flags, logging
from ml_collections import config_flags
from luce.launchers._cli import launch

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, configs/NAME.py[:ARG]; override fields with --config.x=...",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Folder of the backtest (checkpoints, report/).")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  from luce import eval as luce_eval
  t0 = time.perf_counter()
  config = _CONFIG.value
  from luce.train import use_compilation_cache
  use_compilation_cache(config)
  wf = luce_eval.walk_forward(config, FLAGS.workdir, progress=bool(config.train.progress_bar))
  result = luce_eval.score_backtest(wf)
  result["seconds"]["total"] = round(time.perf_counter() - t0, 1)
  path = luce_eval.write_report(result, wf.times, pathlib.Path(FLAGS.workdir) / "report")
  print(luce_eval.summary_table(result))
  for text in result["verdicts"].values():
    print("  " + text[0].upper() + text[1:])
  print(f"report: {path} ({result['seconds']['total']:.0f}s)")


def run():
  launch(main, __name__)


if __name__ == "__main__":
  run()
