#!/usr/bin/env bash
# Makes .venv with lab installed; with --for-tests also .venv-app (the site's pinned requirements, for its
# unit tests) and Chromium (the bench report is checked in a real browser).
# Idempotent: a second run only checks. Machine packages for the lab itself are installed by `lab up`.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3)
python3 -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3-venv)
command -v ssh >/dev/null || need_apt+=(openssh-client)
if [[ ${1:-} == --for-tests ]]; then
  command -v chromium >/dev/null || need_apt+=(chromium)
fi
if ((${#need_apt[@]})); then
  echo "setup: installing ${need_apt[*]} (apt)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

stamp=".venv/.lab-installed"
if [[ ! -x .venv/bin/python || ! -f $stamp || pyproject.toml -nt $stamp ]]; then
  echo "setup: installing lab and its Python dependencies into .venv"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -e . 
  touch "$stamp"
fi

app_stamp=".venv-app/.lab-installed"
if [[ ${1:-} == --for-tests && ( ! -f $app_stamp || app/requirements.txt -nt $app_stamp ) ]]; then
  echo "setup: installing the site's pinned requirements into .venv-app (for its unit tests)"
  python3 -m venv .venv-app
  .venv-app/bin/pip install -q --disable-pip-version-check -r app/requirements.txt
  touch "$app_stamp"
fi
