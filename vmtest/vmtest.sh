#!/bin/bash
# Runs this project's BPF test binaries inside Debian kernels under QEMU
# (software emulation: /dev/kvm on the build machines hangs guests), one
# guest after the other: 5.10 (bullseye), 6.1 and 6.12 (bookworm) on amd64,
# and 6.1 on arm64 under qemu-system-aarch64.
#
#   vmtest.sh deps       install qemu/busybox/cpio if missing, fetch the kernels
#   vmtest.sh kernel     fetch and unpack each guest's newest kernel (cached)
#   vmtest.sh tests      build static test binaries for each guest's architecture
#   vmtest.sh initramfs  pack busybox, iproute2, modules and tests for each guest
#   vmtest.sh boot       boot each guest, stream and check its console
#   vmtest.sh all        kernel, tests, initramfs, boot, guest by guest
#
# VMTEST_GUESTS names the guests (5.10 6.1 6.12 arm64). Settings come from the
# environment; vmtest.mk documents them.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
GO=${GO:-go}
VMTEST_DIR=${VMTEST_DIR:-$root/build/vmtest}
VMTEST_GUESTS=${VMTEST_GUESTS:-5.10 6.1 6.12 arm64}
VMTEST_PKGS=${VMTEST_PKGS:-./core/... ./bpf/... ./internal/...}
VMTEST_SELF_PKGS=${VMTEST_SELF_PKGS:-./guestcheck}
VMTEST_E2E_PKGS=${VMTEST_E2E_PKGS-telegrafplugin/e2e otelreceiver/e2e}
VMTEST_E2E_GUESTS=${VMTEST_E2E_GUESTS-6.12}
VMTEST_E2E_RUN=${VMTEST_E2E_RUN--test.run=Kprobe}
VMTEST_AGENTS=${VMTEST_AGENTS-telegraf otelcol-pktstat}
VMTEST_HEAVY=${VMTEST_HEAVY-}
VMTEST_HEAVY_GUESTS=${VMTEST_HEAVY_GUESTS-}
VMTEST_MODULES=${VMTEST_MODULES:-veth sch_ingress cls_bpf act_bpf xfrm_user nfnetlink}
VMTEST_AUTOLOAD_DIRS=${VMTEST_AUTOLOAD_DIRS-kernel/net/sched kernel/net/ipv4 kernel/net/ipv6 kernel/net/core kernel/net/netlink kernel/net/packet kernel/net/unix kernel/net/xfrm kernel/net/netfilter}
VMTEST_HOST_BINS=${VMTEST_HOST_BINS:-ip tc bpftool setpriv nft}
VMTEST_RUN=${VMTEST_RUN:-}
VMTEST_SHELL=${VMTEST_SHELL:-}
# 1: the guest's console goes only to its log file, not to stdout (make test runs the
# guests beside the host tests, whose output it would bury); failures still print its tail.
VMTEST_QUIET=${VMTEST_QUIET:-}
VMTEST_TIMEOUT=${VMTEST_TIMEOUT:-900}
VMTEST_TEST_TIMEOUT=${VMTEST_TEST_TIMEOUT:-20m}
VMTEST_BOOT_RETRIES=${VMTEST_BOOT_RETRIES:-1}
VMTEST_MEM=${VMTEST_MEM:-1536}
VMTEST_SMP=${VMTEST_SMP:-2}
VMTEST_KERNEL_PKG=${VMTEST_KERNEL_PKG:-}
VMTEST_APPEND=${VMTEST_APPEND:-}
VMTEST_MIRROR=${VMTEST_MIRROR:-http://deb.debian.org/debian}
VMTEST_SECURITY_MIRROR=${VMTEST_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
# Package lists older than this many minutes are fetched again, so kernel
# security updates reach the tests without an apt-get update on every run.
VMTEST_LISTS_MAX_AGE=${VMTEST_LISTS_MAX_AGE:-1440}
# arm64 userland: the host's ip, tc, bpftool and setpriv are x86 programs, so
# the arm64 guest gets Debian's arm64 builds and the libraries they name.
VMTEST_ARM64_DEBS=${VMTEST_ARM64_DEBS:-busybox-static iproute2 bpftool util-linux nftables libc6 libbpf1 libelf1 libmnl0 libbsd0 libmd0 libcap2 libxtables12 zlib1g libzstd1 liblzma5 libcap-ng0 libnftables1 libnftnl11 libedit2 libjansson4 libgmp10 libtinfo6}
# The module path prefix is cut from import paths to name test binaries.
module_prefix=github.com/pktstat-bpf/pktstat-bpf/

kernel_base=$VMTEST_DIR/kernel
apt_base=$VMTEST_DIR/apt
run_id=$$.$(date +%s)

say() { echo "vmtest: ${guest:+[$guest] }$*" >&2; }
die() { say "$*"; exit 1; }

# guest_spec sets the g_* description of guest $1 and its working paths.
guest_spec() {
	guest=$1
	# Every guest's BPF_PROG_TEST_RUN gives cgroup_skb programs no packet
	# data (seen on 5.10, 6.1, 6.12 and arm64 6.1; the 6.18 host gives it):
	# those table tests may skip in the guests, and the probe fails the
	# test if a guest gives the data after all.
	g_suite=bookworm g_arch=amd64 g_tcx=0 g_lacks=cgroup_test_run_data
	case $guest in
	5.10)
		g_suite=bullseye
		g_regex='^linux-image-5\.10\.0-[0-9]+-cloud-amd64-unsigned$'
		# kfree_skb passes its drop reason from 5.17 on: the drop tests
		# may skip here, and only here. bpf_for_each_map_elem came in
		# 5.13: the drain reads by batch lookups, and the walk's tests
		# may skip here, and only here.
		g_lacks+=" drop_reason map_walk"
		;;
	6.1) g_regex='^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$' ;;
	6.12)
		g_regex='^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64-unsigned$'
		g_tcx=1
		;;
	arm64)
		g_arch=arm64
		g_regex='^linux-image-6\.1\.0-[0-9]+-cloud-arm64-unsigned$'
		# No BPF trampolines: arm64 ftrace direct calls arrived in 6.4. The
		# fentry variants of the kprobe-mode tests may skip here, and only
		# here; the self-test checks that fentry really fails.
		g_lacks+=" fentry"
		;;
	*) die "unknown guest '$guest' in VMTEST_GUESTS (or KERNEL): use 5.10, 6.1, 6.12 or arm64" ;;
	esac
	# No TCX before 6.6: the TCX chain tests may skip in those guests only.
	[[ $g_tcx == 1 ]] || g_lacks+=" tcx"
	# The release the guest must report, checked by the self-test.
	g_release=${guest%arm64}
	[[ -n $g_release ]] || g_release=6.1
	g_dir=$VMTEST_DIR/$guest
	tests_dir=$VMTEST_DIR/tests-$g_arch
	rootfs=$g_dir/rootfs
	initramfs=$g_dir/initramfs.cpio.gz
	log=$g_dir/console.log
}

