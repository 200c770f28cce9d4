# Sourced by the scripts that install Debian packages for the tests (tests/install-postgres.sh,
# tests/install-monitoring.sh, tests/deploy/prepare-host.sh): apt as root, never starting a
# service on this machine.

# require_root SCRIPT WHY: unless run as root, say "SCRIPT: WHY" on stderr and exit 1.
require_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "$1: $2" >&2
        exit 1
    fi
}

# apt_install PACKAGE...: install without recommends. policy-rc.d keeps apt from starting the
# packages' services (sshd, the packaged PostgreSQL cluster, ...) on this machine.
apt_install() {
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 0755 /usr/sbin/policy-rc.d
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "$@"
}
