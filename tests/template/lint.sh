#!/usr/bin/env bash
# Validates the SAM template: cfn-lint (errors and warnings both fail), then
# check_template.py (the template and events/ against the contract the Rust code relies on).
# Installs cfn-lint into the project venv (${VACAL_VENV:-<repo>/.venv}) when it is missing or
# not the pinned version. Offline once installed; no AWS credentials needed.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"

venv="${VACAL_VENV:-$root/.venv}"
# Pinned so that a new cfn-lint release (new rules, new warnings) cannot turn CI red by itself.
cfn_lint_version="${CFN_LINT_VERSION:-1.58.0}"

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if [ "$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("cfn-lint"))' 2>/dev/null)" \
  != "$cfn_lint_version" ]; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "cfn-lint==$cfn_lint_version"
fi

# cfn-lint's exit code is a bit mask: 2 errors, 4 warnings, 8 informational (off by default),
# so any non-zero status means an error or a warning.
status=0
"$venv/bin/cfn-lint" --format parseable -- template.yaml || status=$?
if [ "$status" -ne 0 ]; then
  echo "lint.sh: cfn-lint reported problems (exit $status)" >&2
  exit 1
fi
echo "cfn-lint $cfn_lint_version: template.yaml has no errors or warnings"

"$venv/bin/python" tests/template/check_template.py "$root"
