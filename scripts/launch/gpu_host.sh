#!/usr/bin/env bash
# luce-train on one cloud GPU host over ssh, in the CUDA image (Dockerfile.tpu-gpu).
#
#   scripts/launch/gpu_host.sh --host=USER@HOST --config=configs/NAME.py --workdir=DIR [options] [-- overrides]
#
# Runs on HOST (which needs Docker and the NVIDIA container toolkit):
#   docker run --rm --gpus all -v DIR:/runs [-v DATA:/data:ro] IMAGE \
#     luce-train --config=configs/NAME.py --workdir=/runs [overrides]
# as the host user's uid, so the run's files in DIR are that user's.
# Options:
#   --host=USER@HOST        required: an ssh destination (or a Host of ~/.ssh/config)
#   --config=configs/NAME.py  required: a config shipped in the image (configs/ of this checkout)
#   --workdir=DIR           required: an absolute folder on HOST for the run (resumed if it has one)
#   --data=DIR              a folder on HOST with the shared data sets, mounted read-only at /data
#   --image=IMAGE           default luce:cuda (make docker-cuda), pulled on HOST when missing there
#   --ship-image            send the local IMAGE to HOST (docker save | ssh docker load) first
#   --ssh-opt=OPTION        an extra ssh option (repeatable), e.g. --ssh-opt=-i --ssh-opt=~/.ssh/gpu
#   --dry-run (or DRY_RUN=1)  print the commands instead of running them
set -euo pipefail

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
}

die() {
  echo "gpu_host.sh: error: $*" >&2
  exit 2
}

show() {  # the command, each word quoted only where a shell needs it
  local out="" word
  for word in "$@"; do
    if [[ "$word" =~ ^[][A-Za-z0-9_./:=@%+,-]+$ ]]; then
      out+="$word "
    else
      out+="'${word//\'/\'\\\'\'}' "
    fi
  done
  echo "${out% }"
}

host="" config="" workdir="" data="" image="luce:cuda" ship=0 dry_run="${DRY_RUN:-0}"
ssh_opts=() overrides=()
while [ $# -gt 0 ]; do
  case "$1" in
    --host=*) host="${1#*=}" ;;
    --config=*) config="${1#*=}" ;;
    --workdir=*) workdir="${1#*=}" ;;
    --data=*) data="${1#*=}" ;;
    --image=*) image="${1#*=}" ;;
    --ship-image) ship=1 ;;
    --ssh-opt=*) ssh_opts+=("${1#*=}") ;;
    --dry-run) dry_run=1 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; overrides=("$@"); break ;;
    *) usage >&2; die "unknown argument '$1' (luce-train overrides go after --)" ;;
  esac
  shift
done

[ -n "$host" ] || die "--host=USER@HOST is required"
[[ "$host" =~ ^[A-Za-z0-9._@-]+$ ]] || die "--host='$host' is not an ssh destination (USER@HOST)"
[ -n "$config" ] || die "--config=configs/NAME.py is required"
[[ "${config%%:*}" == configs/*.py ]] \
  || die "--config='$config' must be one of the image's configs, configs/NAME.py[:ARG]"
[ -f "${config%%:*}" ] || die "config file '${config%%:*}' not found (run from the repository root)"
[ -n "$workdir" ] || die "--workdir=DIR (an absolute folder on $host) is required"
[[ "$workdir" == /* ]] || die "--workdir='$workdir' must be an absolute path on $host"
[ -z "$data" ] || [[ "$data" == /* ]] || die "--data='$data' must be an absolute path on $host"
[ -n "$image" ] || die "--image must not be empty"

# What runs on the host, one shell line: the uid and gid are the host user's.
docker_run=(docker run --rm --gpus all --shm-size=8g -e HOME=/tmp -v "$workdir:/runs")
[ -z "$data" ] || docker_run+=(-v "$data:/data:ro")
docker_run+=("$image" luce-train --config="$config" --workdir=/runs "${overrides[@]}")
remote="mkdir -p $(show "$workdir") && $(show "${docker_run[@]:0:2}")"
# shellcheck disable=SC2016  # expanded by the host's shell, not here
remote+=' --user "$(id -u):$(id -g)"'
remote+=" $(show "${docker_run[@]:2}")"

ssh_cmd=(ssh "${ssh_opts[@]}" "$host")
if [ "$dry_run" = 1 ]; then
  echo "dry run: the commands, not run"
  if [ "$ship" = 1 ]; then
    echo "+ docker save $(show "$image") | $(show "${ssh_cmd[@]}") docker load"
  fi
  echo "+ $(show "${ssh_cmd[@]}" "$remote")"
  exit 0
fi
command -v ssh >/dev/null 2>&1 || die "ssh is not on PATH"
if [ "$ship" = 1 ]; then
  echo "+ docker save $(show "$image") | $(show "${ssh_cmd[@]}") docker load"
  docker save "$image" | "${ssh_cmd[@]}" docker load
fi
echo "+ $(show "${ssh_cmd[@]}" "$remote")"
exec "${ssh_cmd[@]}" "$remote"
