#!/usr/bin/env bash
# Pre-training on a Cloud TPU VM slice: create (or reuse) the slice, install
# this repository on every worker, run the same command on all workers, and
# copy each worker's log back.
#
#   TPU_NAME=vmae2-v5p-128 ZONE=us-east5-a ACCELERATOR_TYPE=v5p-128 \
#   RUNTIME_VERSION=v2-alpha-tpuv5 WORKDIR=gs://my-bucket/vmae2/g14 \
#     launch/tpu_pod.sh --config=configs/pretrain_g.py --config.batch_size=8192
#
# Arguments after the script name are passed to `python -m vmae2_jax.main`
# (--workdir is added from WORKDIR; use a gs:// path so every worker writes
# the same Orbax checkpoint). jax.distributed.initialize() needs no flags on
# TPU VMs: the coordinator and process ids come from the TPU metadata.
#
# Environment:
#   TPU_NAME, ZONE, ACCELERATOR_TYPE, RUNTIME_VERSION  the slice (created if absent)
#   PROJECT           gcloud project (default: gcloud's configured one)
#   SPOT=1            create a spot slice (preemptible; runs resume from checkpoints)
#   REPO_URL, REF     what to install on the workers (default: this checkout's
#                     origin URL and HEAD commit)
#   WORKDIR           checkpoints/logs (gs://... recommended)
#   LOGDIR            local directory for the gathered logs (default ./tpu_logs/TPU_NAME)
#   SETUP_ONLY=1      create + install, run nothing
#   DETACH=1          start the run in the background on every worker and return
#   LOGS_ONLY=1 RUN_ID=<id>   only gather the logs of an earlier (detached) run
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}" "${WORKDIR:?set WORKDIR}"
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-v5p-128}
RUNTIME_VERSION=${RUNTIME_VERSION:-v2-alpha-tpuv5}
REPO_URL=${REPO_URL:-$(git -C "$(dirname "$0")/.." remote get-url origin)}
REF=${REF:-$(git -C "$(dirname "$0")/.." rev-parse HEAD)}
LOGDIR=${LOGDIR:-./tpu_logs/$TPU_NAME}
project_flag=()
[[ -n "${PROJECT:-}" ]] && project_flag=(--project="$PROJECT")
tpu=(gcloud compute tpus tpu-vm "${project_flag[@]}")

# ---------------------------------------------------------------- the slice
if "${tpu[@]}" describe "$TPU_NAME" --zone="$ZONE" >/dev/null 2>&1; then
  echo "reusing TPU VM $TPU_NAME" >&2
else
  echo "creating TPU VM $TPU_NAME ($ACCELERATOR_TYPE, $RUNTIME_VERSION)" >&2
  spot=()
  [[ "${SPOT:-0}" == 1 ]] && spot=(--spot)
  "${tpu[@]}" create "$TPU_NAME" --zone="$ZONE" --accelerator-type="$ACCELERATOR_TYPE" \
      --version="$RUNTIME_VERSION" "${spot[@]}"
fi

on_all() {  # the same command on every worker, in parallel
  "${tpu[@]}" ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="$1"
}

# ---------------------------------------------------------------- install
[[ "${LOGS_ONLY:-0}" == 1 ]] || on_all "set -e
  if [ ! -d ~/vmae2_jax ]; then git clone -q '$REPO_URL' ~/vmae2_jax; fi
  cd ~/vmae2_jax && git fetch -q origin && git checkout -q '$REF'
  python3 -m venv ~/venv && . ~/venv/bin/activate
  pip install -q --upgrade pip && pip install -q -e '.[tpu,cloud]'"
[[ "${SETUP_ONLY:-0}" == 1 ]] && exit 0

# ---------------------------------------------------------------- run
args=$(printf ' %q' "$@")
run_id=${RUN_ID:-$(date -u +%Y%m%d-%H%M%S)}
status=0
train="cd ~/vmae2_jax && . ~/venv/bin/activate &&
  python -m vmae2_jax.main --workdir='$WORKDIR' $args --alsologtostderr > ~/vmae2_$run_id.log 2>&1"
if [[ "${DETACH:-0}" == 1 ]]; then
  # Long runs: keep training when this ssh session ends; gather logs later with
  # RUN_ID=<id> LOGS_ONLY=1 launch/tpu_pod.sh.
  on_all "nohup bash -c \"$train\" >/dev/null 2>&1 &"
  echo "detached run $run_id; logs: RUN_ID=$run_id LOGS_ONLY=1 $0" >&2
  exit 0
fi
[[ "${LOGS_ONLY:-0}" == 1 ]] || on_all "$train" || status=$?

# ---------------------------------------------------------------- logs
mkdir -p "$LOGDIR"
ips=$("${tpu[@]}" describe "$TPU_NAME" --zone="$ZONE" \
          --format='value(networkEndpoints.ipAddress)' 2>/dev/null || true)
workers=$(awk -F';' '{print NF}' <<<"${ips:-x}")
for ((w = 0; w < ${workers:-1}; w++)); do
  "${tpu[@]}" scp "$TPU_NAME:~/vmae2_$run_id.log" "$LOGDIR/worker_${w}_$run_id.log" \
      --zone="$ZONE" --worker="$w" || echo "no log from worker $w" >&2
done
echo "logs in $LOGDIR (exit status $status)" >&2
exit $status
