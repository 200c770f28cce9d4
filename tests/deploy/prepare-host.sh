#!/usr/bin/env bash
# Install what the Ansible deploy test (tests/deploy, `pytest -m deploy`) needs on the CI machine:
# systemd-nspawn to boot the simulated hosts, sshd for Ansible to reach them, iproute2 for the
# network namespaces; and the controller's Ansible tools in a virtualenv (.venv-deploy).
# Idempotent; run as root. Does not start any service on this machine.
set -euo pipefail

# shellcheck source=tests/apt-install.sh
. "$(dirname "$0")/../apt-install.sh"
require_root prepare-host.sh "must run as root"

need=()
command -v systemd-nspawn >/dev/null 2>&1 || need+=(systemd-container)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
[ -x /lib/systemd/systemd ] || need+=(systemd)
/usr/bin/python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)

# (apt_install: apt does not start sshd, or anything else, on the CI machine itself.)
if [ "${#need[@]}" -gt 0 ]; then
    apt_install openssh-server systemd-container "${need[@]}"
fi
# Controller tools (ansible-playbook, ansible-lint) in their own virtualenv, kept apart from the
# project's .venv. Override the location with CROSSROADS_DEPLOY_VENV.
here="$(cd "$(dirname "$0")" && pwd)"
venv="${CROSSROADS_DEPLOY_VENV:-$here/../../.venv-deploy}"
stamp="$venv/.installed-$(sha1sum "$here/requirements.txt" | cut -c1-12)"
if [ ! -e "$stamp" ]; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    rm -f "$venv"/.installed-*
    touch "$stamp"
fi
echo "prepare-host.sh: ready (systemd-nspawn $(systemd-nspawn --version | head -1 | awk '{print $2}'), $("$venv/bin/ansible-playbook" --version | head -1))"
