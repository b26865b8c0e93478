# kfv — see README.md. Everything here runs on a fresh Debian 12 machine:
# the targets install what they need first (tools/deps.sh).

GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
BIN := bin
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
# urfave_cli_no_docs: kfv-run writes no man page or markdown of itself, and
# without them urfave/cli leaves out go-md2man and blackfriday (their init
# runs in kfv-run and again in every loader and supervisor it starts).
TAGS := urfave_cli_no_docs
GUESTS := .cache/guests
# Integration tests may take a while under TCG; unit tests are fast.
TEST_TIMEOUT ?= 40m

export GO

.PHONY: all build deps test unit integration vet demo guests fuzz clean install install-divert uninstall-divert bench

all: build

deps:
	@tools/deps.sh

build: deps
	$(GO) build -tags '$(TAGS)' -ldflags '$(LDFLAGS)' -o $(BIN)/kfv-run ./cmd/kfv-run

# vet: go vet, staticcheck (pinned by go.mod's tool directive, so go
# fetches it like any module) and gofmt.
vet: deps
	$(GO) vet ./...
	$(GO) tool staticcheck ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

guests: deps
	$(GO) run ./guest/mkguests -out $(GUESTS)

# unit: fast, unprivileged tests of every package but integration/;
# -short skips guest/'s boot tests, which run with integration.
unit: deps
	$(GO) test -count=1 -short $$($(GO) list ./... | grep -v /integration)

# integration: real QEMU, real seccomp, the project's own guests (and
# guest/'s tests that boot them), once on the system's QEMU (7.2) and once
# on QEMU 10.0 (.cache/qemu-10.0, KFV_QEMU), side by side
# (KFV_PASSES=sequential: one after the other); tools/integration.sh.
# One pass on a QEMU of your choice: KFV_QEMU=/path/to/qemu-system-x86_64
# go test ./integration/...
integration: build guests
	KFV_RUN=$(CURDIR)/$(BIN)/kfv-run KFV_GUESTS=$(CURDIR)/$(GUESTS) TEST_TIMEOUT=$(TEST_TIMEOUT) \
		tools/integration.sh

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

# install: kfv-run and the emulator link kfv-qemu-system-x86_64 (libvirt's
# <emulator>, docs/libvirt.md), the system user kfv-qemu that a root
# kfv-run runs QEMU as (--run-as, README.md), the event directory owned by the user
# libvirt runs QEMU as, and /etc/kfv/kfv.toml unless one exists.
# Replacing kfv-run changes its ctime, which is what libvirt's capability
# cache checks for the emulator path: run it again after upgrading QEMU.
PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin
SYSCONFDIR ?= /etc
KFV_EVENTS ?= /var/log/kfv
# Each VM's Prometheus metrics, for node_exporter's textfile collector
# (--collector.textfile.directory; Debian's node_exporter reads
# /var/lib/prometheus/node-exporter: point it here, or set KFV_METRICS).
KFV_METRICS ?= /var/lib/kfv/metrics
KFV_QEMU_USER ?= libvirt-qemu
KFV_QEMU_GROUP ?= libvirt-qemu

install: build
	install -d $(DESTDIR)$(BINDIR)
	install -m 0755 $(BIN)/kfv-run $(DESTDIR)$(BINDIR)/kfv-run
	ln -sfn kfv-run $(DESTDIR)$(BINDIR)/kfv-qemu-system-x86_64
	@if [ -z "$(DESTDIR)" ]; then tools/qemu-user.sh; fi
	install -d -m 0750 $(DESTDIR)$(KFV_EVENTS)
	@if [ -z "$(DESTDIR)" ] && id -u $(KFV_QEMU_USER) >/dev/null 2>&1; then \
		chown $(KFV_QEMU_USER):$(KFV_QEMU_GROUP) $(KFV_EVENTS) && \
		echo "$(KFV_EVENTS): owned by $(KFV_QEMU_USER), the user libvirt runs QEMU as"; \
	else \
		echo "note: $(KFV_EVENTS) must be writable by the user QEMU runs as ($(KFV_QEMU_USER) by default; set KFV_QEMU_USER)"; \
	fi
	install -d -m 0755 $(DESTDIR)$(KFV_METRICS)
	@if [ -z "$(DESTDIR)" ] && id -u $(KFV_QEMU_USER) >/dev/null 2>&1; then \
		chown $(KFV_QEMU_USER):$(KFV_QEMU_GROUP) $(KFV_METRICS); \
	fi
	install -d $(DESTDIR)$(SYSCONFDIR)/kfv
	@if [ ! -e $(DESTDIR)$(SYSCONFDIR)/kfv/kfv.toml ]; then \
		printf '%s\n' '# kfv as a QEMU emulator (kfv-qemu-system-x86_64): see docs/libvirt.md' \
			'profile = "qemu"        # built-in name or profile file' \
			'mode = "audit"          # audit first; enforce once the events show no unexpected deny' \
			'events = "$(KFV_EVENTS)"  # directory (VM.jsonl per VM) or pattern with {vm}' \
			'# qemu = "/usr/bin/qemu-system-x86_64"  # default: first in PATH that is not kfv' \
			'# run_as = "kfv-qemu"     # kfv-run -- QEMU as root: the user QEMU runs as (root: keep it root)' \
			> $(DESTDIR)$(SYSCONFDIR)/kfv/kfv.toml && \
		echo "wrote $(DESTDIR)$(SYSCONFDIR)/kfv/kfv.toml (audit mode)"; \
	fi

# install-divert: kfv in the place of the distribution's QEMU, for the
# callers that run QEMU by path (libvirt's default emulator, and so
# OpenStack Nova; Proxmox's /usr/bin/kvm: DIVERT="/usr/bin/qemu-system-x86_64
# /usr/bin/kvm"). dpkg-divert puts the real binary aside as PATH.distrib,
# where package upgrades go on installing it, and kfv, called by the
# original path, runs it from there in the emulator model (docs/libvirt.md).
# uninstall-divert puts it back. DESTDIR works, with a dpkg database of
# its own under DESTDIR/var/lib/dpkg.
DIVERT ?= /usr/bin/qemu-system-x86_64
DPKG_DIVERT = dpkg-divert --local $(if $(DESTDIR),--root $(DESTDIR) --admindir $(DESTDIR)/var/lib/dpkg)

install-divert: install
	@for f in $(DIVERT); do \
		$(DPKG_DIVERT) --divert $$f.distrib --rename --add $$f || exit 1; \
		ln -sfn "$$(realpath -m --relative-to=$$(dirname $$f) $(BINDIR)/kfv-run)" $(DESTDIR)$$f || exit 1; \
		echo "$$f: kfv-run, in the emulator model; QEMU itself is $$f.distrib"; \
	done

uninstall-divert:
	@for f in $(DIVERT); do \
		if [ -L $(DESTDIR)$$f ] && [ "$$(basename "$$(readlink $(DESTDIR)$$f)")" = kfv-run ]; then rm -f $(DESTDIR)$$f; fi; \
		$(DPKG_DIVERT) --rename --remove $$f || exit 1; \
	done

clean:
	rm -rf $(BIN)
