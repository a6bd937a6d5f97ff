#!/usr/bin/env bash
# N local JAX processes with fake CPU devices: a real multi-controller run
# (jax.distributed over localhost, gloo collectives) on one machine.
#
#   launch/local_multiprocess.sh [-n PROCS] [-d DEVICES_PER_PROC] [-l LOGDIR] [-p PORT] -- \
#       python -m vmae2_jax.main --config=configs/demo.py --workdir=/tmp/run
#
# Every process runs the same command with VMAE2_COORDINATOR, VMAE2_NUM_PROCESSES
# and VMAE2_PROCESS_ID set (read by vmae2_jax/sharding/distributed.py);
# process i logs to LOGDIR/process_i.log. Exits non-zero if any process fails,
# and stops the others when one fails (a lone survivor would wait at the next
# collective until the coordinator's timeout).
set -euo pipefail

procs=2 devices=4 logdir="" port=""
while getopts "n:d:l:p:" opt; do
  case "$opt" in
    n) procs=$OPTARG ;; d) devices=$OPTARG ;; l) logdir=$OPTARG ;; p) port=$OPTARG ;;
    *) echo "usage: $0 [-n PROCS] [-d DEVICES] [-l LOGDIR] [-p PORT] -- command..." >&2; exit 2 ;;
  esac
done
shift $((OPTIND - 1))
[[ "${1:-}" == "--" ]] && shift
(($# > 0)) || { echo "$0: no command given" >&2; exit 2; }
logdir=${logdir:-$(mktemp -d /tmp/vmae2_local_XXXX)}
mkdir -p "$logdir"
if [[ -z "$port" ]]; then
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi

pids=()
for ((i = 0; i < procs; i++)); do
  env JAX_PLATFORMS=cpu \
      XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=$devices" \
      VMAE2_COORDINATOR="127.0.0.1:$port" VMAE2_NUM_PROCESSES="$procs" VMAE2_PROCESS_ID="$i" \
      "$@" >"$logdir/process_$i.log" 2>&1 &
  pids+=($!)
done
echo "started $procs processes (coordinator 127.0.0.1:$port), logs in $logdir" >&2

status=0
remaining=("${pids[@]}")
while ((${#remaining[@]})); do
  next=()
  for pid in "${remaining[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      next+=("$pid")
    elif ! wait "$pid"; then
      status=1
    fi
  done
  remaining=("${next[@]+"${next[@]}"}")
  if ((status)) && ((${#remaining[@]})); then
    echo "a process failed; stopping the others" >&2
    kill "${remaining[@]}" 2>/dev/null || true
    wait "${remaining[@]}" 2>/dev/null || true
    break
  fi
  ((${#remaining[@]})) && sleep 1
done
for ((i = 0; i < procs; i++)); do
  echo "--- process $i (tail)" >&2
  tail -n 3 "$logdir/process_$i.log" >&2 || true
done
exit $status
