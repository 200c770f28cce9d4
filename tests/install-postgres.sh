#!/usr/bin/env bash
# Make sure Debian's PostgreSQL server binaries are on this machine for the tests that start a
# throw-away server (node/testing_postgres.py). Installs the package when they are missing and we
# are root; does not create or start the Debian cluster (policy-rc.d). Idempotent.
set -euo pipefail

if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || [ -n "${CROSSROADS_PG_BINDIR:-}" ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install-postgres.sh: PostgreSQL server binaries are missing; as root run: apt-get install postgresql-15" >&2
    exit 1
fi
# apt must not start the packaged cluster on this machine.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends postgresql-15 postgresql-client-15
