"""luce-tune: search a config's hyperparameters with Optuna, each trial a real luce run.

    luce-tune --config=configs/f1.py --workdir=/tmp/luce-f1-tune --trials=20
    luce-tune --config=configs/synthetic.py --workdir=/tmp/tune --trials=8 --sampler=random
    luce-tune --config=configs/f1.py --workdir=/tmp/t --storage=postgresql://u:p@host/db --study=f1

The space is the config's `tune.space` (e.g. "optimizer.learning_rate=loguniform(1e-4, 1e-2)");
--space replaces it with entries separated by ';'. Each trial trains in
WORKDIR/trials/NNNN; the first trial of a new study is the config's own values.
Processes that name the same --storage and --study share its trials (none runs
twice); restart a killed tuner with the same flags and it continues (add
--max_trials=N to stop at N finished trials over all processes).

Writes WORKDIR/best.flags (run it: luce-train --config=... --flagfile=WORKDIR/best.flags
--workdir=DIR), WORKDIR/trials.csv and WORKDIR/report/ (report.md, history.png,
importance.png).
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags
from luce.launchers._cli import launch

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, configs/NAME.py[:ARG]; override fields with --config.x=...",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Tuning folder: study.db, trials/NNNN, best.flags, report/.")
flags.DEFINE_string("study", "luce", "Study name in the storage; processes naming it share its trials.")
flags.DEFINE_string("storage", None, "SQLAlchemy URL of the study (default sqlite:///WORKDIR/study.db).")
flags.DEFINE_integer("trials", 20, "Trials this process runs (complete, pruned or failed).")
flags.DEFINE_integer("max_trials", 0, "Stop once the study has this many finished trials (0: no cap).")
flags.DEFINE_string("space", None, "Search space replacing tune.space: 'field=dist(...); ...'.")
flags.DEFINE_enum("sampler", None, ["tpe", "random", "grid"], "Sampler (default tune.sampler).")
flags.DEFINE_enum("pruner", None, ["median", "hyperband", "none"], "Pruner (default tune.pruner).")
flags.DEFINE_enum("objective", None, ["valid", "walk_forward"],
                  "Objective: best validation NLL, or a walk-forward over the validation events.")
flags.DEFINE_integer("population", None, "Train this many trials at once in one vmapped step "
                     "(they may differ only in learning rate, weight decay, dropout and seed).")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)
  import ml_collections
  from luce.tune import tune
  config = ml_collections.ConfigDict(_CONFIG.value.to_dict())
  if FLAGS.space is not None:
    config.tune.space = tuple(part.strip() for part in FLAGS.space.split(";") if part.strip())
  for name in ("sampler", "pruner", "objective", "population"):
    if FLAGS[name].value is not None:
      config.tune[name] = FLAGS[name].value
  from luce.train import use_compilation_cache
  use_compilation_cache(config)
  config_path = FLAGS["config"].config_filename if hasattr(FLAGS["config"], "config_filename") else None
  tune(config, FLAGS.workdir, study_name=FLAGS.study, storage=FLAGS.storage, trials=FLAGS.trials,
       max_trials=FLAGS.max_trials, config_path=config_path)


def run():
  launch(main, __name__)


if __name__ == "__main__":
  run()
