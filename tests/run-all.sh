#!/usr/bin/env bash
# The whole test suite from a fresh Debian machine with only the Rust
# toolchain: installs what the tests need, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Plugins are built from source for this target by host/build.rs.
rustup target add wasm32-wasip2 >/dev/null

# The real SMTP server the integration tests talk to (aiosmtpd from PyPI).
if [ -f tests/smtp/requirements.txt ]; then
  python3 -m pip install --quiet --disable-pip-version-check -r tests/smtp/requirements.txt
fi
# PyYAML for the static check of deploy/compose.yaml.
python3 -m pip install --quiet --disable-pip-version-check -r tests/deploy/requirements.txt

# PostgreSQL server binaries for the PostgreSQL store tests, which start a
# throwaway server of their own (host/src/store/postgres/testdb.rs) and fail
# without one, and HAProxy for the deploy example's check
# (deploy/local/run.sh). Only the binaries are needed: the Debian services
# are not started (policy-rc.d refuses them during the install).
packages=()
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || packages+=(postgresql)
command -v haproxy >/dev/null || packages+=(haproxy)
if [[ ${#packages[@]} -gt 0 ]]; then
  sudo_cmd=""
  [[ $(id -u) -ne 0 ]] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  policy_created=""
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo_cmd tee /usr/sbin/policy-rc.d >/dev/null
    $sudo_cmd chmod +x /usr/sbin/policy-rc.d
    policy_created=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${packages[@]}"
  if [[ -n $policy_created ]]; then $sudo_cmd rm -f /usr/sbin/policy-rc.d; fi
fi

cargo test --workspace --locked

# The plugins are a separate workspace (wasm32-wasip2), so the line above
# never reaches their unit tests. They run natively: off wasm the SDK's
# logging/clock wrappers stand in for the host, but crypto and SNS imports are
# `unreachable!()` stubs, so unit tests cover parsing, not verification
# (tests/integration covers the built plugins).
cargo test --manifest-path plugins/Cargo.toml --locked \
  -p mailplug-sdk -p custom-smtp -p sendgrid -p example-provider \
  -p postmark -p resend -p mailgun -p mailjet -p postal \
  -p sparkpost -p brevo -p mandrill -p amazon-ses

# The web console in a real browser: Debian's chromium driven by
# playwright-core (which never downloads a browser of its own), against the
# daemon binary and the test SMTP server (tests/console/run.sh).
if [[ ! -x /usr/bin/chromium ]] || ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  sudo_cmd=""
  [[ $(id -u) -ne 0 ]] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium nodejs npm
fi
(cd tests/console && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
# `cargo test --workspace` above built the daemon binary (target/debug/mailplug)
# with the workspace's features; a `cargo build -p mailplug` here would
# rebuild wasmtime with another feature set for nothing.
bash tests/console/run.sh

# The deploy example (deploy/, docs/deploy.md): Docker is not available
# here, so compose.yaml and the Dockerfile are checked statically, and the
# same topology runs without Docker: two replicas of the binary built above
# on a throwaway PostgreSQL behind HAProxy with deploy/haproxy.cfg, checked
# through the load balancer (about 20 s).
python3 tests/deploy/compose_check.py --mailplug "${CARGO_TARGET_DIR:-target}/debug/mailplug"
MAILPLUG_BIN="${CARGO_TARGET_DIR:-target}/debug/mailplug" timeout 300 bash deploy/local/run.sh --check
