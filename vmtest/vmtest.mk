# make vmtest: the BPF test suite inside Debian's 5.10, 6.1 and 6.12 cloud
# kernels (amd64) and 6.1 on arm64 under QEMU (tcg), one after the other, for
# the paths the 6.18 host kernel cannot test: legacy clsact/cls_bpf (no TCX
# before 6.6), kprobes and fentry, the pre-5.14 and pre-5.11 fallbacks, arm64
# objects. See vmtest/README.md.

# The guests, in the order they boot; KERNEL=5.10 (or 6.1, 6.12, arm64, or a list) runs only those.
VMTEST_KERNELS ?= 5.10 6.1 6.12 arm64
KERNEL ?=
VMTEST_GUESTS = $(or $(KERNEL),$(VMTEST_KERNELS))

# Root-module package patterns whose test binaries run in the guest; missing directories are skipped.
VMTEST_PKGS ?= ./core/... ./bpf/... ./internal/...
# The harness's self-test (vmtest module), run in the same guest.
VMTEST_SELF_PKGS ?= ./guestcheck
# The agents' end-to-end test packages (one module each), built and run only in VMTEST_E2E_GUESTS
# (a guest with kprobes and fentry), with VMTEST_E2E_RUN instead of VMTEST_RUN: kprobe mode through
# build/telegraf and build/otelcol-pktstat, which the host kernel cannot run. Empty: none.
VMTEST_E2E_PKGS ?= telegrafplugin/e2e otelreceiver/e2e
VMTEST_E2E_GUESTS ?= 6.12
VMTEST_E2E_RUN ?= -test.run=Kprobe
# The static agents copied into those guests' initramfs at /build (make builds them first).
VMTEST_AGENTS ?= telegraf otelcol-pktstat
# Long tests that run only in VMTEST_HEAVY_GUESTS (a -test.skip pattern for the others), so that make
# test stays within its time: BPF_PROG_TEST_RUN tables, churn and the fuzz seeds, whose kernel side is
# the verifier (oldest in 5.10); every guest still loads the same programs in the real-traffic tests,
# and the arm64 objects run the parser tables (TestParsePrograms). Empty: every test in every guest.
VMTEST_HEAVY ?= ^(TestFilterPrograms|TestNoFilterIsPruned|TestChurnAcrossIntervals|TestChurnWithHashCollisions|FuzzTCIngress|FuzzXDPIngress)$$
VMTEST_HEAVY_GUESTS ?= 5.10
# Extra flags for every test binary, e.g. VMTEST_RUN='-test.run=TestLegacyTC'.
VMTEST_RUN ?=
# Seconds before the whole guest run is killed and the run fails (tcg is slow).
VMTEST_TIMEOUT ?= 1800
# -test.timeout for each test binary inside the guest (panics with stacks when hit).
VMTEST_TEST_TIMEOUT ?= 20m
# Boots again after a guest that never reached /init (no test ran); its console is kept.
VMTEST_BOOT_RETRIES ?= 1
VMTEST_MEM ?= 1536
VMTEST_SMP ?= 2
# Kernel modules (from the same kernel package) loaded at boot, dependencies added automatically.
# sch_ingress also provides clsact; xfrm_user and nfnetlink are there because
# vishvananda/netlink opens XFRM and netfilter sockets for every handle and fails without them;
# nf_tables (with nft below) serves the drop tests' nftables rule.
VMTEST_MODULES ?= veth sch_ingress cls_bpf act_bpf xfrm_user nfnetlink nf_tables
# Module directories (no subdirectories) packed, not loaded, so the kernel can load them on demand
# through busybox modprobe as on a normal host (sock_diag families, other qdiscs and classifiers).
VMTEST_AUTOLOAD_DIRS ?= kernel/net/sched kernel/net/ipv4 kernel/net/ipv6 kernel/net/core kernel/net/netlink \
	kernel/net/packet kernel/net/unix kernel/net/xfrm kernel/net/netfilter
