// Package bpf holds the kernel programs and their bpf2go bindings.
package bpf

//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -cflags "-O2 -g -Wall -Werror -I/usr/include/bpf" -target amd64,arm64 -type flow_key -type flow_counters -type overflow_key -type filter_cidr_key -type proto_verdicts -type port_bitmaps Flow flow.c
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -cflags "-O2 -g -Wall -Werror -I/usr/include/bpf" -target amd64,arm64 -type cgroup_flow_key -type sock_owner Cgroup cgroup.c
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -cflags "-O2 -g -Wall -Werror -I/usr/include/bpf" -target amd64,arm64 -type cgroup_flow_key Kprobe kprobe.c
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -cflags "-O2 -g -Wall -Werror -I/usr/include/bpf" -target amd64,arm64 -type drop_key Drops drops.c
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -cflags "-O2 -g -Wall -Werror -I/usr/include/bpf" -target amd64,arm64 -type cgroup_flow_key -type rtt_stats Tcpsock tcpsock.c
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -cflags "-O2 -g -Wall -Werror -I/usr/include/bpf" -target amd64,arm64 -type flow_rec -type cgroup_flow_rec Walk walk.c
