package core

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"
	"golang.org/x/sys/unix"

	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// requireWalk fails, or skips where the kernel is declared to lack
// bpf_for_each_map_elem (5.10), when t's flow table is read by batch
// lookups instead of the walk.
func requireWalk[K comparable](t *testing.T, tb *table[K]) {
	t.Helper()
	if tb.walk == nil {
		skipLacking(t, "map_walk", "the flow table is read by batch lookups: this kernel cannot load walk.c (bpf_for_each_map_elem, 5.13)")
	}
	checkNotDeclaredLacking(t, "map_walk")
}

// The walk and the batch lookups read one table into the same records:
// every key once, with its counts, deltas and start, at the first drain and
// after every counter grew.
func TestWalkReadsWhatBatchReads(t *testing.T) {
	const n = 30000
	objs := loadFlowForTest(t, DefaultMaxFlows)
	benchFlows(t, objs.Flows, n, 0)
	walk := benchCollector(t, objs, false)
	requireWalk(t, walk.flows)
	batch := benchCollector(t, objs, true)
	if batch.flows.walk != nil {
		t.Fatal("the batch collector has a walker")
	}
	// One clock for both, so that equal kernel times are equal starts.
	walk.clockOffset = readClock(0).offset
	batch.clockOffset = walk.clockOffset
	for round := range 3 {
		if round > 0 {
			benchFlows(t, objs.Flows, n, uint64(round*5))
		}
		got, want := read(t, walk), read(t, batch)
		if len(got.Records) != n || len(want.Records) != n {
			t.Fatalf("round %d: the walk read %d records, the batch lookups %d, want %d", round, len(got.Records), len(want.Records), n)
		}
		byKey := make(map[FlowKey]Record, n)
		for _, r := range want.Records {
			byKey[r.FlowKey] = r
		}
		for _, r := range got.Records {
			w, ok := byKey[r.FlowKey]
			if !ok {
				t.Fatalf("round %d: the walk read %+v, which the batch lookups did not", round, r.FlowKey)
			}
			delete(byKey, r.FlowKey)
			if r.Packets != w.Packets || r.Bytes != w.Bytes || r.DeltaPackets != w.DeltaPackets || r.DeltaBytes != w.DeltaBytes ||
				!r.StartTime.Equal(w.StartTime) || r.TCP != w.TCP {
				t.Fatalf("round %d: %+v\nwalk:  %d packets %d bytes, delta %d/%d, start %v, tcp %+v\nbatch: %d packets %d bytes, delta %d/%d, start %v, tcp %+v",
					round, r.FlowKey, r.Packets, r.Bytes, r.DeltaPackets, r.DeltaBytes, r.StartTime, r.TCP,
					w.Packets, w.Bytes, w.DeltaPackets, w.DeltaBytes, w.StartTime, w.TCP)
			}
			if round > 0 && r.DeltaPackets != 5 {
				t.Fatalf("round %d: %+v grew by %d packets, want 5", round, r.FlowKey, r.DeltaPackets)
			}
		}
		if len(byKey) != 0 {
			t.Fatalf("round %d: %d flows the batch lookups read were not walked", round, len(byKey))
		}
	}
}

// A started capture reads its flow table by the walk in tc, xdp, cgroup and
// kprobe modes, and the exact-count tests of real traffic hold with the batch
// lookups too (they run with the walk by default).
func TestDrainReaders(t *testing.T) {
	for _, mode := range []Mode{ModeTC, ModeXDP, ModeCgroup} {
		t.Run(string(mode)+" walks", func(t *testing.T) {
			p := nettest.NewPair(t)
			cfg := Config{Mode: mode, Interfaces: []string{p.IfA}, NetNS: p.NSPathA()}
			if mode == ModeCgroup {
				abs, _ := testCgroup(t)
				cfg = Config{Mode: mode, CgroupPath: abs}
			}
			c := startCollector(t, cfg)
			if mode == ModeCgroup {
				requireWalk(t, c.cgFlows)
				return
			}
			requireWalk(t, c.flows)
		})
	}
	// Where the kernel has kprobes or fentry (the guests).
	t.Run("kprobe walks", func(t *testing.T) {
		c := startKprobe(t, KprobeAttachAuto)
		requireWalk(t, c.kp.flows)
	})
	t.Run("batch", func(t *testing.T) {
		batchOnly = true
		t.Cleanup(func() { batchOnly = false })
		t.Run("TestInterfaceModesCountExactly", TestInterfaceModesCountExactly)
		t.Run("TestIdleFlowsExpire", TestIdleFlowsExpire)
		t.Run("TestOverflowOnRealTraffic", TestOverflowOnRealTraffic)
	})
}

