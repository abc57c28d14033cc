package core

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/btf"

	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// requireDrops skips t when the kernel has no kfree_skb tracepoint with a
// reason (probed from its BTF). With PKTSTAT_REQUIRE_BPF=1 that is a
// failure, unless the kernel is declared to lack it (PKTSTAT_KERNEL_LACKS
// names drop_reason: make vmtest's 5.10 guest, from before 5.17).
func requireDrops(t *testing.T) {
	t.Helper()
	spec, err := btf.LoadKernelSpec()
	if err == nil {
		_, err = probeDrops(spec, kernelRelease())
	}
	if err != nil {
		skipLacking(t, "drop_reason", "kernel feature missing (drop_reason): %v", err)
	}
	checkNotDeclaredLacking(t, "drop_reason")
}

// startDropCollector runs the tc collector on B's end with drops on: the
// test traffic goes from A to B and is dropped in B.
func startDropCollector(t *testing.T, p *nettest.Pair) *Collector {
	t.Helper()
	requireDrops(t)
	return startCollector(t, Config{Interfaces: []string{p.IfB}, NetNS: p.NSPathB(), Drops: true})
}

// snmp reads one counter of /proc/net/snmp in B ("Udp", "NoPorts").
func snmp(t *testing.T, p *nettest.Pair, group, name string) uint64 {
	t.Helper()
	var v uint64
	err := p.DoB(func() error {
		f, err := os.Open("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		var header []string
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) == 0 || fields[0] != group+":" {
				continue
			}
			if header == nil {
				header = fields
				continue
			}
			for i, h := range header {
				if h == name && i < len(fields) {
					v, err = strconv.ParseUint(fields[i], 10, 64)
					return err
				}
			}
		}
		return fmt.Errorf("no %s %s in /proc/net/snmp", group, name)
	})
	if err != nil {
		t.Fatalf("read snmp: %v", err)
	}
	return v
}

// dropsTo sums the drop records of reason to B's port dport.
func dropsTo(s Snapshot, reason string, dport uint16) (packets, bytes uint64, rs []Record) {
	for _, r := range s.Drops {
		if r.DropReason == reason && r.DstPort == dport && !r.Overflow {
			packets += r.Packets
			bytes += r.Bytes
			rs = append(rs, r)
		}
	}
	return packets, bytes, rs
}

// readDrops reads until the drops of reason to dport reach want (the
// tracepoint fires after the oracle counters move), then once more so that
// an excess would show.
func readDrops(t *testing.T, c *Collector, reason string, dport uint16, want uint64) (Snapshot, uint64, uint64, []Record) {
	t.Helper()
	var s Snapshot
	waitFor(t, func() bool {
		s = read(t, c)
		p, _, _ := dropsTo(s, reason, dport)
		return p >= want
	}, fmt.Sprintf("see %d %s drops to port %d", want, reason, dport))
	time.Sleep(100 * time.Millisecond)
	s = read(t, c)
	p, b, rs := dropsTo(s, reason, dport)
	return s, p, b, rs
}

// checkDropFlow checks the drop records' key (one udp flow A->B on B's end,
// ingress) and that they do not exceed what the TC ingress hook counted of
// the same flow: the same packets, 14 bytes of Ethernet header more each.
func checkDropFlow(t *testing.T, p *nettest.Pair, s Snapshot, rs []Record, sport, dport uint16, dropped uint64) {
	t.Helper()
	if len(rs) != 1 {
		t.Fatalf("want one drop record to port %d, got %d: %+v", dport, len(rs), rs)
	}
	r := rs[0]
	if r.Direction != Ingress || r.Interface != p.IfB || r.Proto != ProtoUDP || r.SrcAddr != p.A4 || r.DstAddr != p.B4 ||
		r.SrcPort != sport || r.StartTime.IsZero() || r.StartTime.After(s.Time) {
		t.Errorf("drop record %+v: want udp %s:%d -> %s:%d ingress on %s, started before the read", r, p.A4, sport, p.B4, dport, p.IfB)
	}
	tc := find(s, func(r Record) bool { return r.Direction == Ingress && r.DstPort == dport && r.Proto == ProtoUDP })
	if len(tc) != 1 {
		t.Fatalf("want one tc ingress flow to port %d, got %+v", dport, tc)
	}
	if dropped > tc[0].Packets || r.Bytes+dropped*nettest.EthHeaderLen > tc[0].Bytes {
		t.Errorf("drops %d packets %d bytes exceed the tc ingress flow's %d packets %d bytes", dropped, r.Bytes, tc[0].Packets, tc[0].Bytes)
	}
}

