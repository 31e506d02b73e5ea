# Outpost. `make demo` runs the whole system on this machine; `make test`
# runs every test. Both install what they need first (Go tools come from
# go.mod / tools/go.mod, system packages from apt-get).

GO        ?= go
BUF       := $(GO) tool -modfile=tools/go.mod buf
BIN       := bin/outpost
GOTESTFLAGS ?=

.PHONY: all build deps jaeger test chaos fuzz lint proto proto-check demo bench clean

all: build

build:
	$(GO) build -o $(BIN) ./cli/outpost

## deps: system packages the tests and the demo use (OpenSSH server and client).
deps:
	@scripts/deps.sh

## jaeger: the trace backend the e2e trace test starts, built once (see README).
jaeger:
	@scripts/jaeger.sh >/dev/null

test: deps jaeger
	$(GO) test -count=1 -race -timeout 20m $(GOTESTFLAGS) ./...

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
	rm -rf bin
