package core

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/pktstat-bpf/pktstat-bpf/bpf"
	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// requireTracepoint skips, naming the feature, on a kernel whose BTF lacks
// the raw tracepoint tp.
func requireTracepoint(t *testing.T, tp string) {
	t.Helper()
	nettest.RequireTracepoints(t, tp)
}

// egressFrom returns the non-overflow egress TCP records from cli.
func egressFrom(s Snapshot, cli netip.AddrPort) []Record {
	return find(s, func(r Record) bool {
		return !r.Overflow && r.Direction == Egress && r.Proto == ProtoTCP && r.SrcAddr == cli.Addr() && r.SrcPort == cli.Port()
	})
}

// In tc mode (IPv4 and IPv6) and cgroup mode, tp_btf/tcp_retransmit_skb
// counts the sender's retransmissions on its egress flow, exactly the
// kernel's own count (tcpi_total_retrans), with the same loss as kprobe
// mode's test.
func TestSocketModesCountRetransmits(t *testing.T) {
	for _, tc := range []struct {
		name string
		mode Mode
		v6   bool
		// read drains the collector: ReadFunc sets the joined records
		// aside until the socket events are attached.
		read func(*testing.T, *Collector) Snapshot
	}{
		{"tc/ipv4", ModeTC, false, read},
		{"tc/ipv6", ModeTC, true, readFunc},
		{"cgroup/ipv4", ModeCgroup, false, readFunc},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nettest.RequireBPF(t)
			requireTracepoint(t, "tcp_retransmit_skb")
			p := nettest.NewPair(t)
			a, b := p.A4, p.B4
			if tc.v6 {
				a, b = p.A6, p.B6
			}
			cli, srvAddr := netip.AddrPortFrom(a, 43011), netip.AddrPortFrom(b, 7311)
			var c *Collector
			var retrans uint32
			wantPID := uint32(0)
			if tc.mode == ModeTC {
				c = startCollector(t, Config{Interfaces: []string{p.IfA}, NetNS: p.NSPathA()})
				conn, srv := p.DialTCP(t, cli, srvAddr)
				nettest.WithLoss(t, srv, 100, func() {
					if _, err := conn.Write(make([]byte, 100)); err != nil {
						t.Fatal(err)
					}
				})
				retrans = nettest.SettledRetrans(t, func() uint32 { return nettest.TCPInfo(t, conn).Total_retrans })
			} else {
				abs, _ := testCgroup(t)
				c = startCollector(t, Config{Mode: ModeCgroup, CgroupPath: abs})
				acc := tcpServer(t, p.NSPathB(), srvAddr)
				if err := p.DoA(nettest.NoTailLossProbes); err != nil {
					t.Fatal(err)
				}
				peer := startHelper(t, "tcp-peer", abs, p.NSA, cli, srvAddr)
				wantPID = uint32(peer.cmd.Process.Pid)
				srv := accepted(t, acc)
				nettest.WithLoss(t, srv, 100, func() { peer.calls(t, "send 1 100") })
				retrans = nettest.SettledRetrans(t, func() uint32 { return uint32(peer.calls(t, "retrans")) })
			}
			s := tc.read(t, c)
			rs := egressFrom(s, cli)
			var got []string
			for _, r := range rs {
				got = append(got, fmt.Sprintf("%s on %q pid %d: %d packets, %d retransmits (delta %d)", r.Direction, r.Interface, r.PID, r.Packets, r.Retransmits, r.DeltaRetransmits))
			}
			if len(rs) != 1 || rs[0].Retransmits != uint64(retrans) || rs[0].DeltaRetransmits != rs[0].Retransmits {
				t.Fatalf("want one egress flow from %s with %d retransmits (tcpi_total_retrans); got %v", cli, retrans, got)
			}
			r := rs[0]
			if tc.mode == ModeTC && r.Interface != p.IfA || tc.mode == ModeCgroup && r.PID != wantPID {
				t.Errorf("retransmits on %v, want the flow on %s (tc) or of pid %d (cgroup)", got, p.IfA, wantPID)
			}
			// The record is the flow the packets made: retransmissions are
			// egress packets too, so it has at least the data segment and them.
			if r.Packets < 1+r.Retransmits {
				t.Errorf("egress flow has %d packets, fewer than its data segment and %d retransmissions", r.Packets, r.Retransmits)
			}
			for _, o := range s.Records {
				if o.Retransmits != 0 && (o.SrcAddr != cli.Addr() || o.SrcPort != cli.Port()) {
					t.Errorf("retransmits on another record: %+v", o)
				}
			}
			t.Logf("%s: %d retransmissions counted, tcpi_total_retrans %d", tc.name, r.Retransmits, retrans)
			s = tc.read(t, c)
			if rs := egressFrom(s, cli); len(rs) == 1 && (rs[0].Retransmits != uint64(retrans) || rs[0].DeltaRetransmits != 0) {
				t.Errorf("second read: %d retransmits (delta %d), want %d (0)", rs[0].Retransmits, rs[0].DeltaRetransmits, retrans)
			}
		})
	}
}

