#!/usr/bin/env bash
# The README's test command (after set-up): lint, types, the contract's tests, then every Python test.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\n\033[1m[test]\033[0m %s\n' "$*"; }
start=$(date +%s)

say "ruff"
.venv/bin/ruff check node protocols storage tests bench
say "mypy --strict"
.venv/bin/mypy
say "hardhat test (contracts/)"
(cd contracts && ./node_modules/.bin/hardhat test)
say "pytest"
set +e
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
  echo "[test] pytest collected no tests: treated as a failure" >&2
  exit 1
fi
say "finished in $(( $(date +%s) - start )) s (pytest exit $rc)"
exit "$rc"
