"""The cluster launch scripts of scripts/launch/: their dry runs print the right
commands, a real run (with fake srun, gcloud, ssh and luce-train on PATH) runs
them, and a missing or bad argument is one clear error with exit status 2."""

from __future__ import annotations

import os
import pathlib
import shlex
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "scripts" / "launch"
SLURM = LAUNCH / "slurm_gpu.sbatch"
TPU = LAUNCH / "tpu_pod.sh"
GPU = LAUNCH / "gpu_host.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")

SLURM_ENV = {"SLURM_JOB_NODELIST": "gpu[003-006,010],cpu1", "SLURM_JOB_ID": "4242",
             "SLURM_NTASKS": "5"}


def run(script, *args, env=None, path=None):
  """`bash script args` from the repository root, with no SLURM_* or DRY_RUN
  variables but those in `env`, and `path` (fake tools) first on PATH."""
  base = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k != "DRY_RUN"}
  if path is not None:
    base["PATH"] = f"{path}{os.pathsep}{base.get('PATH', '')}"
  base.update(env or {})
  return subprocess.run(["bash", str(script), *args], cwd=ROOT, env=base, capture_output=True,
                        text=True, timeout=30)


def fake_tool(folder: pathlib.Path, name: str, body: str) -> pathlib.Path:
  tool = folder / name
  tool.write_text("#!/usr/bin/env bash\n" + body)
  tool.chmod(0o755)
  return tool


def command_lines(out: str) -> list[str]:
  return [line.removeprefix("+ ") for line in out.splitlines() if line.startswith("+ ")]


def test_every_script_is_executable_and_has_help():
  for script in (SLURM, TPU, GPU):
    assert os.access(script, os.X_OK), script
    done = run(script, "--help")
    assert done.returncode == 0, done.stderr
    assert "--dry-run" in done.stdout or "DRY_RUN" in done.stdout


# --- SLURM -----------------------------------------------------------------------


