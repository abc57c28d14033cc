package nettest

import "testing"

// The veth's own counters must see exactly the datagrams SendUDP sent: the
// BPF tests compare their results against these counters.
func TestSendUDPMatchesLinkCounters(t *testing.T) {
	p := NewPair(t)
	for _, v6 := range []bool{false, true} {
		before := p.LinkStats(t, p.NSA, p.IfA)
		const n, size = 300, 100
		p.SendUDP(t, n, size, 4000, 5000, v6)
		got := p.LinkStats(t, p.NSA, p.IfA).Sub(before)
		want := LinkStats{TxPackets: n, TxBytes: uint64(n * UDPFrameLen(size, v6))}
		if got != want {
			t.Errorf("v6=%v: link counters moved by %+v, want %+v", v6, got, want)
		}
	}
}
