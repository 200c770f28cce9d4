#!/usr/bin/env bash
# Make sure `promtool` (Debian's prometheus package) is on this machine for the tests of the
# metrics' names and of deploy/monitoring/ (tests/integration/test_monitoring.py). Installs the
# package when promtool is missing and we are root; never starts its service (policy-rc.d, as
# for every package of apt_install). Idempotent.
set -euo pipefail

if command -v promtool >/dev/null 2>&1; then
    exit 0
fi
# shellcheck source=tests/apt-install.sh
. "$(dirname "$0")/apt-install.sh"
require_root install-monitoring.sh \
    "promtool is missing; as root run: apt-get install --no-install-recommends prometheus"
apt_install prometheus
