#!/usr/bin/env bash
# Per-provider figures in one run: parse throughput of every first-party
# plugin's largest sample batch in the sandbox vs the same code compiled
# natively (host/benches/providers.rs), and cold start of a process that
# loads every first-party plugin, compile cache cold vs warm.
set -euo pipefail
cd "$(dirname "$0")/../.."

echo "== building the native baseline (plugins/bench-native) and the release binary" >&2
# Its own target dir: the plugins' wasm builds (host/build.rs) use plugins/target.
cargo build --release --locked --manifest-path plugins/Cargo.toml -p bench-native \
  --target-dir plugins/target/native >&2
cargo build --release --locked -p mailplug >&2
native="$PWD/plugins/target/native/release/bench-native"

echo "== parse throughput (interleaved rounds)" >&2
MAILPLUG_NATIVE_BENCH="$native" cargo bench --locked --bench providers

# `mailplug plugin list` loads every first-party plugin and calls describe.
echo
echo "== start-up with every first-party plugin ($(./target/release/mailplug plugin list | wc -l) plugins), 9 runs each"
ms() { local a b; a=$(date +%s%N); "$@" >/dev/null; b=$(date +%s%N); echo $(((b - a) / 100000)); }
cold=() warm=()
for _ in $(seq 9); do
  data=$(mktemp -d)
  cold+=("$(ms ./target/release/mailplug plugin list --data-dir "$data")")
  warm+=("$(ms ./target/release/mailplug plugin list --data-dir "$data")")
  rm -rf "$data"
done
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
tenths() { echo "$(( $1 / 10 )).$(( $1 % 10 ))"; }
echo "| start | median ms | runs (ms) |"
echo "| --- | --- | --- |"
echo "| cache cold (compiles every plugin, writes the cache) | $(tenths "$(median "${cold[@]}")") | $(for v in "${cold[@]}"; do printf '%s ' "$(tenths "$v")"; done)|"
echo "| cache warm (loads compiled plugins from the cache) | $(tenths "$(median "${warm[@]}")") | $(for v in "${warm[@]}"; do printf '%s ' "$(tenths "$v")"; done)|"
