#!/usr/bin/env bash
# README's first command: install lab, bring the default lab up (lb1, web1, db1) and prove it with `lab test`.
set -euo pipefail
cd "$(dirname "$0")"
scripts/ensure-venv.sh
.venv/bin/lab up "$@"
.venv/bin/lab test
echo "setup: the lab is up and proved; open https://$(.venv/bin/lab status --format json | .venv/bin/python -c 'import json,sys; print(next(h["ip"] for h in json.load(sys.stdin) if h["tier"] == "lb"))')/ (its certificate is signed by the lab's own CA: $(.venv/bin/lab ca))"
