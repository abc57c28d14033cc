// Command profile splits tc_ingress's per-packet cost into its parts: it
// compiles variants.c (clang-19), runs each variant and the real program
// with BPF_PROG_TEST_RUN on one IPv4/TCP packet, and prints each one's cost
// above an empty program measured alongside; then the table-layout variants
// with 10,000 flows cycling, and a drain of 131,072 flows by batch lookup
// against one read from an mmapped counter array. Run as root from the
// repository root: go run ./bench/profile
package main

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/rlimit"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/pktstat-bpf/pktstat-bpf/bpf"
)

// slots is the table size of the slot design's variants; cycleFlows the
// flows the cyc_* programs visit in turn (both as in variants.c).
const (
	slots      = 131072
	cycleFlows = 10000
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
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		fatal(err)
	}
	spec.Maps["lanes"].MaxEntries = uint32(slots * ncpu)
	if err := spec.Variables["ncpu"].Set(uint32(ncpu)); err != nil {
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
		{"parse_shared", "parse, plain (shared) hash, atomic adds", coll.Programs["parse_shared"]},
		{"parse_hash24", "parse, move the IPv4 fields into a 24-byte key, per-CPU hash", coll.Programs["parse_hash24"]},
		{"slot_lane", "parse, plain hash key -> slot, this CPU's lane of an mmapable array", coll.Programs["slot_lane"]},
		{"slot24_lane", "the same with the 24-byte key", coll.Programs["slot24_lane"]},
		{"slot_shared", "parse, plain hash key -> slot, atomic adds to the slot's one counter", coll.Programs["slot_shared"]},
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

	cycling(coll, pkt, *rounds, med)
	drain(ncpu, *rounds, med)
}

// cycling times the variants with 10,000 flows visited in turn (the
// cyc_* programs rewrite the source address before each run), against the
// rewrite alone, after a first pass has created every flow.
func cycling(coll *ebpf.Collection, pkt []byte, rounds int, med func([]float64) float64) {
	names := []string{"cyc_empty", "cyc_parse_hash", "cyc_parse_shared", "cyc_parse_hash24", "cyc_slot_lane", "cyc_slot24_lane", "cyc_slot_shared"}
	res := map[string][]float64{}
	for _, n := range names {
		if _, _, err := coll.Programs[n].Benchmark(pkt, 2*cycleFlows, nil); err != nil {
			fatal(fmt.Errorf("run %s: %w", n, err))
		}
	}
	for _, m := range []string{"flows", "flows_shared", "flows24", "slot_of", "slot_of24"} {
		if got := entries(coll.Maps[m]); got < cycleFlows {
			fatal(fmt.Errorf("map %s holds %d flows after the first pass, want at least %d", m, got, cycleFlows))
		}
	}
	for r := 0; r < rounds; r++ {
		for _, n := range names {
			_, d, err := coll.Programs[n].Benchmark(pkt, 100000, nil)
			if err != nil {
				fatal(fmt.Errorf("run %s: %w", n, err))
			}
			res[n] = append(res[n], float64(d.Nanoseconds()))
		}
	}
	base := med(res["cyc_empty"])
	fmt.Printf("\n%d flows cycling (each row: the source rewrite, then the variant)\n", cycleFlows)
	fmt.Printf("%-17s %8s %9s\n", "program", "ns/pkt", "vs rewrite")
	for _, n := range names {
		fmt.Printf("%-17s %8.0f %+9.0f\n", n, med(res[n]), med(res[n])-base)
	}
}

// entries counts the keys of a hash map.
func entries(m *ebpf.Map) int {
	n := 0
	var prev any // nil: start from the first key
	k := make([]byte, m.KeySize())
	for m.NextKey(prev, &k) == nil {
		n++
		prev = k
	}
	return n
}

