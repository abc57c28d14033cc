package core

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"testing"
	"time"
)

// The test binary doubles as the child processes some tests need: a UDP
// sender whose pid and comm must show up in cgroup mode, and a collector
// that is killed to show the kernel detaches what it held.
func TestMain(m *testing.M) {
	switch os.Getenv("PKTSTAT_HELPER") {
	case "udp-peer":
		os.Exit(udpPeer())
	case "hold-collector":
		os.Exit(holdCollector())
	}
	os.Exit(m.Run())
}

// udpPeer opens a UDP socket to PKTSTAT_DST from PKTSTAT_SRC, says "ready",
// and on each "send N SIZE" line from stdin sends N datagrams; on "recv N"
// it reads N datagrams; it answers "done" each time and exits at EOF.
func udpPeer() int {
	src, dst := netip.MustParseAddrPort(os.Getenv("PKTSTAT_SRC")), netip.MustParseAddrPort(os.Getenv("PKTSTAT_DST"))
	conn, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(src), net.UDPAddrFromAddrPort(dst))
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("ready")
	sc := bufio.NewScanner(os.Stdin)
	buf := make([]byte, 65536)
	for sc.Scan() {
		var verb string
		var n, size int
		fmt.Sscan(sc.Text(), &verb, &n, &size)
		for i := 0; i < n; i++ {
			switch verb {
			case "send":
				if _, err := conn.Write(make([]byte, size)); err != nil {
					fmt.Println("error", err)
					return 1
				}
			case "recv":
				conn.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := conn.Read(buf); err != nil {
					fmt.Println("error", err)
					return 1
				}
			}
		}
		fmt.Println("done")
	}
	return 0
}

func holdCollector() int {
	c, err := New(Config{
		Mode:       Mode(os.Getenv("PKTSTAT_MODE")),
		Interfaces: []string{os.Getenv("PKTSTAT_IFACE")},
		NetNS:      os.Getenv("PKTSTAT_NETNS"),
		legacyTC:   os.Getenv("PKTSTAT_LEGACY") == "1",
	})
	if err == nil {
		err = c.Start(context.Background())
	}
	if err != nil {
		fmt.Println("error", err)
		return 1
	}
	fmt.Println("attached")
	time.Sleep(time.Minute)
	return 0
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }
