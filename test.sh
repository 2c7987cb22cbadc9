#!/usr/bin/env bash
# README's second command: the whole test suite (unit tests, the site's tests, and a real lab brought up and torn down).
set -uo pipefail
cd "$(dirname "$0")"
scripts/ensure-venv.sh --for-tests || exit 1
# Two workers, each taking whole files (one lab per integration module): the vagrant test's VMs boot while the
# local labs provision. Every integration module has its own lab name and subnet range, so two can run at once.
.venv/bin/python -m pytest -q -rs -n 2 --dist loadfile --durations=25 "$@"
status=$?
if [[ $status -eq 5 ]]; then
  echo "test.sh: pytest collected no tests; that is a failure here" >&2
  exit 1
fi
exit $status