// drain times what a drain of a full table costs in each design: the
// per-CPU hash copied out with BPF_MAP_LOOKUP_BATCH, as core does today,
// against summing each slot's counters straight from an mmapped array (one
// lane per CPU, or one shared lane). The slot design still has to learn the
// key of each new slot; that is once per flow, not per drain, and not timed.
func drain(ncpu, rounds int, med func([]float64) float64) {
	type counters = bpf.FlowFlowCounters
	hash, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerCPUHash, KeySize: 48, ValueSize: 48, MaxEntries: slots})
	if err != nil {
		fatal(err)
	}
	defer hash.Close()
	keys := make([]bpf.FlowFlowKey, slots)
	vals := make([]counters, slots*ncpu)
	for i := range keys {
		keys[i].SrcAddr = [16]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}
		keys[i].Ifindex = 2
		keys[i].EthProto = 0x0800
		for c := 0; c < ncpu; c++ {
			vals[i*ncpu+c] = counters{Packets: uint64(i), Bytes: uint64(i) * 100}
		}
	}
	if n, err := hash.BatchUpdate(keys, vals, nil); err != nil || n != slots {
		fatal(fmt.Errorf("fill the per-CPU hash: %d of %d: %v", n, slots, err))
	}
	// A shared hash, as core's flow tables are since the third pass: read
	// by batch lookup, and walked by core's walk program (bpf/walk.c).
	shash, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 48, ValueSize: 48, MaxEntries: slots})
	if err != nil {
		fatal(err)
	}
	defer shash.Close()
	walkSpec, err := bpf.LoadWalk()
	if err != nil {
		fatal(err)
	}
	delete(walkSpec.Programs, bpf.WalkProgWalkCgroupFlows)
	delete(walkSpec.Maps, bpf.WalkMapCgroupFlows)
	delete(walkSpec.Maps, bpf.WalkMapCgroupFlowsWalked)
	walkColl, err := ebpf.NewCollectionWithOptions(walkSpec, ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{bpf.WalkMapFlows: shash}})
	if err != nil {
		fatal(fmt.Errorf("load the walk program: %w", err))
	}
	defer walkColl.Close()
	if n, err := shash.BatchUpdate(keys, vals[:slots], nil); err != nil || n != slots {
		fatal(fmt.Errorf("fill the shared hash: %d of %d: %v", n, slots, err))
	}
	mmapped := func(lanes int) (*ebpf.Map, []counters) {
		m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 48, MaxEntries: uint32(slots * lanes), Flags: unix.BPF_F_MMAPABLE})
		if err != nil {
			fatal(err)
		}
		mem, err := unix.Mmap(m.FD(), 0, slots*lanes*48, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			fatal(fmt.Errorf("mmap the counter array: %w", err))
		}
		cs := unsafe.Slice((*counters)(unsafe.Pointer(&mem[0])), slots*lanes)
		for i := range cs {
			cs[i] = counters{Packets: uint64(i), Bytes: uint64(i) * 100}
		}
		return m, cs
	}
	laneMap, laneMem := mmapped(ncpu)
	defer laneMap.Close()
	sharedMap, sharedMem := mmapped(1)
	defer sharedMap.Close()

	type sums struct{ packets, bytes uint64 }
	out := make([]sums, slots)
	bk := make([]bpf.FlowFlowKey, 4096)
	bv := make([]counters, 4096*ncpu)
	readHash := func() {
		var cur ebpf.MapBatchCursor
		i := 0
		for {
			n, err := hash.BatchLookup(&cur, bk, bv, nil)
			for j := 0; j < n; j++ {
				var s sums
				for _, v := range bv[j*ncpu : (j+1)*ncpu] {
					s.packets += v.Packets
					s.bytes += v.Bytes
				}
				out[i] = s
				i++
			}
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				break
			}
			if err != nil {
				fatal(fmt.Errorf("batch lookup: %w", err))
			}
		}
		if i != slots {
			fatal(fmt.Errorf("batch lookup returned %d of %d entries", i, slots))
		}
	}
	sbv := make([]counters, 4096)
	readShared := func() {
		var cur ebpf.MapBatchCursor
		i := 0
		for {
			n, err := shash.BatchLookup(&cur, bk, sbv, nil)
			for j := 0; j < n; j++ {
				out[i] = sums{sbv[j].Packets, sbv[j].Bytes}
				i++
			}
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				break
			}
			if err != nil {
				fatal(fmt.Errorf("batch lookup: %w", err))
			}
		}
		if i != slots {
			fatal(fmt.Errorf("batch lookup returned %d of %d entries", i, slots))
		}
	}
	// One record of walk_flows (struct flow_rec): the key, then the counters.
	type rec struct {
		key bpf.FlowFlowKey
		val counters
	}
	wmem, err := unix.Mmap(walkColl.Maps[bpf.WalkMapFlowsWalked].FD(), 0, slots*int(unsafe.Sizeof(rec{})), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		fatal(fmt.Errorf("mmap flows_walked: %w", err))
	}
	defer unix.Munmap(wmem)
	recs := unsafe.Slice((*rec)(unsafe.Pointer(&wmem[0])), slots)
	walk := walkColl.Programs[bpf.WalkProgWalkFlows]
	readWalk := func() {
		n, err := walk.Run(&ebpf.RunOptions{Data: make([]byte, 14)})
		if err != nil {
			fatal(fmt.Errorf("run walk_flows: %w", err))
		}
		if n != slots {
			fatal(fmt.Errorf("walk_flows returned %d of %d entries", n, slots))
		}
		for i := range recs[:n] {
			out[i] = sums{recs[i].val.Packets, recs[i].val.Bytes}
		}
	}
	readLanes := func(cs []counters, lanes int) func() {
		return func() {
			for i := range out {
				var s sums
				for _, v := range cs[i*lanes : (i+1)*lanes] {
					s.packets += v.Packets
					s.bytes += v.Bytes
				}
				out[i] = s
			}
		}
	}
	ways := []struct {
		name, what string
		read       func()
	}{
		{"batch_percpu", "BPF_MAP_LOOKUP_BATCH of the per-CPU hash, 4,096 a call, summed", readHash},
		{"batch_shared", "BPF_MAP_LOOKUP_BATCH of the shared hash (core's tables), 4,096 a call", readShared},
		{"walk_shared", "the shared hash walked by core's walk_flows (bpf/walk.c) into an mmapped array, read in place", readWalk},
		{"mmap_lanes", "sum of each slot's per-CPU lanes, read from the mmapped array", readLanes(laneMem, ncpu)},
		{"mmap_shared", "each slot's one counter, read from the mmapped array", readLanes(sharedMem, 1)},
	}
	res := map[string][]float64{}
	for r := 0; r < rounds; r++ {
		for _, w := range ways {
			t0 := time.Now()
			w.read()
			res[w.name] = append(res[w.name], float64(time.Since(t0).Microseconds())/1000)
		}
	}
	fmt.Printf("\ndrain of %d flows, %d possible CPUs (ms per read, median of %d)\n", slots, ncpu, rounds)
	for _, w := range ways {
		fmt.Printf("%-13s %8.1f  %s\n", w.name, med(res[w.name]), w.what)
	}
}
