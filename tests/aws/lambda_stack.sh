#!/usr/bin/env bash
# Serves the API as deployed on AWS, on this machine: starts moto (tests/aws/emulator.sh,
# which installs moto and cargo-lambda into .venv on first use), then `lambda-stack`
# (tests/src/bin/lambda-stack.rs): the table, queues and bucket on moto, the three Lambda
# binaries under `cargo lambda watch`, the SQS event source mapping and the janitor's
# schedule. Prints the API's base URL on stdout (one line) once it answers; Ctrl-C (or
# SIGTERM to this script) stops everything.
#
#   bash tests/aws/lambda_stack.sh [lambda-stack options, see --help]
#   VACAL_API_URL=<printed URL> cargo test -p vacal-e2e --test api   # in another shell
set -euo pipefail
cd "$(dirname "$0")/../.."

# stdout carries only the API's URL: the emulator's messages go to stderr.
# shellcheck source=tests/aws/emulator.sh
source tests/aws/emulator.sh >&2
set -euo pipefail
if [[ -z "${AWS_ENDPOINT_URL:-}" ]]; then
  echo "lambda_stack: the emulator did not start" >&2
  exit 1
fi

stack_pid=""
stop() {
  if [[ -n "$stack_pid" ]]; then
    kill -TERM "$stack_pid" 2>/dev/null || true
    wait "$stack_pid" 2>/dev/null || true
    stack_pid=""
  fi
  vacal_emulator_stop
}
trap stop EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cargo build --quiet -p vacal-e2e --bin lambda-stack
target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
# In the background so that this shell handles signals at once and passes them on.
"$target_dir/debug/lambda-stack" "$@" &
stack_pid=$!
wait "$stack_pid"
status=$?
stack_pid=""
exit "$status"
