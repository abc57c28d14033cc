package core

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// A killed process takes its TCX and XDP links with it. Legacy cls_bpf
// filters survive their process, so the next start removes them.
func TestKilledProcessLeavesNothingAttached(t *testing.T) {
	p := nettest.NewPair(t)
	for _, tc := range []struct {
		mode   Mode
		legacy bool
	}{{ModeTC, false}, {ModeXDP, false}, {ModeTC, true}} {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "PKTSTAT_HELPER=hold-collector", "PKTSTAT_MODE="+string(tc.mode),
			"PKTSTAT_IFACE="+p.IfA, "PKTSTAT_NETNS="+p.NSPathA(), "PKTSTAT_LEGACY="+map[bool]string{true: "1"}[tc.legacy])
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, _ := bufio.NewReader(out).ReadString('\n')
		if strings.TrimSpace(line) != "attached" {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("%s legacy=%v: child said %q", tc.mode, tc.legacy, line)
		}
		// Without TCX (before 6.6) tc mode falls back to cls_bpf on its own.
		legacy := tc.legacy || tc.mode == ModeTC && !haveTCX(t)
		want := map[Mode]int{ModeTC: 2, ModeXDP: 1}[tc.mode]
		if got := attachedPrograms(t, p.NSA, p.IfA); got != want {
			t.Errorf("%s legacy=%v: %d programs attached while running, want %d", tc.mode, tc.legacy, got, want)
		}
		cmd.Process.Kill()
		cmd.Wait()
		got := attachedPrograms(t, p.NSA, p.IfA)
		if legacy {
			if got != 2 {
				t.Fatalf("legacy tc: %d filters after kill; the kernel keeps cls_bpf filters, want 2", got)
			}
			// The next start takes the stale filters over, and its Close removes them.
			c := startCollector(t, Config{Mode: ModeTC, Interfaces: []string{p.IfA}, NetNS: p.NSPathA(), legacyTC: tc.legacy})
			if got := attachedPrograms(t, p.NSA, p.IfA); got != 2 {
				t.Errorf("legacy tc restart: %d filters, want 2 (stale ones replaced, not added to)", got)
			}
			p.SendUDP(t, 7, 100, 40009, 7009, false)
			rs := find(read(t, c), func(r Record) bool { return r.DstPort == 7009 })
			if len(rs) != 1 || rs[0].Packets != 7 {
				t.Errorf("legacy tc restart counts %+v, want 7 packets exactly once", rs)
			}
			c.Close()
			got = attachedPrograms(t, p.NSA, p.IfA)
		}
		if got != 0 {
			t.Errorf("%s legacy=%v: %d programs left attached", tc.mode, tc.legacy, got)
		}
	}
}

// haveTCX reports whether the kernel has TCX links (6.6+): querying them
// on loopback fails with EINVAL or ErrNotSupported where it does not.
func haveTCX(t *testing.T) bool {
	t.Helper()
	_, err := link.QueryPrograms(link.QueryOptions{Target: 1, Attach: ebpf.AttachTCXIngress})
	switch {
	case err == nil:
		checkNotDeclaredLacking(t, "tcx")
		return true
	case errors.Is(err, ebpf.ErrNotSupported) || errors.Is(err, unix.EINVAL):
		return false
	}
	t.Fatalf("query tcx on lo: %v", err)
	return false
}

// An idle flow is reported once more with its final counts, marked Expired,
// then leaves; when it comes back it is a new series with a new start time.
func TestIdleFlowsExpire(t *testing.T) {
	p := nettest.NewPair(t)
	c := startCollector(t, Config{Mode: ModeTC, Interfaces: []string{p.IfA}, NetNS: p.NSPathA(), IdleTimeout: 300 * time.Millisecond})
	port := func(r Record) bool { return r.DstPort == 7010 && r.Direction == Egress }
	p.SendUDP(t, 5, 64, 40010, 7010, false)
	first := find(read(t, c), port)
	if len(first) != 1 || first[0].Packets != 5 || first[0].Expired {
		t.Fatalf("first read %+v", first)
	}
	p.SendUDP(t, 3, 64, 40010, 7010, false)
	time.Sleep(400 * time.Millisecond)
	// The 3 new packets arrived after the first read: the flow was not idle
	// at this read, so it is still live.
	live := find(read(t, c), port)
	if len(live) != 1 || live[0].Packets != 8 || live[0].DeltaPackets != 3 || live[0].Expired {
		t.Fatalf("second read %+v, want 8 packets, delta 3, live", live)
	}
	time.Sleep(400 * time.Millisecond)
	exp := find(read(t, c), port)
	if len(exp) != 1 || !exp[0].Expired || exp[0].Packets != 8 || exp[0].DeltaPackets != 0 {
		t.Fatalf("third read %+v, want the final report: expired with 8 packets", exp)
	}
	if got := find(read(t, c), port); len(got) != 0 {
		t.Fatalf("expired flow still reported: %+v", got)
	}
	p.SendUDP(t, 2, 64, 40010, 7010, false)
	again := find(read(t, c), port)
	if len(again) != 1 || again[0].Packets != 2 || !again[0].StartTime.After(first[0].StartTime) {
		t.Fatalf("returning flow %+v, want a new series of 2 packets starting after %v", again, first[0].StartTime)
	}
}

// With a table of 1024 flows and 5000 flows sent, the totals still equal
// what was sent and the overflow is reported.
func TestOverflowOnRealTraffic(t *testing.T) {
	p := nettest.NewPair(t)
	c := startCollector(t, Config{Mode: ModeTC, Interfaces: []string{p.IfA}, NetNS: p.NSPathA(), MaxFlows: 1024})
	before := p.LinkStats(t, p.NSA, p.IfA)
	const flows, payload = 5000, 20
	p.SendUDPToPorts(t, flows, 20000, payload)
	s := read(t, c)
	link := p.LinkStats(t, p.NSA, p.IfA).Sub(before)
	var tp, tb, op, ob uint64
	overflowRecords := 0
	for _, r := range s.Records {
		if r.Direction != Egress {
			continue
		}
		tp += r.Packets
		tb += r.Bytes
		if r.Overflow {
			overflowRecords++
			op += r.Packets
			ob += r.Bytes
			if r.Interface != p.IfA {
				t.Errorf("overflow record on %q, want %s", r.Interface, p.IfA)
			}
		}
	}
	if link.TxPackets != flows || tp != link.TxPackets || tb != link.TxBytes {
		t.Errorf("egress totals %d packets %d bytes; veth sent %d and %d; test sent %d", tp, tb, link.TxPackets, link.TxBytes, flows)
	}
	frame := uint64(nettest.UDPFrameLen(payload, false))
	if overflowRecords != 1 || op < flows-1024 || ob != op*frame {
		t.Errorf("overflow: %d records, %d packets %d bytes; want one record of at least %d packets", overflowRecords, op, ob, flows-1024)
	}
	if s.Health.OverflowPackets != op || s.Health.ActiveFlows > 1024 || s.Health.Capacity != 1024 {
		t.Errorf("health %+v, want overflow %d packets, at most 1024 active flows", s.Health, op)
	}
}
