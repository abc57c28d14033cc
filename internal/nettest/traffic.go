package nettest

import (
	"net"
	"net/netip"
	"testing"
	"time"
)

// Wire sizes of the headers below a UDP payload on a veth (Ethernet, no FCS).
const (
	EthHeaderLen  = 14
	IPv4HeaderLen = 20
	IPv6HeaderLen = 40
	UDPHeaderLen  = 8
)

// UDPFrameLen is the L2 length of one UDP datagram with payloadLen bytes.
func UDPFrameLen(payloadLen int, v6 bool) int {
	if v6 {
		return EthHeaderLen + IPv6HeaderLen + UDPHeaderLen + payloadLen
	}
	return EthHeaderLen + IPv4HeaderLen + UDPHeaderLen + payloadLen
}

// Receiver is a UDP socket in one namespace that counts what arrives.
type Receiver struct {
	*net.UDPConn
	got chan int
}

// ListenUDP opens a UDP socket on addr:port inside the namespace at nsPath
// and counts datagrams until the socket is closed (at the end of t).
func ListenUDP(t testing.TB, nsPath string, addr netip.Addr, port uint16) *Receiver {
	t.Helper()
	var conn *net.UDPConn
	if err := Do(nsPath, func() (err error) {
		conn, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, port)))
		return err
	}); err != nil {
		t.Fatalf("listen udp on %s port %d: %v", addr, port, err)
	}
	t.Cleanup(func() { conn.Close() })
	if err := conn.SetReadBuffer(4 << 20); err != nil {
		t.Fatalf("set read buffer: %v", err)
	}
	r := &Receiver{UDPConn: conn, got: make(chan int, 1<<16)}
	go func() {
		buf := make([]byte, 65536)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(r.got)
				return
			}
			r.got <- n
		}
	}()
	return r
}

// Wait returns once n datagrams have arrived, and fails t after 5 s without one.
func (r *Receiver) Wait(t testing.TB, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		select {
		case _, ok := <-r.got:
			if !ok {
				t.Fatalf("receiver closed after %d of %d datagrams", i, n)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("received %d of %d datagrams", i, n)
		}
	}
}

// SendUDP sends n datagrams of payloadLen bytes from A:srcPort to B:dstPort
// and returns once B has received all of them, so counters are final. A
// socket listens on B so that no ICMP port-unreachable answers add traffic.
func (p *Pair) SendUDP(t testing.TB, n, payloadLen int, srcPort, dstPort uint16, v6 bool) {
	t.Helper()
	src, dst := p.A4, p.B4
	if v6 {
		src, dst = p.A6, p.B6
	}
	rx := ListenUDP(t, p.NSPathB(), dst, dstPort)
	defer rx.Close()
	var tx *net.UDPConn
	if err := p.DoA(func() (err error) {
		tx, err = net.DialUDP("udp",
			net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, srcPort)),
			net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, dstPort)))
		return err
	}); err != nil {
		t.Fatalf("dial udp from A: %v", err)
	}
	defer tx.Close()
	payload := make([]byte, payloadLen)
	// Send in windows and wait for each to arrive: a slow receiver (a
	// loaded host, an emulated guest) would otherwise overflow its socket
	// buffer and the test would count datagrams the kernel dropped.
	const window = 32
	for sent := 0; sent < n; {
		k := min(window, n-sent)
		for i := 0; i < k; i++ {
			if _, err := tx.Write(payload); err != nil {
				t.Fatalf("send datagram %d: %v", sent+i, err)
			}
		}
		rx.Wait(t, k)
		sent += k
	}
}

// SendUDPToPorts sends one datagram of payloadLen bytes from A to each of
// ports on B, without waiting for any to arrive: every one is a new flow.
func (p *Pair) SendUDPToPorts(t testing.TB, ports int, firstPort uint16, payloadLen int) {
	t.Helper()
	tx := p.unconnectedA(t, 0)
	defer tx.Close()
	payload := make([]byte, payloadLen)
	for i := 0; i < ports; i++ {
		dst := net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.B4, firstPort+uint16(i)))
		if _, err := tx.WriteTo(payload, dst); err != nil {
			t.Fatalf("send to port %d: %v", firstPort+uint16(i), err)
		}
	}
}