// l3 is the IPv4 length of a UDP datagram of size bytes, what drop records count.
func l3(size int) uint64 {
	return uint64(nettest.IPv4HeaderLen + nettest.UDPHeaderLen + size)
}

// nft runs nft in B.
func nft(t *testing.T, p *nettest.Pair, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", p.NSB, "nft"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("nft %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// N datagrams into an nftables drop rule in B: N drops netfilter_drop on
// the flow, with the rule's own counter as the reference.
func TestDropNetfilter(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Fatalf("nft not installed: %v (make deps)", err)
	}
	p := nettest.NewPair(t)
	c := startDropCollector(t, p)
	table := "pktstat_drops_" + strconv.Itoa(os.Getpid())
	nft(t, p, "add", "table", "inet", table)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "exec", p.NSB, "nft", "delete", "table", "inet", table).Run() })
	nft(t, p, "add", "chain", "inet", table, "in", "{ type filter hook input priority 0 ; }")
	nft(t, p, "add", "rule", "inet", table, "in", "udp", "dport", "7101", "counter", "drop")

	const n, size, sport, dport = 150, 400, 41101, 7101
	p.SendUDPNoWait(t, n, size, sport, dport)
	var nftPackets, nftBytes uint64
	counter := regexp.MustCompile(`counter packets (\d+) bytes (\d+) drop`)
	waitFor(t, func() bool {
		m := counter.FindStringSubmatch(nft(t, p, "list", "chain", "inet", table, "in"))
		if m == nil {
			t.Fatalf("no counter in the nft rule")
		}
		nftPackets, _ = strconv.ParseUint(m[1], 10, 64)
		nftBytes, _ = strconv.ParseUint(m[2], 10, 64)
		return nftPackets >= n
	}, "see the nft rule count every datagram")
	s, packets, bytes, rs := readDrops(t, c, "netfilter_drop", dport, n)
	if packets != n || bytes != n*l3(size) {
		t.Errorf("netfilter_drop: %d packets %d bytes, want %d and %d", packets, bytes, n, n*l3(size))
	}
	if packets != nftPackets || bytes != nftBytes {
		t.Errorf("netfilter_drop: %d packets %d bytes, the nft rule counted %d and %d", packets, bytes, nftPackets, nftBytes)
	}
	checkDropFlow(t, p, s, rs, sport, dport, packets)
}

// N datagrams to a port with no socket: N drops no_socket, as the UDP
// NoPorts counter says.
func TestDropNoSocket(t *testing.T) {
	p := nettest.NewPair(t)
	c := startDropCollector(t, p)
	before := snmp(t, p, "Udp", "NoPorts")
	const n, size, sport, dport = 120, 200, 41102, 7102
	p.SendUDPNoWait(t, n, size, sport, dport)
	waitFor(t, func() bool { return snmp(t, p, "Udp", "NoPorts")-before >= n }, "see Udp NoPorts count every datagram")
	s, packets, bytes, rs := readDrops(t, c, "no_socket", dport, n)
	if noPorts := snmp(t, p, "Udp", "NoPorts") - before; packets != n || bytes != n*l3(size) || noPorts != n {
		t.Errorf("no_socket: %d packets %d bytes (Udp NoPorts %d), want %d and %d", packets, bytes, noPorts, n, n*l3(size))
	}
	checkDropFlow(t, p, s, rs, sport, dport, packets)
}

