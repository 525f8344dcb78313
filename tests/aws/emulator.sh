#!/usr/bin/env bash
# Starts moto (an AWS emulator) on a free loopback port and runs a command against it.
#
#   bash tests/aws/emulator.sh CMD ARGS...   # runs CMD with AWS_ENDPOINT_URL etc. set, then
#                                            # stops the emulator (exit status is CMD's)
#   source tests/aws/emulator.sh             # leaves it running in this shell (stop with
#                                            # vacal_emulator_stop); prints the endpoint
#
# Installs into a Python venv ($VACAL_VENV, default .venv at the repo root): moto[server] and
# cargo-lambda, from PyPI, so a fresh machine needs nothing but python3.
# With AWS_ENDPOINT_URL already set (LocalStack, a moto you started), nothing is started.
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
  for _ in $(seq 1 150); do
    if python3 -c "import urllib.request,sys; urllib.request.urlopen('$AWS_ENDPOINT_URL/moto-api/', timeout=1)" 2>/dev/null; then
      echo "emulator: moto listening on $AWS_ENDPOINT_URL (pid $VACAL_MOTO_PID, log $log)" >&2
      return 0
    fi
    if ! kill -0 "$VACAL_MOTO_PID" 2>/dev/null; then
      echo "emulator: moto_server exited; its log:" >&2
      cat "$log" >&2
      return 1
    fi
    sleep 0.2
  done
  echo "emulator: moto did not answer on $AWS_ENDPOINT_URL within 30 s" >&2
  vacal_emulator_stop
  return 1
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  if [[ $# -eq 0 ]]; then
    echo "usage: bash tests/aws/emulator.sh CMD [ARGS...]   (or: source tests/aws/emulator.sh)" >&2
    exit 2
  fi
  trap vacal_emulator_stop EXIT INT TERM
  vacal_emulator_start
  echo "AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL"
  "$@"
else
  # Sourced: leave the emulator running for this shell; don't impose our shell options.
  set +euo pipefail
  vacal_emulator_start && echo "AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL"
fi
