#!/usr/bin/env bash
# Run every fuzz target in the module for a fixed number of executions each.
#
#   scripts/fuzz.sh            # every target, FUZZ_EXECS (default 20000) each
#   scripts/fuzz.sh Frame      # only targets whose name contains "Frame"
#
# The budget is a count (-fuzztime Nx), not a duration: Go 1.26's fuzz
# coordinator can fail a target with a bare "context deadline exceeded" when
# a duration budget runs out mid-execution (fixed in Go 1.27). A real finding
# is written under testdata/fuzz/ and fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
execs=${FUZZ_EXECS:-20000}
filter=${1:-}
failed=0
while IFS=: read -r file func; do
	[[ -n $filter && $func != *"$filter"* ]] && continue
	pkg=./$(dirname "$file")
	echo "fuzz: $func ($pkg, ${execs} executions)"
	if ! "$GO" test -run '^$' -fuzz "^${func}\$" -fuzztime "${execs}x" "$pkg"; then
		failed=1
		echo "fuzz: $func FAILED" >&2
	fi
done < <(git grep -o -P '^func \KFuzz\w+' -- '*_test.go')
exit $failed
