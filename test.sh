#!/usr/bin/env bash
# README's second command: the whole test suite (unit tests, the site's tests, and real labs brought up and torn down).
set -uo pipefail
cd "$(dirname "$0")"
scripts/ensure-venv.sh --for-tests || exit 1

run_pytest() {  # one pytest run; its exit 5 (no tests collected) is a failure here
  .venv/bin/python -m pytest -q -rs --durations=25 "$@"
  local status=$?
  if [[ $status -eq 5 ]]; then
    echo "test.sh: pytest collected no tests; that is a failure here" >&2
    return 1
  fi
  return $status
}

if [[ $# -gt 0 ]]; then  # the tests named, in one run on two workers
  run_pytest -n 2 --dist loadfile "$@"
  exit $?
fi
# Everything but the VMs on two workers, each taking whole files (one lab per integration module; each module has its
# own lab name and subnet range, so two run at once: labs wait on I/O, so two share the cores).
echo "test.sh: everything but the Vagrant VMs, on two workers"
run_pytest -n 2 --dist loadfile -m "not vagrant"
local_status=$?
# Then the VMs alone: emulated where KVM cannot run a guest, beside the local labs they starved (a package install
# past 900 s, PyPI connections reset) and slowed the local labs' timing-sensitive tests.
echo "test.sh: the Vagrant VMs, alone"
run_pytest -m vagrant
vagrant_status=$?
if [[ $local_status -ne 0 || $vagrant_status -ne 0 ]]; then
  echo "test.sh: failed (everything but the VMs: exit $local_status; the VMs: exit $vagrant_status)" >&2
  exit 1
fi
