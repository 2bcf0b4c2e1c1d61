#!/usr/bin/env bash
# Sending-queue benchmark: mailplug's sustained send rate through its queue
# vs the smtp-source ceiling, enqueue latency, and the drain of a held queue
# after a restart, all into Postfix smtp-sink on 127.0.0.1
# (docs/sending-bench.md; the measuring is in queue_bench.py).
#
#   bash host/benches/queue.sh [--messages N] [--drain N] [--runs N]
#                              [--timeout S] [--out FILE] [--replicas]
#
# --replicas measures instead queued msgs/s with the store on PostgreSQL,
# one and two replicas, vs SQLite in the same run (queue_replicas.py; needs
# PostgreSQL's server binaries, installed with apt-get when missing).
# MAILPLUG_BIN=path skips the build and runs that binary instead.
# Installs Postfix (Debian) when smtp-sink/smtp-source are missing; never
# starts the postfix service.
set -euo pipefail
cd "$(dirname "$0")/../.."

messages=20000 drain=100000 runs=3 timeout=600 out="" driver=queue_bench.py
while (($#)); do
  case "$1" in
    --messages) messages="$2"; shift 2 ;;
    --drain) drain="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --timeout) timeout="$2"; shift 2 ;;
    --out) out="$(realpath -m "$2")"; shift 2 ;;
    --replicas) driver=queue_replicas.py; shift ;;
    -h | --help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "queue.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

sudo_cmd=()
[[ $(id -u) -ne 0 ]] && sudo_cmd=(sudo)
if [[ ! -x /usr/sbin/smtp-sink || ! -x /usr/sbin/smtp-source ]]; then
  echo "== installing postfix (for smtp-sink and smtp-source)" >&2
  "${sudo_cmd[@]}" apt-get update -qq
  # Installing the package may try to start the service; nothing here uses it.
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq postfix >&2
fi
if [[ $driver == queue_replicas.py && -z "${MAILPLUG_PG_BIN:-}" ]] &&
  ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  echo "== installing postgresql (for the replica setups)" >&2
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq postgresql >&2
fi

if [[ -n "${MAILPLUG_BIN:-}" ]]; then
  bin="$(realpath "$MAILPLUG_BIN")"
else
  echo "== building mailplug (release)" >&2
  cargo build --release --locked >&2
  bin="$(realpath "${CARGO_TARGET_DIR:-target}")/release/mailplug"
fi
[[ -x "$bin" ]] || { echo "queue.sh: no mailplug binary at $bin" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/mailplug-queue-bench.XXXXXX")"
sink_pid="" driver_pid=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n "$driver_pid" ]] && kill -0 "$driver_pid" 2>/dev/null; then
    kill -TERM "$driver_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$driver_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$driver_pid" 2>/dev/null || true
  fi
  if [[ -n "$sink_pid" ]]; then
    kill -TERM "$sink_pid" 2>/dev/null || true
    wait "$sink_pid" 2>/dev/null || true
  fi
  if ((rc == 0)); then
    rm -rf "$work"
  else
    echo "queue.sh: logs and data dirs kept in $work" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
sink_args=(-c -m 64)
# smtp-sink refuses to run as root without a user to switch to.
[[ $(id -u) -eq 0 ]] && sink_args+=(-u nobody)
# PIPELINING is announced by default; -m 64 allows 64 sessions at once (8
# are used); -c writes running counters the driver checks deliveries with.
/usr/sbin/smtp-sink "${sink_args[@]}" "127.0.0.1:$port" 256 >"$work/sink.counter" 2>"$work/sink.err" &
sink_pid=$!
for i in $(seq 100); do
  if python3 -c "import socket, sys; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; then
    break
  fi
  kill -0 "$sink_pid" 2>/dev/null || { echo "smtp-sink exited: $(cat "$work/sink.err")" >&2; exit 1; }
  ((i == 100)) && { echo "smtp-sink did not listen on 127.0.0.1:$port within 5 s" >&2; exit 1; }
  sleep 0.05
done

driver_args=(--bin "$bin" --sink-port "$port" --sink-counter "$work/sink.counter" --workdir "$work"
  --messages "$messages" --runs "$runs" --timeout "$timeout")
[[ $driver == queue_bench.py ]] && driver_args+=(--drain "$drain")
[[ -n "$out" ]] && driver_args+=(--out "$out")
# In the background so the traps run (and kill it) while it works.
python3 "host/benches/$driver" "${driver_args[@]}" &
driver_pid=$!
wait "$driver_pid"
