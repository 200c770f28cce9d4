#!/usr/bin/env bash
# Make sure Debian's Patroni and etcd are on this machine for `make test-ha`'s database
# failover tests (tests/ha/patroni.py: one etcd member and two Patroni members on loopback,
# started by the test itself). Installs the packages when they are missing and we are root;
# never starts their services on this machine (policy-rc.d, tests/apt-install.sh). Idempotent.
set -euo pipefail

bash "$(dirname "$0")/install-postgres.sh"
if command -v patroni >/dev/null && command -v patronictl >/dev/null && command -v etcd >/dev/null; then
    exit 0
fi
# shellcheck source=tests/apt-install.sh
. "$(dirname "$0")/apt-install.sh"
require_root install-patroni.sh \
    "Patroni or etcd is missing; as root run: apt-get install patroni etcd-server"
# python3-etcd: Patroni's etcd client (a dependency; named in case the package relaxes it).
apt_install patroni etcd-server python3-etcd
