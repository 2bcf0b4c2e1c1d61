#!/usr/bin/env bash
# Browser tests of the web console: starts the real test SMTP server
# (tests/smtp/server.py) and the real daemon binary on 127.0.0.1, then runs
# console.test.mjs in headless Debian chromium through playwright-core.
# Everything started here is stopped on exit; every wait is bounded.
#
#   bash tests/console/run.sh        (after `cargo build -p mailplug --bin mailplug`)
#
# MAILPLUG_BIN overrides the binary (default: $CARGO_TARGET_DIR or target/,
# then debug/mailplug). Screenshots go to tests/console/out/.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${MAILPLUG_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/mailplug}
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
[ -x "$BIN" ] || { echo "console tests: no daemon binary at $BIN (cargo build -p mailplug --bin mailplug)" >&2; exit 1; }
[ -x "$CHROMIUM" ] || { echo "console tests: no chromium at $CHROMIUM (apt-get install chromium)" >&2; exit 1; }
[ -d "$HERE/node_modules/playwright-core" ] || { echo "console tests: run npm ci in tests/console" >&2; exit 1; }

TMP=$(mktemp -d)
SMTP_PID=
DAEMON_PID=
cleanup() {
  local status=$?
  exec 3>&- 2>/dev/null || true # closing its stdin stops the SMTP server
  for pid in $DAEMON_PID $SMTP_PID; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in $DAEMON_PID $SMTP_PID; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  if [ "$status" -ne 0 ]; then
    echo "--- daemon log (last 40 lines)" >&2; tail -n 40 "$TMP/daemon.log" >&2 2>/dev/null || true
    echo "--- smtp server log (last 20 lines)" >&2; tail -n 20 "$TMP/smtp.log" >&2 2>/dev/null || true
  fi
  rm -rf "$TMP"
  exit "$status"
}
trap cleanup EXIT INT TERM

# wait_for FILE PATTERN SECONDS: the first line of FILE matching PATTERN.
wait_for() {
  local file=$1 pattern=$2 seconds=$3 line
  for _ in $(seq $((seconds * 10))); do
    line=$(grep -m1 -E "$pattern" "$file" 2>/dev/null || true)
    if [ -n "$line" ]; then echo "$line"; return 0; fi
    sleep 0.1
  done
  echo "console tests: timed out after ${seconds}s waiting for /$pattern/ in $file" >&2
  return 1
}

# A private CA and a certificate for localhost, so STARTTLS is verified for real.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=mailplug console test CA" \
  -keyout "$TMP/ca.key" -out "$TMP/ca.pem" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,digitalSignature" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$TMP/server.key" -out "$TMP/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$TMP/ext.cnf"
openssl x509 -req -in "$TMP/server.csr" -CA "$TMP/ca.pem" -CAkey "$TMP/ca.key" -CAcreateserial \
  -days 2 -extfile "$TMP/ext.cnf" -out "$TMP/server.pem" 2>/dev/null

SMTP_PASSWORD='Console-Test-Pw-4c1e'
mkdir -p "$TMP/spool"
mkfifo "$TMP/smtp.stdin"
SMTP_TEST_PASSWORD=$SMTP_PASSWORD python3 "$ROOT/tests/smtp/server.py" \
  --cert "$TMP/server.pem" --key "$TMP/server.key" --spool "$TMP/spool" \
  --user tester --allowed-from sender@example.test \
  <"$TMP/smtp.stdin" >"$TMP/smtp.ports" 2>"$TMP/smtp.log" &
SMTP_PID=$!
exec 3>"$TMP/smtp.stdin"
PORTS=$(wait_for "$TMP/smtp.ports" '^\{' 30)
SUBMISSION=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["submission"])' "$PORTS")

# The configuration: one good connection, one with a wrong password, and
# the examples.
CONF="$TMP/config"
mkdir -p "$CONF"
cp "$TMP/ca.pem" "$CONF/ca.pem"
cat >"$CONF/good.yaml" <<YAML
api_version: mailplug/v1
kind: Connection
name: good
display_name: Good Relay
smtp:
  host: localhost
  port: $SUBMISSION
  security: starttls
  username: tester
  password: { env: CONSOLE_GOOD_PASSWORD }
  tls: { ca_file: ca.pem }
from:
  name: Console Tests
  email: sender@example.test
workspaces: [marketing, product]
webhook:
  secret: { env: CONSOLE_WEBHOOK_SECRET }
YAML
cat >"$CONF/wrong-password.yaml" <<YAML
api_version: mailplug/v1
kind: Connection
name: wrong-password
display_name: Relay With A Wrong Password
smtp:
  host: localhost
  port: $SUBMISSION
  security: starttls
  username: tester
  password: { env: CONSOLE_BAD_PASSWORD }
  tls: { ca_file: ca.pem }
from:
  email: sender@example.test
workspaces: [marketing]
priority: 200
YAML

# The example connections too (not the forwarder example: it would send
# events off this machine), so the list is checked on the shipped examples.
mkdir -p "$CONF/examples"
for f in "$ROOT"/examples/*.yaml; do
  if grep -q '^kind: Connection' "$f"; then cp "$f" "$CONF/examples/"; fi
done

WEBHOOK_SECRET='whsec_b6o9cjOxW7gNB+wD3OHJIK6jrmph6jGr4ZMmyKZmoWA='
ADMIN_TOKEN='console-test-token-7f2b'
CONSOLE_GOOD_PASSWORD=$SMTP_PASSWORD CONSOLE_BAD_PASSWORD='not-the-password' \
CONSOLE_WEBHOOK_SECRET=$WEBHOOK_SECRET MAILPLUG_ADMIN_TOKEN=$ADMIN_TOKEN \
  "$BIN" serve --config "$CONF" --listen-admin 127.0.0.1:0 --listen-public 127.0.0.1:0 \
  --data-dir "$TMP/data" --public-url https://hooks.example.test --debounce-ms 100 \
  >"$TMP/daemon.out" 2>"$TMP/daemon.log" &
DAEMON_PID=$!
READY=$(wait_for "$TMP/daemon.out" '^mailplug ready ' 180)
ADMIN=$(sed -E 's/.*admin=([^ ]+).*/\1/' <<<"$READY")
PUBLIC=$(sed -E 's/.*public=([^ ]+).*/\1/' <<<"$READY")

mkdir -p "$HERE/out"
cd "$HERE"
CONSOLE_URL=$ADMIN CONSOLE_PUBLIC=$PUBLIC CONSOLE_CONFIG=$CONF CONSOLE_BIN=$BIN \
CONSOLE_TOKEN=$ADMIN_TOKEN CONSOLE_WEBHOOK_SECRET=$WEBHOOK_SECRET CONSOLE_CHROMIUM=$CHROMIUM \
CONSOLE_OUT="$HERE/out" CONSOLE_TMP=$TMP \
  timeout 600 node --test --test-concurrency=1 --test-reporter=spec console.test.mjs
