package core

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sync"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// startCPUs is the CPU set the test process started with, read before any
// test binds a thread: a thread's own set, which twoCPUs used to read, is
// whatever an earlier test left on the thread the goroutine runs on.
var startCPUs, startCPUsErr = func() (unix.CPUSet, error) {
	var set unix.CPUSet
	err := unix.SchedGetaffinity(0, &set)
	return set, err
}()

// twoCPUs returns two CPUs this test may run on, failing when there is one
// and BPF tests are required (a race between CPUs needs two).
func twoCPUs(t *testing.T) [2]int {
	t.Helper()
	if startCPUsErr != nil {
		t.Fatal(startCPUsErr)
	}
	var cpus []int
	for i := 0; i < 1024 && len(cpus) < 2; i++ {
		if startCPUs.IsSet(i) {
			cpus = append(cpus, i)
		}
	}
	if len(cpus) < 2 {
		if os.Getenv("PKTSTAT_REQUIRE_BPF") == "1" {
			t.Fatalf("only CPU %v to run on: counting on two CPUs at once needs two", cpus)
		}
		t.Skip("needs two CPUs")
	}
	return [2]int{cpus[0], cpus[1]}
}

// runOnCPUs runs prog on pkt from two threads at once, each bound to one of
// cpus, runs times repeat packets each; both start together.
func runOnCPUs(t *testing.T, prog *ebpf.Program, pkt []byte, cpus [2]int, runs, repeat int) {
	t.Helper()
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make(chan error, 2)
	for _, cpu := range cpus {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Locked for good: the thread, bound to one CPU, ends with the
			// goroutine instead of going back to the pool with that binding.
			runtime.LockOSThread()
			var set unix.CPUSet
			set.Set(cpu)
			if err := unix.SchedSetaffinity(0, &set); err != nil {
				errs <- fmt.Errorf("bind to CPU %d: %w", cpu, err)
				return
			}
			<-start
			for r := 0; r < runs; r++ {
				if _, err := prog.Run(&ebpf.RunOptions{Data: pkt, Repeat: uint32(repeat)}); err != nil {
					errs <- fmt.Errorf("run on CPU %d: %w", cpu, err)
					return
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// The flow tables hold one value per flow that every CPU adds to (bpf/maps.h,
// bump_shared) instead of one value per CPU: packets of one flow counted on
// two CPUs at the same time must all be there, packets, bytes and TCP flags.
// Plain increments of a shared value lose some of them here. The oracle is
// the kernel's own count of the program's runs (BPF_ENABLE_STATS run_cnt),
// not the runs asked for: a test run interrupted by a signal is run again
// whole by cilium/ebpf, after some of its packets were counted.
func TestSharedCountersExactAcrossCPUs(t *testing.T) {
	fo, co := loadFilteredForTest(t, Filters{})
	cpus := twoCPUs(t)
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		t.Fatalf("enable BPF run statistics: %v", err)
	}
	defer stats.Close()
	tcp := &layers.TCP{SrcPort: 40000, DstPort: 443, Seq: 1, Window: 1024, DataOffset: 5, SYN: true}
	pkt := serialize(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolTCP), tcp, gopacket.Payload(make([]byte, 100)))
	const runs, repeat = 20, 50000
	for _, tc := range []struct {
		name             string
		prog             *ebpf.Program
		flows, ov, ovAll *ebpf.Map
		l3               bool // cgroup_skb starts at the IP header
	}{
		{"tc_ingress", fo.TcIngress, fo.Flows, fo.FlowsOverflow, fo.FlowsOverflowTotal, false},
		{"tc_egress", fo.TcEgress, fo.Flows, fo.FlowsOverflow, fo.FlowsOverflowTotal, false},
		{"xdp_ingress", fo.XdpIngress, fo.Flows, fo.FlowsOverflow, fo.FlowsOverflowTotal, false},
		{"cgroup_egress", co.CgroupEgress, co.CgroupFlows, co.FlowsOverflow, co.FlowsOverflowTotal, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.l3 && !cgroupTestRunSeesData(t, co) {
				skipLacking(t, "cgroup_test_run_data", "BPF_PROG_TEST_RUN gives cgroup_skb no packet data on this kernel")
			}
			if tc.flows.Type() != ebpf.Hash {
				t.Fatalf("%s is a %s, want a shared hash", tc.flows, tc.flows.Type())
			}
			l := uint64(len(pkt))
			if tc.l3 {
				l -= 14
			}
			for _, created := range []bool{true, false} {
				clearAll(t, tc.flows, tc.ov)
				zero := make([]counters, lanesOf(t, tc.ovAll))
				if err := tc.ovAll.Put(uint32(0), zero); err != nil {
					t.Fatal(err)
				}
				before := runCount(t, tc.prog)
				if created {
					runTimes(t, tc.prog, pkt, 1)
				}
				runOnCPUs(t, tc.prog, pkt, cpus, runs, repeat)
				want := runCount(t, tc.prog) - before
				if want < 2*runs*repeat {
					t.Fatalf("the kernel ran %s %d times, fewer than the %d runs asked for", tc.name, want, 2*runs*repeat)
				}
				n, packets, bytes := mapTotals(t, tc.flows)
				syn := flagsTotal(t, tc.flows)
				// Nothing may go missing: a packet that found no room in
				// the flow table is in the overflow tables.
				_, op, ob := mapTotals(t, tc.ov)
				all := make([]counters, lanesOf(t, tc.ovAll))
				if err := tc.ovAll.Lookup(uint32(0), &all); err != nil {
					t.Fatal(err)
				}
				tp, tb, _ := sum(all)
				op, ob = op+tp, ob+tb
				if n != 1 || packets+op != want || bytes+ob != want*l || syn != packets {
					t.Fatalf("entry created first %v: %d entries, %d packets, %d bytes, %d SYN (overflow: %d packets, %d bytes); want 1 entry, %d packets of %d bytes, a SYN each",
						created, n, packets, bytes, syn, op, ob, want, l)
				}
				// With the entry there before, every packet is the
				// entry's. When both CPUs create it at once, the 6.1
				// guest sends one packet per race to overflow (found
				// there, so still counted); more would be a fault.
				if created && op > 0 || op > 2 {
					t.Errorf("entry created first %v: %d of %d packets went to overflow with the flow table holding one entry", created, op, want)
				}
				if op > 0 {
					t.Logf("entry created by both CPUs at once: %d of %d packets in overflow", op, want)
				}
			}
		})
	}
}

// A shared table costs its entries whatever the number of CPUs: at most the
// key, the value and the kernel's own ~60 bytes per entry (and a few pages
// for the table itself), where a per-CPU
// table of the same shape adds the value once per possible CPU. The kernel's
// memory accounting (fdinfo memlock) of the tables a TC-mode Start loads at
// the default max_flows says which one was loaded.
func TestFlowTablesKernelMemory(t *testing.T) {
	nettest.RequireBPF(t)
	ncpu, err := ebpf.PossibleCPU()
	if err != nil {
		t.Fatal(err)
	}
	saved := defaultMaxFlows
	defaultMaxFlows = DefaultMaxFlows
	t.Cleanup(func() { defaultMaxFlows = saved })
	p := nettest.NewPair(t)
	c, err := New(Config{Interfaces: []string{p.IfA}, NetNS: p.NSPathA()})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tables := []*ebpf.Map{c.flows.m}
	if c.tcpsock != nil {
		tables = append(tables, c.tcpsock.retrans.m)
	}
	for _, m := range tables {
		used := memlock(t, m)
		perEntry := uint64(m.KeySize() + m.ValueSize() + 64)
		limit := uint64(m.MaxEntries())*perEntry + 1<<20
		if m.MaxEntries() != DefaultMaxFlows || used > limit {
			t.Errorf("%s: %d entries hold %d bytes of kernel memory, want %d entries in at most %d bytes (%d a flow and 1 MiB)",
				m, m.MaxEntries(), used, DefaultMaxFlows, limit, perEntry)
		}
		percpu, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.PerCPUHash, KeySize: m.KeySize(), ValueSize: m.ValueSize(), MaxEntries: m.MaxEntries()})
		if err != nil {
			t.Fatal(err)
		}
		pc := memlock(t, percpu)
		percpu.Close()
		if used >= pc {
			t.Errorf("%s holds %d bytes, a per-CPU table of its shape %d: want less", m, used, pc)
		}
		t.Logf("%s: %.1f MiB of kernel memory; a per-CPU table of the same shape: %.1f MiB (%d possible CPUs)",
			m, float64(used)/(1<<20), float64(pc)/(1<<20), ncpu)
	}
	// The drain's walk array: one record (key and counters) per flow, also
	// charged to the agent and summed in Health.KernelMemory.
	if w := c.flows.walk; w != nil {
		used := memlock(t, w.out)
		limit := uint64(w.out.MaxEntries())*uint64(w.out.ValueSize()) + 1<<20
		if w.out.MaxEntries() != DefaultMaxFlows || used > limit {
			t.Errorf("%s: %d records hold %d bytes of kernel memory, want %d in at most %d", w.out, w.out.MaxEntries(), used, DefaultMaxFlows, limit)
		}
		t.Logf("%s: %.1f MiB of kernel memory", w.out, float64(used)/(1<<20))
		tables = append(tables, w.out)
	}
	snap, err := c.Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var sum uint64
	for _, m := range tables {
		sum += memlock(t, m)
	}
	// Before 6.4 the kernel's memlock is a formula of each map's shape,
	// which counts the small tables as preallocated although they are not;
	// from 6.4 it is what each map holds.
	if got := snap.Health.KernelMemory; got < sum {
		t.Errorf("Health.KernelMemory %d bytes: less than the big tables alone hold, %d", got, sum)
	} else {
		t.Logf("Health.KernelMemory %.1f MiB, of which the flow, retransmit and walk tables %.1f MiB", float64(got)/(1<<20), float64(sum)/(1<<20))
	}
}

// flagsTotal is the SYN count (without ACK) of every entry of m.
func flagsTotal(t *testing.T, m *ebpf.Map) uint64 {
	t.Helper()
	var n uint64
	key := make([]byte, m.KeySize())
	vals := make([]counters, lanesOf(t, m))
	it := m.Iterate()
	for it.Next(&key, &vals) {
		n += uint64(sumTCP(vals)[0])
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// runCount is how many times the kernel has run prog while statistics were on.
func runCount(t *testing.T, prog *ebpf.Program) uint64 {
	t.Helper()
	st, err := prog.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return st.RunCount
}

// memlock is the kernel's accounting of a map's memory (fdinfo memlock).
func memlock(t *testing.T, m *ebpf.Map) uint64 {
	t.Helper()
	info, err := m.Info()
	if err != nil {
		t.Fatal(err)
	}
	n, ok := info.Memlock()
	if !ok {
		t.Fatalf("%s: the kernel reports no memlock", m)
	}
	return n
}
