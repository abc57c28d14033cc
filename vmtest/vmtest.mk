# make vmtest: the BPF test suite inside Debian's 6.1 cloud kernel under QEMU
# (tcg), for the paths the 6.18 host kernel cannot test: legacy clsact/cls_bpf
# (no TCX before 6.6), kprobes and fentry. See vmtest/README.md.

# Root-module package patterns whose test binaries run in the guest; missing directories are skipped.
VMTEST_PKGS ?= ./core/... ./bpf/... ./internal/...
# The harness's self-test (vmtest module), run in the same guest.
VMTEST_SELF_PKGS ?= ./guestcheck
# Extra flags for every test binary, e.g. VMTEST_RUN='-test.run=TestLegacyTC'.
VMTEST_RUN ?=
# Seconds before the whole guest run is killed and the run fails (tcg is slow).
VMTEST_TIMEOUT ?= 1800
# -test.timeout for each test binary inside the guest (panics with stacks when hit).
VMTEST_TEST_TIMEOUT ?= 10m
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
# 1: start a shell in the guest before the tests (interactive, no timeout; works with vmtest-boot too).
VMTEST_SHELL ?=
# Extra kernel command line, e.g. VMTEST_APPEND=loglevel=7 to see boot messages.
VMTEST_APPEND ?=
# Pin a kernel package, e.g. linux-image-6.1.0-56-cloud-amd64-unsigned (default: newest apt offers).
VMTEST_KERNEL_PKG ?=

DEPS_TARGETS += deps-vmtest
TEST_TARGETS += vmtest

VMTEST_ENV = GO='$(GO)' VMTEST_DIR='$(BUILD)/vmtest' VMTEST_PKGS='$(VMTEST_PKGS)' \
	VMTEST_SELF_PKGS='$(VMTEST_SELF_PKGS)' VMTEST_RUN='$(VMTEST_RUN)' VMTEST_TIMEOUT='$(VMTEST_TIMEOUT)' \
	VMTEST_TEST_TIMEOUT='$(VMTEST_TEST_TIMEOUT)' VMTEST_BOOT_RETRIES='$(VMTEST_BOOT_RETRIES)' VMTEST_MEM='$(VMTEST_MEM)' VMTEST_SMP='$(VMTEST_SMP)' \
	VMTEST_MODULES='$(VMTEST_MODULES)' VMTEST_AUTOLOAD_DIRS='$(VMTEST_AUTOLOAD_DIRS)' VMTEST_HOST_BINS='$(VMTEST_HOST_BINS)' VMTEST_SHELL='$(VMTEST_SHELL)' \
	VMTEST_KERNEL_PKG='$(VMTEST_KERNEL_PKG)' VMTEST_APPEND='$(VMTEST_APPEND)'

.PHONY: vmtest deps-vmtest vmtest-boot

## vmtest: build the BPF test binaries, boot Debian's 6.1 kernel under QEMU and run them inside
vmtest:
	@$(VMTEST_ENV) vmtest/vmtest.sh all

## vmtest-boot: boot the last built initramfs again, without rebuilding (its test flags are baked in)
vmtest-boot:
	@$(VMTEST_ENV) vmtest/vmtest.sh boot

## deps-vmtest: install qemu-system-x86, busybox-static and cpio if missing; fetch the 6.1 kernel package
deps-vmtest:
	@$(VMTEST_ENV) vmtest/vmtest.sh deps
