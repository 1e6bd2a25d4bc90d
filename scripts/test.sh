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
say "slither --fail-medium (contracts/; remaining low/informational findings are explained in contracts/README.md)"
(cd contracts && ../.venv-slither/bin/slither . --fail-medium > ../.slither.log 2>&1) \
  || { cat .slither.log; echo "[test] slither found medium/high issues" >&2; exit 1; }
tail -1 .slither.log
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