# Host programs copied with their shared libraries, replacing busybox's: its ip has no netns,
# its tc no bpf, its setpriv no --reuid; bpftool and nft (the tests' nftables counters) have
# no busybox version at all.
VMTEST_HOST_BINS ?= ip tc bpftool setpriv nft
# 1: each guest's console only to its log (build/vmtest/GUEST/console.log), as make test runs it.
VMTEST_QUIET ?=
# 1: add this run's guests to build/vmtest/summary.txt instead of starting it afresh.
VMTEST_KEEP_SUMMARY ?=
# 1: compile the later guests' test packages (another architecture; with VMTEST_WARM_E2E=1 the
# agents' e2e tests) in the background at low priority while the first guest runs (make test).
VMTEST_WARM ?=
VMTEST_WARM_E2E ?=
# 1: start a shell in the guest before the tests (interactive, no timeout; works with vmtest-boot too).
VMTEST_SHELL ?=
# Extra kernel command line, e.g. VMTEST_APPEND=loglevel=7 to see boot messages.
VMTEST_APPEND ?=
# Pin a kernel package, e.g. linux-image-6.1.0-56-cloud-amd64-unsigned (default: newest apt offers);
# only with a single KERNEL.
VMTEST_KERNEL_PKG ?=
# Debian mirrors for the private package lists (bullseye and arm64 are not in the machine's sources).
VMTEST_MIRROR ?= http://deb.debian.org/debian
VMTEST_SECURITY_MIRROR ?= http://deb.debian.org/debian-security

DEPS_TARGETS += deps-vmtest
TEST_TARGETS += vmtest

VMTEST_ENV = GO='$(GO)' VMTEST_DIR='$(BUILD)/vmtest' VMTEST_GUESTS='$(VMTEST_GUESTS)' \
	VMTEST_MIRROR='$(VMTEST_MIRROR)' VMTEST_SECURITY_MIRROR='$(VMTEST_SECURITY_MIRROR)' VMTEST_PKGS='$(VMTEST_PKGS)' \
	VMTEST_SELF_PKGS='$(VMTEST_SELF_PKGS)' VMTEST_RUN='$(VMTEST_RUN)' VMTEST_TIMEOUT='$(VMTEST_TIMEOUT)' \
	VMTEST_TEST_TIMEOUT='$(VMTEST_TEST_TIMEOUT)' VMTEST_BOOT_RETRIES='$(VMTEST_BOOT_RETRIES)' VMTEST_MEM='$(VMTEST_MEM)' VMTEST_SMP='$(VMTEST_SMP)' \
	VMTEST_MODULES='$(VMTEST_MODULES)' VMTEST_AUTOLOAD_DIRS='$(VMTEST_AUTOLOAD_DIRS)' VMTEST_HOST_BINS='$(VMTEST_HOST_BINS)' VMTEST_SHELL='$(VMTEST_SHELL)' VMTEST_QUIET='$(VMTEST_QUIET)' VMTEST_KEEP_SUMMARY='$(VMTEST_KEEP_SUMMARY)' VMTEST_WARM='$(VMTEST_WARM)' VMTEST_WARM_E2E='$(VMTEST_WARM_E2E)' \
	VMTEST_KERNEL_PKG='$(VMTEST_KERNEL_PKG)' VMTEST_APPEND='$(VMTEST_APPEND)' \
	VMTEST_E2E_PKGS='$(VMTEST_E2E_PKGS)' VMTEST_E2E_GUESTS='$(VMTEST_E2E_GUESTS)' VMTEST_E2E_RUN='$(VMTEST_E2E_RUN)' \
	VMTEST_AGENTS='$(VMTEST_AGENTS)' VMTEST_HEAVY='$(VMTEST_HEAVY)' VMTEST_HEAVY_GUESTS='$(VMTEST_HEAVY_GUESTS)'
# The agents are built only when a guest of this run needs them.
VMTEST_AGENT_DEPS = $(if $(and $(VMTEST_E2E_PKGS),$(filter $(VMTEST_E2E_GUESTS),$(VMTEST_GUESTS))),$(addprefix $(BUILD)/,$(VMTEST_AGENTS)))

.PHONY: vmtest deps-vmtest vmtest-boot

## vmtest: build the BPF test binaries, boot each Debian kernel of KERNEL (default 5.10 6.1 6.12 arm64) under QEMU, run them inside
vmtest: $(VMTEST_AGENT_DEPS)
	@$(VMTEST_ENV) vmtest/vmtest.sh all

## vmtest-boot: boot the last built initramfs again, without rebuilding (its test flags are baked in)
vmtest-boot:
	@$(VMTEST_ENV) vmtest/vmtest.sh boot

## deps-vmtest: install qemu-system-x86/-arm, busybox-static, cpio, binutils and the guests' host tools (iproute2, bpftool, util-linux, nftables) if missing; fetch the guests' kernel packages
deps-vmtest:
	@$(VMTEST_ENV) vmtest/vmtest.sh deps
