package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
	"github.com/pktstat-bpf/pktstat-bpf/internal/promtest"
)

func TestPromtoolRules(t *testing.T) {
	promtool := promtest.RequireTool(t, "promtool")
	for _, args := range [][]string{
		{"check", "rules", "pktstat-bpf.rules.yaml"},
		{"test", "rules", "pktstat-bpf.rules.test.yaml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = filepath.Join("..", "dist", "prometheus")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "promtool %s:\n%s", strings.Join(args, " "), out)
		require.Contains(t, string(out), "SUCCESS")
	}
}

// TestPrometheusDashboard: Debian's Prometheus scrapes build/telegraf's
// outputs.prometheus_client while the test sends known traffic; every panel
// of dist/grafana/pktstat-bpf-prometheus.json is evaluated through the HTTP
// API over exactly the window of the measured traffic and compared with it,
// and the alerting rules load and stay quiet.
func TestPrometheusDashboard(t *testing.T) {
	nettest.RequireBPF(t)
	telegrafBin := requireBinary(t, "telegraf")
	p := nettest.NewPair(t)
	const host = "pktstat-e2e"
	addr := "127.0.0.1:" + promtest.FreePort(t, p.NSPathA())
	conf := filepath.Join(t.TempDir(), "telegraf.conf")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf(`
[agent]
  hostname = %q
  interval = "1s"
  flush_interval = "1s"

[[inputs.pktstat_bpf]]
  interfaces = [%q]

[[outputs.prometheus_client]]
  listen = %q
  collectors_exclude = ["gocollector", "process"]
`, host, p.IfA, addr)), 0o600))
	proc := startProcess(t, nil, "ip", "netns", "exec", p.NSA, telegrafBin, "--config", conf)
	proc.waitLog(t, "counting started", 60*time.Second)
	prom := promtest.Start(t, p.NSA, p.NSPathA(), addr, filepath.Join("..", "dist", "prometheus", "pktstat-bpf.rules.yaml"))

	type sent struct {
		flow
		fromB bool
	}
	flows := []sent{
		{flow{n: 20, payload: 300, srcPort: 44001, dstPort: 54001}, false},
		{flow{n: 10, payload: 1000, srcPort: 44002, dstPort: 54002, v6: true}, false},
		{flow{n: 15, payload: 200, srcPort: 44003, dstPort: 54003}, true},
	}
	send := func(f sent, n int) uint64 {
		f.n = n
		if f.fromB {
			p.SendUDPFromB(t, f.n, f.payload, f.srcPort, f.dstPort, f.v6)
		} else {
			f.send(t, p)
		}
		return f.bytes()
	}
	waitFor := func(what string, want map[string]uint64) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			got := map[string]uint64{}
			for _, s := range prom.Query(t, `pktstat_bpf_bytes{proto="udp"}`, promtest.Now()) {
				got[s.Labels["src_port"]] = uint64(s.Value)
			}
			if fmt.Sprint(got) == fmt.Sprint(want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: Prometheus has %v, want %v\n%s", what, got, want, proc.log())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	// Warm-up: the series exist and have been scraped before the window.
	warm, total, measured := map[string]uint64{}, map[string]uint64{}, map[uint16]float64{}
	for _, f := range flows {
		warm[fmt.Sprint(f.srcPort)] = send(f, 3)
	}
	waitFor("warm-up", warm)
	start := prom.NextScrape(t)
	for _, f := range flows {
		port := fmt.Sprint(f.srcPort)
		m := send(f, f.n)
		measured[f.srcPort] = float64(m)
		total[port] = warm[port] + m
	}
	waitFor("measured traffic", total)
	end := prom.LastScrape(t)

	m := func(port uint16) float64 { return measured[port] }
	egress, ingress := m(44001)+m(44002), m(44003)
	prom.CheckDashboard(t, filepath.Join("..", "dist", "grafana", "pktstat-bpf-prometheus.json"), start, end,
		map[string]string{"host": host},
		map[string]promtest.Want{
			"Top talkers (bytes/s)": {Values: map[string]float64{
				"192.0.2.1 → 192.0.2.2":     m(44001),
				"2001:db8::1 → 2001:db8::2": m(44002),
				"192.0.2.2 → 192.0.2.1":     m(44003),
			}, Rate: true},
			"Traffic by direction (bytes/s)":            {Values: map[string]float64{"egress": egress, "ingress": ingress}, Rate: true},
			"Traffic by protocol (bytes/s)":             {Values: map[string]float64{"IPv4 udp": m(44001) + m(44003), "IPv6 udp": m(44002)}, Rate: true},
			"Traffic by application protocol (bytes/s)": {Values: map[string]float64{"": egress + ingress}, Rate: true},
			"Bytes in the time range by direction":      {Values: map[string]float64{"egress": egress, "ingress": ingress}},
			"Overflow (packets/s)":                      {Values: map[string]float64{host: 0}, Rate: true},
			"Flow table fill":                           {Values: map[string]float64{host: 3.0 / 131072}},
			"Hooks attached and failed":                 {Values: map[string]float64{host + " attached": 2, host + " failed": 0}},
			// A drain takes less than the 1s interval.
			"Drain time (s)": {Between: &[2]float64{0, 1}},
		})

	var names []string
	for _, r := range prom.AlertRules(t) {
		names = append(names, r.Name)
		assert.Equal(t, "ok", r.Health, r.Name)
		assert.Equal(t, "inactive", r.State, r.Name)
	}
	assert.ElementsMatch(t, []string{"PktstatBPFOverflowGrowing", "PktstatBPFHookFailed", "PktstatBPFHookNotFirst", "PktstatBPFDrainSlow"}, names)
}
