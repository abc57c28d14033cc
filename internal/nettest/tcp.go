package nettest

import (
	"net"
	"net/netip"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// ListenTCP accepts one connection on addr in the namespace at nsPath.
func ListenTCP(t testing.TB, nsPath string, addr netip.AddrPort) <-chan *net.TCPConn {
	t.Helper()
	var ln net.Listener
	if err := Do(nsPath, func() (err error) {
		ln, err = net.Listen("tcp", addr.String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan *net.TCPConn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(ch)
			return
		}
		ch <- c.(*net.TCPConn)
	}()
	return ch
}

// Accepted waits up to 5 s for ListenTCP's connection and closes it when t ends.
func Accepted(t testing.TB, ch <-chan *net.TCPConn) *net.TCPConn {
	t.Helper()
	select {
	case c, ok := <-ch:
		if !ok {
			t.Fatal("accept failed")
		}
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted in 5 s")
	}
	return nil
}

// NoTailLossProbes turns tail loss probes off in the calling thread's
// network namespace, so that a sender retransmits only on timeout.
func NoTailLossProbes() error {
	return os.WriteFile("/proc/sys/net/ipv4/tcp_early_retrans", []byte("0"), 0)
}

// DialTCP connects from cli in A to a server at srv in B, with tail loss
// probes off in A, and returns both ends, closed when t ends.
func (p *Pair) DialTCP(t testing.TB, cli, srv netip.AddrPort) (client, server *net.TCPConn) {
	t.Helper()
	acc := ListenTCP(t, p.NSPathB(), srv)
	if err := p.DoA(func() error {
		if err := NoTailLossProbes(); err != nil {
			return err
		}
		d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(cli)}
		c, err := d.Dial("tcp", srv.String())
		if err == nil {
			client = c.(*net.TCPConn)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return client, Accepted(t, acc)
}

// ReadExactly reads n bytes from c within 5 s and returns the number of
// reads that got data.
func ReadExactly(t testing.TB, c net.Conn, n int) int {
	t.Helper()
	buf := make([]byte, n)
	reads := 0
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for got := 0; got < n; {
		k, err := c.Read(buf[:n-got])
		if err != nil {
			t.Fatalf("read %d of %d bytes: %v", got, n, err)
		}
		got += k
		reads++
	}
	return reads
}

// WithFD runs fn with c's file descriptor.
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

// WithLoss makes srv drop every segment it receives (a socket filter)
// while send runs and for 1.5 s after, so that its peer retransmits on
// timeout (at about 0.2, 0.6 and 1.4 s), then reads the n bytes sent.
func WithLoss(t testing.TB, srv net.Conn, n int, send func()) {
	t.Helper()
	drop := []unix.SockFilter{{Code: unix.BPF_RET | unix.BPF_K, K: 0}}
	if err := WithFD(srv, func(fd int) error {
		return unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &unix.SockFprog{Len: 1, Filter: &drop[0]})
	}); err != nil {
		t.Fatal(err)
	}
	send()
	time.Sleep(1500 * time.Millisecond)
	if err := WithFD(srv, func(fd int) error {
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DETACH_FILTER, 0)
	}); err != nil {
		t.Fatal(err)
	}
	ReadExactly(t, srv, n)
}

// SettledRetrans returns the sender's tcpi_total_retrans (from get) once
// the last retransmission, which may still be in flight to the ACK, is
// counted; it fails t if the sender did not retransmit.
func SettledRetrans(t testing.TB, get func() uint32) uint32 {
	t.Helper()
	if get() == 0 {
		t.Fatal("the sender did not retransmit")
	}
	time.Sleep(100 * time.Millisecond)
	return get()
}

// TCPInfo returns c's TCP_INFO.
func TCPInfo(t testing.TB, c net.Conn) *unix.TCPInfo {
	t.Helper()
	var info *unix.TCPInfo
	if err := WithFD(c, func(fd int) (err error) {
		info, err = unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return info
}

// PingPong makes n exchanges of size bytes each way, one segment in flight
// at a time, so that every segment either end receives is its own skb.
func PingPong(t testing.TB, client, server net.Conn, n, size int) {
	t.Helper()
	buf := make([]byte, size)
	for i := 0; i < n; i++ {
		if _, err := client.Write(buf); err != nil {
			t.Fatal(err)
		}
		ReadExactly(t, server, size)
		if _, err := server.Write(buf); err != nil {
			t.Fatal(err)
		}
		ReadExactly(t, client, size)
	}
}

// RequireTracepoints skips t, naming what is missing, on a kernel whose BTF
// lacks one of the raw tracepoints tps (as tp_btf programs attach to them).
func RequireTracepoints(t testing.TB, tps ...string) {
	t.Helper()
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		t.Skipf("kernel has no BTF (needed for tp_btf/%s): %v", tps[0], err)
	}
	for _, tp := range tps {
		if _, err := spec.AnyTypeByName("btf_trace_" + tp); err != nil {
			t.Skipf("kernel BTF has no %s tracepoint (btf_trace_%s): %v", tp, tp, err)
		}
	}
}

// LossyExchange connects from cli in A to srv in B, makes the client's
// first 100 bytes retransmit (WithLoss), then makes n ping-pong exchanges
// of 100 bytes; it returns the client and its settled tcpi_total_retrans.
func (p *Pair) LossyExchange(t testing.TB, cli, srv netip.AddrPort, n int) (*net.TCPConn, uint32) {
	t.Helper()
	conn, server := p.DialTCP(t, cli, srv)
	WithLoss(t, server, 100, func() {
		if _, err := conn.Write(make([]byte, 100)); err != nil {
			t.Fatal(err)
		}
	})
	PingPong(t, conn, server, n, 100)
	return conn, SettledRetrans(t, func() uint32 { return TCPInfo(t, conn).Total_retrans })
}

// SendTCPWithLoss connects from cli in A to srv in B and writes payload
// bytes once, in one sendmsg from this process, while B drops everything it
// receives (WithLoss), so the sender retransmits on timeout; it returns the
// kernel's own retransmission count for the connection (tcpi_total_retrans)
// once B has read all of it. Tail loss probes are off in A: they retransmit
// without tcp_retransmit_skb.
func (p *Pair) SendTCPWithLoss(t testing.TB, cli, srv netip.AddrPort, payload int) uint32 {
	t.Helper()
	conn, server := p.DialTCP(t, cli, srv)
	WithLoss(t, server, payload, func() {
		if _, err := conn.Write(make([]byte, payload)); err != nil {
			t.Fatal(err)
		}
	})
	return SettledRetrans(t, func() uint32 { return TCPInfo(t, conn).Total_retrans })
}
