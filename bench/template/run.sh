#!/usr/bin/env bash
# Template benchmark: push/pull through a loopback registry vs oras moving
# the same bytes, and up --template from a pulled snapshot vs cold boot.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec go run ./bench/template -mvmctl bin/mvmctl "$@"
