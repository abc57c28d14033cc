package e2e

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pktstat-bpf/pktstat-bpf/internal/kprobetest"
	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// TestTelegrafKprobeMode runs build/telegraf --once in kprobe mode (which
// the host cannot: make vmtest runs it in a guest kernel with kprobes and
// fentry) while this process sends one TCP write that B drops for a while:
// the sender's egress series carries this process's pid and comm, exactly
// one packet (one sendmsg) of the written bytes, and the kernel's own
// retransmission count (tcpi_total_retrans).
func TestTelegrafKprobeMode(t *testing.T) {
	nettest.RequireBPF(t)
	telegrafBin := requireBinary(t, "telegraf")
	kprobetest.Require(t)
	p := nettest.NewPair(t)
	dir := sharedTempDir(t)
	out, conf := filepath.Join(dir, "metrics.out"), filepath.Join(dir, "telegraf.conf")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf(`
[agent]
  omit_hostname = true
  interval = "1h"
  flush_interval = "1h"

[[inputs.pktstat_bpf]]
  mode = "kprobe"
  dimensions = ["direction", "ip_version", "proto", "src_ip", "dst_ip", "src_port", "dst_port", "pid", "comm"]

[[outputs.file]]
  files = [%q]
  data_format = "influx"
  influx_uint_support = true
`, out)), 0o644))
	proc := startProcess(t, nil, telegrafBin, "--config", conf, "--once", "--test-wait", fmt.Sprint(onceWait))
	proc.waitLog(t, "counting started", 60*time.Second)

	const payload = 100
	cli, srv := netip.AddrPortFrom(p.A4, 43071), netip.AddrPortFrom(p.B4, 7371)
	retrans := p.SendTCPWithLoss(t, cli, srv, payload)
	proc.wait(t, onceWait*time.Second+60*time.Second)

	comm, err := os.ReadFile("/proc/self/comm")
	require.NoError(t, err)
	tags := map[string]string{
		"direction": "egress", "ip_version": "4", "proto": "tcp",
		"src_ip": cli.Addr().String(), "dst_ip": srv.Addr().String(),
		"src_port": strconv.Itoa(int(cli.Port())), "dst_port": strconv.Itoa(int(srv.Port())),
		"pid": strconv.Itoa(os.Getpid()), "comm": strings.TrimSpace(string(comm)),
	}
	ms := readMetrics(t, out)
	m := lastSeries(ms, "pktstat_bpf", tags)
	require.NotNil(t, m, "no pktstat_bpf series with %v in:\n%s", tags, dump(ms))
	got := map[string]interface{}{}
	for _, f := range []string{"packets", "bytes", "retransmits"} {
		got[f], _ = m.GetField(f)
	}
	require.Equal(t, map[string]interface{}{"packets": uint64(1), "bytes": uint64(payload), "retransmits": uint64(retrans)}, got,
		"the sender's series; %d retransmissions in tcpi_total_retrans", retrans)
	t.Logf("telegraf reported %d retransmissions, as the kernel's tcp_info", retrans)
}
