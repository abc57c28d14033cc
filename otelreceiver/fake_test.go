package pktstatbpfreceiver

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"time"

	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/pktstat-bpf/pktstat-bpf/core"
)

// t0 is the fake clock's origin; every test time is an offset from it.
var t0 = time.Date(2026, 1, 2, 3, 4, 0, 0, time.UTC)

func at(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }

// fakeSource replays scripted snapshots. After the script it keeps
// returning empty snapshots with advancing times, as an idle host would.
type fakeSource struct {
	mu        sync.Mutex
	snaps     []core.Snapshot
	startErr  error
	readErr   error
	gotConfig core.Config
	starts    int
	reads     int
	closes    int
	// readAfterClose records a Read that came after Close, which the
	// receiver must never do.
	readAfterClose bool
}

func (f *fakeSource) newSource(cfg core.Config) (flowSource, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gotConfig = cfg
	return f, nil
}

func (f *fakeSource) Start(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.starts++
	return f.startErr
}

func (f *fakeSource) Read(context.Context) (core.Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closes > 0 {
		f.readAfterClose = true
		return core.Snapshot{}, errors.New("read after close")
	}
	f.reads++
	if f.readErr != nil {
		return core.Snapshot{}, f.readErr
	}
	if f.reads <= len(f.snaps) {
		return f.snaps[f.reads-1], nil
	}
	return core.Snapshot{Time: at(1000 + f.reads)}, nil
}

func (f *fakeSource) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closes++
	return nil
}

func (f *fakeSource) counts() (starts, reads, closes int, readAfterClose bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.starts, f.reads, f.closes, f.readAfterClose
}

// udp4 is a UDP/IPv4 flow 192.0.2.1:sport -> 192.0.2.2:dport on veth0.
func udp4(dir core.Direction, sport, dport uint16) core.FlowKey {
	return core.FlowKey{
		Ifindex: 7, Direction: dir, EtherType: core.EtherTypeIPv4, Proto: core.ProtoUDP,
		SrcAddr: netip.MustParseAddr("192.0.2.1"), DstAddr: netip.MustParseAddr("192.0.2.2"),
		SrcPort: sport, DstPort: dport,
	}
}

// rec builds a record whose cumulative counts equal its deltas plus prev.
func rec(k core.FlowKey, start time.Time, prevPkts, prevBytes, dPkts, dBytes uint64) core.Record {
	return core.Record{
		FlowKey: k, Interface: "veth0",
		Packets: prevPkts + dPkts, Bytes: prevBytes + dBytes,
		DeltaPackets: dPkts, DeltaBytes: dBytes,
		StartTime: start,
	}
}

// eachMetric calls fn for every metric in md, in order.
func eachMetric(md pmetric.Metrics, fn func(pmetric.Metric)) {
	rms := md.ResourceMetrics()
	for i := 0; i < rms.Len(); i++ {
		sms := rms.At(i).ScopeMetrics()
		for j := 0; j < sms.Len(); j++ {
			ms := sms.At(j).Metrics()
			for k := 0; k < ms.Len(); k++ {
				fn(ms.At(k))
			}
		}
	}
}
