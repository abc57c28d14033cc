package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// distDir holds the dashboards and rules the repository ships.
var distDir = filepath.Join("..", "dist")

// requireTool finds a program `make deps` installs: missing, it fails the
// test under PKTSTAT_REQUIRE_BPF=1 (make test) and skips it otherwise.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("PKTSTAT_REQUIRE_BPF") == "1" {
			t.Fatalf("%s is missing: run `make deps` (Debian package prometheus): %v", name, err)
		}
		t.Skipf("%s is missing: run `make deps` first", name)
	}
	return path
}

// freePort returns a port that is free on 127.0.0.1 inside the namespace.
func freePort(t *testing.T, nsPath string) string {
	t.Helper()
	var port int
	require.NoError(t, nettest.Do(nsPath, func() error {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		port = l.Addr().(*net.TCPAddr).Port
		return l.Close()
	}))
	return strconv.Itoa(port)
}

// nsClient talks HTTP to servers on the loopback of a namespace.
func nsClient(nsPath string) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, network, address string) (net.Conn, error) {
				var conn net.Conn
				err := nettest.Do(nsPath, func() (err error) {
					conn, err = (&net.Dialer{}).DialContext(ctx, network, address)
					return err
				})
				return conn, err
			},
		},
	}
}

// promServer is a Prometheus the test started on 127.0.0.1 of a namespace.
type promServer struct {
	addr   string
	client *http.Client
}

