#!/usr/bin/env bash
# Makes .venv with lab installed; with --for-tests also .venv-app (the site's pinned requirements, for its
# unit tests) and Chromium (the bench report is checked in a real browser).
# Idempotent: a second run only checks. Machine packages for the lab itself are installed by `lab up`.
set -euo pipefail
cd "$(dirname "$0")/.."

# Machine packages come from lab/machine-packages.toml (features "lab", and "tests" for --for-tests), read by
# `python3 -m lab.machine_packages` (standard library only); python3 itself is installed first, to read it.
# Like lab, without Recommends: the manifest names every package needed.
apt_install() {
  echo "setup: installing $* (apt)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
command -v python3 >/dev/null || apt_install python3
features=(lab)
[[ ${1:-} == --for-tests ]] && features+=(tests)
need_apt=$(python3 -m lab.machine_packages missing "${features[@]}") || {
  echo "setup: cannot read lab/machine-packages.toml with $(command -v python3) (lab needs Python 3.11 or later)" >&2
  exit 1
}
if [[ -n $need_apt ]]; then
  # shellcheck disable=SC2086  # one package a line
  apt_install $need_apt
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
