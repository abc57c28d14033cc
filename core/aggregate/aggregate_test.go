package aggregate

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pktstat-bpf/pktstat-bpf/core"
)

var t0 = time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)

func at(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }

// rec is a record whose delta is its whole count, as on a flow's first Read.
func rec(fk core.FlowKey, packets, bytes uint64, start time.Time) core.Record {
	return core.Record{
		FlowKey: fk, Interface: "eth0",
		Packets: packets, Bytes: bytes, DeltaPackets: packets, DeltaBytes: bytes,
		StartTime: start, LastSeen: start,
	}
}

// next is the same flow one Read later, dp packets and db bytes bigger.
func next(r core.Record, dp, db uint64, now time.Time) core.Record {
	r.Packets += dp
	r.Bytes += db
	r.DeltaPackets, r.DeltaBytes = dp, db
	if dp != 0 || db != 0 {
		r.LastSeen = now
	}
	return r
}

func mustNew(t testing.TB, cfg Config) *Aggregator {
	t.Helper()
	a, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func checkConserved(t *testing.T, in []core.Record, out []*Series) {
	t.Helper()
	var ip, ib, ir, op, ob, or uint64
	for _, r := range in {
		ip += r.DeltaPackets
		ib += r.DeltaBytes
		ir += r.DeltaRetransmits
	}
	for _, s := range out {
		op += s.DeltaPackets
		ob += s.DeltaBytes
		or += s.DeltaRetransmits
	}
	if ip != op || ib != ob || ir != or {
		t.Errorf("totals not conserved: in %d packets %d bytes %d retransmits, out %d packets %d bytes %d retransmits", ip, ib, ir, op, ob, or)
	}
	var it, ot core.TCPFlagCounts
	for _, r := range in {
		it = it.Add(r.DeltaTCP)
	}
	for _, s := range out {
		ot = ot.Add(s.DeltaTCP)
	}
	if it != ot {
		t.Errorf("TCP flag totals not conserved: in %+v, out %+v", it, ot)
	}
}

func checkSeries(t *testing.T, out []*Series, want []Series) {
	t.Helper()
	// Slot and Born are handles for the adapters' caches, checked by
	// TestSlots; the expected series are written without them.
	got := make([]Series, len(out))
	for i, s := range out {
		got[i] = *s
		got[i].Slot, got[i].Born = 0, false
	}
	if !slices.EqualFunc(got, want, sameSeries) {
		t.Errorf("series\n got %s\nwant %s", dump(out), dump(ptrs(want)))
	}
}

// sameSeries compares RTT by value.
func sameSeries(x, y Series) bool {
	rx, ry := x.RTT, y.RTT
	x.RTT, y.RTT = nil, nil
	return x == y && (rx == nil) == (ry == nil) && (rx == nil || *rx == *ry)
}

func ptrs(ss []Series) []*Series {
	p := make([]*Series, len(ss))
	for i := range ss {
		p[i] = &ss[i]
	}
	return p
}

func dump(ss []*Series) string {
	var b strings.Builder
	for _, s := range ss {
		fmt.Fprintf(&b, "\n  kind=%d %s%s:%d->%s%s:%d(f%t,%t) if=%q cum=%d/%d delta=%d/%d start=%s",
			s.Kind, s.Labels().SrcGroup, s.SrcAddr, s.SrcPort, s.Labels().DstGroup, s.DstAddr, s.DstPort, s.SrcPortFolded, s.DstPortFolded, s.Interface,
			s.Packets, s.Bytes, s.DeltaPackets, s.DeltaBytes, s.StartTime.Sub(t0))
	}
	return b.String()
}

func TestDroppedAndFoldedPartsAreSummed(t *testing.T) {
	a := mustNew(t, Config{
		Dimensions: []Dimension{DimDstIP, DimSrcPort, DimDstPort},
		FoldPorts:  FoldEphemeral,
	})
	in := []core.Record{
		rec(tcp4("10.0.0.2", 50001, "10.0.0.1", 443), 10, 1000, at(-30)),
		rec(tcp4("10.0.0.3", 50002, "10.0.0.1", 443), 20, 2000, at(-20)),
		rec(tcp4("10.0.0.4", 50003, "10.0.0.1", 80), 1, 60, at(-10)),
		rec(tcp4("10.0.0.5", 60000, "10.0.0.1", 443), 3, 300, at(-40)),
	}
	out := a.Aggregate(at(0), in)
	dst := netip.MustParseAddr("10.0.0.1")
	checkSeries(t, out, []Series{
		{Key: Key{DstAddr: dst, HasPorts: true, SrcPortFolded: true, DstPort: 443}, Packets: 33, Bytes: 3300, DeltaPackets: 33, DeltaBytes: 3300, StartTime: at(-40)},
		{Key: Key{DstAddr: dst, HasPorts: true, SrcPortFolded: true, DstPort: 80}, Packets: 1, Bytes: 60, DeltaPackets: 1, DeltaBytes: 60, StartTime: at(-10)},
	})
	checkConserved(t, in, out)
	if got := a.Dimensions(); !slices.Equal(got, []Dimension{DimDstIP, DimSrcPort, DimDstPort}) {
		t.Errorf("Dimensions() = %v", got)
	}
}

func TestGroupsAreSummed(t *testing.T) {
	a := mustNew(t, Config{
		Dimensions:       []Dimension{DimSrcIP, DimDstIP},
		CIDRGroups:       []CIDRGroup{{"office", "10.1.0.0/16"}, {"servers", "10.9.0.0/24"}},
		UngroupedAsOther: true,
	})
	in := []core.Record{
		rec(tcp4("10.1.0.5", 1, "10.9.0.1", 443), 1, 100, at(-5)),
		rec(tcp4("10.1.7.5", 2, "10.9.0.2", 443), 2, 200, at(-5)),
		rec(tcp4("192.0.2.1", 3, "10.9.0.3", 22), 4, 400, at(-5)),
		rec(tcp4("198.51.100.1", 4, "10.9.0.3", 22), 8, 800, at(-5)),
	}
	out := a.Aggregate(at(0), in)
	checkSeries(t, out, []Series{
		{Key: Key{}.WithLabels(Labels{SrcGroup: "office", DstGroup: "servers"}), Packets: 3, Bytes: 300, DeltaPackets: 3, DeltaBytes: 300, StartTime: at(-5)},
		{Key: Key{}.WithLabels(Labels{SrcGroup: Other, DstGroup: "servers"}), Packets: 12, Bytes: 1200, DeltaPackets: 12, DeltaBytes: 1200, StartTime: at(-5)},
	})
	checkConserved(t, in, out)
}

func TestTopN(t *testing.T) {
	a := mustNew(t, Config{Dimensions: []Dimension{DimDstPort}, TopN: 2})
	flows := []core.Record{
		rec(tcp4("10.0.0.2", 1, "10.0.0.1", 1), 5, 500, at(-10)),
		rec(tcp4("10.0.0.2", 1, "10.0.0.1", 2), 4, 400, at(-10)),
		rec(tcp4("10.0.0.2", 1, "10.0.0.1", 3), 3, 300, at(-10)),
		rec(tcp4("10.0.0.2", 1, "10.0.0.1", 4), 2, 200, at(-10)),
		rec(tcp4("10.0.0.2", 1, "10.0.0.1", 5), 1, 100, at(-10)),
	}
	out := a.Aggregate(at(0), flows)
	checkSeries(t, out, []Series{
		{Key: Key{HasPorts: true, DstPort: 1}, Packets: 5, Bytes: 500, DeltaPackets: 5, DeltaBytes: 500, StartTime: at(-10)},
		{Key: Key{HasPorts: true, DstPort: 2}, Packets: 4, Bytes: 400, DeltaPackets: 4, DeltaBytes: 400, StartTime: at(-10)},
		{Kind: KindOther, Packets: 6, Bytes: 600, DeltaPackets: 6, DeltaBytes: 600, StartTime: at(-10)},
	})
	checkConserved(t, flows, out)

	// Port 4 jumps to the top, port 1 falls out: port 1's series stays at
	// its total (no growth) and its new bytes go to other; port 4's new
	// series counts from the previous call, so its start is at(0).
	in := []core.Record{
		next(flows[0], 1, 10, at(10)),
		next(flows[1], 4, 400, at(10)),
		next(flows[2], 0, 0, at(10)),
		next(flows[3], 10, 1000, at(10)),
		next(flows[4], 1, 100, at(10)),
	}
	out = a.Aggregate(at(10), in)
	checkSeries(t, out, []Series{
		{Key: Key{HasPorts: true, DstPort: 1}, Packets: 5, Bytes: 500, StartTime: at(-10)},
		{Key: Key{HasPorts: true, DstPort: 2}, Packets: 8, Bytes: 800, DeltaPackets: 4, DeltaBytes: 400, StartTime: at(-10)},
		{Key: Key{HasPorts: true, DstPort: 4}, Packets: 10, Bytes: 1000, DeltaPackets: 10, DeltaBytes: 1000, StartTime: at(0)},
		{Kind: KindOther, Packets: 8, Bytes: 710, DeltaPackets: 2, DeltaBytes: 110, StartTime: at(-10)},
	})
	checkConserved(t, in, out)
}

func TestTopNTies(t *testing.T) {
	a := mustNew(t, Config{Dimensions: []Dimension{DimDstPort}, TopN: 1})
	first := []core.Record{
		rec(tcp4("10.0.0.2", 1, "10.0.0.1", 9), 1, 100, at(-1)),
		rec(tcp4("10.0.0.2", 1, "10.0.0.1", 8), 1, 50, at(-1)),
	}
	a.Aggregate(at(0), first)
	// Equal bytes and packets: the key that already has a series keeps
	// it, although port 8 sorts first.
	in := []core.Record{next(first[0], 1, 70, at(10)), next(first[1], 1, 70, at(10))}
	out := a.Aggregate(at(10), in)
	if out[0].DstPort != 9 || out[0].DeltaBytes != 70 {
		t.Errorf("tie went to the key without a series: %s", dump(out))
	}
	// Equal bytes: more packets win.
	b := mustNew(t, Config{Dimensions: []Dimension{DimDstPort}, TopN: 1})
	out = b.Aggregate(at(0), []core.Record{
		rec(tcp4("10.0.0.2", 1, "10.0.0.1", 1), 1, 1500, at(-1)),
		rec(tcp4("10.0.0.2", 1, "10.0.0.1", 2), 25, 1500, at(-1)),
	})
	if out[0].DstPort != 2 {
		t.Errorf("tie on bytes went to fewer packets: %s", dump(out))
	}
	// Neither has a series: the lower key wins, whatever the input order.
	for _, order := range [][]uint16{{7, 6}, {6, 7}} {
		a := mustNew(t, Config{Dimensions: []Dimension{DimDstPort}, TopN: 1})
		var in []core.Record
		for _, p := range order {
			in = append(in, rec(tcp4("10.0.0.2", 1, "10.0.0.1", p), 1, 100, at(-1)))
		}
		if out := a.Aggregate(at(0), in); out[0].Kind != KindFlow || out[0].DstPort != 6 {
			t.Errorf("order %v: %s", order, dump(out))
		}
	}
}

func TestMaxSeries(t *testing.T) {
	a := mustNew(t, Config{Dimensions: []Dimension{DimDstPort}, MaxSeries: 3})
	var flows []core.Record
	for p := uint16(1); p <= 5; p++ {
		flows = append(flows, rec(tcp4("10.0.0.2", 1, "10.0.0.1", p), uint64(p), 100*uint64(p), at(-10)))
	}
	out := a.Aggregate(at(0), flows)
	checkSeries(t, out, []Series{
		{Key: Key{HasPorts: true, DstPort: 4}, Packets: 4, Bytes: 400, DeltaPackets: 4, DeltaBytes: 400, StartTime: at(-10)},
		{Key: Key{HasPorts: true, DstPort: 5}, Packets: 5, Bytes: 500, DeltaPackets: 5, DeltaBytes: 500, StartTime: at(-10)},
		{Kind: KindOther, Packets: 6, Bytes: 600, DeltaPackets: 6, DeltaBytes: 600, StartTime: at(-10)},
	})
	checkConserved(t, flows, out)

	// Only port 1 grows. Its new series, idle ports 4 and 5 and idle other
	// would make four; the three idle ones all last grew at at(0), so the
	// tie keeps other and the key seen first (port 4). Flow series are
	// listed in the order their keys were first seen.
	in := []core.Record{next(flows[0], 7, 7000, at(10))}
	out = a.Aggregate(at(10), in)
	checkSeries(t, out, []Series{
		{Key: Key{HasPorts: true, DstPort: 1}, Packets: 7, Bytes: 7000, DeltaPackets: 7, DeltaBytes: 7000, StartTime: at(0)},
		{Key: Key{HasPorts: true, DstPort: 4}, Packets: 4, Bytes: 400, StartTime: at(-10)},
		{Kind: KindOther, Packets: 6, Bytes: 600, StartTime: at(-10)},
	})
	checkConserved(t, in, out)

	// Port 5 grows again: it was pushed out, so it is a new series with a
	// later start and a count from zero, not a regression of the old one.
	// Port 4, idle longest, now makes way for it.
	in = []core.Record{next(flows[4], 1, 10, at(20))}
	out = a.Aggregate(at(20), in)
	checkSeries(t, out, []Series{
		{Key: Key{HasPorts: true, DstPort: 1}, Packets: 7, Bytes: 7000, StartTime: at(0)},
		{Key: Key{HasPorts: true, DstPort: 5}, Packets: 1, Bytes: 10, DeltaPackets: 1, DeltaBytes: 10, StartTime: at(10)},
		{Kind: KindOther, Packets: 6, Bytes: 600, StartTime: at(-10)},
	})
}

func TestMaxSeriesOne(t *testing.T) {
	a := mustNew(t, Config{MaxSeries: 1})
	in := []core.Record{
		rec(tcp4("10.0.0.2", 1, "10.0.0.1", 1), 1, 100, at(-3)),
		rec(tcp4("10.0.0.2", 1, "10.0.0.1", 2), 2, 200, at(-2)),
	}
	out := a.Aggregate(at(0), in)
	checkSeries(t, out, []Series{{Kind: KindOther, Packets: 3, Bytes: 300, DeltaPackets: 3, DeltaBytes: 300, StartTime: at(-3)}})
}

func TestTopNWithinMaxSeries(t *testing.T) {
	// top_n 10 asks for more than max_series 4 allows: 3 flows and other.
	a := mustNew(t, Config{Dimensions: []Dimension{DimDstPort}, TopN: 10, MaxSeries: 4})
	var in []core.Record
	for p := uint16(1); p <= 20; p++ {
		in = append(in, rec(tcp4("10.0.0.2", 1, "10.0.0.1", p), 1, 10*uint64(p), at(-1)))
	}
	out := a.Aggregate(at(0), in)
	var ports []uint16
	for _, s := range out {
		if s.Kind == KindFlow {
			ports = append(ports, s.DstPort)
		}
	}
	slices.Sort(ports)
	if len(out) != 4 || !slices.Equal(ports, []uint16{18, 19, 20}) || out[3].Kind != KindOther || out[3].DeltaBytes != 10*(17*18/2) {
		t.Errorf("got %s", dump(out))
	}
	checkConserved(t, in, out)
}

func TestOverflowPassesThrough(t *testing.T) {
	a := mustNew(t, Config{Dimensions: []Dimension{DimDirection, DimDstPort}, TopN: 1, MaxSeries: 2})
	over := func(iface string, dir core.Direction, p, b uint64) core.Record {
		return core.Record{
			FlowKey: core.FlowKey{Direction: dir}, Interface: iface, Overflow: true,
			Packets: p, Bytes: b, DeltaPackets: p, DeltaBytes: b, StartTime: at(-60),
		}
	}
	in := []core.Record{
		rec(tcp4("10.0.0.2", 1, "10.0.0.1", 1), 1, 100, at(-1)),
		over("eth0", core.Ingress, 1000, 64000),
		rec(tcp4("10.0.0.2", 1, "10.0.0.1", 2), 2, 200, at(-1)),
		over("eth1", core.Ingress, 10, 640),
		over("eth0", core.Egress, 5, 500),
		rec(tcp4("10.0.0.2", 1, "10.0.0.1", 3), 3, 300, at(-1)),
	}
	out := a.Aggregate(at(0), in)
	// interface is not a dimension, so eth0 and eth1 ingress overflow are
	// one series; neither top_n nor max_series touches them.
	checkSeries(t, out, []Series{
		{Key: Key{Direction: core.Egress, HasPorts: true, DstPort: 3}, Packets: 3, Bytes: 300, DeltaPackets: 3, DeltaBytes: 300, StartTime: at(-1)},
		{Kind: KindOther, Packets: 3, Bytes: 300, DeltaPackets: 3, DeltaBytes: 300, StartTime: at(-1)},
		{Kind: KindOverflow, Key: Key{Direction: core.Ingress}, Packets: 1010, Bytes: 64640, DeltaPackets: 1010, DeltaBytes: 64640, StartTime: at(-60)},
		{Kind: KindOverflow, Key: Key{Direction: core.Egress}, Packets: 5, Bytes: 500, DeltaPackets: 5, DeltaBytes: 500, StartTime: at(-60)},
	})
	checkConserved(t, in, out)
}

// Filtered records become their own series per interface and direction,
// apart from the overflow series and from any flow, and no cap or top-N
// touches them.
func TestFilteredPassesThrough(t *testing.T) {
	a := mustNew(t, Config{Dimensions: []Dimension{DimInterface, DimDirection, DimDstPort}, TopN: 1, MaxSeries: 2})
	marker := func(iface string, dir core.Direction, p, b uint64, overflow bool) core.Record {
		return core.Record{
			FlowKey: core.FlowKey{Direction: dir}, Interface: iface, Overflow: overflow, Filtered: !overflow,
			Packets: p, Bytes: b, DeltaPackets: p, DeltaBytes: b, StartTime: at(-60),
		}
	}
	f1 := rec(tcp4("10.0.0.2", 1, "10.0.0.1", 1), 1, 100, at(-1))
	f1.Interface = "eth0"
	f2 := rec(tcp4("10.0.0.2", 1, "10.0.0.1", 2), 2, 200, at(-1))
	f2.Interface = "eth0"
	in := []core.Record{
		f1,
		marker("eth0", core.Ingress, 1000, 64000, false),
		marker("eth0", core.Ingress, 7, 700, true),
		f2,
		marker("eth1", core.Ingress, 10, 640, false),
		marker("eth0", core.Egress, 5, 500, false),
	}
	out := a.Aggregate(at(0), in)
	checkSeries(t, out, []Series{
		{Key: Key{Interface: "eth0", Direction: core.Egress, HasPorts: true, DstPort: 2}, Packets: 2, Bytes: 200, DeltaPackets: 2, DeltaBytes: 200, StartTime: at(-1)},
		{Kind: KindOther, Packets: 1, Bytes: 100, DeltaPackets: 1, DeltaBytes: 100, StartTime: at(-1)},
		{Kind: KindOverflow, Key: Key{Interface: "eth0", Direction: core.Ingress}, Packets: 7, Bytes: 700, DeltaPackets: 7, DeltaBytes: 700, StartTime: at(-60)},
		{Kind: KindFiltered, Key: Key{Interface: "eth0", Direction: core.Ingress}, Packets: 1000, Bytes: 64000, DeltaPackets: 1000, DeltaBytes: 64000, StartTime: at(-60)},
		{Kind: KindFiltered, Key: Key{Interface: "eth1", Direction: core.Ingress}, Packets: 10, Bytes: 640, DeltaPackets: 10, DeltaBytes: 640, StartTime: at(-60)},
		{Kind: KindFiltered, Key: Key{Interface: "eth0", Direction: core.Egress}, Packets: 5, Bytes: 500, DeltaPackets: 5, DeltaBytes: 500, StartTime: at(-60)},
	})
	checkConserved(t, in, out)

	// The next interval grows the filtered series cumulatively.
	out = a.Aggregate(at(10), []core.Record{marker("eth0", core.Egress, 3, 300, false)})
	var got []*Series
	for _, s := range out {
		if s.Kind == KindFiltered && s.DeltaPackets > 0 {
			got = append(got, s)
		}
	}
	checkSeries(t, got, []Series{
		{Kind: KindFiltered, Key: Key{Interface: "eth0", Direction: core.Egress}, Packets: 8, Bytes: 800, DeltaPackets: 3, DeltaBytes: 300, StartTime: at(-60)},
	})
}

func TestIdleSeriesLifetime(t *testing.T) {
	a := mustNew(t, Config{Dimensions: []Dimension{DimDstPort}, SeriesIdleTimeout: Duration(30 * time.Second)})
	f := rec(tcp4("10.0.0.2", 1, "10.0.0.1", 443), 2, 200, at(-5))
	a.Aggregate(at(0), []core.Record{f})
	// Reported without growth until the timeout, also when the flow's
	// record keeps coming with zero deltas.
	for _, sec := range []int{10, 20, 30} {
		f = next(f, 0, 0, at(sec))
		out := a.Aggregate(at(sec), []core.Record{f})
		checkSeries(t, out, []Series{{Key: Key{HasPorts: true, DstPort: 443}, Packets: 2, Bytes: 200, StartTime: at(-5)}})
	}
	if out := a.Aggregate(at(40), nil); len(out) != 0 {
		t.Fatalf("series idle for 40s with a 30s timeout is still reported: %s", dump(out))
	}
	// The same flow grows again: a new series that counts from at(40),
	// not the old one restarting at the same start time.
	f = next(f, 1, 50, at(50))
	out := a.Aggregate(at(50), []core.Record{f})
	checkSeries(t, out, []Series{{Key: Key{HasPorts: true, DstPort: 443}, Packets: 1, Bytes: 50, DeltaPackets: 1, DeltaBytes: 50, StartTime: at(40)}})
}

func TestOtherSeriesLifetime(t *testing.T) {
	a := mustNew(t, Config{Dimensions: []Dimension{DimDstPort}, TopN: 1, SeriesIdleTimeout: Duration(15 * time.Second)})
	big := rec(tcp4("10.0.0.2", 1, "10.0.0.1", 1), 2, 2000, at(-5))
	small := rec(tcp4("10.0.0.2", 1, "10.0.0.1", 2), 1, 100, at(-5))
	a.Aggregate(at(0), []core.Record{big, small})
	out := a.Aggregate(at(10), nil)
	checkSeries(t, out, []Series{
		{Key: Key{HasPorts: true, DstPort: 1}, Packets: 2, Bytes: 2000, StartTime: at(-5)},
		{Kind: KindOther, Packets: 1, Bytes: 100, StartTime: at(-5)},
	})
	if out := a.Aggregate(at(20), nil); len(out) != 0 {
		t.Fatalf("idle series outlived series_idle_timeout: %s", dump(out))
	}
	// other comes back as a new series that starts after the old one.
	small = next(small, 1, 100, at(30))
	big = next(big, 3, 3000, at(30))
	out = a.Aggregate(at(30), []core.Record{big, small})
	checkSeries(t, out, []Series{
		{Key: Key{HasPorts: true, DstPort: 1}, Packets: 3, Bytes: 3000, DeltaPackets: 3, DeltaBytes: 3000, StartTime: at(20)},
		{Kind: KindOther, Packets: 1, Bytes: 100, DeltaPackets: 1, DeltaBytes: 100, StartTime: at(20)},
	})
}

func TestExpiredMemberKeepsSeriesMonotonic(t *testing.T) {
	a := mustNew(t, Config{Dimensions: []Dimension{DimDstPort}})
	long := rec(tcp4("10.0.0.2", 50000, "10.0.0.1", 443), 10, 10000, at(-20))
	short := rec(tcp4("10.0.0.3", 50001, "10.0.0.1", 443), 50, 50000, at(-10))
	a.Aggregate(at(0), []core.Record{long, short})

	// The short flow's final report (expired), then it is gone. Summing
	// the members' cumulative counts would drop from 60000 to 10100 bytes.
	short = next(short, 5, 5000, at(10))
	short.Expired = true
	long = next(long, 1, 100, at(10))
	out := a.Aggregate(at(10), []core.Record{long, short})
	checkSeries(t, out, []Series{{Key: Key{HasPorts: true, DstPort: 443}, Packets: 66, Bytes: 65100, DeltaPackets: 6, DeltaBytes: 5100, StartTime: at(-20)}})

	long = next(long, 1, 100, at(20))
	out = a.Aggregate(at(20), []core.Record{long})
	checkSeries(t, out, []Series{{Key: Key{HasPorts: true, DstPort: 443}, Packets: 67, Bytes: 65200, DeltaPackets: 1, DeltaBytes: 100, StartTime: at(-20)}})
}

func TestStartTimeOfANewSeries(t *testing.T) {
	a := mustNew(t, Config{Dimensions: []Dimension{DimDstPort}})
	// Zero StartTime means unknown: the first call falls back to now.
	out := a.Aggregate(at(0), []core.Record{rec(tcp4("10.0.0.2", 1, "10.0.0.1", 1), 1, 1, time.Time{})})
	if out[0].StartTime != at(0) {
		t.Errorf("unknown start on the first call: %s", out[0].StartTime.Sub(t0))
	}
	// A flow first seen within the interval keeps its own start time.
	out = a.Aggregate(at(10), []core.Record{rec(tcp4("10.0.0.2", 1, "10.0.0.1", 2), 1, 1, at(7))})
	if out[1].StartTime != at(7) {
		t.Errorf("new flow start: %s", out[1].StartTime.Sub(t0))
	}
	// A start after the Read's time is clamped to it.
	out = a.Aggregate(at(20), []core.Record{rec(tcp4("10.0.0.2", 1, "10.0.0.1", 3), 1, 1, at(20).Add(time.Millisecond))})
	if out[2].StartTime != at(20) {
		t.Errorf("start in the future: %s", out[2].StartTime.Sub(t0))
	}
}

func TestRestartOnAClockThatDidNotAdvance(t *testing.T) {
	// Three Reads in one tick of a coarse clock: the key's second series
	// must still start after its first, or it would look like a regression.
	a := mustNew(t, Config{Dimensions: []Dimension{DimDstPort}, MaxSeries: 2})
	port := func(p uint16, bytes uint64) core.Record {
		return rec(tcp4("10.0.0.2", 1, "10.0.0.1", p), 1, bytes, at(0))
	}
	a.Aggregate(at(0), []core.Record{port(1, 10)})
	// Port 2 takes a slot, port 3 goes to other, idle port 1 is pushed out.
	a.Aggregate(at(0), []core.Record{port(2, 500), port(3, 400)})
	out := a.Aggregate(at(0), []core.Record{port(1, 900)})
	if out[0].DstPort != 1 || out[0].Bytes != 900 || out[0].StartTime != at(0).Add(time.Nanosecond) {
		t.Errorf("restarted series: %s", dump(out))
	}
}

// kernel imitates core's flow table: flows appear, grow, idle, expire with
// one final report, and come back as new flows with new start times.
type kernel struct {
	rng *rand.Rand
	// flows is in insertion order so that a seed replays exactly.
	flows []*core.Record
	idle  map[core.FlowKey]int
	sent  [2]uint64
}

func (k *kernel) read(now time.Time) []core.Record {
	var out []core.Record
	// A small key space makes flows collide after folding and grouping
	// and makes expired flows come back.
	for range 1 + k.rng.IntN(12) {
		fk := tcp4(
			fmt.Sprintf("10.%d.0.%d", k.rng.IntN(3), 1+k.rng.IntN(6)), uint16(30000+k.rng.IntN(6)*5000),
			fmt.Sprintf("10.%d.0.1", k.rng.IntN(3)), []uint16{22, 80, 443, 53000}[k.rng.IntN(4)])
		if _, ok := k.idle[fk]; !ok {
			k.flows = append(k.flows, &core.Record{FlowKey: fk, Interface: "eth0", StartTime: now.Add(-time.Duration(k.rng.IntN(9)) * time.Second)})
			k.idle[fk] = 0
		}
	}
	live := k.flows[:0]
	for _, r := range k.flows {
		fk := r.FlowKey
		r.DeltaPackets, r.DeltaBytes, r.Expired = 0, 0, false
		if k.rng.IntN(3) > 0 {
			p := uint64(1 + k.rng.IntN(20))
			// Heavy-tailed sizes so top-N membership churns.
			b := p * uint64(60+k.rng.IntN(1400)) * uint64(1+k.rng.IntN(3)*k.rng.IntN(30))
			r.Packets += p
			r.Bytes += b
			r.DeltaPackets, r.DeltaBytes = p, b
			r.LastSeen = now
			k.sent[0] += p
			k.sent[1] += b
			k.idle[fk] = 0
		} else if k.idle[fk]++; k.idle[fk] >= 3 {
			r.Expired = true
			delete(k.idle, fk)
		}
		out = append(out, *r)
		if !r.Expired {
			live = append(live, r)
		}
	}
	k.flows = live
	if k.rng.IntN(4) == 0 {
		p := uint64(1 + k.rng.IntN(100))
		out = append(out, core.Record{Interface: "eth0", Overflow: true, DeltaPackets: p, DeltaBytes: 64 * p, StartTime: t0})
		k.sent[0] += p
		k.sent[1] += 64 * p
	}
	// Core gives no order guarantee; neither may the aggregator need one.
	k.rng.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

func TestChurnAcrossIntervals(t *testing.T) {
	configs := map[string]Config{
		"five-tuple":  {},
		"top 3":       {Dimensions: []Dimension{DimSrcIP, DimDstIP, DimDstPort}, TopN: 3, SeriesIdleTimeout: Duration(40 * time.Second)},
		"max 4":       {MaxSeries: 4},
		"top and max": {TopN: 5, MaxSeries: 3, SeriesIdleTimeout: Duration(25 * time.Second)},
		"folded groups top": {
			Dimensions: []Dimension{DimSrcIP, DimDstIP, DimSrcPort, DimDstPort}, FoldPorts: FoldEphemeral,
			CIDRGroups: []CIDRGroup{{"net0", "10.0.0.0/16"}, {"net1", "10.1.0.0/16"}}, TopN: 2,
		},
		"higher, short timeout": {FoldPorts: FoldHigher, SeriesIdleTimeout: Duration(15 * time.Second), MaxSeries: 6},
	}
	for name, cfg := range configs {
		t.Run(name, func(t *testing.T) { runChurn(t, cfg, uint64(len(name)), nil) })
	}
}

func TestChurnWithHashCollisions(t *testing.T) {
	cfg := Config{TopN: 4, MaxSeries: 6, SeriesIdleTimeout: Duration(20 * time.Second)}
	hashes := map[string]func(Key) uint64{
		"all keys collide":  func(Key) uint64 { return 7 },
		"some keys collide": func(k Key) uint64 { return uint64(k.DstPort % 3) },
	}
	for name, h := range hashes {
		t.Run(name, func(t *testing.T) {
			runChurn(t, cfg, 3, func(a *Aggregator) { a.flows.hash, a.overflow.hash = h, h })
		})
	}
}

// runChurn feeds 300 Reads of a churning kernel table through an Aggregator
// and checks every promise on every output: conservation, monotonic
// cumulative counts consistent with the deltas, later start times on
// restart, unique keys, the top_n and max_series bounds, and that the runs
// of all series add up to what the kernel counted.
func runChurn(t *testing.T, cfg Config, seed uint64, tweak func(*Aggregator)) {
	type id struct {
		Kind
		Key
	}
	type last struct {
		start          time.Time
		packets, bytes uint64
	}
	a := mustNew(t, cfg)
	if tweak != nil {
		tweak(a)
	}
	k := &kernel{rng: rand.New(rand.NewPCG(1, seed)), idle: map[core.FlowKey]int{}}
	seen := map[id]last{}
	// Each series run ends at its last cumulative value; their sum
	// is everything that was counted.
	final := map[id]last{}
	var counted [2]uint64
	for step := range 300 {
		now := at(10 * step)
		in := k.read(now)
		out := a.Aggregate(now, in)
		checkConserved(t, in, out)

		flows, growing := 0, 0
		ids := map[id]bool{}
		for _, s := range out {
			sid := id{s.Kind, s.Key}
			if ids[sid] {
				t.Fatalf("step %d: two series with key %+v", step, sid)
			}
			ids[sid] = true
			if s.Kind != KindOverflow {
				flows++
			}
			if s.Kind == KindFlow && s.DeltaBytes+s.DeltaPackets > 0 {
				growing++
			}
			prev, ok := seen[sid]
			switch {
			case !ok || s.StartTime != prev.start:
				if ok && !s.StartTime.After(prev.start) {
					t.Fatalf("step %d: %+v restarted at %s, not after %s", step, sid, s.StartTime, prev.start)
				}
				if ok {
					counted[0] += prev.packets
					counted[1] += prev.bytes
				}
				prev = last{start: s.StartTime}
			case s.Packets < prev.packets || s.Bytes < prev.bytes:
				t.Fatalf("step %d: %+v went backwards: %d/%d after %d/%d", step, sid, s.Packets, s.Bytes, prev.packets, prev.bytes)
			}
			if s.Packets-prev.packets != s.DeltaPackets || s.Bytes-prev.bytes != s.DeltaBytes {
				t.Fatalf("step %d: %+v cumulative %d/%d after %d/%d does not match delta %d/%d",
					step, sid, s.Packets, s.Bytes, prev.packets, prev.bytes, s.DeltaPackets, s.DeltaBytes)
			}
			if s.StartTime.After(now) {
				t.Fatalf("step %d: %+v starts in the future", step, sid)
			}
			seen[sid] = last{s.StartTime, s.Packets, s.Bytes}
			final[sid] = seen[sid]
		}
		if cfg.MaxSeries > 0 && flows > cfg.MaxSeries {
			t.Fatalf("step %d: %d series over max_series %d", step, flows, cfg.MaxSeries)
		}
		if cfg.TopN > 0 && growing > cfg.TopN {
			t.Fatalf("step %d: %d growing flow series over top_n %d", step, growing, cfg.TopN)
		}
	}
	for _, l := range final {
		counted[0] += l.packets
		counted[1] += l.bytes
	}
	if counted != k.sent {
		t.Errorf("series runs add up to %v packets/bytes, the kernel counted %v", counted, k.sent)
	}
}

// benchRecords is a full kernel table (the default max_flows) of distinct
// TCP flows from 4096 clients to 32 servers, each with a delta.
func benchRecords() []core.Record {
	const n = 131072
	rs := make([]core.Record, n)
	for i := range rs {
		src := netip.AddrFrom4([4]byte{10, 1, byte(i >> 13), byte(i >> 5)})
		dst := netip.AddrFrom4([4]byte{10, 9, 0, byte(i % 32)})
		fk := core.FlowKey{
			Ifindex: 2, Direction: core.Direction(i & 1), EtherType: core.EtherTypeIPv4, Proto: core.ProtoTCP,
			SrcAddr: src, SrcPort: uint16(32768 + i%28000), DstAddr: dst, DstPort: []uint16{443, 80, 22, 5432}[i%4],
		}
		rs[i] = rec(fk, uint64(1+i%7), uint64(60+i%1400), t0)
	}
	return rs
}

func BenchmarkAggregate(b *testing.B) {
	configs := []struct {
		name string
		cfg  Config
	}{
		{"five-tuple", Config{}},
		{"folded-grouped", Config{
			Dimensions: []Dimension{DimInterface, DimDirection, DimSrcIP, DimDstIP, DimSrcPort, DimDstPort},
			FoldPorts:  FoldEphemeral, CIDRGroups: []CIDRGroup{{"clients", "10.1.0.0/16"}, {"servers", "10.9.0.0/24"}},
		}},
		{"top-100", Config{TopN: 100}},
		{"max-10000", Config{MaxSeries: 10000}},
	}
	records := benchRecords()
	for _, c := range configs {
		b.Run(c.name, func(b *testing.B) {
			a := mustNew(b, c.cfg)
			a.Aggregate(t0, records) // steady state: every key already known
			step := 0
			b.ReportAllocs()
			for b.Loop() {
				step++
				a.Aggregate(at(step), records)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(records)), "ns/record")
		})
	}
}

func TestTableChains(t *testing.T) {
	tb := newTable()
	tb.hash = func(Key) uint64 { return 1 }
	r := rec(tcp4("10.0.0.2", 1, "10.0.0.1", 1), 1, 1, at(0))
	keys := []Key{{DstPort: 1}, {DstPort: 2}, {DstPort: 3}, {DstPort: 4}}
	for _, k := range keys {
		tb.accumulate(k, &r, 1, nil)
	}
	epoch := uint64(1)
	lookup := func(k Key) int32 {
		// A new epoch each time, so that accumulate reports the slot.
		epoch++
		cand := tb.accumulate(k, &r, epoch, nil)
		if len(cand) != 1 {
			t.Fatalf("lookup of %+v touched %v", k, cand)
		}
		return cand[0]
	}
	// Release the newest (chain head), one in the middle and the oldest
	// (chain tail); the survivor must still be found in its own slot.
	for _, gone := range []Key{keys[3], keys[1], keys[0]} {
		tb.release(lookup(gone))
	}
	if i := lookup(keys[2]); tb.at(i).s.Key != keys[2] || i != 2 {
		t.Fatalf("survivor found in slot %d with key %+v", i, tb.at(i).s.Key)
	}
	if len(tb.index) != 1 || len(tb.free) != 3 {
		t.Fatalf("index %v, free %v", tb.index, tb.free)
	}
	// A new key reuses a freed slot and is found again.
	tb.accumulate(Key{HasPorts: true, DstPort: 9}, &r, 100, nil)
	if i := lookup(Key{HasPorts: true, DstPort: 9}); tb.at(i).s.Key != (Key{HasPorts: true, DstPort: 9}) {
		t.Fatalf("new key lost")
	}
	tb.release(2)
	tb.release(lookup(Key{HasPorts: true, DstPort: 9}))
	if len(tb.index) != 0 {
		t.Fatalf("index not empty after releasing everything: %v", tb.index)
	}
}

// TestRetransmitsAreSummed: retransmits follow their flow's key into its own
// series, the other series or an overflow series, like packets and bytes,
// and a retransmit-only record (no new packets) still counts.
func TestRetransmitsAreSummed(t *testing.T) {
	a := mustNew(t, Config{
		Dimensions: []Dimension{DimSrcIP, DimDstIP, DimDstPort},
		FoldPorts:  FoldHigher,
		CIDRGroups: []CIDRGroup{{"office", "10.1.0.0/16"}},
		TopN:       1,
	})
	retrans := func(r core.Record, total, delta uint64) core.Record {
		r.Retransmits, r.DeltaRetransmits = total, delta
		return r
	}
	over := core.Record{
		Overflow: true, Packets: 7, Bytes: 700, DeltaPackets: 7, DeltaBytes: 700,
		Retransmits: 2, DeltaRetransmits: 2, StartTime: at(-60),
	}
	in := []core.Record{
		retrans(rec(tcp4("10.1.0.5", 40000, "10.9.0.1", 443), 10, 1000, at(-5)), 3, 3),
		retrans(rec(tcp4("10.1.7.5", 40001, "10.9.0.1", 443), 10, 1000, at(-5)), 1, 1),
		retrans(rec(tcp4("10.1.7.5", 40002, "10.9.0.1", 22), 1, 100, at(-5)), 5, 5),
		over,
	}
	out := a.Aggregate(at(0), in)
	office := Key{DstAddr: netip.MustParseAddr("10.9.0.1"), HasPorts: true}.WithLabels(Labels{SrcGroup: "office"})
	k443, k22 := office, office
	k443.DstPort, k22.DstPort = 443, 22
	checkSeries(t, out, []Series{
		{Key: k443, Packets: 20, Bytes: 2000, DeltaPackets: 20, DeltaBytes: 2000, Retransmits: 4, DeltaRetransmits: 4, StartTime: at(-5)},
		{Kind: KindOther, Packets: 1, Bytes: 100, DeltaPackets: 1, DeltaBytes: 100, Retransmits: 5, DeltaRetransmits: 5, StartTime: at(-5)},
		{Kind: KindOverflow, Packets: 7, Bytes: 700, DeltaPackets: 7, DeltaBytes: 700, Retransmits: 2, DeltaRetransmits: 2, StartTime: at(-60)},
	})
	checkConserved(t, in, out)

	// Only retransmissions in the next interval: the series grows by them
	// alone; nothing is skipped as idle.
	in = []core.Record{retrans(next(in[0], 0, 0, at(10)), 5, 2)}
	out = a.Aggregate(at(10), in)
	checkSeries(t, out, []Series{
		{Key: k443, Packets: 20, Bytes: 2000, Retransmits: 6, DeltaRetransmits: 2, StartTime: at(-5)},
		{Kind: KindOther, Packets: 1, Bytes: 100, Retransmits: 5, StartTime: at(-5)},
		{Kind: KindOverflow, Packets: 7, Bytes: 700, Retransmits: 2, StartTime: at(-60)},
	})
	checkConserved(t, in, out)
}

// TestSlots checks the contract adapters rely on to cache per-series work:
// a flow series keeps its Slot while it lives, no two series of a call share
// one, and Born marks the call in which a series (re)started.
func TestSlots(t *testing.T) {
	a := mustNew(t, Config{SeriesIdleTimeout: Duration(15 * time.Second)})
	r1 := rec(tcp4("10.0.0.1", 1000, "10.0.0.9", 443), 1, 100, at(-5))
	r2 := rec(tcp4("10.0.0.2", 1000, "10.0.0.9", 443), 1, 100, at(-5))
	slots := func(out []*Series) map[string]Series {
		t.Helper()
		bySrc, seen := map[string]Series{}, map[int32]bool{}
		for _, s := range out {
			if s.Kind != KindFlow || s.Slot < 0 || seen[s.Slot] {
				t.Fatalf("series %+v: slot %d not a unique flow slot", s.Key, s.Slot)
			}
			seen[s.Slot] = true
			bySrc[s.SrcAddr.String()] = *s
		}
		return bySrc
	}
	first := slots(a.Aggregate(at(0), []core.Record{r1, r2}))
	if len(first) != 2 {
		t.Fatalf("%d series, want 2", len(first))
	}
	for k, s := range first {
		if !s.Born {
			t.Errorf("series %s of the first call not Born", k)
		}
	}
	// Records in the other order: the hints miss, the slots stay.
	second := slots(a.Aggregate(at(1), []core.Record{r2, r1}))
	for k, s := range second {
		if s.Born || s.Slot != first[k].Slot {
			t.Errorf("series %s: slot %d born %t, want slot %d not born", k, s.Slot, s.Born, first[k].Slot)
		}
	}
	// r2 goes quiet past the idle timeout: its series ends, r1's lives on.
	for step := 2; step <= 20; step++ {
		a.Aggregate(at(step), []core.Record{r1})
	}
	out := a.Aggregate(at(21), []core.Record{r1, r2})
	back := slots(out)
	if len(back) != 2 {
		t.Fatalf("%d series after r2 returned, want 2", len(back))
	}
	for k, s := range back {
		wantBorn := k == "10.0.0.2"
		if s.Born != wantBorn {
			t.Errorf("series %s: born %t, want %t", k, s.Born, wantBorn)
		}
	}
}

// TestTCPFlagsAreSummed: TCP flag counts follow their flow's key into its own
// series, the other series or an overflow series, like packets and bytes,
// and stay cumulative across calls.
func TestTCPFlagsAreSummed(t *testing.T) {
	a := mustNew(t, Config{
		Dimensions: []Dimension{DimSrcIP, DimDstIP, DimDstPort},
		FoldPorts:  FoldHigher,
		CIDRGroups: []CIDRGroup{{"office", "10.1.0.0/16"}},
		TopN:       1,
	})
	flags := func(r core.Record, total, delta core.TCPFlagCounts) core.Record {
		r.TCP, r.DeltaTCP = total, delta
		return r
	}
	f := func(syn, synack, fin, rst uint64) core.TCPFlagCounts {
		return core.TCPFlagCounts{SYN: syn, SYNACK: synack, FIN: fin, RST: rst}
	}
	over := core.Record{Overflow: true, Packets: 7, Bytes: 700, DeltaPackets: 7, DeltaBytes: 700, TCP: f(7, 0, 0, 0), DeltaTCP: f(7, 0, 0, 0), StartTime: at(-60)}
	in := []core.Record{
		flags(rec(tcp4("10.1.0.5", 40000, "10.9.0.1", 443), 10, 1000, at(-5)), f(1, 0, 1, 0), f(1, 0, 1, 0)),
		flags(rec(tcp4("10.1.7.5", 40001, "10.9.0.1", 443), 10, 1000, at(-5)), f(1, 0, 0, 1), f(1, 0, 0, 1)),
		flags(rec(tcp4("10.1.7.5", 40002, "10.9.0.1", 22), 1, 100, at(-5)), f(0, 1, 0, 0), f(0, 1, 0, 0)),
		over,
	}
	out := a.Aggregate(at(0), in)
	office := Key{DstAddr: netip.MustParseAddr("10.9.0.1"), HasPorts: true}.WithLabels(Labels{SrcGroup: "office"})
	k443 := office
	k443.DstPort = 443
	checkSeries(t, out, []Series{
		{Key: k443, Packets: 20, Bytes: 2000, DeltaPackets: 20, DeltaBytes: 2000, TCP: f(2, 0, 1, 1), DeltaTCP: f(2, 0, 1, 1), StartTime: at(-5)},
		{Kind: KindOther, Packets: 1, Bytes: 100, DeltaPackets: 1, DeltaBytes: 100, TCP: f(0, 1, 0, 0), DeltaTCP: f(0, 1, 0, 0), StartTime: at(-5)},
		{Kind: KindOverflow, Packets: 7, Bytes: 700, DeltaPackets: 7, DeltaBytes: 700, TCP: f(7, 0, 0, 0), DeltaTCP: f(7, 0, 0, 0), StartTime: at(-60)},
	})
	checkConserved(t, in, out)

	in = []core.Record{flags(next(in[0], 1, 60, at(10)), f(1, 0, 2, 0), f(0, 0, 1, 0))}
	out = a.Aggregate(at(10), in)
	checkSeries(t, out, []Series{
		{Key: k443, Packets: 21, Bytes: 2060, DeltaPackets: 1, DeltaBytes: 60, TCP: f(2, 0, 2, 1), DeltaTCP: f(0, 0, 1, 0), StartTime: at(-5)},
		{Kind: KindOther, Packets: 1, Bytes: 100, TCP: f(0, 1, 0, 0), StartTime: at(-5)},
		{Kind: KindOverflow, Packets: 7, Bytes: 700, TCP: f(7, 0, 0, 0), StartTime: at(-60)},
	})
	checkConserved(t, in, out)
}

// Drop records keep their reason as a dimension: two reasons of one flow
// stay two series, one reason of two flows folded by the dimensions is one,
// and an overflow drop record keeps its reason too.
func TestAggregateDropsKeepReason(t *testing.T) {
	a := mustNew(t, Config{Dimensions: []Dimension{DimInterface, DimProto, DimSrcIP, DimDstPort}, CIDRGroups: []CIDRGroup{{Name: "lan", CIDR: "192.0.2.0/24"}}})
	src := netip.MustParseAddr("192.0.2.1")
	flow := func(sport uint16) core.FlowKey {
		return core.FlowKey{EtherType: core.EtherTypeIPv4, Proto: core.ProtoUDP, SrcAddr: src, DstAddr: src.Next(), SrcPort: sport, DstPort: 53}
	}
	drop := func(fk core.FlowKey, reason string, n uint64) core.Record {
		r := rec(fk, n, n*100, at(0))
		r.DropReason = reason
		return r
	}
	over := drop(core.FlowKey{}, "no_socket", 4)
	over.Overflow = true
	in := []core.Record{drop(flow(1000), "no_socket", 3), drop(flow(1001), "no_socket", 5), drop(flow(1000), "netfilter_drop", 7), over}
	out := a.Aggregate(at(1), in)
	checkConserved(t, in, out)
	key := func(reason string) Key {
		return Key{Interface: "eth0", Transport: "udp", HasPorts: true, DstPort: 53}.WithLabels(Labels{SrcGroup: "lan", DropReason: reason})
	}
	checkSeries(t, out, []Series{
		{Kind: KindFlow, Key: key("no_socket"), Packets: 8, Bytes: 800, DeltaPackets: 8, DeltaBytes: 800, StartTime: at(0)},
		{Kind: KindFlow, Key: key("netfilter_drop"), Packets: 7, Bytes: 700, DeltaPackets: 7, DeltaBytes: 700, StartTime: at(0)},
		{Kind: KindOverflow, Key: Key{Interface: "eth0"}.WithLabels(Labels{DropReason: "no_socket"}), Packets: 4, Bytes: 400, DeltaPackets: 4, DeltaBytes: 400, StartTime: at(0)},
	})
}

// TestRTTMerges: RTT samples of records that fall into one series merge
// (samples and sums add, min of mins, max of maxes), in a flow series and in
// the other series; an RTT-only record is not idle; the next call without
// samples reports none, since RTT is per interval.
func TestRTTMerges(t *testing.T) {
	a := mustNew(t, Config{
		Dimensions: []Dimension{DimSrcIP, DimDstIP, DimDstPort},
		FoldPorts:  FoldHigher,
		CIDRGroups: []CIDRGroup{{"office", "10.1.0.0/16"}},
		TopN:       1,
	})
	ms := time.Millisecond
	rtt := func(r core.Record, samples uint64, sum, lo, hi time.Duration) core.Record {
		r.RTT = &core.RTTStats{Samples: samples, Sum: sum, Min: lo, Max: hi}
		r.RTT.Buckets[lo/ms] = samples // any layout: buckets add per index
		return r
	}
	in := []core.Record{
		rtt(rec(tcp4("10.1.0.5", 40000, "10.9.0.1", 443), 10, 1000, at(-5)), 4, 40*ms, 5*ms, 20*ms),
		rtt(rec(tcp4("10.1.7.5", 40001, "10.9.0.1", 443), 10, 1000, at(-5)), 2, 6*ms, 2*ms, 4*ms),
		rec(tcp4("10.1.7.6", 40003, "10.9.0.1", 443), 1, 10, at(-5)),
		rtt(rec(tcp4("10.1.7.5", 40002, "10.9.0.1", 22), 1, 100, at(-5)), 3, 90*ms, 10*ms, 50*ms),
		rtt(rec(tcp4("10.1.7.5", 40004, "10.9.0.1", 80), 0, 0, at(-5)), 1, 7*ms, 7*ms, 7*ms),
	}
	in[4].DeltaPackets, in[4].DeltaBytes = 0, 0
	out := a.Aggregate(at(0), in)
	office := Key{DstAddr: netip.MustParseAddr("10.9.0.1"), HasPorts: true}.WithLabels(Labels{SrcGroup: "office"})
	k443 := office
	k443.DstPort = 443
	checkSeries(t, out, []Series{
		{Key: k443, Packets: 21, Bytes: 2010, DeltaPackets: 21, DeltaBytes: 2010, StartTime: at(-5),
			RTT: &core.RTTStats{Samples: 6, Sum: 46 * ms, Min: 2 * ms, Max: 20 * ms, Buckets: [core.RTTBuckets]uint64{2: 2, 5: 4}}},
		{Kind: KindOther, Packets: 1, Bytes: 100, DeltaPackets: 1, DeltaBytes: 100, StartTime: at(-5),
			RTT: &core.RTTStats{Samples: 4, Sum: 97 * ms, Min: 7 * ms, Max: 50 * ms, Buckets: [core.RTTBuckets]uint64{7: 1, 10: 3}}},
	})
	quiet := next(in[0], 1, 100, at(10))
	quiet.RTT = nil
	out = a.Aggregate(at(10), []core.Record{quiet})
	if out[0].Key != k443 || out[0].RTT != nil {
		t.Errorf("next call without samples: %+v, want the 443 series without RTT", out[0])
	}
}

// TestAddEndIsAggregate: records added one at a time, as core's ReadFunc
// hands them over, give every call the same series as Aggregate given the
// same records in a slice, through churn, top-N, the series cap, idle
// series retiring and calls with no records at all.
func TestAddEndIsAggregate(t *testing.T) {
	cfg := Config{Dimensions: []Dimension{DimSrcIP, DimDstIP, DimDstPort}, TopN: 4, MaxSeries: 6, SeriesIdleTimeout: Duration(20 * time.Second)}
	whole, streamed := mustNew(t, cfg), mustNew(t, cfg)
	k := &kernel{rng: rand.New(rand.NewPCG(11, 12)), idle: map[core.FlowKey]int{}}
	var sent [2]uint64
	for step := range 200 {
		now := at(5 * step)
		var records []core.Record
		if step%17 != 16 {
			records = k.read(now)
		}
		want := dumpAll(whole.Aggregate(now, records))
		for i := range records {
			r := records[i]
			streamed.Add(&r)
			// Add keeps nothing of the record: the caller reuses it.
			records[i] = core.Record{}
			r = core.Record{}
		}
		out := streamed.End(now)
		if got := dumpAll(out); got != want {
			t.Fatalf("step %d: Add/End gave\n%s\nAggregate gave\n%s", step, got, want)
		}
		for _, s := range out {
			sent[0] += s.DeltaPackets
			sent[1] += s.DeltaBytes
		}
	}
	if sent != k.sent {
		t.Errorf("Add/End series sum to %v packets and bytes, the kernel sent %v", sent, k.sent)
	}
	// 5 s after the last call: its series are still alive.
	last := whole.Aggregate(at(5*200), nil)
	if len(last) == 0 {
		t.Fatal("no series were left alive to compare an empty call with")
	}
	if got, want := dumpAll(streamed.End(at(5*200))), dumpAll(last); got != want {
		t.Errorf("an End without Add gave\n%s\nAggregate of no records gave\n%s", got, want)
	}
}

// dumpAll prints every field of the series, Slot and Born too.
func dumpAll(ss []*Series) string {
	var b strings.Builder
	for _, s := range ss {
		fmt.Fprintf(&b, "\n  %+v", *s)
	}
	return b.String()
}