// startPrometheus runs Debian's prometheus inside namespace nsName,
// listening on 127.0.0.1 only, scraping target (also on that loopback)
// every second and evaluating rules. It is stopped when the test ends.
func startPrometheus(t *testing.T, nsName, nsPath, target, rules string) *promServer {
	t.Helper()
	bin := requireTool(t, "prometheus")
	dir := t.TempDir()
	rulesAbs, err := filepath.Abs(rules)
	require.NoError(t, err)
	config := fmt.Sprintf(`global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [%q]
scrape_configs:
  - job_name: otelcol
    static_configs:
      - targets: [%q]
`, rulesAbs, target)
	configFile := filepath.Join(dir, "prometheus.yml")
	require.NoError(t, os.WriteFile(configFile, []byte(config), 0o644))
	s := &promServer{addr: "127.0.0.1:" + freePort(t, nsPath), client: nsClient(nsPath)}
	cmd := exec.Command("ip", "netns", "exec", nsName, bin,
		"--config.file="+configFile, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+s.addr, "--log.level=warn")
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := s.client.Get("http://" + s.addr + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		select {
		case err := <-done:
			t.Fatalf("prometheus exited: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready after 30s: %v\n%s", err, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sample is one element of an instant query's vector result.
type sample struct {
	labels map[string]string
	value  float64
}

// get calls an API endpoint and decodes its data field into out.
func (s *promServer) get(t *testing.T, path string, params url.Values, out any) {
	t.Helper()
	resp, err := s.client.Get("http://" + s.addr + path + "?" + params.Encode())
	require.NoError(t, err)
	defer resp.Body.Close()
	var body struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&body))
	require.Equal(t, "success", body.Status, "%s %v: %s", path, params, body.Error)
	require.NoError(t, json.Unmarshal(body.Data, out))
}

// query evaluates an instant query at ts (milliseconds since the epoch).
func (s *promServer) query(t *testing.T, expr string, ts int64) []sample {
	t.Helper()
	var data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	}
	s.get(t, "/api/v1/query", url.Values{"query": {expr}, "time": {fmt.Sprintf("%d.%03d", ts/1000, ts%1000)}}, &data)
	require.Equal(t, "vector", data.ResultType, expr)
	out := make([]sample, 0, len(data.Result))
	for _, r := range data.Result {
		v, err := strconv.ParseFloat(r.Value[1].(string), 64)
		require.NoError(t, err)
		out = append(out, sample{labels: r.Metric, value: v})
	}
	return out
}

// lastScrape is the time of the latest scrape of the collector, in ms:
// every sample of that scrape carries it.
func (s *promServer) lastScrape(t *testing.T) int64 {
	t.Helper()
	r := s.query(t, `timestamp(up{job="otelcol"})`, time.Now().UnixMilli())
	require.Len(t, r, 1)
	return int64(math.Round(r[0].value * 1000))
}

// dashboardPanel is what the test reads of a Grafana panel.
type dashboardPanel struct {
	Title   string `json:"title"`
	Targets []struct {
		Expr         string `json:"expr"`
		LegendFormat string `json:"legendFormat"`
	} `json:"targets"`
}

func readDashboard(t *testing.T, path string) []dashboardPanel {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	var d struct {
		Panels []dashboardPanel `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(b, &d))
	require.NotEmpty(t, d.Panels)
	return d.Panels
}

func TestPromtoolRules(t *testing.T) {
	promtool := requireTool(t, "promtool")
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
	collectorPort := freePort(t, p.NSPathA())
	c := startCollectorArgs(t, "collector", p.NSA, bin, []string{
		"--config", filepath.Join("..", "..", "testdata", "otelcol.yaml"),
		"--set=receivers::pktstatbpf::interfaces=[" + p.IfA + "]",
		"--set=receivers::pktstatbpf::collection_interval=500ms",
		"--set=receivers::pktstatbpf::initial_delay=0s",
		"--set=exporters::prometheus::endpoint=127.0.0.1:" + collectorPort,
	}, nil)
	require.True(t, c.logged(`"interface": "`+p.IfA+`"`), "collector did not log attaching to %s:\n%s", p.IfA, c.logText())
	prom := startPrometheus(t, p.NSA, p.NSPathA(), "127.0.0.1:"+collectorPort, filepath.Join(distDir, "prometheus", "pktstat-bpf.rules.yaml"))
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
	// Warm-up: the flows' series exist and have been scraped before the
	// measured window starts, so increase() over it sees the whole jump.
	warm := map[uint16]int64{}
	for _, f := range flows {
		warm[f.srcPort] = send(f, 3)
	}
	waitFor := func(what string, want map[uint16]int64) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			got := map[uint16]int64{}
			for _, s := range prom.query(t, `pktstatbpf_network_flow_bytes_total{network_transport="udp"}`, time.Now().UnixMilli()) {
				port, _ := strconv.Atoi(s.labels["source_port"])
				got[uint16(port)] = int64(s.value)
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
	waitFor("warm-up", warm)
	// One more scrape with the warm-up values: the window starts at it.
	first := prom.lastScrape(t)
	for prom.lastScrape(t) == first {
		time.Sleep(100 * time.Millisecond)
	}
	start := prom.lastScrape(t)

	measured := map[uint16]int64{}
	total := map[uint16]int64{}
	for _, f := range flows {
		measured[f.srcPort] = send(f, f.n)
		total[f.srcPort] = warm[f.srcPort] + measured[f.srcPort]
	}
	waitFor("measured traffic", total)
	end := prom.lastScrape(t)
	window := end - start
	require.Positive(t, window)
	seconds := float64(window) / 1000

	b := func(port uint16) float64 { return float64(measured[port]) }
	tx, rx := b(41200)+b(41201), b(41202)
	// want holds each panel's series, by its legend, as the panel shows
	// them; rates are compared as rate * window.
	type want struct {
		values map[string]float64
		rate   bool
	}
	wants := map[string]want{
		"Top talkers (bytes/s)": {map[string]float64{
			"192.0.2.1 → 192.0.2.2":     b(41200),
			"2001:db8::1 → 2001:db8::2": b(41201),
			"192.0.2.2 → 192.0.2.1":     b(41202),
		}, true},
		"Traffic by direction (bytes/s)":            {map[string]float64{"transmit": tx, "receive": rx}, true},
		"Traffic by protocol (bytes/s)":             {map[string]float64{"ipv4 udp": b(41200) + b(41202), "ipv6 udp": b(41201)}, true},
		"Traffic by application protocol (bytes/s)": {map[string]float64{"": tx + rx}, true},
		"Bytes in the time range by direction":      {map[string]float64{"transmit": tx, "receive": rx}, false},
		"Overflow (packets/s)":                      {map[string]float64{host: 0}, true},
		"Flow table fill":                           {map[string]float64{host: 3.0 / 131072}, false},
		"Hooks by state":                            {map[string]float64{"attached": 2, "failed": 0}, false},
	}
	panels := readDashboard(t, filepath.Join(distDir, "grafana", "pktstat-bpf-prometheus.json"))
	for _, panel := range panels {
		t.Run(panel.Title, func(t *testing.T) {
			require.Len(t, panel.Targets, 1)
			expr := strings.NewReplacer(
				"$__rate_interval", fmt.Sprintf("%dms", window),
				"$__range", fmt.Sprintf("%dms", window),
				"$host", host,
			).Replace(panel.Targets[0].Expr)
			got := map[string]float64{}
			for _, s := range prom.query(t, expr, end) {
				legend := panel.Targets[0].LegendFormat
				for k, v := range s.labels {
					legend = strings.ReplaceAll(legend, "{{"+k+"}}", v)
				}
				// Labels a series does not have render empty, as in Grafana.
				for strings.Contains(legend, "{{") {
					i := strings.Index(legend, "{{")
					j := strings.Index(legend[i:], "}}")
					legend = legend[:i] + legend[i+j+2:]
				}
				got[strings.TrimSpace(legend)] = s.value
			}
			if panel.Title == "Drain time (s)" {
				require.Len(t, got, 1, expr)
				assert.Greater(t, got[host], 0.0)
				assert.Less(t, got[host], 0.5, "a drain takes less than the 500ms collection_interval")
				return
			}
			w, ok := wants[panel.Title]
			require.True(t, ok, "no expectation for panel %q: add one", panel.Title)
			if w.rate {
				for k := range got {
					got[k] *= seconds
				}
			}
			require.Len(t, got, len(w.values), "%s\n%v", expr, got)
			for k, v := range w.values {
				assert.InDelta(t, v, got[k], 1e-6*math.Max(1, v), "%s: series %q (%s)", panel.Title, k, expr)
			}
		})
	}

	// The rules load, are healthy, and nothing in this quiet run fires.
	var rules struct {
		Groups []struct {
			Rules []struct {
				Name   string `json:"name"`
				Health string `json:"health"`
				State  string `json:"state"`
			} `json:"rules"`
		} `json:"groups"`
	}
	prom.get(t, "/api/v1/rules", url.Values{"type": {"alert"}}, &rules)
	require.Len(t, rules.Groups, 1)
	var names []string
	for _, r := range rules.Groups[0].Rules {
		names = append(names, r.Name)
		assert.Equal(t, "ok", r.Health, r.Name)
		assert.Equal(t, "inactive", r.State, r.Name)
	}
	assert.ElementsMatch(t, []string{"PktstatBPFOverflowGrowing", "PktstatBPFHookFailed", "PktstatBPFHookNotFirst", "PktstatBPFDrainSlow"}, names)
}
