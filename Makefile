# kfv — see README.md. Everything here runs on a fresh Debian 12 machine:
# the targets install what they need first (tools/deps.sh).

GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
BIN := bin
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
GUESTS := .cache/guests
# Integration tests may take a while under TCG; unit tests are fast.
TEST_TIMEOUT ?= 25m

export GO

.PHONY: all build deps test unit integration vet demo guests fuzz clean bench

all: build

deps:
	@tools/deps.sh

build: deps
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/kfv-run ./cmd/kfv-run

vet: deps
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

guests: deps
	$(GO) run ./integration/guest/mkguests -out $(GUESTS)

# unit: fast, unprivileged tests of every package but integration/.
unit: deps
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /integration)

# integration: real QEMU, real seccomp, the project's own guests.
integration: build guests
	KFV_RUN=$(CURDIR)/$(BIN)/kfv-run KFV_GUESTS=$(CURDIR)/$(GUESTS) \
		$(GO) test -count=1 -timeout $(TEST_TIMEOUT) -v ./integration/...

test: vet unit integration

demo: build guests
	$(GO) run ./tools/demo -kfv $(BIN)/kfv-run -guests $(GUESTS)

# bench: kfv's cost against bare QEMU, QEMU -sandbox and a minimal C
# supervisor, interleaved; writes docs/BENCHMARKS.md and .json (about
# 12 minutes on 2 cores). Not part of test: it asserts nothing.
bench: build guests
	KFV_RUN=$(CURDIR)/$(BIN)/kfv-run KFV_GUESTS=$(CURDIR)/$(GUESTS) \
		$(GO) run ./bench -out docs

fuzz: deps
	$(GO) test -run '^$$' -fuzz FuzzParse -fuzztime 30s ./profiles

clean:
	rm -rf $(BIN)
