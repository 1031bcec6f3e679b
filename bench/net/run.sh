#!/usr/bin/env bash
# Network benchmark (root): guest→host TCP throughput, TCP connect latency
# and up-with-network vs --network none, mvm next to raw QEMU with the same
# kernel and netdev, bridged and user mode; with -mode egress, resolve+TCP
# connect on egress-restricted networks against an open one. Everything
# runs in network namespaces of its own and is removed on exit.
# Flags: go run ./bench/net -h
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH=$PATH:/usr/local/go/bin
exec go run ./bench/net -mvmctl bin/mvmctl "$@"
