#!/usr/bin/env bash
# Make sure Debian's PostgreSQL server binaries are on this machine for the tests that start a
# throw-away server (node/testing_postgres.py). Installs the package when they are missing and we
# are root; does not create or start the Debian cluster (policy-rc.d). Idempotent.
set -euo pipefail

if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || [ -n "${CROSSROADS_PG_BINDIR:-}" ]; then
    exit 0
fi
# shellcheck source=tests/apt-install.sh
. "$(dirname "$0")/apt-install.sh"
require_root install-postgres.sh \
    "PostgreSQL server binaries are missing; as root run: apt-get install postgresql-15"
apt_install postgresql-15 postgresql-client-15
