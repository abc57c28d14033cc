package nettest

import (
	"fmt"
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

// SendUDP sends n datagrams of payloadLen bytes from A:srcPort to B:dstPort
// and returns once B has received all of them, so counters are final. A
// socket listens on B so that no ICMP port-unreachable answers add traffic.
func (p *Pair) SendUDP(t testing.TB, n, payloadLen int, srcPort, dstPort uint16, v6 bool) {
	t.Helper()
	src, dst := p.A4, p.B4
	network := "udp4"
	if v6 {
		src, dst, network = p.A6, p.B6, "udp6"
	}
	var rx *net.UDPConn
	if err := p.DoB(func() (err error) {
		rx, err = net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, dstPort)))
		return err
	}); err != nil {
		t.Fatalf("listen udp on B: %v", err)
	}
	defer rx.Close()
	if err := rx.SetReadBuffer(4 << 20); err != nil {
		t.Fatalf("set read buffer: %v", err)
	}
	var tx *net.UDPConn
	if err := p.DoA(func() (err error) {
		tx, err = net.DialUDP(network,
			net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, srcPort)),
			net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst, dstPort)))
		return err
	}); err != nil {
		t.Fatalf("dial udp from A: %v", err)
	}
	defer tx.Close()

	done := make(chan error, 1)
	go func() {
		buf := make([]byte, 65536)
		for got := 0; got < n; got++ {
			if err := rx.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
				done <- err
				return
			}
			if _, err := rx.Read(buf); err != nil {
				done <- fmt.Errorf("received %d of %d datagrams: %w", got, n, err)
				return
			}
		}
		done <- nil
	}()
	payload := make([]byte, payloadLen)
	for i := 0; i < n; i++ {
		if _, err := tx.Write(payload); err != nil {
			t.Fatalf("send datagram %d: %v", i, err)
		}
		if i%256 == 255 {
			// Let the receiver drain so no datagram is dropped at its socket.
			time.Sleep(time.Millisecond)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