cmd_deps() {
	local missing=() pkg
	# iproute2, bpftool, util-linux and nftables give VMTEST_HOST_BINS (ip, tc,
	# bpftool, setpriv, nft), which the amd64 guests copy from the host: the
	# early guests boot before the host side's own installs (one of which,
	# podman, brought nftables in only as a dependency).
	for pkg in qemu-system-x86 qemu-system-arm busybox-static cpio binutils file xz-utils iproute2 bpftool util-linux nftables; do
		dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
	done
	if ((${#missing[@]})); then
		say "installing ${missing[*]}"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi
	local g
	for g in $VMTEST_GUESTS; do
		guest_spec "$g"
		cmd_kernel >/dev/null
		[[ $g_arch == amd64 ]] || arm64_userland >/dev/null
	done
}

# apt_private runs apt-get or apt-cache ($1) on a private package list for
# $g_suite and $g_arch under $apt_base, so the machine's own sources, lists
# and architectures stay untouched (bullseye and arm64 are not configured).
apt_private() {
	local tool=$1 dir=$apt_base/$g_suite-$g_arch
	shift
	mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial"
	local signed="arch=$g_arch signed-by=/usr/share/keyrings/debian-archive-keyring.gpg"
	printf '%s\n' "deb [$signed] $VMTEST_MIRROR $g_suite main" \
		"deb [$signed] $VMTEST_SECURITY_MIRROR $g_suite-security main" >"$dir/sources.list"
	"$tool" -o Dir::Etc::sourcelist="$dir/sources.list" -o Dir::Etc::sourceparts=/nonexistent \
		-o Dir::State::Lists="$dir/lists" -o Dir::Cache="$dir/cache" -o Dir::State::status=/dev/null \
		-o APT::Architecture="$g_arch" -o APT::Architectures::="$g_arch" \
		-o APT::Sandbox::User=root "$@"
}

# apt_lists fetches the private package lists when they are missing or stale.
apt_lists() {
	local stamp=$apt_base/$g_suite-$g_arch/updated
	if [[ -z $(find "$stamp" -mmin "-$VMTEST_LISTS_MAX_AGE" 2>/dev/null) ]]; then
		apt_private apt-get update -qq >&2 && touch "$stamp" || say "apt-get update for $g_suite/$g_arch failed; using cached lists"
	fi
}

# newest_kernel_pkgs lists the guest's kernel packages apt knows, newest first.
newest_kernel_pkgs() {
	apt_private apt-cache search --names-only "$g_regex" 2>/dev/null | cut -d' ' -f1 | sort -V -r
}

# apt_fetch downloads packages $2... into $1/download and unpacks them into $1.
apt_fetch() {
	local dest=$1 deb
	shift
	rm -rf "$dest" && mkdir -p "$dest/download"
	# The sandbox user _apt may not write here; downloading as root is fine.
	(cd "$dest/download" && apt_private apt-get download -qq "$@" >&2) || return 1
	for deb in "$dest/download"/*.deb; do dpkg-deb -x "$deb" "$dest"; done
	# Only the unpacked files are used; the .debs are not kept.
	rm -rf "$dest/download"
	touch "$dest/.unpacked"
}

# cmd_kernel prints the directory of the guest's unpacked kernel package. It
# follows the newest package apt offers, so security updates reach the tests,
# and falls back to the newest cached one when apt cannot help (offline).
cmd_kernel() {
	mkdir -p "$kernel_base"
	local pkgs pkg cached
	if [[ -n $VMTEST_KERNEL_PKG ]]; then
		pkgs=$VMTEST_KERNEL_PKG
	else
		apt_lists
		pkgs=$(newest_kernel_pkgs)
	fi
	for pkg in $pkgs; do
		if [[ -e $kernel_base/$pkg/.unpacked ]]; then
			echo "$kernel_base/$pkg"
			return
		fi
		if apt_fetch "$kernel_base/$pkg" "$pkg"; then
			say "unpacked $pkg"
			echo "$kernel_base/$pkg"
			return
		fi
		rm -rf "${kernel_base:?}/$pkg"
		say "apt-get download $pkg failed, trying an older one"
	done
	cached=$(for f in "$kernel_base"/*/.unpacked; do
		[[ -e $f ]] || continue
		f=${f%/.unpacked}
		[[ ${f##*/} =~ $g_regex ]] && echo "$f"
	done | sort -V | tail -1)
	[[ -n $cached ]] || die "no kernel package matching $g_regex available from apt ($g_suite, $g_arch)"
	say "using cached $cached"
	echo "$cached"
}

# arm64_userland prints the directory of the unpacked arm64 userland packages.
arm64_userland() {
	local dir=$VMTEST_DIR/userland-$g_arch
	# A cache unpacked from another package list (an older checkout) is fetched again.
	if [[ ! -e $dir/.unpacked || "$(cat "$dir/.packages" 2>/dev/null)" != "$VMTEST_ARM64_DEBS" ]]; then
		apt_lists
		# shellcheck disable=SC2086 # a word list
		apt_fetch "$dir" $VMTEST_ARM64_DEBS || die "apt-get download of the $g_arch userland ($VMTEST_ARM64_DEBS) failed"
		echo "$VMTEST_ARM64_DEBS" >"$dir/.packages"
		say "unpacked the $g_arch userland"
	fi
	echo "$dir"
}

# build_pkgs compiles each test package matched by patterns $2... in module
# dir $1 into a static binary for $g_arch named after its import path.
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
		say "building $name.test ($g_arch)"
		(cd "$moddir" && GOARCH=$g_arch CGO_ENABLED=0 "$GO" test -c -ldflags='-s -w' -o "$tests_dir/$name.test" "$ipath")
		mkdir -p "$tests_dir/$name"
		if [[ -d $dir/testdata ]]; then cp -a "$dir/testdata" "$tests_dir/$name/"; fi
	done < <(cd "$moddir" && GOARCH=$g_arch "$GO" list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}} {{.Dir}}{{end}}' "${existing[@]}")
}

# cmd_tests builds the test binaries of $g_arch once per run of this script.
cmd_tests() {
	[[ $(cat "$tests_dir/.built-by" 2>/dev/null) == "$run_id" ]] && return
	rm -rf "$tests_dir"
	mkdir -p "$tests_dir"
	# shellcheck disable=SC2086 # the package lists are word lists
	build_pkgs "$root" $VMTEST_PKGS
	# The harness's own module is kept out of any go.work the tree may have.
	# shellcheck disable=SC2086
	GOWORK=off build_pkgs "$here" $VMTEST_SELF_PKGS
	ls "$tests_dir"/*.test >/dev/null 2>&1 || die "no test binaries were built"
	echo "$run_id" >"$tests_dir/.built-by"
}

# heavy_skip prints the -test.skip pattern of this guest: the long tests of
# VMTEST_HEAVY run only in VMTEST_HEAVY_GUESTS, to keep make test's time.
heavy_skip() {
	if [[ -n $VMTEST_HEAVY && " $VMTEST_HEAVY_GUESTS " != *" $guest "* ]]; then echo "$VMTEST_HEAVY"; fi
}

# e2e_guest says whether this guest also runs the agents' end-to-end tests.
e2e_guest() { [[ $g_arch == amd64 && -n $VMTEST_E2E_PKGS && " $VMTEST_E2E_GUESTS " == *" $guest "* ]]; }

# cmd_e2e builds the agents' end-to-end test packages (VMTEST_E2E_PKGS, each
# in its own module) once per run, each with a NAME.flags file that init
# passes instead of VMTEST_RUN: only VMTEST_E2E_RUN's tests (kprobe mode,
# which the host cannot run) are run in the guest.
cmd_e2e() {
	local dir=$VMTEST_DIR/e2e-$g_arch pkg mod name flags
	[[ $(cat "$dir/.built-by" 2>/dev/null) == "$run_id" ]] && return
	rm -rf "$dir" && mkdir -p "$dir"
	for pkg in $VMTEST_E2E_PKGS; do
		mod=${pkg%%/*}
		name=${pkg//\//_}
		# telegraf.mk builds the plugin's module with -mod=mod (its go.sum must
		# also cover core's requirements); the others build as they are.
		flags=-buildvcs=false
		[[ $mod == telegrafplugin ]] && flags+=' -mod=mod'
		say "building $name.test ($g_arch)"
		(cd "$root/$mod" && GOWORK=off GOFLAGS=$flags GOARCH=$g_arch CGO_ENABLED=0 \
			"$GO" test -c -ldflags='-s -w' -o "$dir/$name.test" "./${pkg#*/}")
		mkdir -p "$dir/$name"
		echo "$VMTEST_E2E_RUN" >"$dir/$name.flags"
	done
	echo "$run_id" >"$dir/.built-by"
}

# copy_agents puts the built agents (VMTEST_AGENTS, below build/) into the
# rootfs at /build, where the e2e tests find them through PKTSTAT_BUILD and
# OTELCOL_PKTSTAT. They must be static: the initramfs has no libraries for them.
copy_agents() {
	local name bin
	for name in $VMTEST_AGENTS; do
		bin=$root/build/$name
		[[ -x $bin ]] || die "$bin is missing: run make build (make vmtest builds it first)"
		file -b "$bin" | grep -q 'statically linked' || die "$bin is not statically linked ($(file -b "$bin")): the guest has no libraries for it"
		install -D -m 0755 "$bin" "$rootfs/build/$name"
	done
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

# copy_foreign copies executable $2 of the unpacked userland $1 (another
# architecture, so ldd cannot run it) to the same path in the rootfs, with
# the loader and the libraries its ELF NEEDED entries name, found below $1,
# recursively.
copy_foreign() {
	local top=$1 rel=$2 lib found interp
	[[ -e $rootfs/$rel ]] && return
	install -D -m 0755 "$(readlink -f "$top/$rel")" "$rootfs/$rel"
	interp=$(readelf -l "$top/$rel" 2>/dev/null | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
	if [[ -n $interp && ! -e $rootfs$interp ]]; then
		found=$(find "$top" -name "${interp##*/}" | head -1)
		[[ -n $found ]] || die "loader $interp of $rel is in none of VMTEST_ARM64_DEBS"
		install -D -m 0755 "$(readlink -f "$found")" "$rootfs$interp"
	fi
	for lib in $(readelf -d "$top/$rel" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
		found=$(cd "$top" && find lib usr/lib -name "$lib" 2>/dev/null | head -1)
		[[ -n $found ]] || die "library $lib of $rel is in none of VMTEST_ARM64_DEBS: add its package"
		copy_foreign "$top" "$found"
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
	# The plain .ko in the rootfs, whatever the package compressed it with.
	local plain=$rootfs/lib/modules/$kver/${rel%.ko*}.ko
	mkdir -p "$(dirname "$plain")"
	# busybox insmod reads only plain .ko files (6.12's are xz'd), so
	# compressed ones are unpacked here rather than in the guest.
	case $file in
	*.xz) xz -dc "$file" >"$plain" ;;
	*.zst) zstd -qdc "$file" >"$plain" ;;
	*.gz) gzip -dc "$file" >"$plain" ;;
	*) cp "$file" "$plain" ;;
	esac
	deps=$(tr '\0' '\n' <"$plain" | sed -n 's/^depends=//p' | tr ',' ' ')
	for dep in $deps; do add_module "$mods" "$dep"; done
}

cmd_initramfs() {
	local kdir=$1 mods applet name dir file userland=
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

	if [[ $g_arch == amd64 ]]; then
		copy_with_libs "$(command -v busybox)" /bin/busybox
	else
		userland=$(arm64_userland)
		copy_foreign "$userland" bin/busybox
	fi
	# The host's busybox names the applets; the arm64 one is the same Debian version.
	for applet in $(busybox --list-full); do
		name=${applet##*/}
		# Real programs replace busybox's applets of the same name (see VMTEST_HOST_BINS).
		[[ " $VMTEST_HOST_BINS " == *" $name "* ]] && continue
		[[ -e $rootfs/$applet ]] || ln -s /bin/busybox "$rootfs/$applet"
	done
	for name in $VMTEST_HOST_BINS; do
		if [[ -n $userland ]]; then
			file=
			for dir in sbin usr/sbin bin usr/bin; do
				if [[ -e $userland/$dir/$name ]]; then file=$dir/$name; fi
			done
			[[ -n $file ]] || die "$name is in none of VMTEST_ARM64_DEBS"
			copy_foreign "$userland" "$file"
			[[ -e $rootfs/usr/sbin/$name ]] || ln -s "/$file" "$rootfs/usr/sbin/$name"
		else
			command -v "$name" >/dev/null || die "$name not found on the host (make deps installs iproute2 and bpftool)"
			copy_with_libs "$(command -v "$name")" "/usr/sbin/$name"
		fi
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
	if e2e_guest; then
		cp -a "$VMTEST_DIR/e2e-$g_arch"/. "$rootfs/tests/"
		copy_agents
	fi
	rm -f "$rootfs/tests/.built-by"
	install -m 0755 "$here/init" "$rootfs/init"
	{
		printf 'VMTEST_MODULES=%q\n' "$VMTEST_MODULES"
		printf 'VMTEST_RUN=%q\n' "$VMTEST_RUN"
		printf 'VMTEST_TEST_TIMEOUT=%q\n' "$VMTEST_TEST_TIMEOUT"
		printf 'VMTEST_SKIP=%q\n' "$(heavy_skip)"
		# What the self-test checks this guest against.
		printf 'VMTEST_KERNEL=%q\n' "$guest"
		printf 'VMTEST_KERNEL_RELEASE=%q\n' "$g_release"
		printf 'VMTEST_TCX=%q\n' "$g_tcx"
		printf 'VMTEST_ARCH=%q\n' "$g_arch"
		printf 'VMTEST_LACKS=%q\n' "$g_lacks"
	} >"$rootfs/vmtest.conf"

	# gzip -1: the guest unpacks it under emulation, where a stronger level
	# saves little transfer and costs CPU on both sides.
	(cd "$rootfs" && find . -print0 | cpio --null -o -H newc --quiet -R 0:0) | gzip -1 >"$initramfs"
	say "initramfs $(du -h "$initramfs" | cut -f1) ($(du -sh "$rootfs" | cut -f1) unpacked)"
}

cmd_boot() {
	local kdir=$1 vmlinuz status=0 qemu console
	vmlinuz=$(ls "$kdir"/boot/vmlinuz-*)
	if [[ $g_arch == amd64 ]]; then
		console=ttyS0
		qemu=(qemu-system-x86_64 -cpu max)
	else
		# Debian's arm64 vmlinuz is a plain Image, which -kernel takes as it
		# is. The virt board's UART is a PL011; pauth-impdef keeps -cpu max's
		# pointer authentication from dominating the emulation time.
		console=ttyAMA0
		qemu=(qemu-system-aarch64 -M virt -cpu max,pauth-impdef=on)
	fi
	# no_timer_check: under a loaded host, tcg can be too slow for the
	# kernel's IO-APIC timer check, which then panics at boot.
	local append="console=$console panic=-1 quiet no_timer_check $VMTEST_APPEND"
	# The kernel hands unknown NAME=value parameters to /init as environment,
	# so the shell can be asked for at boot without rebuilding the initramfs.
	[[ $VMTEST_SHELL == 1 ]] && append+=" VMTEST_SHELL=1"
	qemu+=(-accel tcg -smp "$VMTEST_SMP" -m "$VMTEST_MEM"
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
			if [[ $VMTEST_QUIET == 1 ]]; then
				timeout -k 10 "$VMTEST_TIMEOUT" "${qemu[@]}" </dev/null | sed -u 's/\r$//' >"$log"
			else
				timeout -k 10 "$VMTEST_TIMEOUT" "${qemu[@]}" </dev/null | sed -u 's/\r$//' | tee "$log"
			fi
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

# report reads the console log, prints the summary and returns non-zero on
# any problem. The guest's skips are kept in $g_dir/skips.txt.
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
	awk -v g="$guest" '/VMTEST-BEGIN /{sub(/.*VMTEST-BEGIN /, ""); bin=$1; next}
		/--- FAIL/{sub(/^[ \t]*/, ""); print "vmtest: [" g "]   " bin ": " $0}' "$log" >&2
	# The guest's own skip summary (init prints one VMTEST-SKIP line per skip).
	grep -a '^VMTEST-SKIP ' "$log" | sed 's/^VMTEST-SKIP //' >"$g_dir/skips.txt" || true
	# One line per binary, top-level test and reason, with how many
	# (sub)tests skipped for it: the list the README's kernel table names.
	awk '{bin=$1; test=$2; sub(/:$/, "", test); top=test; sub(/\/.*/, "", top)
		reason=$0; sub(/^[^ ]+ [^ ]+ /, "", reason); k=bin " " top ": " reason
		if (!(k in n)) order[++m]=k; n[k]++}
		END{for (i=1; i<=m; i++) print "SKIP " order[i] " (" n[order[i]] "x)"}' "$g_dir/skips.txt" |
		while read -r line; do say "$line"; done
	while read -r line; do problems+=("module ${line##* } did not load"); done < <(grep -a 'VMTEST-MODULE-FAILED' "$log" || true)
	grep -aq VMTEST-BOOTED "$log" || problems+=("guest did not boot")
	[[ $status == 124 || $status == 137 ]] && problems+=("timed out after ${VMTEST_TIMEOUT}s")
	grep -aq VMTEST-DONE "$log" || problems+=("guest did not finish its test run")
	((passed + failed > 0)) || problems+=("no test binary ran")
	local cases
	cases=$(awk '/--- PASS/{p++} /--- FAIL/{f++} /--- SKIP/{s++} END{printf "%d passed, %d failed, %d skipped", p, f, s}' "$log")
	say "$(grep -a -o 'VMTEST-BOOTED kernel=[^ ]*' "$log" | head -1 | sed 's/VMTEST-BOOTED //')"
	say "test cases (with subtests): $cases"
	[[ -z $(heavy_skip) ]] || say "not run in this guest (VMTEST_HEAVY, run in $VMTEST_HEAVY_GUESTS): $(heavy_skip)"
	say "wall ${wall}s from qemu start to exit, qemu exit status $status"
	say "$passed passed, $failed failed"
	echo "$guest: ${wall}s, binaries $passed passed $failed failed; cases $cases" >>"$summary"
	if ((failed > 0 || ${#problems[@]} > 0)); then
		for line in "${problems[@]}"; do say "ERROR: $line"; done
		say "last 40 console lines ($log):"
		tail -n 40 "$log" >&2
		return 1
	fi
}

# each runs "$@" for every guest of VMTEST_GUESTS, one after the other (the
# build machines have 2 cores), and fails at the end if any guest failed.
each() {
	local g rc bad=() t0
	t0=$(date +%s)
	summary=$VMTEST_DIR/summary.txt
	mkdir -p "$VMTEST_DIR"
	# VMTEST_KEEP_SUMMARY=1: a second run of make test's (the guests with the agents) adds to the first's.
	[[ ${VMTEST_KEEP_SUMMARY:-} == 1 ]] || : >"$summary"
	for g in $VMTEST_GUESTS; do
		guest_spec "$g"
		mkdir -p "$g_dir"
		# A subshell with errexit of its own: a function called as an if
		# condition would run with errexit off.
		set +e
		(
			set -e
			"$@"
		)
		rc=$?
		set -e
		((rc == 0)) || bad+=("$g")
	done
	guest=
	local line
	while read -r line; do say "$line"; done <"$summary"
	say "all guests ($VMTEST_GUESTS): $(($(date +%s) - t0))s wall"
	if ((${#bad[@]})); then
		say "FAILED guests: ${bad[*]}"
		return 1
	fi
}

# warm_later compiles, at low priority and in the background, what the guests
# after the first will build: the test packages of another architecture (the
# arm64 cross-build) and, with VMTEST_WARM_E2E=1, the agents' e2e packages. The
# build cache then has them when their turn comes, instead of the guest chain
# waiting for a cold compile between two guests. It writes only the build
# cache (go test -exec /bin/true runs nothing); make test sets VMTEST_WARM=1.
warm_later() {
	local seen= g pkg mod flags
	for g in $VMTEST_GUESTS; do
		guest_spec "$g"
		# The first guest builds its own architecture in the foreground.
		[[ " $seen " != *" $g_arch "* ]] || continue
		if [[ -z $seen ]]; then seen=$g_arch; continue; fi
		seen+=" $g_arch"
		# shellcheck disable=SC2086 # the package list is a word list
		(cd "$root" && GOARCH=$g_arch CGO_ENABLED=0 nice -n 10 "$GO" test -count=1 -run '^$' -exec /bin/true \
			-ldflags='-s -w' $VMTEST_PKGS) >/dev/null 2>&1 || true
	done
	[[ ${VMTEST_WARM_E2E:-} == 1 ]] || return 0
	for pkg in $VMTEST_E2E_PKGS; do
		mod=${pkg%%/*}
		flags=-buildvcs=false
		[[ $mod == telegrafplugin ]] && flags+=' -mod=mod'
		(cd "$root/$mod" && GOWORK=off GOFLAGS=$flags GOARCH=amd64 CGO_ENABLED=0 nice -n 10 "$GO" test -count=1 -run '^$' \
			-exec /bin/true -ldflags='-s -w' "./${pkg#*/}") >/dev/null 2>&1 || true
	done
}

guest_all() {
	local kdir
	kdir=$(cmd_kernel)
	cmd_tests
	if e2e_guest; then cmd_e2e; fi
	cmd_initramfs "$kdir"
	cmd_boot "$kdir"
}

case ${1:-all} in
deps) cmd_deps ;;
kernel) each cmd_kernel ;;
tests) each cmd_tests ;;
initramfs) each eval 'cmd_initramfs "$(cmd_kernel)"' ;;
boot) each eval 'cmd_boot "$(cmd_kernel)"' ;;
all)
	warm=
	if [[ ${VMTEST_WARM:-} == 1 ]]; then
		warm_later &
		warm=$!
	fi
	rc=0
	each guest_all || rc=$?
	[[ -z $warm ]] || wait "$warm" || true
	exit "$rc"
	;;
*) die "unknown command $1 (deps, kernel, tests, initramfs, boot, all)" ;;
esac
