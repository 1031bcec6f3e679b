# mvm — build, demo and test entry points. See README.md.
SHELL := /bin/bash
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
export GOTOOLCHAIN ?= auto
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/mvm-dev/mvm/internal/cli.Version=$(VERSION)
BIN := bin
STATICCHECK := $(shell $(GO) env GOPATH)/bin/staticcheck
# Executions per fuzz target in `make test` (`make fuzz` runs 20000 each).
CI_FUZZ_EXECS ?= 3000

.PHONY: all setup build demo test unit e2e lint bench bench-net fuzz clean

all: build

setup:
	./scripts/setup.sh

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/mvm-agent ./cmd/mvm-agent
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/mvm-supervisor ./cmd/mvm-supervisor
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/mvmctl ./cmd/mvmctl

# Boot a microVM (QEMU: KVM when usable, else TCG) from the minimal image,
# print uname -a from inside it, remove it.
demo: setup build
	@$(BIN)/mvmctl rm -f demo >/dev/null 2>&1 || true
	$(BIN)/mvmctl up --backend qemu --name demo
	$(BIN)/mvmctl exec demo -- uname -a
	$(BIN)/mvmctl rm -f demo

# Everything CI runs: lint, unit tests, and e2e tests that boot real VMs.
test: setup build lint
	$(GO) test -count=1 -timeout 75m ./...
	@# One short run of the boot and pool benches, so a bench can never silently rot.
	$(BIN)/mvmctl bench boot -n 1
	$(BIN)/mvmctl bench pool -n 1
	./bench/template/run.sh -n 1
	@# Every fuzz target for a fixed count of executions: a decoder of
	@# guest or registry bytes that panics fails CI.
	FUZZ_EXECS=$(CI_FUZZ_EXECS) ./scripts/fuzz.sh

unit:
	$(GO) test -count=1 -short ./...

e2e: build
	$(GO) test -count=1 -timeout 60m -v ./test/e2e/...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@# mvmctl builds for macOS too: vet every package of ours it compiles there.
	GOOS=darwin GOARCH=arm64 $(GO) vet $$(GOOS=darwin $(GO) list -deps -f '{{with .Module}}{{if .Main}}{{$$.ImportPath}}{{end}}{{end}}' ./cmd/mvmctl)
	@test -x $(STATICCHECK) || $(GO) install honnef.co/go/tools/cmd/staticcheck@v0.8.2
	$(STATICCHECK) ./...

bench: build
	$(BIN)/mvmctl bench all
	./bench/template/run.sh

# Network throughput, connect latency and up overhead vs raw QEMU, then
# what an egress policy adds to resolve+connect against an open network
# (root; ~5 min on an idle host).
bench-net: build
	./bench/net/run.sh
	./bench/net/run.sh -mode egress

# Every fuzz target for FUZZ_EXECS executions (default 20000; make test runs CI_FUZZ_EXECS).
fuzz:
	./scripts/fuzz.sh

clean:
	rm -rf $(BIN)
