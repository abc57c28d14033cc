// Command profile splits tc_ingress's per-packet cost into its parts: it
// compiles variants.c (clang-19), runs each variant and the real program
// with BPF_PROG_TEST_RUN on one IPv4/TCP packet, and prints each one's cost
// above an empty program measured alongside. Run as root from the
// repository root: go run ./bench/profile
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/rlimit"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/pktstat-bpf/pktstat-bpf/bpf"
)

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "profile: FAILED:", err)
	os.Exit(1)
}

func main() {
	root := flag.String("root", ".", "repository root")
	rounds := flag.Int("rounds", 9, "rounds, each running every program once")
	flag.Parse()
	if err := rlimit.RemoveMemlock(); err != nil {
		fatal(err)
	}
	tmp, err := os.MkdirTemp("", "pktstat-profile-")
	if err != nil {
		fatal(err)
	}
	defer os.RemoveAll(tmp)
	obj := filepath.Join(tmp, "variants.o")
	cc := exec.Command("clang-19", "-O2", "-g", "-Wall", "-target", "bpf", "-D__TARGET_ARCH_x86",
		"-I", filepath.Join(*root, "bpf"), "-I/usr/include/bpf", "-c", filepath.Join(*root, "bench/profile/variants.c"), "-o", obj)
	if out, err := cc.CombinedOutput(); err != nil {
		fatal(fmt.Errorf("compile variants.c: %v\n%s", err, out))
	}
	spec, err := ebpf.LoadCollectionSpec(obj)
	if err != nil {
		fatal(err)
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		fatal(fmt.Errorf("load variants: %w", err))
	}
	defer coll.Close()
	fs, err := bpf.LoadFlow()
	if err != nil {
		fatal(err)
	}
	var objs bpf.FlowObjects
	if err := fs.LoadAndAssign(&objs, nil); err != nil {
		fatal(fmt.Errorf("load flow object: %w", err))
	}
	defer objs.Close()
	empty, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SchedCLS, License: "MIT",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, -1), asm.Return()}})
	if err != nil {
		fatal(err)
	}
	defer empty.Close()

	buf := gopacket.NewSerializeBuffer()
	ip := &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: layers.IPProtocolTCP, SrcIP: net.IP{10, 1, 0, 0}, DstIP: net.IP{10, 2, 0, 1}}
	tcp := &layers.TCP{SrcPort: 40000, DstPort: 443, ACK: true, Window: 1000}
	_ = tcp.SetNetworkLayerForChecksum(ip)
	if err := gopacket.SerializeLayers(buf, gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true},
		&layers.Ethernet{SrcMAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, DstMAC: net.HardwareAddr{2, 0, 0, 0, 0, 2}, EthernetType: layers.EthernetTypeIPv4},
		ip, tcp, gopacket.Payload(make([]byte, 512))); err != nil {
		fatal(err)
	}
	pkt := buf.Bytes()

	progs := []struct {
		name, what string
		p          *ebpf.Program
	}{
		{"empty", "return only", empty},
		{"array_bump", "per-CPU array lookup (inlined) and a store", coll.Programs["array_bump"]},
		{"one_call", "one trivial non-inlined helper call (bpf_get_prandom_u32)", coll.Programs["one_call"]},
		{"parse_only", "memset key, parse eth/ipv4/tcp, store key in a per-CPU array", coll.Programs["parse_only"]},
		{"hash24_only", "constant 24-byte key: per-CPU hash lookup and bump", coll.Programs["hash24_only"]},
		{"hash_only", "constant 48-byte key: per-CPU hash lookup and bump", coll.Programs["hash_only"]},
		{"hash_shared", "constant 48-byte key: shared hash lookup, atomic bump", coll.Programs["hash_shared"]},
		{"parse_hash", "parse and per-CPU hash, nothing else", coll.Programs["parse_hash"]},
		{"parse_cache", "parse, then a hit in a per-CPU direct-mapped cache (inlined array lookup, 48-byte compare)", coll.Programs["parse_cache"]},
		{"tc_ingress", "the real program (adds pull check, VLAN, app-protocol check)", objs.TcIngress},
	}
	res := map[string][]float64{}
	for _, p := range progs {
		if _, _, err := p.p.Benchmark(pkt, 1000, nil); err != nil { // creates the hot flow
			fatal(fmt.Errorf("run %s: %w", p.name, err))
		}
	}
	for r := 0; r < *rounds; r++ {
		for _, p := range progs {
			_, d, err := p.p.Benchmark(pkt, 200000, nil)
			if err != nil {
				fatal(fmt.Errorf("run %s: %w", p.name, err))
			}
			res[p.name] = append(res[p.name], float64(d.Nanoseconds()))
		}
	}
	med := func(xs []float64) float64 {
		s := slices.Clone(xs)
		slices.Sort(s)
		return s[len(s)/2]
	}
	base := med(res["empty"])
	fmt.Printf("%-12s %8s %9s  %s\n", "program", "ns/pkt", "vs empty", "what it does")
	for _, p := range progs {
		fmt.Printf("%-12s %8.0f %+9.0f  %s\n", p.name, med(res[p.name]), med(res[p.name])-base, p.what)
	}
}
