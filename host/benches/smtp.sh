#!/usr/bin/env bash
# SMTP throughput benchmark: mailplug vs Postfix smtp-source, both into
# Postfix smtp-sink on 127.0.0.1 (see smtp_throughput.rs for the knobs).
# Installs Postfix (Debian) when smtp-sink/smtp-source are missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ ! -x /usr/sbin/smtp-sink || ! -x /usr/sbin/smtp-source ]]; then
  sudo_cmd=""
  [[ $(id -u) -ne 0 ]] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq postfix
fi
exec cargo bench -p mailplug --bench smtp_throughput "$@"
