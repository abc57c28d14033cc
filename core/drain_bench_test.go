package core

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/pktstat-bpf/pktstat-bpf/bpf"
	"github.com/pktstat-bpf/pktstat-bpf/internal/benchmem"
)

// benchFlows fills the kernel flow table of objs with n IPv4/IPv6 TCP and UDP
// flows laid out as tc_ingress/tc_egress write them: one value per flow in
// the shared table (one per CPU, first_seen_ns on the first only, if the
// table is per-CPU). grow is added to every value's counters, so a later
// call makes every flow grow; first_seen_ns stays the same, as it does in
// the kernel.
func benchFlows(b testing.TB, m *ebpf.Map, n int, grow uint64) {
	b.Helper()
	ncpu := lanesOf(b, m)
	keys := make([]bpf.FlowFlowKey, n)
	vals := make([]counters, n*ncpu)
	for i := range keys {
		k := &keys[i]
		k.Ifindex = 2
		k.Direction = uint8(i & 1)
		k.IpProto = 6
		if i%3 == 2 {
			k.IpProto = 17
		}
		k.SrcPort, k.DstPort = uint16(1024+i%60000), 443
		if i%4 == 3 {
			k.EthProto = EtherTypeIPv6
			k.SrcAddr = [16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)}
			k.DstAddr = [16]byte{0x20, 0x01, 0x0d, 0xb8, 1, 15: 1}
		} else {
			k.EthProto = EtherTypeIPv4
			k.SrcAddr = [16]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}
			k.DstAddr = [16]byte{192, 0, 2, 1}
		}
		for c := 0; c < ncpu; c++ {
			v := &vals[i*ncpu+c]
			v.Packets = uint64(1+i%7) + grow
			v.Bytes = v.Packets * 800
			if c == 0 {
				v.FirstSeenNs = benchEpoch - uint64(i)
			}
		}
	}
	if _, err := m.BatchUpdate(keys, vals, nil); err != nil {
		b.Fatalf("fill flow table: %v", err)
	}
}

// benchEpoch is the first_seen_ns of the bench flows: a monotonic time
// before the benchmark started.
var benchEpoch = func() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano()) - uint64(time.Minute)
}()

// benchCollector is a started Collector around objs without attachments: Read
// drains the tables exactly as it does for an attached capture, with the
// walk where the kernel has it unless batch is set.
func benchCollector(b testing.TB, objs *bpf.FlowObjects, batch bool) *Collector {
	b.Helper()
	c := &Collector{cfg: Config{Mode: ModeTC, MaxFlows: DefaultMaxFlows}.withDefaults(), started: true, flowObjs: nil}
	var err error
	if c.flows, err = newTable[bpf.FlowFlowKey](objs.Flows); err != nil {
		b.Fatal(err)
	}
	c.flows.reserve = c.reserveRecords
	if !batch {
		useWalker(c.flows, walkFlows, c.cfg.Logger)
		b.Cleanup(c.flows.walk.close)
	}
	if err := c.startOverflow(objs.FlowsOverflow, objs.FlowsOverflowTotal); err != nil {
		b.Fatal(err)
	}
	c.ifaces = &ifaceSet{ns: &nsContext{}, names: map[int]string{2: "eth0"}}
	return c
}

func readAll(b testing.TB, c *Collector, want int) {
	snap, err := c.Read(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	if len(snap.Records) != want {
		b.Fatalf("drained %d records, want %d", len(snap.Records), want)
	}
}

// readEach drains c by ReadFunc, summing what a consumer would, and checks
// the number of records and their packets against the table's.
func readEach(b testing.TB, c *Collector, want int, wantPackets uint64) {
	var n int
	var packets uint64
	if _, err := c.ReadFunc(context.Background(), func(r *Record) {
		n++
		packets += r.Packets
	}); err != nil {
		b.Fatal(err)
	}
	if n != want || packets != wantPackets {
		b.Fatalf("drained %d records of %d packets, want %d of %d", n, packets, want, wantPackets)
	}
}

// benchPackets is the packets benchFlows(n, grow) puts in the table.
func benchPackets(n int, grow uint64) uint64 {
	var p uint64
	for i := range n {
		p += uint64(1+i%7) + grow
	}
	return p
}

// BenchmarkDrain measures Collector.Read on a full table: the first drain
// (every flow new to user space) and a steady-state drain (every flow known,
// every counter grown), read by the walk where the kernel has it; and, as
// the baseline in the same run, the steady drain by batch lookups
// (steady-batch); and the steady drain by ReadFunc, which keeps no records
// (steady-func). Run by `make bench`, never by `make test`.
func BenchmarkDrain(b *testing.B) {
	for _, n := range []int{10000, DefaultMaxFlows} {
		objs := loadFlowForTest(b, DefaultMaxFlows)
		benchFlows(b, objs.Flows, n, 0)
		b.Run(fmt.Sprintf("flows=%d/first", n), func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				c := benchCollector(b, objs, false)
				b.StartTimer()
				readAll(b, c, n)
			}
			b.ReportMetric(float64(n), "flows")
		})
		for _, batch := range []bool{false, true} {
			name := fmt.Sprintf("flows=%d/steady", n)
			if batch {
				name += "-batch"
			}
			b.Run(name, func(b *testing.B) {
				before := benchmem.Live()
				c := benchCollector(b, objs, batch)
				readAll(b, c, n)
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					benchFlows(b, objs.Flows, n, uint64(i+1))
					b.StartTimer()
					readAll(b, c, n)
				}
				b.ReportMetric(float64(n), "flows")
				// The collector's state and the records of the last Read.
				benchmem.ReportPerFlow(b, before, n)
				runtime.KeepAlive(c)
			})
		}
		b.Run(fmt.Sprintf("flows=%d/steady-func", n), func(b *testing.B) {
			before := benchmem.Live()
			c := benchCollector(b, objs, false)
			grow := uint64(0)
			benchFlows(b, objs.Flows, n, grow) // the earlier runs grew the flows
			readEach(b, c, n, benchPackets(n, grow))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				grow = uint64(i + 1)
				benchFlows(b, objs.Flows, n, grow)
				want := benchPackets(n, grow)
				b.StartTimer()
				readEach(b, c, n, want)
			}
			b.ReportMetric(float64(n), "flows")
			// The collector's state alone: no record outlives its call.
			benchmem.ReportPerFlow(b, before, n)
			runtime.KeepAlive(c)
		})
	}
}
