package nettest

import (
	"io"
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// SendTCPWithLoss connects from cli in A to srv in B, writes payload bytes
// once while B's socket drops everything it receives, so the sender
// retransmits on timeout, then lets the data through and returns the
// kernel's own retransmission count for the connection (tcpi_total_retrans)
// once B has read all of it. The write is one sendmsg from this process.
// Tail loss probes are off in A (tcp_early_retrans=0): they retransmit
// without tcp_retransmit_skb, which is what kprobe mode counts.
func (p *Pair) SendTCPWithLoss(t testing.TB, cli, srv netip.AddrPort, payload int) uint32 {
	t.Helper()
	var ln net.Listener
	if err := p.DoB(func() (err error) {
		ln, err = net.Listen("tcp", srv.String())
		return err
	}); err != nil {
		t.Fatalf("listen on %s in %s: %v", srv, p.NSB, err)
	}
	defer ln.Close()
	var conn net.Conn
	if err := p.DoA(func() (err error) {
		if err := os.WriteFile("/proc/sys/net/ipv4/tcp_early_retrans", []byte("0"), 0); err != nil {
			return err
		}
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(cli)}
		conn, err = d.Dial("tcp", srv.String())
		return err
	}); err != nil {
		t.Fatalf("connect %s to %s: %v", cli, srv, err)
	}
	defer conn.Close()
	ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	peer, err := ln.Accept()
	if err != nil {
		t.Fatalf("accept on %s: %v", srv, err)
	}
	defer peer.Close()
	drop := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0}}
	if err := WithFD(peer, func(fd int) error {
		return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: 1, Filter: &drop[0]})
	}); err != nil {
		t.Fatalf("attach the dropping socket filter: %v", err)
	}
	if _, err := conn.Write(make([]byte, payload)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // retransmission timeouts at about 0.2, 0.6 and 1.4 s
	if err := WithFD(peer, func(fd int) error {
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DETACH_FILTER, 0)
	}); err != nil {
		t.Fatalf("detach the socket filter: %v", err)
	}
	peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(peer, make([]byte, payload)); err != nil {
		t.Fatalf("read the %d bytes in B: %v", payload, err)
	}
	// The last retransmission may still be in flight to the ACK: let the
	// kernel's count settle.
	time.Sleep(100 * time.Millisecond)
	var info *unix.TCPInfo
	if err := WithFD(conn, func(fd int) (err error) {
		info, err = unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		return err
	}); err != nil {
		t.Fatalf("TCP_INFO: %v", err)
	}
	if info.Total_retrans == 0 {
		t.Fatal("the sender did not retransmit")
	}
	return info.Total_retrans
}

// WithFD runs fn on the file descriptor of connection c.
func WithFD(c net.Conn, fn func(fd int) error) error {
	raw, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := raw.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}
