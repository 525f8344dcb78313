#!/usr/bin/env bash
# Starts moto (an AWS emulator) on a free loopback port and runs a command against it.
#
#   bash tests/aws/emulator.sh CMD ARGS...   # runs CMD with AWS_ENDPOINT_URL etc. set, then
#                                            # stops the emulator (exit status is CMD's)
#   bash tests/aws/emulator.sh --localstack CMD ARGS...
#                                            # the same, with SQS and S3 on LocalStack
#                                            # (AWS_ENDPOINT_URL_SQS, AWS_ENDPOINT_URL_S3)
#                                            # and DynamoDB on moto
#   source tests/aws/emulator.sh             # leaves moto running in this shell (stop with
#                                            # vacal_emulator_stop); prints the endpoint
#
# Installs into a Python venv ($VACAL_VENV, default .venv at the repo root): moto[server] and
# cargo-lambda, from PyPI, so a fresh machine needs nothing but python3.
# With AWS_ENDPOINT_URL already set (LocalStack, a moto you started), nothing is started.
#
# LocalStack's community runtime runs SQS and S3 without Docker; its DynamoDB downloads a
# database at first use, which an offline machine cannot, hence moto for DynamoDB. It needs
# Python 3.13 or later (it imports warnings.deprecated; on older Pythons its runtime finds no
# components) and the pins below: newer
# cbor2 / cryptography / pyOpenSSL releases break this version's imports. It goes into its own
# venv ($VACAL_LOCALSTACK_VENV, default .venv-localstack).
set -euo pipefail

_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VACAL_VENV="${VACAL_VENV:-$_root/.venv}"

vacal_venv() {
  if [[ ! -x "$VACAL_VENV/bin/moto_server" || ! -x "$VACAL_VENV/bin/cargo-lambda" ]]; then
    echo "emulator: installing moto[server] and cargo-lambda into $VACAL_VENV" >&2
    python3 -m venv "$VACAL_VENV"
    "$VACAL_VENV/bin/pip" install --quiet --disable-pip-version-check 'moto[server]>=5.1' 'cargo-lambda>=1.8'
  fi
  # cargo finds the `cargo lambda` subcommand on PATH.
  export PATH="$VACAL_VENV/bin:$PATH"
}

vacal_emulator_stop() {
  if [[ -n "${VACAL_MOTO_PID:-}" ]]; then
    kill "$VACAL_MOTO_PID" 2>/dev/null || true
    wait "$VACAL_MOTO_PID" 2>/dev/null || true
    unset VACAL_MOTO_PID
  fi
}

LOCALSTACK_PACKAGES=("localstack-core[runtime]==2026.3.0" "cbor2<5.7" "cryptography==43.0.3"
  "pyopenssl==24.2.1" "service_identity==24.1.0")

# A Python of at least 3.13: on PATH, or one that pyenv installed.
vacal_localstack_python() {
  local candidate
  for candidate in python3.14 python3.13 python3; do
    if command -v "$candidate" >/dev/null &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 13))' 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[3-9]*/bin/python3; do
    if [[ -x "$candidate" ]]; then
      echo "$candidate"
      return 0
    fi
  done
  echo "emulator: LocalStack needs Python 3.13 or later, and none was found" >&2
  return 1
}

vacal_localstack_venv() {
  VACAL_LOCALSTACK_VENV="${VACAL_LOCALSTACK_VENV:-$_root/.venv-localstack}"
  if [[ ! -x "$VACAL_LOCALSTACK_VENV/bin/python" ]] ||
    ! "$VACAL_LOCALSTACK_VENV/bin/python" -c 'import localstack.runtime.main' 2>/dev/null; then
    local python
    python="$(vacal_localstack_python)"
    echo "emulator: installing LocalStack into $VACAL_LOCALSTACK_VENV ($("$python" --version))" >&2
    "$python" -m venv "$VACAL_LOCALSTACK_VENV"
    "$VACAL_LOCALSTACK_VENV/bin/pip" install --quiet --disable-pip-version-check "${LOCALSTACK_PACKAGES[@]}"
  fi
}

# Polls CHECK (a command) every 0.2 s until it succeeds, for at most SECONDS, while process
# PID lives; on failure prints the log of NAME and returns 1.
vacal_wait_ready() {
  local name="$1" pid="$2" log="$3" seconds="$4"
  shift 4
  local tries=$((seconds * 5))
  for _ in $(seq 1 "$tries"); do
    if "$@" 2>/dev/null; then
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "emulator: $name exited; its log:" >&2
      cat "$log" >&2
      return 1
    fi
    sleep 0.2
  done
  echo "emulator: $name did not answer within $seconds s; its log:" >&2
  cat "$log" >&2
  return 1
}