// rttOf is r's RTT samples, which must exist.
func rttOf(t *testing.T, r Record) RTTStats {
	t.Helper()
	if r.RTT == nil {
		t.Fatalf("record %+v has no RTT samples", r.FlowKey)
	}
	return *r.RTT
}

func rttSamples(r Record) uint64 {
	if r.RTT == nil {
		return 0
	}
	return r.RTT.Samples
}

// rttRecord reads c and returns the client's egress record and its RTT.
func rttRecord(t *testing.T, c *Collector, cli netip.AddrPort) Record {
	t.Helper()
	rs := egressFrom(read(t, c), cli)
	if len(rs) != 1 {
		t.Fatalf("want one egress flow from %s, got %+v", cli, rs)
	}
	return rs[0]
}

// With tcp_rtt, each segment an established socket receives is one sample
// of its smoothed RTT on its egress flow: as many samples as the segments
// the client received after the SYN-ACK (tcpi_segs_in - 1), and none below
// the socket's minimum RTT (srtt is an average of samples no smaller than
// tcpi_min_rtt). Over a veth they are well under 200 ms.
func TestRTTOnVeth(t *testing.T) {
	nettest.RequireBPF(t)
	requireTracepoint(t, "tcp_probe")
	p := nettest.NewPair(t)
	cli, srvAddr := netip.AddrPortFrom(p.A4, 43021), netip.AddrPortFrom(p.B4, 7321)
	c := startCollector(t, Config{Interfaces: []string{p.IfA}, NetNS: p.NSPathA(), TCPRTT: true})
	conn, srv := p.DialTCP(t, cli, srvAddr)
	const n = 50
	nettest.PingPong(t, conn, srv, n, 100)
	time.Sleep(100 * time.Millisecond) // delayed ACKs
	info := nettest.TCPInfo(t, conn)
	r := rttRecord(t, c, cli)
	if after := nettest.TCPInfo(t, conn); after.Segs_in != info.Segs_in {
		t.Fatalf("the client received segments during the read (%d, then %d)", info.Segs_in, after.Segs_in)
	}
	rtt := rttOf(t, r)
	t.Logf("%d samples: min %v mean %v max %v; tcpi_min_rtt %d us, tcpi_rtt %d us, tcpi_segs_in %d",
		rtt.Samples, rtt.Min, rtt.Mean(), rtt.Max, info.Min_rtt, info.Rtt, info.Segs_in)
	if rtt.Samples != uint64(info.Segs_in-1) {
		t.Errorf("%d RTT samples, want %d (segments received after the SYN-ACK, tcpi_segs_in - 1)", rtt.Samples, info.Segs_in-1)
	}
	if rtt.Min < time.Duration(info.Min_rtt)*time.Microsecond || rtt.Min <= 0 {
		t.Errorf("min RTT %v is below the socket's minimum RTT %d us (or not positive)", rtt.Min, info.Min_rtt)
	}
	if !(rtt.Min <= rtt.Mean() && rtt.Mean() <= rtt.Max) || rtt.Max >= 200*time.Millisecond {
		t.Errorf("RTT min %v mean %v max %v: want min <= mean <= max < 200ms", rtt.Min, rtt.Mean(), rtt.Max)
	}
	checkBuckets(t, rtt)
	// Samples are per interval: with no traffic, none.
	if r := rttRecord(t, c, cli); r.RTT != nil {
		t.Errorf("second read without traffic: RTT %+v, want none", *r.RTT)
	}
}