// A receiver that never reads, with a small SO_RCVBUF: socket_rcvbuff drops
// equal sent minus what the socket then holds, and the Udp RcvbufErrors counter.
func TestDropSocketRcvbuf(t *testing.T) {
	p := nettest.NewPair(t)
	c := startDropCollector(t, p)
	const n, size, sport, dport = 100, 1000, 41103, 7103
	var rx *net.UDPConn
	if err := p.DoB(func() (err error) {
		rx, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.B4, dport)))
		return err
	}); err != nil {
		t.Fatalf("listen in B: %v", err)
	}
	defer rx.Close()
	// The kernel raises this to its minimum, a few datagrams' worth.
	if err := rx.SetReadBuffer(1); err != nil {
		t.Fatal(err)
	}
	before := snmp(t, p, "Udp", "RcvbufErrors")
	rxBefore := nettest.Stats(t, p.NSB, p.IfB)
	p.SendUDPNoWait(t, n, size, sport, dport)
	waitFor(t, func() bool { return nettest.Stats(t, p.NSB, p.IfB).Sub(rxBefore).RxPackets >= n }, "see every datagram on B's veth")

	var rcvbufErrs uint64
	waitFor(t, func() bool {
		rcvbufErrs = snmp(t, p, "Udp", "RcvbufErrors") - before
		return rcvbufErrs > 0
	}, "see Udp RcvbufErrors grow")
	s, packets, bytes, rs := readDrops(t, c, "socket_rcvbuff", dport, rcvbufErrs)
	received := 0
	buf := make([]byte, 2048)
	for {
		rx.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if _, err := rx.Read(buf); err != nil {
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatal(err)
			}
			break
		}
		received++
	}
	t.Logf("sent %d, the socket held %d, socket_rcvbuff drops %d, RcvbufErrors %d", n, received, packets, rcvbufErrs)
	if received == 0 || received == n {
		t.Fatalf("the socket held %d of %d datagrams: the test needs some kept and some dropped", received, n)
	}
	if packets != uint64(n-received) || packets != rcvbufErrs || bytes != packets*l3(size) {
		t.Errorf("socket_rcvbuff: %d packets %d bytes, want sent-received %d (RcvbufErrors %d) and %d bytes",
			packets, bytes, n-received, rcvbufErrs, packets*l3(size))
	}
	checkDropFlow(t, p, s, rs, sport, dport, packets)
}

// With drops off nothing extra is loaded; with drops on, exactly the
// kfree_skb program, gone again after Close.
func TestDropOffLoadsNothing(t *testing.T) {
	p := nettest.NewPair(t)
	requireDrops(t)
	// The programs this process holds (ownPrograms), not every kfree_skb
	// program on the machine: an agent started beside the test has its own.
	base := len(ownProgramsNamed(t, "kfree_skb"))
	off := startCollector(t, Config{Interfaces: []string{p.IfB}, NetNS: p.NSPathB()})
	if got := len(ownProgramsNamed(t, "kfree_skb")); got != base {
		t.Errorf("drops off: %d kfree_skb programs loaded, want %d as before Start", got, base)
	}
	if s := read(t, off); s.Drops != nil {
		t.Errorf("drops off: snapshot has drops %+v", s.Drops)
	}
	off.Close()
	on := startCollector(t, Config{Interfaces: []string{p.IfB}, NetNS: p.NSPathB(), Drops: true})
	ids := ownProgramsNamed(t, "kfree_skb")
	if got := len(ids); got != base+1 {
		t.Errorf("drops on: %d kfree_skb programs loaded, want %d", got, base+1)
	}
	on.Close()
	waitUnloaded(t, "kfree_skb", ids)
}

// Drops on another namespace's interface with the same name pattern are not counted.
func TestDropOtherNamespaceNotCounted(t *testing.T) {
	p := nettest.NewPair(t)
	c := startDropCollector(t, p)
	// A drops nothing of its own here; B's drops are counted only on B's side.
	other := nettest.NewPair(t)
	before := snmp(t, other, "Udp", "NoPorts")
	other.SendUDPNoWait(t, 20, 100, 41104, 7104)
	waitFor(t, func() bool { return snmp(t, other, "Udp", "NoPorts")-before >= 20 }, "see Udp NoPorts count the other pair's datagrams")
	time.Sleep(100 * time.Millisecond)
	if packets, _, rs := dropsTo(read(t, c), "no_socket", 7104); packets != 0 {
		t.Errorf("drops of another namespace counted: %+v", rs)
	}
}

