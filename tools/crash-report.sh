#!/usr/bin/env bash
# After a failed CI step (.ci/run): the native stacks of every process that dumped core in the
# checkout. A segmentation fault in a C extension's own thread (gRPC's, say) shows no Python
# frame of its own in faulthandler's dump; gdb on the core names the function that crashed.
# Needs `ulimit -c unlimited` before the step and a core_pattern that writes files ("core").
set -uo pipefail
cd "$(dirname "$0")/.."
shopt -s nullglob
cores=(cor[e] core.[0-9]*)  # a pattern each, so that nullglob drops what is not there
if [ ${#cores[@]} -eq 0 ]; then
    echo "crash-report: no core file in $(pwd) (core_pattern: $(cat /proc/sys/kernel/core_pattern))"
    exit 0
fi
if ! command -v gdb >/dev/null; then
    (apt-get install -y -q gdb || { apt-get update -q && apt-get install -y -q gdb; }) >/dev/null 2>&1
fi
for core in "${cores[@]}"; do
    echo "crash-report: $core"
    gdb -q -batch -iex "set auto-load safe-path /" -ex "info threads" -ex "thread apply all bt 30" .venv/bin/python "$core" 2>&1 \
        | grep -v "^\[New LWP" | head -400
    echo "crash-report: $core: the crashing thread, its registers, the libraries' addresses"
    gdb -q -batch -iex "set auto-load safe-path /" -ex "bt 30" -ex "info registers rip rsp rdi rsi" \
        .venv/bin/python "$core" 2>&1 | grep -v "^\[New LWP" | tail -60
    gdb -q -batch -iex "set auto-load safe-path /" -ex "info sharedlibrary" .venv/bin/python "$core" 2>&1 \
        | grep -E "^From|cygrpc|libpython"
done
