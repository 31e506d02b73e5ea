# Outpost. `make demo` runs the whole system on this machine; `make test`
# runs every test. Both install what they need first (Go tools come from
# go.mod / tools/go.mod, system packages from apt-get).

GO        ?= go
BUF       := $(GO) tool -modfile=tools/go.mod buf
BIN       := bin/outpost
GOTESTFLAGS ?=
# What `outpost version` prints, set at link time by build and package.
# VERSION is the newest v* tag (0.0.0~gitDATE.COMMIT before the first);
# DATE is the commit's, so the same commit builds the same binary.
COMMIT    ?= $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
DATE      ?= $(shell TZ=UTC git log -1 --format=%cd --date=format-local:%Y-%m-%dT%H:%M:%SZ 2>/dev/null || date -u +%Y-%m-%dT%H:%M:%SZ)
VERSION   ?= $(shell git describe --tags --match 'v[0-9]*' 2>/dev/null | sed 's/^v//' | grep . || \
               echo 0.0.0~git$$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y%m%d 2>/dev/null).$(COMMIT))
LDFLAGS   := -X github.com/outposthq/outpost/cli.version=$(VERSION) \
             -X github.com/outposthq/outpost/cli.commit=$(COMMIT) \
             -X github.com/outposthq/outpost/cli.date=$(DATE)

.PHONY: all build deps cosign jaeger test test-tools chaos fuzz lint proto proto-check demo bench clean package

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN) ./cli/outpost

## package: dist/outpost_VERSION_amd64.deb and dist/outpost-VERSION-1.x86_64.rpm
## (nfpm, from tools/nfpm/go.mod: its first build takes minutes).
package:
	@GO=$(GO) VERSION='$(VERSION)' LDFLAGS='$(LDFLAGS)' scripts/package.sh

## deps: system packages the tests and the demo use (OpenSSH server and client).
deps:
	@scripts/deps.sh

## test-tools: build the tools tests run (grpcurl for docs/grpcurl.md's
## test, nfpm for the package test) into Go's build cache first, so their
## first, slow build does not count against the tests' timeouts.
test-tools:
	$(GO) build -modfile=tools/grpcurl/go.mod -o /dev/null github.com/fullstorydev/grpcurl/cmd/grpcurl
	$(GO) build -modfile=tools/nfpm/go.mod -o /dev/null github.com/goreleaser/nfpm/v2/cmd/nfpm


## cosign: the real cosign CLI the signature tests sign with, built once
## from tools/cosign/go.mod beside Go's build cache (about five minutes the
## first time; later runs reuse it).
COSIGN := $(shell $(GO) env GOCACHE)/../outpost-tools/cosign
cosign:
	@test -x $(COSIGN) || $(GO) build -modfile=tools/cosign/go.mod -o $(COSIGN) github.com/sigstore/cosign/v2/cmd/cosign

## jaeger: the trace backend the e2e trace test starts, built once (see README).
jaeger:
	@scripts/jaeger.sh >/dev/null

test: deps test-tools cosign jaeger
	$(GO) test -count=1 -race -timeout 20m $(GOTESTFLAGS) ./...
	cd deploy/kubernetes && $(GO) test -count=1 $(GOTESTFLAGS) ./...

## chaos: only the fault tests (leader killed or frozen, gateway killed,
## connection cut, disk full); `make test` runs them too.
chaos: deps
	$(GO) test -count=1 -race -timeout 15m $(GOTESTFLAGS) ./e2e/chaos/

## fuzz: every fuzz target (plan decoder, tar scanner, known_hosts index,
## hook policy, ...) for FUZZTIME each (default 15s); CI runs it after make test.
fuzz:
	@GO=$(GO) scripts/fuzz.sh

lint:
	$(BUF) lint
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.go$$')); \
	  if [ -n "$$out" ]; then echo "gofmt needs to run on:"; echo "$$out"; exit 1; fi

proto:
	$(BUF) generate

## proto-check: the committed generated code is what `make proto` produces.
proto-check: proto
	@git diff --exit-code -- proto || { echo "generated code is stale: run make proto and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- proto)" || { git status --porcelain -- proto; echo "make proto created untracked files: commit them"; exit 1; }

demo: deps build
	@scripts/demo.sh

bench: deps
	@scripts/bench.sh

clean:
	rm -rf bin dist
