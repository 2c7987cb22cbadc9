#!/usr/bin/env bash
# README's second command: the whole test suite (unit tests, the site's tests, and a real lab brought up and torn down).
set -uo pipefail
cd "$(dirname "$0")"
scripts/ensure-venv.sh --for-tests || exit 1
.venv/bin/python -m pytest -q -rs "$@"
status=$?
if [[ $status -eq 5 ]]; then
  echo "test.sh: pytest collected no tests; that is a failure here" >&2
  exit 1
fi
exit $status
