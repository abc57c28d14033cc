#!/bin/bash
# Runs this project's BPF test binaries inside Debian's 6.1 cloud kernel under
# QEMU (software emulation: /dev/kvm on the build machines hangs guests).
#
#   vmtest.sh deps       install qemu/busybox/cpio if missing, fetch the kernel
#   vmtest.sh kernel     fetch and unpack the newest 6.1 cloud kernel (cached)
#   vmtest.sh tests      build static test binaries into $VMTEST_DIR/tests
#   vmtest.sh initramfs  pack busybox, iproute2, modules and tests
#   vmtest.sh boot       boot the guest, stream and check its console
#   vmtest.sh all        kernel, tests, initramfs, boot
#
# Settings come from the environment; vmtest.mk documents them.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
GO=${GO:-go}
VMTEST_DIR=${VMTEST_DIR:-$root/build/vmtest}
VMTEST_PKGS=${VMTEST_PKGS:-./core/... ./bpf/... ./internal/...}
VMTEST_SELF_PKGS=${VMTEST_SELF_PKGS:-./guestcheck}
VMTEST_MODULES=${VMTEST_MODULES:-veth sch_ingress cls_bpf act_bpf xfrm_user nfnetlink}
VMTEST_AUTOLOAD_DIRS=${VMTEST_AUTOLOAD_DIRS-kernel/net/sched kernel/net/ipv4 kernel/net/ipv6 kernel/net/core kernel/net/netlink kernel/net/packet kernel/net/unix kernel/net/xfrm kernel/net/netfilter}
VMTEST_HOST_BINS=${VMTEST_HOST_BINS:-ip tc bpftool setpriv nft}
VMTEST_RUN=${VMTEST_RUN:-}
VMTEST_SHELL=${VMTEST_SHELL:-}
VMTEST_TIMEOUT=${VMTEST_TIMEOUT:-900}
VMTEST_TEST_TIMEOUT=${VMTEST_TEST_TIMEOUT:-10m}
VMTEST_BOOT_RETRIES=${VMTEST_BOOT_RETRIES:-1}
VMTEST_MEM=${VMTEST_MEM:-1536}
VMTEST_SMP=${VMTEST_SMP:-2}
VMTEST_KERNEL_PKG=${VMTEST_KERNEL_PKG:-}
VMTEST_APPEND=${VMTEST_APPEND:-}
# The module path prefix is cut from import paths to name test binaries.
module_prefix=github.com/pktstat-bpf/pktstat-bpf/

kernel_base=$VMTEST_DIR/kernel
tests_dir=$VMTEST_DIR/tests
rootfs=$VMTEST_DIR/rootfs
initramfs=$VMTEST_DIR/initramfs.cpio.gz
log=$VMTEST_DIR/console.log

say() { echo "vmtest: $*" >&2; }
die() { say "$*"; exit 1; }

