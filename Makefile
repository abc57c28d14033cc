# pktstat-bpf for Telegraf and OpenTelemetry.
# Each area adds its own targets from its .mk file; this file holds the
# targets a newcomer runs: run, test, build, bench, generate, deps.

GO ?= go
CLANG ?= clang-19
BUILD := $(CURDIR)/build
export PATH := $(HOME)/go/bin:$(PATH)

# Filled in by the included area makefiles.
DEPS_TARGETS :=
BUILD_TARGETS :=
TEST_TARGETS :=
BENCH_TARGETS :=

-include telegrafplugin/telegraf.mk
-include otelreceiver/otelcol.mk
-include vmtest/vmtest.mk
-include bench/bench.mk
-include deploy/deploy.mk

.PHONY: all run test test-host test-guests build bench generate vmlinux check-generate deps deps-core test-core test-fuzz fuzz test-unit help

all: build

## run: the project's main job on its built-in default (the collector on the default-route interface)
run: $(RUN_TARGET)

# The host's tests, one after the other; make vmtest's guests run beside them (make test).
HOST_TEST_TARGETS = test-core test-fuzz $(filter-out vmtest,$(TEST_TARGETS))
# make test boots first the guests that need no agent build, then (once the host side has built
# the agents, under a lock so that only one make builds them) the guests that run the agents.
VMTEST_EARLY = $(filter-out $(VMTEST_E2E_GUESTS),$(VMTEST_GUESTS))
VMTEST_LATE = $(filter $(VMTEST_E2E_GUESTS),$(VMTEST_GUESTS))
AGENTS_LOCKED = flock $(BUILD)/.agents.lock $(MAKE) --no-print-directory $(VMTEST_AGENT_DEPS)

# make test runs the host side's builds and tests at a lower priority (HOST_NICE): the guests are
# the longer side, and an emulated guest that loses its core to a build loses the time for good,
# while the host side has time to spare.
HOST_NICE ?=
# What the host side installs while the guests already run: all of make deps but the guests' own.
HOST_DEPS_TARGETS = $(filter-out deps-vmtest,$(DEPS_TARGETS))

## test: every test, BPF included; fails instead of skipping when BPF is unavailable.
## After the guests' set-up (compiler, QEMU, kernels, check-generate), the host side (the
## rest of make deps, the agents' builds, the host tests) and the guests (make vmtest, one
## guest after the other) run side by side: an emulated guest keeps about one core busy.
test: export PKTSTAT_REQUIRE_BPF = 1
test: deps-core $(filter deps-vmtest,$(DEPS_TARGETS)) check-generate
	@mkdir -p $(BUILD)
	@$(MAKE) --no-print-directory -j2 test-host test-guests HOST_NICE='nice -n 5'

## test-host: every test on this machine's kernel (make test without the guests; installs what they need)
test-host:
	@$(HOST_NICE) $(MAKE) --no-print-directory -j1 deps-core $(HOST_DEPS_TARGETS)
	@$(if $(VMTEST_AGENT_DEPS),$(HOST_NICE) $(AGENTS_LOCKED))
	@$(HOST_NICE) $(MAKE) --no-print-directory -j1 $(HOST_TEST_TARGETS)

# The guests with their consoles in build/vmtest/GUEST/console.log, not on stdout; a failed
# early guest does not keep the late ones from running, and fails the target at the end.
test-guests:
	@rc=0; \
	$(if $(VMTEST_EARLY),$(MAKE) --no-print-directory -j1 vmtest VMTEST_QUIET=1 VMTEST_WARM=1 VMTEST_WARM_E2E=$(if $(VMTEST_LATE),1) KERNEL='$(VMTEST_EARLY)' || rc=1;) \
	$(if $(VMTEST_LATE),{ $(AGENTS_LOCKED) && $(MAKE) --no-print-directory -j1 vmtest VMTEST_QUIET=1 VMTEST_KEEP_SUMMARY=1 KERNEL='$(VMTEST_LATE)'; } || rc=1;) \
	exit $$rc

## build: the collector distribution, Telegraf with the plugin, and the execd shim
build: $(BUILD_TARGETS)

# The rules name the binaries by absolute path; `make build/telegraf` (an
# existing file with no rule of its own) would otherwise report nothing to do
# however stale it is.
$(patsubst $(CURDIR)/%,%,$(BUILD_TARGETS)): build/%: $(BUILD)/%

## bench: per-packet BPF cost, drain and conversion cost, end-to-end throughput
bench: $(BENCH_TARGETS)

## deps: install what building and testing need (Debian packages, Go tools)
deps: deps-core $(DEPS_TARGETS)

deps-core:
	@command -v $(CLANG) >/dev/null && command -v llvm-strip-19 >/dev/null && command -v bpftool >/dev/null \
		&& command -v ip >/dev/null && command -v setpriv >/dev/null && command -v nft >/dev/null \
		&& test -f /usr/include/bpf/bpf_helpers.h || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			clang-19 llvm-19 libbpf-dev bpftool iproute2 util-linux nftables >/dev/null; }

## generate: rebuild the bpf2go bindings (Go + .o, amd64 and arm64) with clang-19
generate:
	cd bpf && $(GO) generate ./...

## vmlinux: dump bpf/vmlinux.h from the running kernel's BTF (only when a newer kernel type is needed;
## it depends on the kernel, so `generate` does not rewrite it)
vmlinux:
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > bpf/vmlinux.h

## check-generate: fail if the committed generated files differ from a fresh `make generate`
check-generate: generate
	@git diff --exit-code --stat -- bpf/ || { echo "generated files in bpf/ are stale: run 'make generate' and commit" >&2; exit 1; }
	@test -z "$$(git status --porcelain -- bpf/)" || { echo "make generate left untracked files in bpf/:" >&2; git status --porcelain -- bpf/ >&2; exit 1; }

## test-core: unit, BPF_PROG_TEST_RUN and real-attachment tests of the root module (bpf/, core/, internal/)
test-core:
	$(GO) test -count=1 -p 1 ./...

# Differential fuzzing of bpf/parse.h against gopacket (core/parse_fuzz_test.go). `go test -fuzz`
# takes one target per run; each starts from its seeds, core/testdata/fuzz/<target>/ and the cached corpus.
FUZZ_TARGETS := FuzzTCIngress FuzzXDPIngress
FUZZ_TEST_TIME ?= 60s
FUZZTIME ?= 10m
# Go minimizes every new interesting input for up to 60 s by default, executing nothing else meanwhile.
FUZZ_MINIMIZE_TIME ?= 5s
FUZZ_RUN = for t in $(FUZZ_TARGETS); do \
		$(GO) test -count=1 -run '^$$' -fuzz "^$$t$$" -fuzztime $(1) -fuzzminimizetime $(FUZZ_MINIMIZE_TIME) ./core/ || exit 1; done

## test-fuzz: each parser fuzz target for FUZZ_TEST_TIME (60s); a crasher lands in core/testdata/fuzz/ and fails
test-fuzz:
	@$(call FUZZ_RUN,$(FUZZ_TEST_TIME))

## fuzz: the same for FUZZTIME (10m) per target
fuzz: export PKTSTAT_REQUIRE_BPF = 1
fuzz:
	@$(call FUZZ_RUN,$(FUZZTIME))

## test-unit: the tests that need no privileges, in every module
test-unit: test-telegraf-unit test-otelcol-unit test-deploy-unit
	PKTSTAT_REQUIRE_BPF= $(GO) test -count=1 -short ./...

help:
	@grep -E '^## ' $(MAKEFILE_LIST) | sed 's/^.*## /  /'
