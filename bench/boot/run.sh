#!/usr/bin/env bash
# Boot benchmark: mvmctl cold up→exec vs raw QEMU to the agent's ready marker.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec go run ./bench/boot -mvmctl bin/mvmctl "$@"
