# mvm — build, demo, test and release entry points. See README.md.
# `make help` lists every target: each is documented by the "## " comment on
# its line, so a target without one shows up as undocumented.
SHELL := /bin/bash
GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
export GOTOOLCHAIN ?= auto
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/mvm-dev/mvm/internal/cli.Version=$(VERSION)
BIN := bin
STATICCHECK := $(shell $(GO) env GOPATH)/bin/staticcheck
# Executions per fuzz target in `make test` (`make fuzz` runs 20000 each).
CI_FUZZ_EXECS ?= 3000

DIST := dist

.PHONY: all help setup build run demo test ci test-pkg test-filter unit e2e fmt lint bench bench-net fuzz release-build release docs clean

all: build ## Same as build

help: ## List every target with what it does
	@awk 'BEGIN { FS = ":.*## " } /^[a-zA-Z0-9_-]+:.*## / { printf "  %-14s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)
	@undoc=$$(grep -oE '^[a-zA-Z0-9_-]+:' $(MAKEFILE_LIST) | tr -d : | sort -u | while read -r t; do grep -qE "^$$t:.*## " $(MAKEFILE_LIST) || echo "$$t"; done); \
		if [ -n "$$undoc" ]; then echo "undocumented targets: $$undoc" >&2; exit 1; fi

setup: ## Install what builds and tests need (scripts/setup.sh; sudo when not root)
	./scripts/setup.sh

# Guest agents for the other architecture too (mvm-agent-<arch>): guests of
# a foreign arch are emulated (docs/foreign-arch.md).
FOREIGN_ARCHES := $(filter-out $(shell $(GO) env GOHOSTARCH),amd64 arm64)

build: ## Build bin/mvmctl, bin/mvm-agent, bin/mvm-supervisor, bin/mvm-agent-<other arch> and bin/containerd-shim-mvm-v1
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/mvm-agent ./cmd/mvm-agent
	$(foreach a,$(FOREIGN_ARCHES),CGO_ENABLED=0 GOARCH=$(a) $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/mvm-agent-$(a) ./cmd/mvm-agent;)
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/mvm-supervisor ./cmd/mvm-supervisor
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/mvmctl ./cmd/mvmctl
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/containerd-shim-mvm-v1 ./cmd/containerd-shim-mvm-v1

run: build ## Run bin/mvmctl with ARGS (make run ARGS="ls -a")
	$(BIN)/mvmctl $(ARGS)

# Boot a microVM (QEMU: KVM when usable, else TCG) from the minimal image,
# print uname -a from inside it, remove it.
demo: setup build ## Boot a microVM from the minimal image, print uname -a from inside it, remove it
	@$(BIN)/mvmctl rm -f demo >/dev/null 2>&1 || true
	$(BIN)/mvmctl up --backend qemu --name demo
	$(BIN)/mvmctl exec demo -- uname -a
	$(BIN)/mvmctl rm -f demo

# Everything CI runs: lint, unit tests, and e2e tests that boot real VMs.
test: setup build lint ## Everything CI runs: lint, unit and e2e tests (real VMs), one bench run, fuzzing
	$(GO) test -count=1 -timeout 75m ./...
	@# One short run of the boot and pool benches, so a bench can never silently rot.
	$(BIN)/mvmctl bench boot -n 1
	$(BIN)/mvmctl bench pool -n 1
	$(BIN)/mvmctl bench ls -n 1
	./bench/template/run.sh -n 1
	@# Every fuzz target for a fixed count of executions: a decoder of
	@# guest or registry bytes that panics fails CI.
	FUZZ_EXECS=$(CI_FUZZ_EXECS) ./scripts/fuzz.sh

# What .ci/run runs. Kept equal to test, so CI and a developer's
# `make test` can never drift apart.
ci: test ## What CI (.ci/run) runs: make test

# PKG is a package path or pattern: ./internal/sign, internal/sign/...
test-pkg: build ## Test one package, e.g. make test-pkg PKG=./internal/sign
	@test -n "$(PKG)" || { echo "usage: make test-pkg PKG=./internal/sign" >&2; exit 2; }
	$(GO) test -count=1 -timeout 75m $(if $(filter ./% github.com/%,$(PKG)),$(PKG),./$(PKG))

