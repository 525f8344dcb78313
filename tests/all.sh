#!/usr/bin/env bash
# The whole test suite: formatting, lints, the SAM template's lint, then every test of the
# workspace. The AWS adapters' conformance suite and the Lambda end-to-end test need an AWS
# emulator: tests/aws/emulator.sh installs moto and cargo-lambda into .venv (from PyPI),
# starts moto on a free loopback port, runs the tests against it and stops it.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
if [[ -f tests/template/lint.sh ]]; then
  bash tests/template/lint.sh
fi
bash tests/aws/emulator.sh cargo test --workspace
