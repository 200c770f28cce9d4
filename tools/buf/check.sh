#!/usr/bin/env bash
# `make lint-protos`: buf lint, then buf breaking against the previous commit (protos/buf.yaml).
# Usage: tools/buf/check.sh [AGAINST_REF]   (default HEAD~1; `make lint-protos BUF_AGAINST=main`)
set -euo pipefail
cd "$(dirname "$0")/../.."
buf=tools/buf/node_modules/.bin/buf
against=${1:-HEAD~1}

"$buf" lint protos
if ! git rev-parse --git-dir >/dev/null 2>&1; then
    echo "buf breaking: not a git checkout, nothing to compare the protos with" >&2
    exit 1
fi
if ! git rev-parse --verify --quiet "$against^{commit}" >/dev/null; then
    if [ "$(git rev-parse --is-shallow-repository)" = true ]; then
        echo "buf breaking: $against is not in this shallow clone; fetch it" \
             "(git fetch --deepen=1) or clone fully, as CI does" >&2
        exit 1
    fi
    if [ "$against" = HEAD~1 ] && ! git rev-parse --verify --quiet HEAD~1 >/dev/null; then
        echo "buf breaking: skipped, the first commit has no previous protocol to break"
        exit 0
    fi
    echo "buf breaking: no commit $against to compare with" >&2
    exit 1
fi
"$buf" breaking protos --against ".git#ref=$against,subdir=protos"
echo "buf lint and buf breaking (against $against): passed"
