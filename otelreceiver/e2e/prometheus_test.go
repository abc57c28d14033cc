package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
	"github.com/pktstat-bpf/pktstat-bpf/internal/promtest"
)

// distDir holds the dashboards and rules the receiver ships.
var distDir = filepath.Join("..", "dist")

func TestPromtoolRules(t *testing.T) {
	promtool := promtest.RequireTool(t, "promtool")
	dir := filepath.Join(distDir, "prometheus")
	for _, args := range [][]string{
		{"check", "rules", "pktstat-bpf.rules.yaml"},
		{"test", "rules", "pktstat-bpf.rules.test.yaml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = dir
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "promtool %s:\n%s", strings.Join(args, " "), out)
		require.Contains(t, string(out), "SUCCESS")
	}
}

// TestDashboardAgainstPrometheus: Debian's Prometheus scrapes
// build/otelcol-pktstat (run with the `make run` config) while the test
// sends known traffic; every panel of dist/grafana/pktstat-bpf-prometheus.json
// is evaluated through Prometheus's HTTP API over exactly the window of that
// traffic and compared with it, and the alerting rules load and stay quiet.
func TestDashboardAgainstPrometheus(t *testing.T) {
	if testing.Short() {
		t.Skip("attaches BPF programs and runs the collector and Prometheus")
	}
	bin := collectorPath(t)
	p := nettest.NewPair(t)
	collectorPort := promtest.FreePort(t, p.NSPathA())
	c := startCollectorArgs(t, "collector", p.NSA, bin, []string{
		"--config", filepath.Join("..", "..", "testdata", "otelcol.yaml"),
		"--set=receivers::pktstatbpf::interfaces=[" + p.IfA + "]",
		"--set=receivers::pktstatbpf::collection_interval=500ms",
		"--set=receivers::pktstatbpf::initial_delay=0s",
		"--set=exporters::prometheus::endpoint=127.0.0.1:" + collectorPort,
	}, nil)
	require.True(t, c.logged(`"interface": "`+p.IfA+`"`), "collector did not log attaching to %s:\n%s", p.IfA, c.logText())
	prom := promtest.Start(t, p.NSA, p.NSPathA(), "127.0.0.1:"+collectorPort, filepath.Join(distDir, "prometheus", "pktstat-bpf.rules.yaml"))
	host, err := os.Hostname()
	require.NoError(t, err)

	type flow struct {
		n, payload       int
		srcPort, dstPort uint16
		v6, fromB        bool
	}
	send := func(f flow, n int) int64 {
		if f.fromB {
			p.SendUDPFromB(t, n, f.payload, f.srcPort, f.dstPort, f.v6)
		} else {
			p.SendUDP(t, n, f.payload, f.srcPort, f.dstPort, f.v6)
		}
		return int64(n) * int64(nettest.UDPFrameLen(f.payload, f.v6))
	}
	flows := []flow{
		{20, 300, 41200, 9300, false, false},
		{10, 1000, 41201, 9301, true, false},
		{15, 200, 41202, 9302, false, true},
	}
	waitFor := func(what string, want map[uint16]int64) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			got := map[uint16]int64{}
			for _, s := range prom.Query(t, `pktstatbpf_network_flow_bytes_total{network_transport="udp"}`, promtest.Now()) {
				port, _ := strconv.Atoi(s.Labels["source_port"])
				got[uint16(port)] = int64(s.Value)
			}
			if fmt.Sprint(got) == fmt.Sprint(want) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: Prometheus has %v, want %v\ncollector log:\n%s", what, got, want, c.logText())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	// Warm-up: the flows' series exist and have been scraped before the
	// measured window starts, so increase() over it sees the whole jump.
	warm, total, measured := map[uint16]int64{}, map[uint16]int64{}, map[uint16]float64{}
	for _, f := range flows {
		warm[f.srcPort] = send(f, 3)
	}
	waitFor("warm-up", warm)
	// A scrape after the one that first showed the warm-up values: the
	// window starts at it.
	start := prom.NextScrape(t)
	for _, f := range flows {
		m := send(f, f.n)
		measured[f.srcPort] = float64(m)
		total[f.srcPort] = warm[f.srcPort] + m
	}
	waitFor("measured traffic", total)
	end := prom.LastScrape(t)

	b := func(port uint16) float64 { return measured[port] }
	tx, rx := b(41200)+b(41201), b(41202)
	prom.CheckDashboard(t, filepath.Join(distDir, "grafana", "pktstat-bpf-prometheus.json"), start, end,
		map[string]string{"host": host},
		map[string]promtest.Want{
			"Top talkers (bytes/s)": {Values: map[string]float64{
				"192.0.2.1 → 192.0.2.2":     b(41200),
				"2001:db8::1 → 2001:db8::2": b(41201),
				"192.0.2.2 → 192.0.2.1":     b(41202),
			}, Rate: true},
			"Traffic by direction (bytes/s)":            {Values: map[string]float64{"transmit": tx, "receive": rx}, Rate: true},
			"Traffic by protocol (bytes/s)":             {Values: map[string]float64{"ipv4 udp": b(41200) + b(41202), "ipv6 udp": b(41201)}, Rate: true},
			"Traffic by application protocol (bytes/s)": {Values: map[string]float64{"": tx + rx}, Rate: true},
			"Bytes in the time range by direction":      {Values: map[string]float64{"transmit": tx, "receive": rx}},
			"Overflow (packets/s)":                      {Values: map[string]float64{host: 0}, Rate: true},
			"Flow table fill":                           {Values: map[string]float64{host: 3.0 / 131072}},
			"Hooks by state":                            {Values: map[string]float64{"attached": 2, "failed": 0}},
			// A drain takes less than the 500ms collection_interval.
			"Drain time (s)": {Between: &[2]float64{0, 0.5}},
		})

	// The rules load, are healthy, and nothing in this quiet run fires.
	var names []string
	for _, r := range prom.AlertRules(t) {
		names = append(names, r.Name)
		assert.Equal(t, "ok", r.Health, r.Name)
		assert.Equal(t, "inactive", r.State, r.Name)
	}
	assert.ElementsMatch(t, []string{"PktstatBPFOverflowGrowing", "PktstatBPFHookFailed", "PktstatBPFHookNotFirst", "PktstatBPFDrainSlow"}, names)
}