// Flows created and counted on one CPU while another drains over and over:
// every drain must see every entry that existed when it began exactly once,
// or the drain would take a missed entry for one that left, report it
// expired and then count it again from zero. So the deltas of every read
// sum to each flow's packets, no live flow is reported expired, and the
// last read has every flow once. Packets are single BPF_PROG_TEST_RUN runs,
// which the kernel never repeats.
func TestDrainWhileFlowsAreCreated(t *testing.T) {
	cpus := twoCPUs(t)
	for _, batch := range []bool{false, true} {
		name := "walk"
		if batch {
			name = "batch"
		}
		t.Run(name, func(t *testing.T) {
			const waves, perWave = 4, 5000
			objs := loadFlowForTest(t, DefaultMaxFlows)
			c := benchCollector(t, objs, batch)
			if !batch {
				requireWalk(t, c.flows)
			}
			pkts := make([][]byte, waves*perWave)
			for i := range pkts {
				udp := &layers.UDP{SrcPort: layers.UDPPort(10000 + i), DstPort: 9999}
				pkts[i] = serialize(t, eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolUDP), udp, gopacket.Payload(make([]byte, 32)))
			}
			stop := make(chan struct{})
			type result struct {
				deltas  map[uint16]uint64 // by source port
				expired int
				reads   int
				err     error
			}
			done := make(chan result)
			go func() {
				r := result{deltas: map[uint16]uint64{}}
				defer func() { done <- r }()
				// Locked for good: the thread, bound to one CPU, ends with
				// the goroutine.
				runtime.LockOSThread()
				if r.err = bindCPU(cpus[1]); r.err != nil {
					return
				}
				for {
					select {
					case <-stop:
						return
					default:
					}
					s, err := c.Read(t.Context())
					if err != nil {
						r.err = err
						return
					}
					r.reads++
					for _, rec := range s.Records {
						if rec.Overflow {
							continue
						}
						r.deltas[rec.SrcPort] += rec.DeltaPackets
						if rec.Expired {
							r.expired++
						}
					}
				}
			}()
			// Wave w creates its flows and counts one more packet for every
			// flow made before: a flow of wave w ends with waves-w packets.
			runErr := func() error {
				// Locked for good, as above: the subtest's thread ends
				// with it.
				runtime.LockOSThread()
				if err := bindCPU(cpus[0]); err != nil {
					return err
				}
				for w := range waves {
					for i := range (w + 1) * perWave {
						if _, err := objs.TcIngress.Run(&ebpf.RunOptions{Data: pkts[i]}); err != nil {
							return err
						}
					}
				}
				return nil
			}()
			close(stop)
			r := <-done
			if runErr != nil || r.err != nil {
				t.Fatalf("traffic: %v, drain: %v", runErr, r.err)
			}
			last := read(t, c)
			n := 0
			for _, rec := range last.Records {
				if rec.Overflow {
					continue
				}
				n++
				r.deltas[rec.SrcPort] += rec.DeltaPackets
				i := int(rec.SrcPort) - 10000
				want := uint64(waves - i/perWave)
				if rec.Packets != want || r.deltas[rec.SrcPort] != want || rec.Expired {
					t.Fatalf("flow from port %d: %d packets, deltas summing to %d over %d reads, expired %v; want %d",
						rec.SrcPort, rec.Packets, r.deltas[rec.SrcPort], r.reads+1, rec.Expired, want)
				}
			}
			if n != waves*perWave || r.expired != 0 || last.Health.OverflowPackets != 0 {
				t.Fatalf("last read has %d flows of %d; %d expired reports during the traffic; %d packets in overflow",
					n, waves*perWave, r.expired, last.Health.OverflowPackets)
			}
			t.Logf("%d reads while %d flows were created and counted", r.reads, n)
		})
	}
}

// bindCPU binds the calling thread, which its goroutine has locked, to cpu.
func bindCPU(cpu int) error {
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return fmt.Errorf("bind to CPU %d: %w", cpu, err)
	}
	return nil
}