// checkBuckets: the histogram holds every sample, the lowest non-empty
// bucket is min's and the highest max's.
func checkBuckets(t *testing.T, rtt RTTStats) {
	t.Helper()
	bucket := func(d time.Duration) int {
		i := 0
		for i < len(RTTBucketBounds) && d > RTTBucketBounds[i] {
			i++
		}
		return i
	}
	var n uint64
	lo, hi := -1, -1
	for i, c := range rtt.Buckets {
		n += c
		if c > 0 {
			if lo < 0 {
				lo = i
			}
			hi = i
		}
	}
	if n != rtt.Samples || lo != bucket(rtt.Min) || hi != bucket(rtt.Max) {
		t.Errorf("buckets %v: %d samples in buckets %d..%d, want %d in %d (min %v)..%d (max %v)",
			rtt.Buckets, n, lo, hi, rtt.Samples, bucket(rtt.Min), rtt.Min, bucket(rtt.Max), rtt.Max)
	}
}

// With netem delay on the path, the RTT the path adds is within 20% of the
// delay: every sample is at least the delay (srtt averages samples that all
// include it), and the mean, less the mean of the same exchange measured
// just before without netem, is within 20% of it. (The QEMU guest's own
// veth RTT is milliseconds under load, so it is measured, not assumed.)
// The host kernel has no sch_netem; the QEMU guests (make vmtest) have, and
// set PKTSTAT_REQUIRE_NETEM=1 so that a guest without it fails, not skips.
func TestRTTWithNetemDelay(t *testing.T) {
	nettest.RequireBPF(t)
	requireTracepoint(t, "tcp_probe")
	p := nettest.NewPair(t)
	const delay = 50 * time.Millisecond
	netem := func(verb string) {
		t.Helper()
		args := []string{"-n", p.NSB, "qdisc", verb, "dev", p.IfB, "root", "netem", "delay", delay.String()}
		if out, err := exec.Command("tc", args...).CombinedOutput(); err != nil {
			if strings.Contains(string(out), "qdisc kind is unknown") {
				if os.Getenv("PKTSTAT_REQUIRE_NETEM") == "1" {
					t.Fatalf("PKTSTAT_REQUIRE_NETEM=1 (make vmtest's guests ship net/sched) but kernel %s has no netem qdisc: %s",
						kernelRelease(), strings.TrimSpace(string(out)))
				}
				t.Skipf("kernel %s has no netem qdisc (sch_netem): %s", kernelRelease(), strings.TrimSpace(string(out)))
			}
			t.Fatalf("tc %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	netem("add") // skips here without netem
	netem("del")
	c := startCollector(t, Config{Interfaces: []string{p.IfA}, NetNS: p.NSPathA(), TCPRTT: true})
	exchange := func(port uint16) RTTStats {
		t.Helper()
		cli, srvAddr := netip.AddrPortFrom(p.A4, port), netip.AddrPortFrom(p.B4, port-43031+7331)
		conn, srv := p.DialTCP(t, cli, srvAddr)
		nettest.PingPong(t, conn, srv, 20, 100)
		rtt := rttOf(t, rttRecord(t, c, cli))
		checkBuckets(t, rtt)
		return rtt
	}
	base := exchange(43031)
	netem("add")
	rtt := exchange(43032)
	added := rtt.Mean() - base.Mean()
	t.Logf("without netem: %d samples, mean %v; netem delay %v: %d samples, min %v mean %v max %v; added %v",
		base.Samples, base.Mean(), delay, rtt.Samples, rtt.Min, rtt.Mean(), rtt.Max, added)
	if rtt.Samples == 0 || rtt.Min < delay {
		t.Errorf("%d samples, min RTT %v: want samples, none below the %v delay", rtt.Samples, rtt.Min, delay)
	}
	if added < delay*8/10 || added > delay*12/10 {
		t.Errorf("mean RTT %v, %v more than without netem: want within 20%% of %v", rtt.Mean(), added, delay)
	}
}

// With tcp_rtt off no tcp_probe program is loaded; with it on, one is, and
// Close unloads it. The retransmit program loads in both.
func TestTCPRTTLoadsOnlyWhenSet(t *testing.T) {
	nettest.RequireBPF(t)
	requireTracepoint(t, "tcp_probe")
	requireTracepoint(t, "tcp_retransmit_skb")
	p := nettest.NewPair(t)
	const probe = "tcp_probe_rtt"
	retransmit := []string{"tcp_retransmit", "tcp_retransmit_err"}
	probes0, retrans0 := len(ownProgramsNamed(t, probe)), len(ownProgramsNamed(t, retransmit...))
	for _, on := range []bool{false, true} {
		c := startCollector(t, Config{Interfaces: []string{p.IfA}, NetNS: p.NSPathA(), TCPRTT: on})
		want := 0
		if on {
			want = 1
		}
		probes, retrans := ownProgramsNamed(t, probe), ownProgramsNamed(t, retransmit...)
		if got := len(probes) - probes0; got != want {
			t.Errorf("tcp_rtt = %v: %d %s programs loaded by the collector, want %d", on, got, probe, want)
		}
		if got := len(retrans) - retrans0; got != 1 {
			t.Errorf("tcp_rtt = %v: %d retransmit programs loaded, want 1", on, got)
		}
		c.Close()
		waitUnloaded(t, probe, probes)
		waitUnloaded(t, "retransmit", retrans)
	}
}

// Socket events join the egress record of their ends, preferring the one
// on the socket's route device; without one they get a record of their own
// only on a watched interface; a full table's retransmits go to an
// overflow record. Cumulative and delta counts follow the drains, RTT is
// per drain.
func TestTCPSockDrainJoins(t *testing.T) {
	for _, rd := range readers {
		t.Run(rd.name, func(t *testing.T) { testTCPSockDrainJoins(t, rd.read) })
	}
}

func testTCPSockDrainJoins(t *testing.T, read func(*testing.T, *Collector) Snapshot) {
	nettest.RequireBPF(t)
	requireTracepoint(t, "tcp_retransmit_skb")
	requireTracepoint(t, "tcp_probe")
	p := nettest.NewPair(t)
	c := startCollector(t, Config{Interfaces: []string{p.IfA}, NetNS: p.NSPathA(), TCPRTT: true})
	ts, ncpu := c.tcpsock, c.tcpsock.ncpu // the RTT table's CPUs
	var ifA int
	for i, n := range c.ifaces.names {
		if n == p.IfA {
			ifA = i
		}
	}
	var mono unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono)
	first := uint64(mono.Nano())
	ends := func(k *bpf.FlowFlowKey, ifindex uint32, dport uint16) {
		k.EthProto, k.IpProto, k.Direction, k.Ifindex = EtherTypeIPv4, ProtoTCP, uint8(Egress), ifindex
		copy(k.SrcAddr[:], []byte{198, 51, 100, 1})
		copy(k.DstAddr[:], []byte{198, 51, 100, 2})
		k.SrcPort, k.DstPort = 40000, dport
	}
	put := func(m *ebpf.Map, k any, packets uint64) {
		t.Helper()
		vals := make([]counters, lanesOf(t, m))
		vals[0] = counters{Packets: packets, Bytes: packets * 100, FirstSeenNs: first}
		if err := m.Put(k, vals); err != nil {
			t.Fatal(err)
		}
	}
	sock := func(ifindex uint32, dport uint16) bpf.TcpsockCgroupFlowKey {
		var fk bpf.FlowFlowKey
		ends(&fk, ifindex, dport)
		var k bpf.TcpsockCgroupFlowKey
		k.Flow = fk
		return k
	}
	// Port 80's flow crossed A and a second watched device (ifindex 1
	// stands in for it); the socket routes through A.
	for _, ifindex := range []uint32{1, uint32(ifA)} {
		var fk bpf.FlowFlowKey
		ends(&fk, ifindex, 80)
		put(c.flows.m, fk, 10)
	}
	put(ts.retrans.m, sock(uint32(ifA), 80), 3)
	put(ts.retrans.m, sock(uint32(ifA), 81), 2) // no flow record: an orphan on A
	put(ts.retrans.m, sock(999, 82), 7)         // routed through an unwatched device
	put(ts.retrans.m, sock(1, 83), 6)           // through A's lo: seen, not watched
	put(ts.rov.m, uint32(0), 5)
	rtt := make([]bpf.TcpsockRttStats, ncpu)
	rtt[0] = bpf.TcpsockRttStats{Samples: 2, SumUs: 300, MinUs: 100, MaxUs: 200}
	rtt[ncpu-1] = bpf.TcpsockRttStats{Samples: 1, SumUs: 50, MinUs: 50, MaxUs: 50}
	rtt[0].Buckets[2], rtt[ncpu-1].Buckets[0] = 2, 1
	if err := ts.rtt.Put(sock(uint32(ifA), 80), rtt); err != nil {
		t.Fatal(err)
	}

	type row struct {
		ifindex  uint32
		port     uint16
		overflow bool
		retrans  uint64
		delta    uint64
		samples  uint64
	}
	check := func(want []row) []Record {
		t.Helper()
		s := read(t, c)
		var got []row
		var out []Record
		for _, r := range s.Records {
			if r.SrcAddr == netip.MustParseAddr("198.51.100.1") || r.Overflow && r.Retransmits > 0 {
				got = append(got, row{r.Ifindex, r.DstPort, r.Overflow, r.Retransmits, r.DeltaRetransmits, rttSamples(r)})
				out = append(out, r)
			}
		}
		if fmt.Sprint(sortRows(got)) != fmt.Sprint(sortRows(want)) {
			t.Errorf("records (ifindex, port, overflow, retransmits, delta, rtt samples) %v, want %v", sortRows(got), sortRows(want))
		}
		return out
	}
	a := uint32(ifA)
	rs := check([]row{{0, 0, true, 5, 5, 0}, {1, 80, false, 0, 0, 0}, {a, 80, false, 3, 3, 3}, {a, 81, false, 2, 2, 0}})
	for _, r := range rs {
		if r.DstPort == 80 && r.Ifindex == a {
			want := RTTStats{Samples: 3, Sum: 350 * time.Microsecond, Min: 50 * time.Microsecond, Max: 200 * time.Microsecond}
			want.Buckets[0], want.Buckets[2] = 1, 2
			if r.RTT == nil || *r.RTT != want {
				t.Errorf("RTT %+v, want %+v", r.RTT, want)
			}
		}
	}
	put(ts.retrans.m, sock(uint32(ifA), 80), 4)
	check([]row{{0, 0, true, 5, 0, 0}, {1, 80, false, 0, 0, 0}, {a, 80, false, 4, 1, 0}, {a, 81, false, 2, 0, 0}})
}

// A kernel without the hooks: tcp_rtt fails the start naming the key, the
// kernel and what to do; without the retransmit tracepoint the collector
// starts, says so in one log line, and loads no retransmit program.
func TestTCPSockWithoutTracepoints(t *testing.T) {
	nettest.RequireBPF(t)
	p := nettest.NewPair(t)
	cfg := Config{Interfaces: []string{p.IfA}, NetNS: p.NSPathA(), TCPRTT: true, hideTracepoint: "tcp_probe"}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = c.Start(context.Background())
	c.Close()
	want := "tcp_rtt = true: kernel " + kernelRelease() + " has no tcp_probe tracepoint in its BTF"
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "set tcp_rtt = false") || !errors.Is(err, ErrNotSupported) {
		t.Fatalf("start without tcp_probe: %v, want an ErrNotSupported error with %q and what to do", err, want)
	}

	var log strings.Builder
	cfg = Config{Interfaces: []string{p.IfA}, NetNS: p.NSPathA(), hideTracepoint: "tcp_retransmit_skb",
		Logger: slog.New(slog.NewTextHandler(&log, nil))}
	before := len(ownProgramsNamed(t, "tcp_retransmit", "tcp_retransmit_err"))
	c = startCollector(t, cfg)
	if c.tcpsock != nil {
		t.Error("tcpsock loaded without the retransmit tracepoint and tcp_rtt")
	}
	if n := len(ownProgramsNamed(t, "tcp_retransmit", "tcp_retransmit_err")); n != before {
		t.Errorf("%d retransmit programs loaded, want none", n-before)
	}
	if msg := log.String(); strings.Count(msg, "TCP retransmits not counted") != 1 || !strings.Contains(msg, "kernel="+kernelRelease()) ||
		!strings.Contains(msg, "btf_trace_tcp_retransmit_skb") || !strings.Contains(msg, "mode kprobe counts them") {
		t.Errorf("log does not say once that retransmits are not counted, on which kernel and what counts them:\n%s", msg)
	}
	read(t, c) // counts everything else
}
