package nettest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// NFTTCPFlags installs, in namespace ns, nftables counters of TCP
// packets by flag in each direction on device dev (loopback traffic, such
// as an agent's own exporter connection, is not counted): the kernel's own count of the same
// traffic, as a reference. It returns a function that reads them, by counter
// name (out_syn, out_synack, out_fin, out_rst, in_syn, ...).
func NFTTCPFlags(t testing.TB, ns, dev string) func() map[string]uint64 {
	t.Helper()
	table := "pktflags" + strings.ReplaceAll(ns, "-", "")
	rules := fmt.Sprintf(`table inet %[1]s {
	counter out_syn {}
	counter out_synack {}
	counter out_fin {}
	counter out_rst {}
	counter in_syn {}
	counter in_synack {}
	counter in_fin {}
	counter in_rst {}
	chain out {
		type filter hook output priority 0; policy accept;
		oifname %[2]q tcp flags & (syn | ack) == syn counter name "out_syn"
		oifname %[2]q tcp flags & (syn | ack) == syn | ack counter name "out_synack"
		oifname %[2]q tcp flags & fin == fin counter name "out_fin"
		oifname %[2]q tcp flags & rst == rst counter name "out_rst"
	}
	chain in {
		type filter hook input priority 0; policy accept;
		iifname %[2]q tcp flags & (syn | ack) == syn counter name "in_syn"
		iifname %[2]q tcp flags & (syn | ack) == syn | ack counter name "in_synack"
		iifname %[2]q tcp flags & fin == fin counter name "in_fin"
		iifname %[2]q tcp flags & rst == rst counter name "in_rst"
	}
}
`, table, dev)
	cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "exec", ns, "nft", "delete", "table", "inet", table).Run() })
	return func() map[string]uint64 {
		t.Helper()
		out, err := exec.Command("ip", "netns", "exec", ns, "nft", "-j", "list", "counters", "table", "inet", table).Output()
		if err != nil {
			t.Fatalf("nft list counters: %v", err)
		}
		var doc struct {
			Nftables []struct {
				Counter *struct {
					Name    string `json:"name"`
					Packets uint64 `json:"packets"`
				} `json:"counter"`
			} `json:"nftables"`
		}
		if err := json.Unmarshal(out, &doc); err != nil {
			t.Fatalf("nft json: %v", err)
		}
		m := map[string]uint64{}
		for _, e := range doc.Nftables {
			if e.Counter != nil {
				m[e.Counter.Name] = e.Counter.Packets
			}
		}
		return m
	}
}

// TCPExchanges makes k connections from A to B's listener on port, each
// sending and echoing 100 bytes and closed by both ends with a FIN, then
// refused connections to closedPort (B answers each SYN with a RST). It
// returns when B has closed every connection.
func (p *Pair) TCPExchanges(t testing.TB, port, closedPort uint16, k, refused int) {
	t.Helper()
	var ln net.Listener
	if err := p.DoB(func() (err error) {
		ln, err = net.Listen("tcp4", netip.AddrPortFrom(p.B4, port).String())
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var wg sync.WaitGroup
	errs := make(chan error, k)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < k; i++ {
			c, err := ln.Accept()
			if err != nil {
				errs <- err
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				buf := make([]byte, 100)
				if _, err := io.ReadFull(c, buf); err != nil {
					errs <- err
					return
				}
				if _, err := c.Write(buf); err != nil {
					errs <- err
					return
				}
				// Close after the peer's FIN: nothing unread, so a FIN, not a RST.
				if _, err := io.Copy(io.Discard, c); err != nil {
					errs <- err
				}
			}()
		}
	}()
	if err := p.DoA(func() error {
		for i := 0; i < k; i++ {
			c, err := net.DialTimeout("tcp4", netip.AddrPortFrom(p.B4, port).String(), 5*time.Second)
			if err != nil {
				return err
			}
			buf := make([]byte, 100)
			if _, err := c.Write(buf); err != nil {
				return err
			}
			if _, err := io.ReadFull(c, buf); err != nil {
				return err
			}
			if err := c.Close(); err != nil {
				return err
			}
		}
		for i := 0; i < refused; i++ {
			_, err := net.DialTimeout("tcp4", netip.AddrPortFrom(p.B4, closedPort).String(), 5*time.Second)
			if !errors.Is(err, syscall.ECONNREFUSED) {
				return fmt.Errorf("connect to closed port %d: %v, want connection refused", closedPort, err)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