test-filter: build ## Run the tests whose names match F in every package (go test -run F ./...)
	@test -n "$(F)" || { echo "usage: make test-filter F=TestGuard" >&2; exit 2; }
	$(GO) test -count=1 -timeout 75m -run '$(F)' ./...

unit: ## Unit tests only (go test -short: no VMs, no release builds)
	$(GO) test -count=1 -short ./...

e2e: build ## End-to-end tests that boot real VMs
	$(GO) test -count=1 -timeout 60m -v ./test/e2e/...

fmt: ## gofmt every Go file in the repository
	gofmt -w $$(git ls-files '*.go')

lint: ## gofmt check, go vet (Linux, and macOS for mvmctl), staticcheck, docs/cli drift
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@# mvmctl builds for macOS too: vet every package of ours it compiles there.
	GOOS=darwin GOARCH=arm64 $(GO) vet $$(GOOS=darwin $(GO) list -deps -f '{{with .Module}}{{if .Main}}{{$$.ImportPath}}{{end}}{{end}}' ./cmd/mvmctl)
	@test -x $(STATICCHECK) || $(GO) install honnef.co/go/tools/cmd/staticcheck@v0.8.2
	$(STATICCHECK) ./...
	@# docs/cli is generated from the CLI: a flag or command changed without
	@# `make docs` fails here.
	$(GO) run ./internal/tools/clidocs -check docs/cli
	@# Every target keeps its "## " line, so make help stays complete.
	@$(MAKE) -s help >/dev/null

bench: build ## mvmctl bench all and bench/template, each figure next to its raw baseline
	$(BIN)/mvmctl bench all
	./bench/template/run.sh

# Network throughput, connect latency and up overhead vs raw QEMU, then
# what an egress policy adds to resolve+connect against an open network
# (root; ~5 min on an idle host).
bench-net: build ## Network throughput, latency and egress overhead vs raw QEMU (root; ~5 min)
	./bench/net/run.sh
	./bench/net/run.sh -mode egress

# Every fuzz target for FUZZ_EXECS executions (default 20000; make test runs CI_FUZZ_EXECS).
fuzz: ## Every fuzz target for FUZZ_EXECS executions (default 20000)
	./scripts/fuzz.sh

# A snapshot of the release: every platform into dist/ with SHA256SUMS, at
# any version (git describe by default); no guard, no signature.
release-build: ## Build every release binary into dist/ with SHA256SUMS (unsigned, any VERSION)
	$(GO) run ./internal/tools/release build -version $(VERSION) -out $(DIST)

# The real thing: VERSION must be given, and the tool refuses unless it, the
# VERSION file, CHANGELOG.md's top entry and HEAD's tag agree and the tree is
# clean. MVM_RELEASE_KEY is the signing key's file (mvmctl key generate NAME
# writes <config>/keys/NAME.key); verify a release with
# go run ./internal/tools/release verify -pub NAME.pub -dir dist.
# Before signing it rebuilds every target from an empty build cache and
# refuses unless the bytes match (RELEASE_REPRO=0 skips that, halving the time).
RELEASE_REPRO ?= 1
release: ## Signed release: make release VERSION=vX.Y.Z MVM_RELEASE_KEY=path/to/key
	@case "$(origin VERSION)" in command\ line|environment) ;; *) echo "usage: make release VERSION=vX.Y.Z (MVM_RELEASE_KEY=FILE)" >&2; exit 2;; esac
	$(GO) run ./internal/tools/release release -version $(VERSION) -out $(DIST) -repro=$(if $(filter 0,$(RELEASE_REPRO)),false,true)

docs: ## Regenerate the command reference docs/cli/ (one page per command) from the CLI
	$(GO) run ./internal/tools/clidocs docs/cli

clean: ## Remove bin/ and dist/
	rm -rf $(BIN) $(DIST)