cmd_deps() {
	local missing=() pkg
	for pkg in qemu-system-x86 busybox-static cpio; do
		dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
	done
	if ((${#missing[@]})); then
		say "installing ${missing[*]}"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi
	cmd_kernel >/dev/null
}

# newest_kernel_pkgs lists the 6.1 cloud kernel packages apt knows, newest first.
newest_kernel_pkgs() {
	apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$' |
		cut -d' ' -f1 | sort -V -r
}

# cmd_kernel prints the directory of an unpacked kernel package. It follows
# the newest package apt offers, so security updates reach the tests, and falls
# back to the newest cached one when apt cannot help (offline).
cmd_kernel() {
	mkdir -p "$kernel_base"
	local pkgs pkg deb cached
	if [[ -n $VMTEST_KERNEL_PKG ]]; then
		pkgs=$VMTEST_KERNEL_PKG
	else
		pkgs=$(newest_kernel_pkgs)
		if [[ -z $pkgs ]]; then
			# A fresh machine has no package lists yet.
			apt-get update -qq >&2 || true
			pkgs=$(newest_kernel_pkgs)
		fi
	fi
	for pkg in $pkgs; do
		if [[ -e $kernel_base/$pkg/.unpacked ]]; then
			echo "$kernel_base/$pkg"
			return
		fi
		rm -rf "${kernel_base:?}/$pkg" "$kernel_base/download"
		mkdir -p "$kernel_base/download"
		# The sandbox user _apt may not write here; downloading as root is fine.
		if (cd "$kernel_base/download" && apt-get download -qq -o APT::Sandbox::User=root "$pkg" >&2); then
			deb=$(ls "$kernel_base/download"/*.deb)
			dpkg-deb -x "$deb" "$kernel_base/$pkg"
			# Only the kernel image and modules are used; the .deb is not kept.
			rm -rf "$kernel_base/download"
			touch "$kernel_base/$pkg/.unpacked"
			say "unpacked $pkg"
			echo "$kernel_base/$pkg"
			return
		fi
		say "apt-get download $pkg failed, trying an older one"
	done
	cached=$(printf '%s\n' "$kernel_base"/linux-image-*/.unpacked | grep -v '\*' | sort -V | tail -1 || true)
	[[ -n $cached ]] || die "no linux-image-6.1.0-*-cloud-amd64-unsigned package available from apt"
	say "using cached ${cached%/.unpacked}"
	dirname "$cached"
}

# build_pkgs compiles each test package matched by patterns $2... in module
# dir $1 into a static binary named after its import path.
build_pkgs() {
	local moddir=$1 pattern existing=() line ipath dir name
	shift
	for pattern in "$@"; do
		# go list fails outright on a pattern whose directory does not exist
		# yet (bpf/ before it lands), so such patterns are dropped first.
		if [[ -d $moddir/${pattern%/...} ]]; then existing+=("$pattern"); fi
	done
	((${#existing[@]})) || return 0
	while read -r ipath dir; do
		[[ -n $ipath ]] || continue
		name=${ipath#"$module_prefix"}
		name=${name//\//_}
		say "building $name.test"
		(cd "$moddir" && CGO_ENABLED=0 "$GO" test -c -ldflags='-s -w' -o "$tests_dir/$name.test" "$ipath")
		mkdir -p "$tests_dir/$name"
		if [[ -d $dir/testdata ]]; then cp -a "$dir/testdata" "$tests_dir/$name/"; fi
	done < <(cd "$moddir" && "$GO" list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}} {{.Dir}}{{end}}' "${existing[@]}")
}

cmd_tests() {
	rm -rf "$tests_dir"
	mkdir -p "$tests_dir"
	# shellcheck disable=SC2086 # the package lists are word lists
	build_pkgs "$root" $VMTEST_PKGS
	# The harness's own module is kept out of any go.work the tree may have.
	# shellcheck disable=SC2086
	GOWORK=off build_pkgs "$here" $VMTEST_SELF_PKGS
	ls "$tests_dir"/*.test >/dev/null 2>&1 || die "no test binaries were built"
}

# copy_with_libs copies executable $1 to $rootfs$2 together with the shared
# libraries and loader ldd names, at the same paths as on the host.
copy_with_libs() {
	local src dst=$2 lib
	src=$(readlink -f "$1")
	install -D -m 0755 "$src" "$rootfs$dst"
	for lib in $(ldd "$src" 2>/dev/null | grep -o '/[^ ]*' || true); do
		[[ -e $rootfs$lib ]] || install -D -m 0755 "$(readlink -f "$lib")" "$rootfs$lib"
	done
}

# module_file prints the path of module $2 below modules dir $1.
module_file() {
	find "$1" -name "$2.ko" -o -name "$2.ko.xz" -o -name "$2.ko.zst" -o -name "$2.ko.gz" | head -1
}

# add_module copies a module and, first, the modules it depends on.
add_module() {
	local mods=$1 name=$2 file rel dep deps
	name=${name//-/_}
	[[ -n ${added[$name]:-} ]] && return
	added[$name]=1
	file=$(module_file "$mods" "$name")
	if [[ -z $file ]]; then
		grep -qE "/${name}\.ko$" "$mods/modules.builtin" || die "kernel module $name not in the kernel package"
		say "module $name is built in"
		return
	fi
	rel=${file#"$mods"/}
	mkdir -p "$rootfs/lib/modules/$kver/$(dirname "$rel")"
	# busybox insmod reads only plain .ko files, so compressed ones are
	# unpacked here rather than in the guest.
	case $file in
	*.xz) xz -dc "$file" >"$rootfs/lib/modules/$kver/${rel%.xz}" ;;
	*.zst) zstd -qdc "$file" >"$rootfs/lib/modules/$kver/${rel%.zst}" ;;
	*.gz) gzip -dc "$file" >"$rootfs/lib/modules/$kver/${rel%.gz}" ;;
	*) cp "$file" "$rootfs/lib/modules/$kver/$rel" ;;
	esac
	deps=$(tr '\0' '\n' <"$rootfs/lib/modules/$kver/${rel%.*}.ko" | sed -n 's/^depends=//p' | tr ',' ' ')
	for dep in $deps; do add_module "$mods" "$dep"; done
}

cmd_initramfs() {
	local kdir=$1 mods applet name dir file
	# Debian ships modules below lib/ today and below usr/lib/ after the /usr merge.
	mods=
	for name in "$kdir"/lib/modules/* "$kdir"/usr/lib/modules/*; do
		if [[ -d $name ]]; then mods=$name; fi
	done
	[[ -n $mods ]] || die "no modules directory in $kdir"
	kver=${mods##*/}
	rm -rf "$rootfs"
	mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,proc,sys,dev,tmp,run,root,etc,var,tests}
	ln -s ../run "$rootfs/var/run"

	copy_with_libs "$(command -v busybox)" /bin/busybox
	for applet in $(busybox --list-full); do
		name=${applet##*/}
		# Real programs replace busybox's applets of the same name (see VMTEST_HOST_BINS).
		[[ " $VMTEST_HOST_BINS " == *" $name "* ]] && continue
		[[ -e $rootfs/$applet ]] || ln -s /bin/busybox "$rootfs/$applet"
	done
	for name in $VMTEST_HOST_BINS; do
		command -v "$name" >/dev/null || die "$name not found on the host (make deps installs iproute2 and bpftool)"
		copy_with_libs "$(command -v "$name")" "/usr/sbin/$name"
	done
	printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' >"$rootfs/etc/hosts"
	echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"

	declare -gA added=()
	for name in $VMTEST_MODULES; do add_module "$mods" "$name"; done
	# A normal host loads networking modules on demand (sock_diag families,
	# qdiscs, classifiers, tunnels); shipping these directories lets the
	# guest's modprobe do the same, so tests see the kernel they would see there.
	for dir in $VMTEST_AUTOLOAD_DIRS; do
		[[ -d $mods/$dir ]] || die "no $dir in the kernel package's modules"
		for file in "$mods/$dir"/*.ko*; do
			name=${file##*/}
			add_module "$mods" "${name%%.ko*}"
		done
	done
	cp "$mods/modules.builtin" "$mods/modules.order" "$rootfs/lib/modules/$kver/"

	cp -a "$tests_dir"/. "$rootfs/tests/"
	install -m 0755 "$here/init" "$rootfs/init"
	{
		printf 'VMTEST_MODULES=%q\n' "$VMTEST_MODULES"
		printf 'VMTEST_RUN=%q\n' "$VMTEST_RUN"
		printf 'VMTEST_TEST_TIMEOUT=%q\n' "$VMTEST_TEST_TIMEOUT"
	} >"$rootfs/vmtest.conf"

	# gzip -1: the guest unpacks it under emulation, where a stronger level
	# saves little transfer and costs CPU on both sides.
	(cd "$rootfs" && find . -print0 | cpio --null -o -H newc --quiet -R 0:0) | gzip -1 >"$initramfs"
	say "initramfs $(du -h "$initramfs" | cut -f1) ($(du -sh "$rootfs" | cut -f1) unpacked)"
}

cmd_boot() {
	local kdir=$1 vmlinuz status=0
	vmlinuz=$(ls "$kdir"/boot/vmlinuz-*)
	# no_timer_check: under a loaded host, tcg can be too slow for the
	# kernel's IO-APIC timer check, which then panics at boot.
	local append="console=ttyS0 panic=-1 quiet no_timer_check $VMTEST_APPEND"
	# The kernel hands unknown NAME=value parameters to /init as environment,
	# so the shell can be asked for at boot without rebuilding the initramfs.
	[[ $VMTEST_SHELL == 1 ]] && append+=" VMTEST_SHELL=1"
	local qemu=(qemu-system-x86_64 -accel tcg -cpu max -smp "$VMTEST_SMP" -m "$VMTEST_MEM"
		-nographic -no-reboot -nic none -kernel "$vmlinuz" -initrd "$initramfs"
		-append "$append")
	local start end
	start=$(date +%s.%N)
	say "booting $(basename "$vmlinuz") (timeout ${VMTEST_TIMEOUT}s, console log $log)"
	if [[ $VMTEST_SHELL == 1 ]]; then
		"${qemu[@]}" | tee "$log" || status=$?
	else
		local attempt
		for attempt in $(seq 0 "$VMTEST_BOOT_RETRIES"); do
			# No stdin: the guest needs none, and a terminal would be put in raw mode.
			set +e
			timeout -k 10 "$VMTEST_TIMEOUT" "${qemu[@]}" </dev/null | sed -u 's/\r$//' | tee "$log"
			status=${PIPESTATUS[0]}
			set -e
			# A guest that never reached /init ran no test, so booting it
			# again hides no test result; it only rides out an emulation
			# hiccup on a loaded host. Its console is kept beside the log.
			grep -aq VMTEST-BOOTED "$log" && break
			[[ $status == 124 || $status == 137 ]] && break
			((attempt < VMTEST_BOOT_RETRIES)) || break
			mv "$log" "$log.boot-failed-$((attempt + 1))"
			say "WARNING: the guest did not boot (console in $log.boot-failed-$((attempt + 1))); booting again"
		done
	fi
	end=$(date +%s.%N)
	report "$status" "$(awk "BEGIN{printf \"%.0f\", $end - $start}")"
}

# report reads the console log, prints the summary and fails on any problem.
report() {
	local status=$1 wall=$2 passed=0 failed=0 problems=() name rc line
	local -A began=()
	while read -r line; do
		name=${line#*VMTEST-BEGIN }
		name=${name%% *}
		began[$name]=1
	done < <(grep -a 'VMTEST-BEGIN ' "$log" || true)
	while read -r line; do
		[[ $line =~ VMTEST-RESULT\ ([^ ]+)\ exit=([0-9]+) ]] || continue
		name=${BASH_REMATCH[1]} rc=${BASH_REMATCH[2]}
		unset "began[$name]"
		if [[ $rc == 0 ]]; then
			passed=$((passed + 1))
			say "PASS $name"
		else
			failed=$((failed + 1))
			say "FAIL $name (exit $rc)"
		fi
	done < <(grep -a 'VMTEST-RESULT ' "$log" || true)
	for name in "${!began[@]}"; do
		failed=$((failed + 1))
		say "FAIL $name (no result: crashed, hung or timed out)"
	done
	# Each failed test, prefixed with the binary it ran in.
	awk '/VMTEST-BEGIN /{sub(/.*VMTEST-BEGIN /, ""); bin=$1; next}
		/--- FAIL/{sub(/^[ \t]*/, ""); print "vmtest:   " bin ": " $0}' "$log" >&2
	while read -r line; do problems+=("module ${line##* } did not load"); done < <(grep -a 'VMTEST-MODULE-FAILED' "$log" || true)
	grep -aq VMTEST-BOOTED "$log" || problems+=("guest did not boot")
	[[ $status == 124 || $status == 137 ]] && problems+=("timed out after ${VMTEST_TIMEOUT}s")
	grep -aq VMTEST-DONE "$log" || problems+=("guest did not finish its test run")
	((passed + failed > 0)) || problems+=("no test binary ran")
	local cases
	cases=$(awk '/--- PASS/{p++} /--- FAIL/{f++} /--- SKIP/{s++} END{printf "%d passed, %d failed, %d skipped", p, f, s}' "$log")
	say "test cases (with subtests): $cases"
	say "wall ${wall}s from qemu start to exit, qemu exit status $status"
	echo "vmtest: $passed passed, $failed failed"
	if ((failed > 0 || ${#problems[@]} > 0)); then
		for line in "${problems[@]}"; do say "ERROR: $line"; done
		say "last 40 console lines ($log):"
		tail -n 40 "$log" >&2
		exit 1
	fi
}

case ${1:-all} in
deps) cmd_deps ;;
kernel) cmd_kernel ;;
tests) cmd_tests ;;
initramfs) cmd_initramfs "$(cmd_kernel)" ;;
boot) cmd_boot "$(cmd_kernel)" ;;
all)
	kdir=$(cmd_kernel)
	cmd_tests
	cmd_initramfs "$kdir"
	cmd_boot "$kdir"
	;;
*) die "unknown command $1 (deps, kernel, tests, initramfs, boot, all)" ;;
esac
