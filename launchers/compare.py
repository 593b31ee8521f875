"""luce-compare: walk-forward backtests of several models on one data set, one table.

    luce-compare --config=configs/synthetic.py --workdir=/tmp/luce-cmp-synthetic
    luce-compare --config=configs/f1.py --workdir=/tmp/luce-cmp-f1 \\
      --models=mlp:model.encoder=mlp --models=s5:model.encoder=s5 \\
      --models="ens:model.ensemble.members=('encoder=mlp','encoder=s5')"

Each --models entry is "name:field=value;field=value" over the config (the
default: the mlp, s5 and deepar encoders). Every variant is backtested as
luce-backtest does, over the same events and folds, in WORKDIR/NAME/ (run
again: each resumes after its last fold). Writes WORKDIR/compare.{md,html,json}
and compare.png and prints the Markdown table: each model's NLL with its
interval, its skill over the best baseline with interval and
Diebold-Mariano p ("no skill" when the interval holds 0), hits@k, ECE and
train seconds, and the baselines' rows.
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags
from luce.launchers._cli import launch

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, configs/NAME.py[:ARG]; override fields with --config.x=...",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Folder of the comparison (one backtest folder per model).")
flags.DEFINE_multi_string("models", None, "name:field=value;... one model variant (repeat the flag); "
                          "default: mlp, s5 and deepar encoders.")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  from luce.eval import _compare
  config = _CONFIG.value
  from luce.train import use_compilation_cache
  use_compilation_cache(config)
  variants = FLAGS.models or list(_compare.DEFAULT_VARIANTS)
  out = _compare.compare_models(config, variants, FLAGS.workdir,
                                progress=bool(config.train.progress_bar))
  path = _compare.write_compare(out, FLAGS.workdir)
  print(_compare.compare_markdown(out))
  print(f"table: {path}")


def run():
  launch(main, __name__)


if __name__ == "__main__":
  run()