def test_slurm_dry_run_prints_srun_with_the_distributed_flags(tmp_path):
  # A failing scontrol: the script parses the host list itself.
  fake_tool(tmp_path, "scontrol", "exit 1\n")
  done = run(SLURM, "--config=configs/f1.py", "--workdir=/shared/runs/f1", "--dry-run", "--",
             "--config.train.num_steps=20", env=SLURM_ENV, path=tmp_path)
  assert done.returncode == 0, done.stderr
  cmd = shlex.split(done.stdout.strip().splitlines()[-1])
  assert cmd[:4] == ["srun", "--ntasks=5", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
  assert cmd[4:6] == ["bash", "-c"] and '--process_id="$SLURM_PROCID"' in cmd[6]
  train = cmd[8:]
  assert train == ["luce-train", "--config=configs/f1.py", "--workdir=/shared/runs/f1",
                   "--coordinator_address=gpu003:24242", "--num_processes=5",
                   "--config.train.num_steps=20"]
  assert "coordinator gpu003:24242" in done.stdout


def test_slurm_uses_scontrol_and_port_and_dry_run_env(tmp_path):
  fake_tool(tmp_path, "scontrol", 'test "$1 $2" = "show hostnames" && printf "nodeA\\nnodeB\\n"\n')
  env = {**SLURM_ENV, "SLURM_JOB_NODELIST": "node[A,B]", "SLURM_NTASKS": "2", "DRY_RUN": "1"}
  done = run(SLURM, "--config=configs/synthetic.py", "--workdir=/w", "--port=31000", env=env,
             path=tmp_path)
  assert done.returncode == 0, done.stderr
  assert "--coordinator_address=nodeA:31000 --num_processes=2" in done.stdout


def test_slurm_inside_a_step_runs_this_tasks_process():
  env = {**SLURM_ENV, "SLURM_STEP_ID": "0", "SLURM_PROCID": "3"}
  done = run(SLURM, "--config=configs/f1.py", "--workdir=/w", "--dry-run", env=env)
  assert done.returncode == 0, done.stderr
  assert shlex.split(done.stdout.strip().splitlines()[-1]) == [
      "luce-train", "--config=configs/f1.py", "--workdir=/w", "--coordinator_address=gpu003:24242",
      "--num_processes=5", "--process_id=3"]


def test_slurm_real_run_starts_one_luce_train_per_task(tmp_path):
  # srun runs the command once per task with its SLURM_PROCID; luce-train logs its flags.
  fake_tool(tmp_path, "srun", 'n="${1#--ntasks=}"; shift 3\n'
            'for ((i = 0; i < n; i++)); do SLURM_PROCID=$i "$@" || exit; done\n')
  log = tmp_path / "calls.txt"
  train = fake_tool(tmp_path, "fake-train", f'echo "$*" >> {shlex.quote(str(log))}\n')
  env = {**SLURM_ENV, "SLURM_NTASKS": "3", "LUCE_TRAIN": str(train)}
  workdir = tmp_path / "run"
  done = run(SLURM, "--config=configs/f1.py", f"--workdir={workdir}", env=env, path=tmp_path)
  assert done.returncode == 0, done.stderr
  calls = log.read_text().splitlines()
  assert [c.split()[-1] for c in calls] == ["--process_id=0", "--process_id=1", "--process_id=2"]
  assert all(f"--workdir={workdir} --coordinator_address=gpu003:24242 --num_processes=3" in c
             for c in calls)
  assert workdir.is_dir()


@pytest.mark.parametrize("args, env, message", [
    (["--workdir=/w"], SLURM_ENV, "--config=configs/NAME.py is required"),
    (["--config=configs/f1.py"], SLURM_ENV, "--workdir=DIR is required"),
    (["--config=configs/nope.py", "--workdir=/w"], SLURM_ENV, "config file 'configs/nope.py' not found"),
    (["--config=configs/f1.py", "--workdir=/w"], {}, "not inside a SLURM allocation"),
    (["--config=configs/f1.py", "--workdir=/w", "--port=80"], SLURM_ENV, "--port=80 must be"),
    (["--config=configs/f1.py", "--workdir=/w", "extra"], SLURM_ENV, "unknown argument 'extra'"),
    (["--config=configs/f1.py", "--workdir=/w"], {**SLURM_ENV, "SLURM_STEP_ID": "0", "SLURM_PROCID": "9"},
     "SLURM_PROCID='9' must be in [0, 5)"),
])
def test_slurm_bad_arguments_are_clear_errors(args, env, message):
  done = run(SLURM, *args, "--dry-run", env=env)
  assert done.returncode == 2
  assert "slurm_gpu.sbatch: error: " in done.stderr and message in done.stderr, done.stderr


# --- TPU pod slice ------------------------------------------------------------------

TPU_ARGS = ["--name=luce-pod", "--zone=us-central2-b", "--project=my-proj", "--accelerator-type=v4-32",
            "--version=tpu-ubuntu2204-base", "--config=configs/f1.py", "--workdir=/mnt/runs/f1"]


def test_tpu_dry_run_prints_create_setup_train_delete():
  done = run(TPU, "all", *TPU_ARGS, "--spot", "--dry-run", "--", "--config.train.num_steps=100")
  assert done.returncode == 0, done.stderr
  lines = command_lines(done.stdout)
  where = "--zone=us-central2-b --project=my-proj"
  assert lines[0] == (f"gcloud compute tpus tpu-vm create luce-pod {where} --accelerator-type=v4-32 "
                      "--version=tpu-ubuntu2204-base --spot")
  assert lines[1].startswith("git archive --format=tar.gz")
  assert lines[2].startswith("gcloud compute tpus tpu-vm scp ") and lines[2].endswith(f"{where} --worker=all")
  assert f"tpu-vm ssh luce-pod {where} --worker=all" in lines[3]
  assert "jax[tpu]" in done.stdout and "pip install -q --no-deps ." in done.stdout
  describe = [line for line in lines if " describe " in line]
  assert describe and "--flatten=networkEndpoints" in describe[0]
  train = shlex.split(next(line for line in lines if "luce-train" in line))
  assert train[:8] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "luce-pod", "--zone=us-central2-b",
                       "--project=my-proj"]
  remote = train[-1].removeprefix("--command=")
  assert (".venv/bin/luce-train --config=configs/f1.py --workdir=/mnt/runs/f1 "
          "--coordinator_address=WORKER0_IP:8476 --num_processes=NUM_WORKERS "
          "--config.train.num_steps=100 --process_id=$(curl") in remote
  assert "agent-worker-number" in remote
  assert lines[-1] == f"gcloud compute tpus tpu-vm delete luce-pod {where} --quiet"


def test_tpu_train_reads_the_workers_from_gcloud(tmp_path):
  log = tmp_path / "gcloud.txt"
  fake_tool(tmp_path, "gcloud", f'printf "%s\\n" "$*" >> {shlex.quote(str(log))}\n'
            'case "$*" in *" describe "*) printf "10.0.0.2\\n10.0.0.3\\n10.0.0.4\\n10.0.0.5\\n" ;; esac\n')
  done = run(TPU, "train", "--name=luce-pod", "--zone=europe-west4-a", "--config=configs/f1.py",
             "--workdir=/mnt/r", "--port=9000", path=tmp_path)
  assert done.returncode == 0, done.stderr
  calls = log.read_text().splitlines()
  assert calls[0].startswith("compute tpus tpu-vm describe luce-pod --zone=europe-west4-a")
  assert "--worker=all" in calls[1]
  assert "--coordinator_address=10.0.0.2:9000 --num_processes=4" in calls[1]


