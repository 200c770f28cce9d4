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
# The hub tier's database cluster (test_tier_deploy.py): the simulated hosts are overlays of this
# machine's /, so the roles find these installed (their apt tasks are then no-ops). Installing
# them starts nothing here (apt_install); the packages' own units are masked inside the hosts.
db_need=()
for pkg in etcd-server patroni postgresql-15 python3-psycopg2; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || db_need+=("$pkg")
done
if [ "${#db_need[@]}" -gt 0 ]; then
    apt_install "${db_need[@]}"
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
# Collections the roles use (deploy/ansible/collections/requirements.yml). No Galaxy here: take
# them from the `ansible` package on PyPI (it bundles them), pinned, and unpack only those.
ansible_pkg="ansible==12.3.0"  # community.postgresql 4.x; see deploy/ansible/collections/requirements.yml
collections="$here/../../deploy/ansible/collections"
cstamp="$collections/.vendored-${ansible_pkg}"
if [ ! -e "$cstamp" ]; then
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    "$venv/bin/python" -m pip download --quiet --disable-pip-version-check --no-deps \
        --only-binary :all: -d "$tmp" "$ansible_pkg"
    rm -rf "$collections/ansible_collections"
    "$venv/bin/python" - "$tmp"/ansible-*.whl "$collections" <<'PY'
import pathlib, sys, zipfile
wheel, dest = sys.argv[1], pathlib.Path(sys.argv[2])
with zipfile.ZipFile(wheel) as zf:
    zf.extractall(dest, [n for n in zf.namelist()
                         if n.startswith("ansible_collections/community/postgresql/")])
if not (dest / "ansible_collections/community/postgresql/MANIFEST.json").exists():
    sys.exit(f"prepare-host.sh: community.postgresql is not in {wheel}")
PY
    rm -f "$collections"/.vendored-*
    touch "$cstamp"
fi
echo "prepare-host.sh: ready (systemd-nspawn $(systemd-nspawn --version | head -1 | awk '{print $2}'), $("$venv/bin/ansible-playbook" --version | head -1))"
