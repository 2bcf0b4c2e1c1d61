#!/usr/bin/env bash
# The topology of deploy/compose.yaml on this machine, without Docker, on
# 127.0.0.1 only: a throwaway PostgreSQL, two `mailplug serve` replicas
# sharing it, and HAProxy started with deploy/haproxy.cfg (the same file
# Compose uses; only its environment differs).
#
#   bash deploy/local/run.sh           run until Ctrl-C, printing the URLs
#   bash deploy/local/run.sh --check   smoke test through the load balancer, exit 0 or 1
#
# MAILPLUG_BIN: the daemon binary (default: release, else debug, under
# $CARGO_TARGET_DIR or target/). MAILPLUG_PG_BIN: PostgreSQL's bin directory
# (default: pg_config --bindir, else /usr/lib/postgresql/*/bin).
# PostgreSQL and HAProxy are installed with apt-get when missing (their
# Debian services are not started). Everything started here is stopped on
# exit, and all its data (a temporary directory) removed; every wait is
# bounded.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)

MODE=run
case "${1:-}" in
  "") ;;
  --check) MODE=check ;;
  -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

say() { echo "deploy/local: $*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
if [[ -z ${MAILPLUG_BIN:-} ]]; then
  MAILPLUG_BIN=$TARGET/release/mailplug
  [[ -x $MAILPLUG_BIN ]] || MAILPLUG_BIN=$TARGET/debug/mailplug
fi
[[ -x $MAILPLUG_BIN ]] || fail "no daemon binary at $MAILPLUG_BIN (cargo build -p mailplug --bin mailplug, or set MAILPLUG_BIN)"

# apt_install PACKAGE...: Debian packages, without starting their services
# (policy-rc.d refuses it during the install, as in tests/run-all.sh).
apt_install() {
  local sudo_cmd="" policy_created=""
  [[ $(id -u) -ne 0 ]] && sudo_cmd="sudo"
  say "installing $* with apt-get"
  $sudo_cmd apt-get update -qq
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo_cmd tee /usr/sbin/policy-rc.d >/dev/null
    $sudo_cmd chmod +x /usr/sbin/policy-rc.d
    policy_created=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "$@"
  if [[ -n $policy_created ]]; then $sudo_cmd rm -f /usr/sbin/policy-rc.d; fi
}

pg_bin_dir() {
  if [[ -n ${MAILPLUG_PG_BIN:-} ]]; then echo "$MAILPLUG_PG_BIN"; return; fi
  if command -v pg_config >/dev/null && [[ -x "$(pg_config --bindir)/initdb" ]]; then pg_config --bindir; return; fi
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    if [[ -x $dir/initdb ]]; then echo "$dir"; return; fi
  done
}
PG_BIN=$(pg_bin_dir)
if [[ -z $PG_BIN ]]; then apt_install postgresql; PG_BIN=$(pg_bin_dir); fi
[[ -n $PG_BIN && -x $PG_BIN/initdb ]] || fail "no PostgreSQL server binaries (apt-get install postgresql, or set MAILPLUG_PG_BIN)"
command -v haproxy >/dev/null || apt_install haproxy
command -v haproxy >/dev/null || fail "no haproxy (apt-get install haproxy)"
command -v curl >/dev/null || fail "no curl"

TMP=$(mktemp -d)
PIDS=()
HAPROXY_PID=
cleanup() {
  local status=$? pid
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  if [[ -f $TMP/pg/data/PG_VERSION ]]; then
    as_pg "$PG_BIN/pg_ctl" -D "$TMP/pg/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
  fi
  if [[ $status -ne 0 && $MODE == check ]]; then
    for log in replica1.log replica2.log haproxy.log pg/server.log; do
      echo "--- $log (last 30 lines)" >&2
      tail -n 30 "$TMP/$log" >&2 2>/dev/null || true
    done
  fi
  rm -rf "$TMP"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# PostgreSQL refuses to run as root: as root, its files belong to the
# `postgres` user the Debian package creates, and it runs as that user.
if [[ $(id -u) -eq 0 ]]; then
  id postgres >/dev/null 2>&1 || fail "running as root and there is no postgres user to run PostgreSQL as"
  as_pg() { runuser -u postgres -- "$@"; }
else
  as_pg() { "$@"; }
fi

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# wait_for FILE PATTERN SECONDS: the first line of FILE matching PATTERN.
wait_for() {
  local file=$1 pattern=$2 seconds=$3 line
  for _ in $(seq $((seconds * 10))); do
    line=$(grep -m1 -E "$pattern" "$file" 2>/dev/null || true)
    if [[ -n $line ]]; then echo "$line"; return 0; fi
    sleep 0.1
  done
  fail "timed out after ${seconds}s waiting for /$pattern/ in $(basename "$file")"
}

# --- PostgreSQL: a password login over TCP on 127.0.0.1, as in Compose.
chmod 711 "$TMP"
mkdir "$TMP/pg"
[[ $(id -u) -eq 0 ]] && chown postgres: "$TMP/pg"
PG_PORT=$(free_port)
PG_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
as_pg "$PG_BIN/initdb" -D "$TMP/pg/data" -U postgres -E UTF8 --locale=C --no-sync \
  --auth-local=trust --auth-host=scram-sha-256 >"$TMP/initdb.log" 2>&1 \
  || { cat "$TMP/initdb.log" >&2; fail "initdb"; }
# fsync off: the data is thrown away on exit anyway.
as_pg "$PG_BIN/pg_ctl" -D "$TMP/pg/data" -l "$TMP/pg/server.log" -w -t 30 \
  -o "-p $PG_PORT -k $TMP/pg -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null \
  || fail "PostgreSQL did not start"
as_pg "$PG_BIN/psql" -q -h "$TMP/pg" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 \
  -c "CREATE ROLE mailplug LOGIN PASSWORD '$PG_PASSWORD'" \
  -c "CREATE DATABASE mailplug OWNER mailplug" >/dev/null \
  || fail "could not create the mailplug role and database"
STORE_URL="postgres://mailplug:$PG_PASSWORD@127.0.0.1:$PG_PORT/mailplug?sslmode=disable"

# --- Configuration: every example, plus one Custom SMTP connection with a
# webhook secret for the check. It is never sent through (nothing listens
# on its SMTP port), so the check needs no mail server.
CONF=$TMP/config
mkdir -p "$CONF/examples"
cp "$ROOT"/examples/*.yaml "$CONF/examples/"
cat >"$CONF/hooks.yaml" <<'YAML'
api_version: mailplug/v1
kind: Connection
name: hooks
display_name: Webhook check (deploy/local)
smtp:
  host: 127.0.0.1
  port: 1025
  security: none
from:
  email: check@deploy.example.test
workspaces: [deploy-check]
webhook:
  secret: { env: DEPLOY_WEBHOOK_SECRET }
YAML
ADMIN_TOKEN=$(python3 -c 'import secrets; print("deploy-" + secrets.token_urlsafe(24))')
WEBHOOK_SECRET=$(python3 -c 'import base64, secrets; print("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())')

LB_PUBLIC_PORT=${LB_PUBLIC_PORT:-$(free_port)}
LB_ADMIN_PORT=${LB_ADMIN_PORT:-$(free_port)}
LB_STATS_PORT=${LB_STATS_PORT:-$(free_port)}

# --- Two replicas: the same store URL, config and token, their own data
# dirs (the plugin compile cache), ports chosen by the kernel. Replica 2
# starts once replica 1 is ready, with a copy of its compile cache: the
# plugins are then compiled once rather than twice at the same time, which
# on a debug build is most of the start-up.
declare -A ADMIN PUBLIC PORT_ADMIN PORT_PUBLIC PID
for n in 1 2; do
  if [[ $n -eq 2 && -d $TMP/replica1/plugin-cache ]]; then
    mkdir -p "$TMP/replica2"
    cp -R "$TMP/replica1/plugin-cache" "$TMP/replica2/"
  fi
  MAILPLUG_STORE_URL=$STORE_URL MAILPLUG_ADMIN_TOKEN=$ADMIN_TOKEN DEPLOY_WEBHOOK_SECRET=$WEBHOOK_SECRET \
    "$MAILPLUG_BIN" serve --config "$CONF" --data-dir "$TMP/replica$n" \
    --listen-admin 127.0.0.1:0 --listen-public 127.0.0.1:0 \
    --public-url "http://127.0.0.1:$LB_PUBLIC_PORT" \
    >"$TMP/replica$n.out" 2>"$TMP/replica$n.log" &
  PID[$n]=$!
  PIDS+=("$!")
  ready=$(wait_for "$TMP/replica$n.out" '^mailplug ready ' 120)
  ADMIN[$n]=$(sed -E 's/.*admin=([^ ]+).*/\1/' <<<"$ready")
  PUBLIC[$n]=$(sed -E 's/.*public=([^ ]+).*/\1/' <<<"$ready")
  PORT_ADMIN[$n]=${ADMIN[$n]##*:}
  PORT_PUBLIC[$n]=${PUBLIC[$n]##*:}
done

# --- HAProxy with deploy/haproxy.cfg; only the environment is ours.
LB_PUBLIC_BIND=127.0.0.1:$LB_PUBLIC_PORT LB_ADMIN_BIND=127.0.0.1:$LB_ADMIN_PORT \
LB_STATS_BIND=127.0.0.1:$LB_STATS_PORT MAILPLUG_ADMIN_TOKEN=$ADMIN_TOKEN \
REPLICA1_HOST=127.0.0.1 REPLICA1_PUBLIC_PORT=${PORT_PUBLIC[1]} REPLICA1_ADMIN_PORT=${PORT_ADMIN[1]} \
REPLICA2_HOST=127.0.0.1 REPLICA2_PUBLIC_PORT=${PORT_PUBLIC[2]} REPLICA2_ADMIN_PORT=${PORT_ADMIN[2]} \
  haproxy -db -f "$ROOT/deploy/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 &
HAPROXY_PID=$!
PIDS+=("$!")

LB_PUBLIC=http://127.0.0.1:$LB_PUBLIC_PORT
LB_ADMIN=http://127.0.0.1:$LB_ADMIN_PORT
LB_STATS=http://127.0.0.1:$LB_STATS_PORT

# server_status BACKEND SERVER: from HAProxy's statistics, the server's
# state and its last check's result, e.g. "UP L7OK" or "DOWN L4CON" (so a
# server not checked yet, which HAProxy starts as UP, does not count).
server_status() {
  curl -s --max-time 2 "$LB_STATS/;csv" 2>/dev/null | awk -F, -v b="$1" -v s="$2" '
    NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
    $1 == b && $2 == s { print $col["status"], $col["check_status"] }'
}
# wait_status "STATE CHECK" SECONDS SERVER...: until each SERVER has that
# state and check result in both backends.
wait_status() {
  local want=$1 seconds=$2 backend server ok
  shift 2
  for _ in $(seq $((seconds * 10))); do
    kill -0 "$HAPROXY_PID" 2>/dev/null || fail "HAProxy exited"
    ok=1
    for server in "$@"; do
      for backend in mailplug_public mailplug_admin; do
        [[ $(server_status "$backend" "$server") == "$want" ]] || ok=
      done
    done
    [[ -n $ok ]] && return 0
    sleep 0.1
  done
  fail "HAProxy did not report $* $want within ${seconds}s"
}
wait_status "UP L7OK" 20 replica1 replica2

if [[ $MODE == run ]]; then
  cat <<EOF
mailplug: two replicas on PostgreSQL behind HAProxy (deploy/haproxy.cfg)
  webhooks (public)    $LB_PUBLIC/webhooks/{connection}
  admin API, console   $LB_ADMIN/   token: $ADMIN_TOKEN
  HAProxy statistics   $LB_STATS/
  replica 1            admin ${ADMIN[1]}  public ${PUBLIC[1]}  (pid ${PID[1]})
  replica 2            admin ${ADMIN[2]}  public ${PUBLIC[2]}  (pid ${PID[2]})
  PostgreSQL           127.0.0.1:$PG_PORT database mailplug, user mailplug, password $PG_PASSWORD
  config               $CONF (the examples and hooks.yaml, webhook secret $WEBHOOK_SECRET)
  logs                 $TMP/replica1.log $TMP/replica2.log $TMP/haproxy.log
Ctrl-C stops everything and removes $TMP.
EOF
  wait "$HAPROXY_PID" || true
  fail "HAProxy exited"
fi

# ------------------------------------------------------------------ check
auth=(-H "Authorization: Bearer $ADMIN_TOKEN")
# http_code URL CURL_ARGS...: the status code only (000: no answer).
http_code() { local url=$1; shift; curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$@" "$url" || true; }

code=$(http_code "$LB_ADMIN/readyz" "${auth[@]}")
[[ $code == 200 ]] || fail "GET /readyz through the load balancer answered $code"
say "ok: /readyz through the load balancer is 200"

# new_webhook: a bounce for a new recipient, signed with the connection's
# secret the Standard Webhooks way (HMAC-SHA256 over id.timestamp.body), as
# the custom-smtp plugin verifies it.
new_webhook() {
  RECIPIENT="bounce-$(date +%s%N)@example.org"
  BODY=$(printf '{"kind":"bounced","bounce_class":"hard","recipient":"%s","occurred_at":"%s"}' \
    "$RECIPIENT" "$(date -u +%Y-%m-%dT%H:%M:%SZ)")
  WH_ID="msg_$(python3 -c 'import uuid; print(uuid.uuid4())')"
  WH_TS=$(date +%s)
  WH_SIG=$(python3 -c 'import base64, hashlib, hmac, sys
key = base64.b64decode(sys.argv[1].removeprefix("whsec_"))
print("v1," + base64.b64encode(hmac.new(key, sys.argv[2].encode(), hashlib.sha256).digest()).decode())' \
    "$WEBHOOK_SECRET" "$WH_ID.$WH_TS.$BODY")
}
post_webhook() {
  http_code "$1/webhooks/hooks" -X POST -H 'Content-Type: application/json' \
    -H "webhook-id: $WH_ID" -H "webhook-timestamp: $WH_TS" -H "webhook-signature: $WH_SIG" --data-binary "$BODY"
}
# counter N NAME: the replica's `NAME{connection="hooks",...}` counter.
counter() {
  curl -s --max-time 5 "${auth[@]}" "${ADMIN[$1]}/metrics" \
    | awk -v m="$2" '$1 ~ "^" m "\\{" && $1 ~ /connection="hooks"/ { v = $2 } END { print v + 0 }'
}
# stored_events: how many stored events of the check's recipient the
# admin API lists, asked through the load balancer.
stored_events() {
  curl -s --max-time 10 "${auth[@]}" "$LB_ADMIN/v1/events?connection=hooks&recipient=$RECIPIENT" \
    | python3 -c 'import json, sys; print(len(json.load(sys.stdin)["events"]))'
}

new_webhook
for attempt in 1 2; do
  code=$(post_webhook "$LB_PUBLIC")
  [[ $code == 200 ]] || fail "webhook through the load balancer (attempt $attempt) answered $code"
done
for n in 1 2; do
  stored[n]=$(counter "$n" mailplug_events_stored_total)
  duplicate[n]=$(counter "$n" mailplug_events_duplicate_total)
  [[ $((stored[n] + duplicate[n])) -eq 1 ]] \
    || fail "replica $n saw $((stored[n] + duplicate[n])) of the two posts (stored ${stored[n]}, duplicates ${duplicate[n]}); round robin should give it one"
done
[[ $((stored[1] + stored[2])) -eq 1 ]] || fail "the same webhook was stored $((stored[1] + stored[2])) times"
say "ok: the same webhook twice through the load balancer: one post to each replica, stored by one (replica $([[ ${stored[1]} -eq 1 ]] && echo 1 || echo 2)), a duplicate on the other"
for n in 1 2; do
  code=$(post_webhook "${PUBLIC[$n]}")
  [[ $code == 200 ]] || fail "the same webhook posted directly to replica $n answered $code"
done
count=$(stored_events)
[[ $count -eq 1 ]] || fail "GET /v1/events through the load balancer lists $count events for the webhook posted 4 times; want 1"
say "ok: posted again directly to both replicas, still one stored event (GET /v1/events through the load balancer)"

kill -9 "${PID[2]}"
{ wait "${PID[2]}"; } 2>/dev/null || true
killed_at=$(date +%s%N)
say "replica 2 SIGKILLed"
new_webhook
# Before the checks notice, a request the round robin gives replica 2 is
# refused and redispatched to replica 1 (haproxy.cfg: retries, redispatch).
for attempt in 1 2; do
  code=$(post_webhook "$LB_PUBLIC")
  [[ $code == 200 ]] || fail "webhook through the load balancer right after the kill (attempt $attempt) answered $code"
done
wait_status "DOWN L4CON" 10 replica2
say "ok: HAProxy marked replica 2 DOWN in both backends, $(( ($(date +%s%N) - killed_at) / 1000000 )) ms after the kill"
for attempt in 1 2 3 4; do
  code=$(http_code "$LB_ADMIN/readyz" "${auth[@]}")
  [[ $code == 200 ]] || fail "GET /readyz through the load balancer with replica 2 down (attempt $attempt) answered $code"
  code=$(post_webhook "$LB_PUBLIC")
  [[ $code == 200 ]] || fail "webhook through the load balancer with replica 2 down (attempt $attempt) answered $code"
done
count=$(stored_events)
[[ $count -eq 1 ]] || fail "GET /v1/events through the load balancer lists $count events for the webhook posted 6 times after the kill; want 1"
[[ $(server_status mailplug_public replica1) == "UP L7OK" ]] || fail "replica 1 is not UP in HAProxy"
say "ok: with replica 2 down, /readyz, webhooks and /v1/events through the load balancer all answer from replica 1"
say "PASSED"