@pytest.mark.parametrize("args, message", [
    ([], "an ACTION is required"),
    (["create", "--zone=z"], "--name=NAME (the TPU VM's name) is required"),
    (["create", "--name=Bad_Name", "--zone=z"], "--name='Bad_Name'"),
    (["create", "--name=p"], "--zone=ZONE is required"),
    (["create", "--name=p", "--zone=z", "--version=v"], "create needs --accelerator-type=TYPE"),
    (["create", "--name=p", "--zone=z", "--accelerator-type=gpu-8", "--version=v"],
     "--accelerator-type='gpu-8' does not look like a TPU type"),
    (["create", "--name=p", "--zone=z", "--accelerator-type=v5litepod-16"], "create needs --version="),
    (["train", "--name=p", "--zone=z", "--workdir=/w"], "train needs --config=configs/NAME.py"),
    (["train", "--name=p", "--zone=z", "--config=configs/f1.py"], "train needs --workdir=DIR"),
    (["create", "delete", "--name=p", "--zone=z"], "one ACTION only"),
])
def test_tpu_bad_arguments_are_clear_errors(args, message):
  done = run(TPU, *args, "--dry-run")
  assert done.returncode == 2
  assert "tpu_pod.sh: error: " in done.stderr and message in done.stderr, done.stderr


# --- one GPU host -------------------------------------------------------------------


def test_gpu_host_dry_run_prints_ssh_docker_run():
  done = run(GPU, "--host=ubuntu@10.1.2.3", "--config=configs/f1.py", "--workdir=/home/ubuntu/runs/f1",
             "--data=/mnt/data", "--image=reg.example/luce:cuda", "--ship-image", "--ssh-opt=-p2222",
             "--dry-run", "--", "--config.train.num_steps=50")
  assert done.returncode == 0, done.stderr
  ship, ssh = command_lines(done.stdout)
  assert ship == "docker save reg.example/luce:cuda | ssh -p2222 ubuntu@10.1.2.3 docker load"
  cmd = shlex.split(ssh)
  assert cmd[:3] == ["ssh", "-p2222", "ubuntu@10.1.2.3"] and len(cmd) == 4
  remote = shlex.split(cmd[3])
  assert remote[:4] == ["mkdir", "-p", "/home/ubuntu/runs/f1", "&&"]
  docker = remote[4:]
  assert docker[:2] == ["docker", "run"] and "--gpus" in docker and docker[docker.index("--gpus") + 1] == "all"
  assert "/home/ubuntu/runs/f1:/runs" in docker and "/mnt/data:/data:ro" in docker
  assert docker[docker.index("reg.example/luce:cuda"):] == [
      "reg.example/luce:cuda", "luce-train", "--config=configs/f1.py", "--workdir=/runs",
      "--config.train.num_steps=50"]


def test_gpu_host_real_run_calls_ssh(tmp_path):
  log = tmp_path / "ssh.txt"
  fake_tool(tmp_path, "ssh", f'printf "%s\\n" "$@" > {shlex.quote(str(log))}\n')
  done = run(GPU, "--host=gpu-box", "--config=configs/synthetic.py", "--workdir=/srv/runs/s", path=tmp_path)
  assert done.returncode == 0, done.stderr
  host, remote = log.read_text().splitlines()
  assert host == "gpu-box"
  assert remote.endswith("luce:cuda luce-train --config=configs/synthetic.py --workdir=/runs")
  assert '--user "$(id -u):$(id -g)"' in remote


@pytest.mark.parametrize("args, message", [
    (["--config=configs/f1.py", "--workdir=/w"], "--host=USER@HOST is required"),
    (["--host=h", "--workdir=/w"], "--config=configs/NAME.py is required"),
    (["--host=h", "--config=/etc/f1.py", "--workdir=/w"], "must be one of the image's configs"),
    (["--host=h", "--config=configs/f1.py"], "--workdir=DIR (an absolute folder on h) is required"),
    (["--host=h", "--config=configs/f1.py", "--workdir=runs"], "must be an absolute path on h"),
    (["--host=h;rm", "--config=configs/f1.py", "--workdir=/w"], "is not an ssh destination"),
])
def test_gpu_host_bad_arguments_are_clear_errors(args, message):
  done = run(GPU, *args, "--dry-run")
  assert done.returncode == 2
  assert "gpu_host.sh: error: " in done.stderr and message in done.stderr, done.stderr
