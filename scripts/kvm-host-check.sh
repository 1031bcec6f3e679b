#!/usr/bin/env bash
# Runs mvm's Firecracker backend against the real Firecracker on a KVM host.
#
#   scripts/kvm-host-check.sh [-n RUNS]
#
# Everywhere else (CI, hosts without KVM) the backend is verified against a
# stand-in VMM that enforces Firecracker's API and runs the guest on QEMU
# (internal/backend/firecracker/standin). This script is the other half:
# on a host with usable KVM and `firecracker` (>= 1.14; jailer optional
# for now) on PATH it
#   1. checks the host (KVM usable per mvmctl doctor, firecracker version),
#   2. runs the lifecycle and agent conformance suites and TestFirecracker
#      (snapshots, clones) through --backend firecracker on the real binary
#      (MVM_E2E_FIRECRACKER=real),
#   3. times cold up -> first exec on firecracker against the same on QEMU
#      with KVM, RUNS times each, interleaved, and prints p50s and the
#      ratio, then runs `mvmctl bench boot` (QEMU vs raw QEMU) for context.
# It touches only its own temp directories; every VM it makes is removed.
# Exit status: 0 when every suite passed, 1 otherwise, 2 when the host
# cannot run it (the reason is printed).
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
runs=5
while getopts "n:" o; do
	case $o in
	n) runs=$OPTARG ;;
	*) echo "usage: $0 [-n RUNS]" >&2; exit 2 ;;
	esac
done

cant() { echo "kvm-host-check: cannot run here: $*" >&2; exit 2; }

[[ $(uname -s) == Linux ]] || cant "needs Linux"
command -v firecracker >/dev/null || cant "firecracker is not on PATH (https://github.com/firecracker-microvm/firecracker/releases)"
[[ -z ${MVM_FIRECRACKER_BIN:-} ]] || cant "unset MVM_FIRECRACKER_BIN: this check runs the firecracker on PATH"
fcv=$(firecracker --version | head -1)
case $fcv in *stand-in*) cant "the firecracker on PATH is the test stand-in" ;; esac
echo "kvm-host-check: $fcv at $(command -v firecracker)"
if command -v jailer >/dev/null; then
	echo "kvm-host-check: $(jailer --version 2>&1 | head -1): VMs run jailed (as root)"
fi

make build >/dev/null
bin=$PWD/bin
work=$(mktemp -d /tmp/mvm-kvmcheck.XXXXXX)
export MVM_STATE_DIR=$work/state MVM_CONFIG_DIR=$work/config MVM_SHARE_DIR=$work/share
export MVM_CACHE_DIR=${MVM_CACHE_DIR:-$work/cache}
mkdir -p "$MVM_CONFIG_DIR"
printf 'default_network = "none"\n' >"$MVM_CONFIG_DIR/config.toml"
cleanup() {
	for v in $("$bin/mvmctl" ls -a --format '{{.Name}}' 2>/dev/null); do
		"$bin/mvmctl" rm -f "$v" >/dev/null 2>&1 || true
	done
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

doctor=$("$bin/mvmctl" doctor 2>&1 || true)
echo "$doctor" | sed -n '1,8p'
echo "$doctor" | grep -q '^  firecracker (kvm): chosen' ||
	cant "auto-selection does not choose firecracker here (see doctor above): KVM must be usable"

status=0
echo "kvm-host-check: conformance suites through the real firecracker"
if ! MVM_E2E_FIRECRACKER=real MVM_E2E_BACKENDS=firecracker MVM_E2E_CACHE=$MVM_CACHE_DIR \
	"$GO" test -count=1 -timeout 30m -run 'TestLifecycle|TestAgent|TestFirecracker' -v ./test/e2e/ 2>&1 |
	tee "$work/e2e.log" | grep -E '^(=== RUN|--- |PASS|FAIL|ok )'; then
	status=1
fi
grep -q '^--- FAIL' "$work/e2e.log" && status=1

# Cold up -> first exec, firecracker vs QEMU (KVM), interleaved.
upexec() {
	local be=$1 name=$2 t0 t1
	t0=$(date +%s%N)
	"$bin/mvmctl" up --backend "$be" --image minimal --name "$name" --memory 256M >/dev/null
	"$bin/mvmctl" exec "$name" -- true
	t1=$(date +%s%N)
	"$bin/mvmctl" rm -f "$name" >/dev/null
	echo $(((t1 - t0) / 1000000))
}
"$bin/mvmctl" up --backend qemu --image minimal --name warm --memory 256M >/dev/null # builds the image
"$bin/mvmctl" rm -f warm >/dev/null
fc=() qm=()
for i in $(seq "$runs"); do
	fc+=("$(upexec firecracker "fc$i")")
	qm+=("$(upexec qemu "qm$i")")
done
p50() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
f=$(p50 "${fc[@]}") q=$(p50 "${qm[@]}")
printf 'kvm-host-check: cold up -> first exec p50 over %d runs: firecracker %d ms, qemu (kvm) %d ms, ratio %s\n' \
	"$runs" "$f" "$q" "$(awk -v f="$f" -v q="$q" 'BEGIN {printf "%.2fx", f / q}')"

echo "kvm-host-check: mvmctl bench boot (QEMU against raw QEMU, for context)"
"$bin/mvmctl" bench boot -n "$runs" || status=1

if ((status == 0)); then
	echo "kvm-host-check: PASS: the firecracker backend is verified on $fcv"
else
	echo "kvm-host-check: FAIL (log: kept in the output above)" >&2
fi
exit $status
