#!/usr/bin/env bash
# luce-train on a Cloud TPU VM pod slice, with gcloud from this machine.
#
#   scripts/launch/tpu_pod.sh ACTION --name=NAME --zone=ZONE [options] [-- luce-train overrides]
#
# ACTION:
#   create  create the TPU VM slice (needs --accelerator-type and --version)
#   setup   copy this checkout (git archive of HEAD) to every worker and install
#           luce there: Python 3.11 venv, requirements.txt, jax[tpu], `pip install .`
#   train   run luce-train on every worker at once, joined by jax.distributed:
#           coordinator = worker 0's internal IP, one process per worker
#           (--process_id from each worker's agent-worker-number metadata)
#   delete  delete the slice
#   all     create, setup, train, delete (delete also when setup or train fails)
# Options:
#   --name=NAME --zone=ZONE                  always required
#   --project=PROJECT                        default: gcloud's configured project
#   --accelerator-type=TYPE --version=RT     create: e.g. v5litepod-16 and v2-alpha-tpuv5-lite,
#                                            or v4-32 and tpu-ubuntu2204-base
#   --spot                                   create: a Spot (preemptible) slice
#   --config=configs/NAME.py --workdir=DIR   train: DIR on every worker (a mount all workers
#                                            share, e.g. gcsfuse or Filestore, to keep checkpoints)
#   --port=PORT                              train: coordinator port (default 8476)
#   --dry-run (or DRY_RUN=1)                 print the commands instead of running them
set -euo pipefail

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
}

die() {
  echo "tpu_pod.sh: error: $*" >&2
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

run() {  # show the command; run it unless this is a dry run
  echo "+ $(show "$@")"
  if [ "$dry_run" != 1 ]; then "$@"; fi
}

action="" name="" zone="" project="" accel="" version="" spot=0 config="" workdir="" port=8476
dry_run="${DRY_RUN:-0}"
overrides=()
while [ $# -gt 0 ]; do
  case "$1" in
    create|setup|train|delete|all)
      [ -z "$action" ] || die "one ACTION only (got '$action' and '$1')"
      action="$1" ;;
    --name=*) name="${1#*=}" ;;
    --zone=*) zone="${1#*=}" ;;
    --project=*) project="${1#*=}" ;;
    --accelerator-type=*) accel="${1#*=}" ;;
    --version=*) version="${1#*=}" ;;
    --spot) spot=1 ;;
    --config=*) config="${1#*=}" ;;
    --workdir=*) workdir="${1#*=}" ;;
    --port=*) port="${1#*=}" ;;
    --dry-run) dry_run=1 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; overrides=("$@"); break ;;
    *) usage >&2; die "unknown argument '$1'" ;;
  esac
  shift
done

[ -n "$action" ] || { usage >&2; die "an ACTION is required: create, setup, train, delete or all"; }
[ -n "$name" ] || die "--name=NAME (the TPU VM's name) is required"
[[ "$name" =~ ^[a-z]([-a-z0-9]*[a-z0-9])?$ ]] \
  || die "--name='$name': lower-case letters, digits and hyphens, starting with a letter"
[ -n "$zone" ] || die "--zone=ZONE is required (e.g. us-central2-b for v4, us-west4-a for v5e)"
case "$action" in
  create|all)
    [ -n "$accel" ] || die "$action needs --accelerator-type=TYPE (e.g. v4-32, v5litepod-16)"
    [[ "$accel" =~ ^v[0-9]+[a-z]*(-[a-z]+)?-[0-9]+$ ]] \
      || die "--accelerator-type='$accel' does not look like a TPU type (e.g. v4-32, v5litepod-16, v6e-16)"
    [ -n "$version" ] || die "$action needs --version=RUNTIME (e.g. tpu-ubuntu2204-base, v2-alpha-tpuv5-lite)" ;;
esac
case "$action" in
  train|all)
    [ -n "$config" ] || die "$action needs --config=configs/NAME.py"
    [ -f "${config%%:*}" ] || die "config file '${config%%:*}' not found (run from the repository root)"
    [ -n "$workdir" ] || die "$action needs --workdir=DIR (a folder on every worker)"
    [[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -ge 1024 ] && [ "$port" -le 65535 ] \
      || die "--port=$port must be an integer in [1024, 65535]" ;;
esac
command -v gcloud >/dev/null 2>&1 || [ "$dry_run" = 1 ] || die "gcloud is not on PATH (install the Google Cloud CLI)"

where=(--zone="$zone")
[ -z "$project" ] || where+=(--project="$project")
tpu=(gcloud compute tpus tpu-vm)
[ "$dry_run" != 1 ] || echo "dry run: the commands, not run"

create() {
  local extra=()
  [ "$spot" = 0 ] || extra+=(--spot)
  run "${tpu[@]}" create "$name" "${where[@]}" --accelerator-type="$accel" --version="$version" "${extra[@]}"
}

setup() {
  local archive
  archive="${TMPDIR:-/tmp}/luce-src-$name.tar.gz"
  run git archive --format=tar.gz --output="$archive" HEAD
  run "${tpu[@]}" scp "$archive" "$name":luce-src.tar.gz "${where[@]}" --worker=all
  run "${tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command="$(cat <<'EOF'
set -e
sudo apt-get update -q && sudo apt-get install -y -q python3.11 python3.11-venv g++
rm -rf ~/luce && mkdir ~/luce && tar -xzf ~/luce-src.tar.gz -C ~/luce && cd ~/luce
python3.11 -m venv .venv
.venv/bin/pip install -q -r requirements.txt "jax[tpu]==$(sed -n 's/^jax==//p' requirements.txt)"
.venv/bin/pip install -q --no-deps .
EOF
)"
}

train() {
  local endpoints=(describe "$name" "${where[@]}" --flatten=networkEndpoints
                   --format='value(networkEndpoints.ipAddress)')
  local coordinator_ip=WORKER0_IP workers=NUM_WORKERS
  echo "+ $(show "${tpu[@]}" "${endpoints[@]}")"
  if [ "$dry_run" != 1 ]; then
    local ips
    ips="$("${tpu[@]}" "${endpoints[@]}")"
    coordinator_ip="$(head -n 1 <<<"$ips")"
    workers="$(grep -c . <<<"$ips")"
    [ -n "$coordinator_ip" ] && [ "$workers" -ge 1 ] || die "no workers found for TPU VM '$name'"
  else
    echo "  (at run time $coordinator_ip below is the first address this prints, $workers their count)"
  fi
  local metadata='http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number'
  local line=(.venv/bin/luce-train --config="$config" --workdir="$workdir"
              --coordinator_address="$coordinator_ip:$port" --num_processes="$workers")
  line+=("${overrides[@]}")
  local remote
  remote="cd ~/luce && mkdir -p $(show "$workdir") && $(show "${line[@]}")"
  remote+=" --process_id=\$(curl -sf -H Metadata-Flavor:Google $metadata)"
  run "${tpu[@]}" ssh "$name" "${where[@]}" --worker=all --command="$remote"
}

delete() {
  run "${tpu[@]}" delete "$name" "${where[@]}" --quiet
}

case "$action" in
  all)
    create
    trap delete EXIT   # a failed setup or train still deletes the slice (it bills by the hour)
    setup
    train ;;
  *) "$action" ;;
esac