// The BTF probe on synthetic kernels: 6.x (reason argument and enum), 5.10
// (no reason argument), a kernel without the tracepoint.
func TestDropProbe(t *testing.T) {
	reasonEnum := &btf.Enum{Name: "skb_drop_reason", Size: 4, Values: []btf.EnumValue{
		{Name: "SKB_NOT_DROPPED_YET", Value: 0}, {Name: "SKB_CONSUMED", Value: 1},
		{Name: "SKB_DROP_REASON_NOT_SPECIFIED", Value: 2}, {Name: "SKB_DROP_REASON_NO_SOCKET", Value: 3},
		{Name: "SKB_DROP_REASON_NETFILTER_DROP", Value: 9},
	}}
	void := &btf.Pointer{Target: &btf.Void{}}
	skb := &btf.Pointer{Target: &btf.Struct{Name: "sk_buff"}}
	tracepoint := func(params ...btf.FuncParam) btf.Type {
		return &btf.Typedef{Name: "btf_trace_kfree_skb", Type: &btf.Pointer{Target: &btf.FuncProto{Return: &btf.Void{}, Params: params}}}
	}
	withReason := tracepoint(btf.FuncParam{Type: void}, btf.FuncParam{Type: skb}, btf.FuncParam{Type: void}, btf.FuncParam{Type: reasonEnum})
	noReason := tracepoint(btf.FuncParam{Type: void}, btf.FuncParam{Type: skb}, btf.FuncParam{Type: void})
	for _, tc := range []struct {
		name    string
		types   []btf.Type
		wantErr string
	}{
		{"6.1", []btf.Type{withReason, reasonEnum}, ""},
		{"5.10", []btf.Type{noReason}, "drops: the kfree_skb tracepoint of kernel 5.10.0-test passes no drop reason (added in Linux 5.17): remove drops, or use Linux 5.17 or later (tc and xdp counting work without it): not supported"},
		{"no tracepoint", []btf.Type{reasonEnum}, "drops: kernel 5.10.0-test has no kfree_skb tracepoint in its BTF: remove drops, or use Linux 5.17 or later (tc and xdp counting work without it): not supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := btf.NewBuilder(tc.types, nil)
			if err != nil {
				t.Fatal(err)
			}
			spec, err := b.Spec()
			if err != nil {
				t.Fatal(err)
			}
			r, err := probeDrops(spec, "5.10.0-test")
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr || !errors.Is(err, ErrNotSupported) {
					t.Fatalf("error %v, want %q wrapping ErrNotSupported", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.consumed != 1 || r.notDroppedYet != 0 || r.name(3) != "no_socket" || r.name(9) != "netfilter_drop" || r.name(0x10002) != "reason_65538" {
				t.Errorf("reasons %+v: consumed %d, not dropped yet %d, names %q %q %q", r.names, r.consumed, r.notDroppedYet, r.name(3), r.name(9), r.name(0x10002))
			}
		})
	}
}

// The filters apply to drops as to flows: a left-out packet's drop is in
// the filtered drop record of its interface, direction and reason.
func TestDropFiltered(t *testing.T) {
	p := nettest.NewPair(t)
	requireDrops(t)
	c := startCollector(t, Config{Interfaces: []string{p.IfB}, NetNS: p.NSPathB(), Drops: true, Filters: Filters{ExcludePorts: []string{"7105"}}})
	before := snmp(t, p, "Udp", "NoPorts")
	const n, size = 30, 100
	p.SendUDPNoWait(t, n, size, 41105, 7105)
	waitFor(t, func() bool { return snmp(t, p, "Udp", "NoPorts")-before >= n }, "see Udp NoPorts count every datagram")
	var filtered Record
	waitFor(t, func() bool {
		s := read(t, c)
		if packets, _, rs := dropsTo(s, "no_socket", 7105); packets != 0 {
			t.Fatalf("filtered-out drops counted on their flow: %+v", rs)
		}
		for _, r := range s.Drops {
			if r.Filtered && r.DropReason == "no_socket" {
				filtered = r
			}
		}
		return filtered.Packets >= n
	}, "see the filtered no_socket drops")
	if filtered.Packets != n || filtered.Bytes != n*l3(size) || filtered.Interface != p.IfB || filtered.Direction != Ingress {
		t.Errorf("filtered drops %+v: want %d packets %d bytes, ingress on %s", filtered, n, n*l3(size), p.IfB)
	}
}

// An idle drop entry expires like a flow: reported once more, marked
// Expired with its final counts, then gone; drops of the same flow after
// that start a new series.
func TestDropExpires(t *testing.T) {
	p := nettest.NewPair(t)
	requireDrops(t)
	c := startCollector(t, Config{Interfaces: []string{p.IfB}, NetNS: p.NSPathB(), Drops: true, IdleTimeout: 300 * time.Millisecond})
	before := snmp(t, p, "Udp", "NoPorts")
	const n, size, dport = 10, 100, 7106
	p.SendUDPNoWait(t, n, size, 41106, dport)
	waitFor(t, func() bool { return snmp(t, p, "Udp", "NoPorts")-before >= n }, "see Udp NoPorts count every datagram")
	_, packets, _, rs := readDrops(t, c, "no_socket", dport, n)
	if packets != n || len(rs) != 1 || rs[0].Expired {
		t.Fatalf("first read: %+v, want one live record of %d drops", rs, n)
	}
	first := rs[0].StartTime
	var expired Record
	waitFor(t, func() bool {
		_, _, rs := dropsTo(read(t, c), "no_socket", dport)
		if len(rs) == 1 && rs[0].Expired {
			expired = rs[0]
		}
		return expired.Expired
	}, "see the drop entry expire")
	if expired.Packets != n || expired.Bytes != n*l3(size) || expired.DeltaPackets != 0 {
		t.Errorf("expired record %+v: want the final %d packets %d bytes and no new ones", expired, n, n*l3(size))
	}
	if _, _, rs := dropsTo(read(t, c), "no_socket", dport); len(rs) != 0 {
		t.Errorf("after expiry the drop entry is still reported: %+v", rs)
	}
	p.SendUDPNoWait(t, 3, size, 41106, dport)
	_, packets, _, rs = readDrops(t, c, "no_socket", dport, 3)
	if packets != 3 || len(rs) != 1 || !rs[0].StartTime.After(first) {
		t.Errorf("drops after expiry: %+v, want a new series of 3 starting after %v", rs, first)
	}
}

// A full drop table loses no drop: the flows that do not fit are counted in
// the overflow record of their interface, direction and reason.
func TestDropOverflow(t *testing.T) {
	p := nettest.NewPair(t)
	requireDrops(t)
	const table, ports, size, firstPort = 16, 40, 100, 7200
	c := startCollector(t, Config{Interfaces: []string{p.IfB}, NetNS: p.NSPathB(), Drops: true, dropTable: table})
	before := snmp(t, p, "Udp", "NoPorts")
	p.SendUDPToPorts(t, ports, firstPort, size)
	waitFor(t, func() bool { return snmp(t, p, "Udp", "NoPorts")-before >= ports }, "see Udp NoPorts count every datagram")
	var flows, overflow []Record
	var total uint64
	waitFor(t, func() bool {
		flows, overflow, total = nil, nil, 0
		for _, r := range read(t, c).Drops {
			if r.DropReason != "no_socket" || r.Proto != ProtoUDP && !r.Overflow {
				continue
			}
			if r.Overflow {
				overflow = append(overflow, r)
			} else if r.DstPort >= firstPort && r.DstPort < firstPort+ports {
				flows = append(flows, r)
			} else {
				continue
			}
			total += r.Packets
		}
		return total >= ports
	}, "see every drop counted")
	if len(overflow) == 1 {
		t.Logf("%d drops: %d in %d flow records, %d in the overflow record", total, total-overflow[0].Packets, len(flows), overflow[0].Packets)
	}
	if len(flows) > table || len(overflow) != 1 || total != ports || overflow[0].Packets != ports-uint64(len(flows)) ||
		overflow[0].Interface != p.IfB || overflow[0].Direction != Ingress || overflow[0].Bytes != overflow[0].Packets*l3(size) {
		t.Errorf("%d flow records (table %d), overflow %+v, total %d: want every one of %d drops in a flow or the one ingress overflow record on %s",
			len(flows), table, overflow, total, ports, p.IfB)
	}
}
