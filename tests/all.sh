#!/usr/bin/env bash
# The whole test suite: formatting, lints, the SAM template's lint, then every test of the
# workspace. The AWS adapters' conformance suite and the Lambda end-to-end test need an AWS
# emulator: tests/aws/emulator.sh installs moto and cargo-lambda into .venv (from PyPI),
# starts moto on a free loopback port, runs the tests against it and stops it; then the
# adapters' suites run once more with SQS and S3 on LocalStack.
set -euo pipefail
cd "$(dirname "$0")/.."

# The test targets that need an AWS emulator are behind these features, so that a plain
# `cargo test --workspace` needs nothing but cargo; here every step builds with them, so the
# lints cover those targets too and one build serves every step.
EMULATOR_FEATURES="vacal-aws/emulator,vacal-e2e/emulator"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --features "$EMULATOR_FEATURES" -- -D warnings
if [[ -f tests/template/lint.sh ]]; then
  bash tests/template/lint.sh
fi
bash tests/aws/emulator.sh cargo test --workspace --features "$EMULATOR_FEATURES"
# The AWS adapters' suites again with SQS and S3 on LocalStack (DynamoDB stays on moto: the
# community LocalStack downloads its DynamoDB at first use), so no test passes only on moto.
# The Lambda end-to-end test runs on moto alone, above: it takes minutes more per setup.
# Selecting by test target across the workspace (not -p vacal-aws) keeps the features of the
# build above, so nothing is compiled again; vacal-local's conformance suite comes along.
bash tests/aws/emulator.sh --localstack cargo test --workspace --features "$EMULATOR_FEATURES" \
  --test conformance --test data_model