// SendUDPNoWait sends n datagrams of payloadLen bytes from A:srcPort to
// B:dstPort (IPv4) without waiting for them: for traffic that B drops. The
// socket is unconnected, so ICMP errors from B do not fail the sends.
func (p *Pair) SendUDPNoWait(t testing.TB, n, payloadLen int, srcPort, dstPort uint16) {
	t.Helper()
	tx := p.unconnectedA(t, srcPort)
	defer tx.Close()
	dst := net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.B4, dstPort))
	payload := make([]byte, payloadLen)
	for i := 0; i < n; i++ {
		if _, err := tx.WriteTo(payload, dst); err != nil {
			t.Fatalf("send datagram %d to port %d: %v", i, dstPort, err)
		}
	}
}

// unconnectedA opens an unconnected IPv4 UDP socket on A:port (0: any port).
func (p *Pair) unconnectedA(t testing.TB, port uint16) *net.UDPConn {
	t.Helper()
	var tx *net.UDPConn
	if err := p.DoA(func() (err error) {
		tx, err = net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.A4, port)))
		return err
	}); err != nil {
		t.Fatalf("open udp socket in A: %v", err)
	}
	return tx
}

// SendUDPFromB is SendUDP in the other direction, from B:srcPort to A:dstPort.
func (p *Pair) SendUDPFromB(t testing.TB, n, payloadLen int, srcPort, dstPort uint16, v6 bool) {
	t.Helper()
	q := *p
	q.NSA, q.NSB = p.NSB, p.NSA
	q.A4, q.B4, q.A6, q.B6 = p.B4, p.A4, p.B6, p.A6
	q.SendUDP(t, n, payloadLen, srcPort, dstPort, v6)
}

// Stream is a steady flow of UDP datagrams from A to B, for tests that
// restart a collector while traffic goes on.
type Stream struct {
	rx   *Receiver
	stop chan struct{}
	sent chan int
	err  chan error
}

// StartStream sends a datagram of payloadLen bytes from A:srcPort to
// B:dstPort every interval until Stop.
func (p *Pair) StartStream(t testing.TB, payloadLen int, srcPort, dstPort uint16, interval time.Duration) *Stream {
	t.Helper()
	s := &Stream{rx: ListenUDP(t, p.NSPathB(), p.B4, dstPort), stop: make(chan struct{}), sent: make(chan int, 1), err: make(chan error, 1)}
	var tx *net.UDPConn
	if err := p.DoA(func() (err error) {
		tx, err = net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.A4, srcPort)),
			net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.B4, dstPort)))
		return err
	}); err != nil {
		t.Fatalf("dial udp from A: %v", err)
	}
	go func() {
		defer tx.Close()
		payload := make([]byte, payloadLen)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		n := 0
		for {
			select {
			case <-s.stop:
				s.sent <- n
				return
			case <-tick.C:
				if _, err := tx.Write(payload); err != nil {
					s.err <- err
					s.sent <- n
					return
				}
				n++
			}
		}
	}()
	return s
}

// Stop ends the stream and returns the number of datagrams sent, once B
// has received every one of them.
func (s *Stream) Stop(t testing.TB) int {
	t.Helper()
	close(s.stop)
	n := <-s.sent
	select {
	case err := <-s.err:
		t.Fatalf("stream send %d: %v", n, err)
	default:
	}
	s.rx.Wait(t, n)
	return n
}

// Flow is one UDP flow a test sends between the pair's ends, A to B unless
// FromB.
type Flow struct {
	N, Payload       int
	SrcPort, DstPort uint16
	V6, FromB        bool
}

// Send sends n datagrams of f (which need not be f.N) and returns their
// L2 bytes, what tc and xdp count for them.
func (p *Pair) Send(t testing.TB, f Flow, n int) uint64 {
	t.Helper()
	if f.FromB {
		p.SendUDPFromB(t, n, f.Payload, f.SrcPort, f.DstPort, f.V6)
	} else {
		p.SendUDP(t, n, f.Payload, f.SrcPort, f.DstPort, f.V6)
	}
	return uint64(n) * uint64(UDPFrameLen(f.Payload, f.V6))
}
