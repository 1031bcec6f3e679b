#!/usr/bin/env bash
# Docker backend benchmark: `mvmctl exec NAME true` vs `docker exec C true`
# on the same container, and `mvmctl up --backend docker` (image cached).
# Pass -direct to measure the backend in-process without mvmctl.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec go run ./bench/docker -mvmctl bin/mvmctl -agent bin/mvm-agent "$@"
