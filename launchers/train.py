"""luce-train: train a model (neural Plackett-Luce or subset diffusion) from a config, resuming from --workdir.

    luce-train --config=configs/sp500.py --workdir=/tmp/luce-sp500
    luce-train --config=configs/f1.py --workdir=/tmp/luce-f1 --config.train.num_steps=2000

Prints the data, the compile time, a progress bar with events/s, and at the end
the validation NLL (nats per event), hits@k and NDCG@k of the best checkpoint
beside the baselines. Writes checkpoints/, best/, metrics.jsonl, tensorboard/,
config.json and eval_valid.json under --workdir; run it again to resume.

Several processes (hosts): pass --coordinator_address=HOST:PORT
--num_processes=P --process_id=I to each (jax.distributed).
"""

from __future__ import annotations

from absl import app, flags, logging
from ml_collections import config_flags
from luce.launchers._cli import launch

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config file, configs/NAME.py[:ARG]; override fields with --config.x=...",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Folder of the run (checkpoints, metrics); resumed if it has one.")
flags.DEFINE_string("coordinator_address", None, "jax.distributed coordinator HOST:PORT (multi-process).")
flags.DEFINE_integer("num_processes", 1, "Number of processes (jax.distributed).")
flags.DEFINE_integer("process_id", 0, "This process's index (jax.distributed).")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS


def initialize_distributed() -> None:
  """jax.distributed.initialize from the flags when more than one process runs."""
  if FLAGS.num_processes > 1 or FLAGS.coordinator_address:
    import jax
    from luce.errors import ConfigError
    if not FLAGS.coordinator_address:
      raise app.UsageError("--num_processes > 1 needs --coordinator_address=HOST:PORT.")
    if not 0 <= FLAGS.process_id < FLAGS.num_processes:
      raise ConfigError(f"--process_id={FLAGS.process_id} must be in [0, {FLAGS.num_processes}).")
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)


def quiet_logs() -> None:
  """orbax logs every save and restore at INFO; show warnings only unless -v is given."""
  if not FLAGS["verbosity"].present:
    logging.set_verbosity(logging.WARNING)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  quiet_logs()
  initialize_distributed()
  from luce.train import train_and_evaluate, use_compilation_cache  # after distributed init
  use_compilation_cache(_CONFIG.value)
  train_and_evaluate(_CONFIG.value, FLAGS.workdir)


def run():
  launch(main, __name__)


if __name__ == "__main__":
  run()
