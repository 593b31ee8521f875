"""Damaged checkpoints: a resume (and luce-eval's load) restores the newest step that reads
back whole, names the skipped step and why, moves it aside without deleting it, and ends
where an undamaged run ends; with no readable step, a CheckpointError names the folder."""

import pathlib

import jax
import numpy as np
import pytest

import luce.train
from luce.errors import CheckpointError

from test_train import leaves, tiny_config


def _largest_file(folder: pathlib.Path) -> pathlib.Path:
  return max((p for p in folder.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)


def truncate_array_file(step: pathlib.Path) -> None:
  path = _largest_file(step / "state")
  path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def empty_step_folder(step: pathlib.Path) -> None:
  for p in sorted(step.rglob("*"), key=lambda p: len(p.parts), reverse=True):
    p.rmdir() if p.is_dir() else p.unlink()


def empty_metadata_file(step: pathlib.Path) -> None:
  (step / "meta" / "metadata").write_text("")


DAMAGE = {"truncated array file": truncate_array_file, "empty step folder": empty_step_folder,
          "emptied metadata file": empty_metadata_file}
CONFIG = dict(**{"train.num_steps": 20, "train.checkpoint_every": 5, "train.eval_every": 5,
                 "train.async_checkpoints": False})


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """An undamaged 20-step run."""
  return luce.train.train_and_evaluate(tiny_config(**CONFIG), tmp_path_factory.mktemp("ref"))


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_resume_skips_a_damaged_newest_step(tmp_path, capsys, reference, damage):
  luce.train.train_and_evaluate(tiny_config(**{**CONFIG, "train.num_steps": 20}), tmp_path)
  folder = tmp_path / "checkpoints"
  assert sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) == [15, 20]
  DAMAGE[damage](folder / "20")
  capsys.readouterr()
  done = luce.train.train_and_evaluate(tiny_config(**CONFIG), tmp_path)
  out = capsys.readouterr().out
  assert f"checkpoint {folder}/20 is unreadable" in out and "skipped it" in out, out
  assert "not deleted" in out and (folder / "unreadable-20").exists()
  assert "resumed from" in out and "/15" in out
  for a, b in zip(leaves(done["final_params"]), leaves(reference["final_params"]), strict=True):
    np.testing.assert_array_equal(a, b)
  # The run wrote step 20 again, whole: the next load reads it.
  run = luce.train.load_run(tmp_path, checkpoint="latest")
  assert run.step == 20


def test_no_readable_step_is_a_checkpoint_error_naming_the_folder(tmp_path):
  luce.train.train_and_evaluate(tiny_config(**CONFIG), tmp_path)
  for step in (15, 20):
    truncate_array_file(tmp_path / "checkpoints" / str(step))
  with pytest.raises(CheckpointError, match=r"no checkpoint in .*checkpoints reads back whole: "
                                            r"step 20: .*; step 15: "):
    luce.train.train_and_evaluate(tiny_config(**CONFIG), tmp_path)
  assert (tmp_path / "checkpoints" / "unreadable-20").exists()


def test_load_run_falls_back_from_a_damaged_best(tmp_path, capsys):
  luce.train.train_and_evaluate(tiny_config(**CONFIG), tmp_path)
  best = tmp_path / "best"
  (step,) = [p for p in best.iterdir() if p.name.isdigit()]
  empty_metadata_file(step)
  capsys.readouterr()
  run = luce.train.load_run(tmp_path)             # best/ has nothing readable: latest
  assert run.checkpoint == "latest" and run.step == 20
  assert jax.tree.leaves(run.params)
