package e2e

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/stretchr/testify/require"

	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// TestShimXDPMode: xdp mode sees only what arrives on A's interface, with
// L2 frame lengths, in both XDP attach modes veth supports.
func TestShimXDPMode(t *testing.T) {
	nettest.RequireBPF(t)
	shimBin := requireBinary(t, "telegraf-pktstat-bpf")
	for _, xdpMode := range []string{"generic", "native"} {
		t.Run(xdpMode, func(t *testing.T) {
			p := nettest.NewPair(t)
			conf := filepath.Join(t.TempDir(), "pktstat_bpf.conf")
			require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf(
				"[[inputs.pktstat_bpf]]\n  mode = \"xdp\"\n  xdp_mode = %q\n  interfaces = [%q]\n", xdpMode, p.IfA)), 0o600))
			var stdin io.WriteCloser
			var stdout io.ReadCloser
			proc := startProcess(t, func(cmd *exec.Cmd) {
				var err error
				stdin, err = cmd.StdinPipe()
				require.NoError(t, err)
				stdout, err = cmd.StdoutPipe()
				require.NoError(t, err)
			}, "ip", "netns", "exec", p.NSA, shimBin, "-config", conf, "-poll_interval_disabled")
			proc.waitLog(t, "counting started", 60*time.Second)

			const n, payload, srcPort, dstPort = 40, 700, 45001, 55001
			before := p.LinkStats(t, p.NSA, p.IfA)
			p.SendUDPFromB(t, n, payload, srcPort, dstPort, false)
			link := p.LinkStats(t, p.NSA, p.IfA).Sub(before)
			frame := nettest.UDPFrameLen(payload, false)
			require.Equal(t, uint64(n), link.RxPackets)
			if xdpMode == "generic" {
				// With native XDP, veth counts rx_bytes after removing the
				// Ethernet header, so only generic mode is comparable.
				require.Equal(t, nettest.LinkStats{RxPackets: n, RxBytes: uint64(n * frame)}, link)
			}

			want := map[string]string{"interface": p.IfA, "direction": "ingress", "ip_version": "4", "proto": "udp",
				"src_ip": p.B4.String(), "dst_ip": p.A4.String(), "src_port": strconv.Itoa(srcPort), "dst_port": strconv.Itoa(dstPort)}
			_, err := io.WriteString(stdin, "\n")
			require.NoError(t, err)
			ms := readUntil(t, bufio.NewReader(stdout), 30*time.Second, func(ms []telegraf.Metric) bool {
				return lastSeries(ms, "pktstat_bpf_internal", map[string]string{"mode": "xdp"}) != nil
			})
			m := lastSeries(ms, "pktstat_bpf", want)
			require.NotNil(t, m, "no ingress flow %v in:\n%s", want, dump(ms))
			require.Equal(t, map[string]interface{}{"packets": int64(n), "bytes": int64(n * frame)}, m.Fields())
			for _, m := range ms {
				require.NotEqual(t, "egress", m.Tags()["direction"], "xdp mode must not report egress: %v", m)
			}
			require.NoError(t, stdin.Close())
			go func() { _, _ = io.Copy(io.Discard, stdout) }()
			proc.wait(t, 30*time.Second)
		})
	}
}
