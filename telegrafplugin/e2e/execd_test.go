package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/stretchr/testify/require"

	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// TestExecd runs the shim the way the README tells stock Telegraf users
// to: [[inputs.execd]] with signal = "STDIN" and -poll_interval_disabled.
// build/telegraf includes inputs.execd, so it stands in for a stock Telegraf.
func TestExecd(t *testing.T) {
	nettest.RequireBPF(t)
	telegrafBin := requireBinary(t, "telegraf")
	shimBin := requireBinary(t, "telegraf-pktstat-bpf")
	p := nettest.NewPair(t)
	dir := t.TempDir()
	shimConf := filepath.Join(dir, "pktstat_bpf.conf")
	require.NoError(t, os.WriteFile(shimConf, []byte(fmt.Sprintf("[[inputs.pktstat_bpf]]\n  interfaces = [%q]\n", p.IfA)), 0o600))
	out := filepath.Join(dir, "metrics.out")
	conf := filepath.Join(dir, "telegraf.conf")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf(`
[agent]
  omit_hostname = true
  interval = "1s"
  flush_interval = "1s"

[[inputs.execd]]
  command = [%q, "-config", %q, "-poll_interval_disabled"]
  signal = "STDIN"
  restart_delay = "10s"
  data_format = "influx"

[[outputs.file]]
  files = [%q]
  data_format = "influx"
`, shimBin, shimConf, out)), 0o600))

	proc := startProcess(t, nil, "ip", "netns", "exec", p.NSA, telegrafBin, "--config", conf)
	// execd relays the shim's stderr into Telegraf's log.
	proc.waitLog(t, "counting started", 60*time.Second)
	flows := []flow{
		{n: 64, payload: 512, srcPort: 44001, dstPort: 54001},
		{n: 5, payload: 20, srcPort: 44002, dstPort: 54002, v6: true},
	}
	link := sendAll(t, p, flows)

	var ms []telegraf.Metric
	deadline := time.Now().Add(30 * time.Second)
	for {
		data, err := os.ReadFile(out)
		if err == nil {
			ms = parseLines(t, data)
			if allCounted(ms, p, flows) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("flows not written within 30s; output:\n%s\ntelegraf log:\n%s", dump(ms), proc.log())
		}
		time.Sleep(200 * time.Millisecond)
	}
	requireCounted(t, p, ms, flows, link, true)
	proc.stop(t)
}

// allCounted reports whether the last metric of every flow has its full count.
func allCounted(ms []telegraf.Metric, p *nettest.Pair, flows []flow) bool {
	for _, f := range flows {
		m := lastSeries(ms, "pktstat_bpf", f.egressTags(p))
		if m == nil {
			return false
		}
		if v, _ := m.GetField("packets"); v != int64(f.n) {
			return false
		}
	}
	return true
}
