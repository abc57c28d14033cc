package core

import (
	"testing"

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