localstack_serves_sqs_and_s3() {
  python3 - "$1" <<'PY'
import json, sys, urllib.request
health = json.load(urllib.request.urlopen(sys.argv[1] + "/_localstack/health", timeout=1))
sys.exit(0 if all(health["services"].get(s) in ("available", "running") for s in ("sqs", "s3")) else 1)
PY
}

moto_answers() {
  python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1] + '/moto-api/', timeout=1)" "$1"
}

vacal_localstack_stop() {
  if [[ -n "${VACAL_LOCALSTACK_PID:-}" ]]; then
    # Its own process group (setsid): the runtime starts helper processes.
    kill -TERM -- "-$VACAL_LOCALSTACK_PID" 2>/dev/null || true
    wait "$VACAL_LOCALSTACK_PID" 2>/dev/null || true
    unset VACAL_LOCALSTACK_PID
  fi
  if [[ -n "${VACAL_LOCALSTACK_DIR:-}" ]]; then
    rm -rf "$VACAL_LOCALSTACK_DIR"
    unset VACAL_LOCALSTACK_DIR
  fi
}

# Starts LocalStack (SQS and S3 only) on a free loopback port and points the SQS and S3
# clients at it; DynamoDB stays on AWS_ENDPOINT_URL.
vacal_localstack_start() {
  vacal_localstack_venv
  local port log endpoint
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  VACAL_LOCALSTACK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/vacal-localstack.XXXXXX")"
  log="$VACAL_LOCALSTACK_DIR/localstack.log"
  # No DNS server, no analytics, no certificate download: nothing leaves the machine.
  GATEWAY_LISTEN="127.0.0.1:$port" SERVICES=sqs,s3 LOCALSTACK_VOLUME_DIR="$VACAL_LOCALSTACK_DIR/volume" \
    DISABLE_EVENTS=1 SKIP_SSL_CERT_DOWNLOAD=1 DNS_ADDRESS=0 \
    setsid "$VACAL_LOCALSTACK_VENV/bin/python" -m localstack.runtime.main >"$log" 2>&1 &
  VACAL_LOCALSTACK_PID=$!
  endpoint="http://127.0.0.1:$port"
  vacal_wait_ready LocalStack "$VACAL_LOCALSTACK_PID" "$log" 60 localstack_serves_sqs_and_s3 "$endpoint" || return 1
  export AWS_ENDPOINT_URL_SQS="$endpoint" AWS_ENDPOINT_URL_S3="$endpoint"
  echo "emulator: LocalStack (SQS, S3) listening on $endpoint (pid $VACAL_LOCALSTACK_PID, log $log)" >&2
}

vacal_emulator_start() {
  vacal_venv
  # Dummy credentials and a region: the SDK needs them to sign, moto accepts anything.
  export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}"
  export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
  export AWS_REGION="${AWS_REGION:-us-east-1}"
  export AWS_DEFAULT_REGION="$AWS_REGION"
  if [[ -n "${AWS_ENDPOINT_URL:-}" ]]; then
    echo "emulator: using AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL" >&2
    return 0
  fi
  local port log
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  log="${TMPDIR:-/tmp}/vacal-moto-$port.log"
  "$VACAL_VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
  VACAL_MOTO_PID=$!
  export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
  if ! vacal_wait_ready moto "$VACAL_MOTO_PID" "$log" 30 moto_answers "$AWS_ENDPOINT_URL"; then
    vacal_emulator_stop
    return 1
  fi
  echo "emulator: moto listening on $AWS_ENDPOINT_URL (pid $VACAL_MOTO_PID, log $log)" >&2
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  if [[ $# -eq 0 ]]; then
    echo "usage: bash tests/aws/emulator.sh CMD [ARGS...]   (or: source tests/aws/emulator.sh)" >&2
    exit 2
  fi
  localstack=0
  if [[ "$1" == "--localstack" ]]; then
    localstack=1
    shift
  fi
  trap 'vacal_localstack_stop; vacal_emulator_stop' EXIT INT TERM
  vacal_emulator_start
  echo "AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL"
  if [[ $localstack == 1 ]]; then
    vacal_localstack_start
    echo "AWS_ENDPOINT_URL_SQS=$AWS_ENDPOINT_URL_SQS AWS_ENDPOINT_URL_S3=$AWS_ENDPOINT_URL_S3"
  fi
  "$@"
else
  # Sourced: leave the emulator running for this shell; don't impose our shell options.
  set +euo pipefail
  vacal_emulator_start && echo "AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL"
fi
