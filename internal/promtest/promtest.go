// Package promtest runs Debian's Prometheus inside a test's network
// namespace and checks the repository's Grafana dashboards against it.
package promtest

import (
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// RequireTool finds a program `make deps` installs: missing, it fails the
// test under PKTSTAT_REQUIRE_BPF=1 (make test) and skips it otherwise.
func RequireTool(t testing.TB, name string) string {
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

// FreePort returns a port that is free on 127.0.0.1 inside the namespace.
func FreePort(t testing.TB, nsPath string) string {
	t.Helper()
	var port int
	if err := nettest.Do(nsPath, func() error {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		port = l.Addr().(*net.TCPAddr).Port
		return l.Close()
	}); err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	return strconv.Itoa(port)
}

// Server is a Prometheus the test started on 127.0.0.1 of a namespace.
type Server struct {
	addr   string
	client *http.Client
}

// Start runs prometheus inside namespace nsName (file nsPath), listening on
// 127.0.0.1 only, scraping target (on that loopback too) every second as
// job "agent" and evaluating the rules file every second. It is stopped
// when the test ends.
func Start(t testing.TB, nsName, nsPath, target, rules string) *Server {
	t.Helper()
	bin := RequireTool(t, "prometheus")
	dir := t.TempDir()
	rulesAbs, err := filepath.Abs(rules)
	if err != nil {
		t.Fatal(err)
	}
	config := fmt.Sprintf("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"+
		"rule_files: [%q]\nscrape_configs:\n  - job_name: agent\n    static_configs:\n      - targets: [%q]\n", rulesAbs, target)
	configFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(configFile, []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	s := &Server{addr: "127.0.0.1:" + FreePort(t, nsPath), client: nettest.HTTPClient(nsPath)}
	cmd := exec.Command("ip", "netns", "exec", nsName, bin,
		"--config.file="+configFile, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+s.addr, "--log.level=warn")
	var logs strings.Builder
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start prometheus: %v", err)
	}
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

// Get calls an API endpoint and decodes its data field into out.
func (s *Server) Get(t testing.TB, path string, params url.Values, out any) {
	t.Helper()
	resp, err := s.client.Get("http://" + s.addr + path + "?" + params.Encode())
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	var body struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	if body.Status != "success" {
		t.Fatalf("GET %s %v: %s %s", path, params, body.Status, body.Error)
	}
	if err := json.Unmarshal(body.Data, out); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

// Sample is one element of an instant query's vector result.
type Sample struct {
	Labels map[string]string
	Value  float64
}

// Query evaluates an instant query at ts (milliseconds since the epoch).
func (s *Server) Query(t testing.TB, expr string, ts int64) []Sample {
	t.Helper()
	var data struct {
		ResultType string `json:"resultType"`
		Result     []struct {
			Metric map[string]string `json:"metric"`
			Value  [2]any            `json:"value"`
		} `json:"result"`
	}
	s.Get(t, "/api/v1/query", url.Values{"query": {expr}, "time": {fmt.Sprintf("%d.%03d", ts/1000, ts%1000)}}, &data)
	if data.ResultType != "vector" {
		t.Fatalf("%s: result type %s", expr, data.ResultType)
	}
	out := make([]Sample, 0, len(data.Result))
	for _, r := range data.Result {
		v, err := strconv.ParseFloat(fmt.Sprint(r.Value[1]), 64)
		if err != nil {
			t.Fatalf("%s: %v", expr, err)
		}
		out = append(out, Sample{Labels: r.Metric, Value: v})
	}
	return out
}

// WaitEqual polls got until it prints as want does, for up to 30 s, and
// fails t with what was last seen otherwise.
func WaitEqual(t testing.TB, what string, want any, got func() any) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		g := got()
		if fmt.Sprint(g) == fmt.Sprint(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: have %v, want %v", what, g, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// WarmThenMeasure sends 3 datagrams on every flow and waits until seen
// (totals by source port) shows them, so that every series exists before
// the measured window; calls mark, which opens the window; then sends each
// flow's N datagrams and waits until seen shows the totals. It returns the
// bytes of the measured part by source port.
func WarmThenMeasure(t testing.TB, p *nettest.Pair, flows []nettest.Flow, seen func() map[string]uint64, mark func()) map[uint16]float64 {
	t.Helper()
	warm, total, measured := map[string]uint64{}, map[string]uint64{}, map[uint16]float64{}
	for _, f := range flows {
		warm[fmt.Sprint(f.SrcPort)] = p.Send(t, f, 3)
	}
	get := func() any { return seen() }
	WaitEqual(t, "warm-up traffic", warm, get)
	mark()
	for _, f := range flows {
		port := fmt.Sprint(f.SrcPort)
		m := p.Send(t, f, f.N)
		measured[f.SrcPort] = float64(m)
		total[port] = warm[port] + m
	}
	WaitEqual(t, "measured traffic", total, get)
	return measured
}

// Measure is WarmThenMeasure with the window between two scrapes of s: the
// one after the warm-up showed, and the one that shows the totals.
func (s *Server) Measure(t testing.TB, p *nettest.Pair, flows []nettest.Flow, seen func() map[string]uint64) (start, end int64, measured map[uint16]float64) {
	t.Helper()
	measured = WarmThenMeasure(t, p, flows, seen, func() { start = s.NextScrape(t) })
	return start, s.LastScrape(t), measured
}

// Now is the current time in milliseconds, for Query.
func Now() int64 { return time.Now().UnixMilli() }

// LastScrape is the time of the latest scrape of the agent, in ms: every
// sample of that scrape carries it.
func (s *Server) LastScrape(t testing.TB) int64 {
	t.Helper()
	r := s.Query(t, `timestamp(up{job="agent"})`, Now())
	if len(r) != 1 {
		t.Fatalf("up{job=\"agent\"}: %v", r)
	}
	return int64(math.Round(r[0].Value * 1000))
}

// NextScrape waits for a scrape after the latest one and returns its time.
func (s *Server) NextScrape(t testing.TB) int64 {
	t.Helper()
	first := s.LastScrape(t)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if ts := s.LastScrape(t); ts != first {
			return ts
		}
		if time.Now().After(deadline) {
			t.Fatal("no scrape for 10s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Rule is an alerting rule as /api/v1/rules reports it.
type Rule struct {
	Name   string `json:"name"`
	Health string `json:"health"`
	State  string `json:"state"`
}

// AlertRules returns every loaded alerting rule.
func (s *Server) AlertRules(t testing.TB) []Rule {
	t.Helper()
	var data struct {
		Groups []struct {
			Rules []Rule `json:"rules"`
		} `json:"groups"`
	}
	s.Get(t, "/api/v1/rules", url.Values{"type": {"alert"}}, &data)
	var out []Rule
	for _, g := range data.Groups {
		out = append(out, g.Rules...)
	}
	return out
}

// CheckQuietRules fails t unless the loaded alerting rules are exactly
// names, each healthy and inactive: the expected state after traffic that
// overflows nothing and attaches every hook.
func (s *Server) CheckQuietRules(t testing.TB, names ...string) {
	t.Helper()
	rules := s.AlertRules(t)
	got := map[string]bool{}
	for _, r := range rules {
		got[r.Name] = true
		if r.Health != "ok" || r.State != "inactive" {
			t.Errorf("rule %s: health %q, state %q; want ok, inactive", r.Name, r.Health, r.State)
		}
	}
	for _, n := range names {
		if !got[n] {
			t.Errorf("rule %s is not loaded (have %v)", n, rules)
		}
	}
	if len(rules) != len(names) {
		t.Errorf("%d rules loaded, want %d: %v", len(rules), len(names), rules)
	}
}

// Want is what a dashboard panel must show: its series by legend. A rate
// panel's values are compared after multiplying by the window, so a
// bytes/s panel is checked against the bytes sent. With Between set, the
// panel has one series whose value lies strictly inside it.
type Want struct {
	Values  map[string]float64
	Rate    bool
	Between *[2]float64
}

type panel struct {
	Title   string `json:"title"`
	Targets []struct {
		Expr         string `json:"expr"`
		LegendFormat string `json:"legendFormat"`
	} `json:"targets"`
}

var legendLabel = regexp.MustCompile(`\{\{\s*([A-Za-z0-9_]+)\s*\}\}`)

// CheckDashboard evaluates every panel of the Grafana dashboard at path as
// Grafana would for the time range (start, end] (ms, both scrape times):
// $__rate_interval and $__range become that window, so rate() and
// increase() see exactly the samples in it, and vars are substituted. It
// then compares each panel with wants[title]; a panel without an entry
// fails, so a new panel cannot go untested.
func (s *Server) CheckDashboard(t *testing.T, path string, start, end int64, vars map[string]string, wants map[string]Want) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []panel `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(d.Panels) == 0 {
		t.Fatalf("%s has no panels", path)
	}
	window := end - start
	pairs := []string{"$__rate_interval", fmt.Sprintf("%dms", window), "$__range", fmt.Sprintf("%dms", window)}
	for k, v := range vars {
		pairs = append(pairs, "$"+k, v)
	}
	subst := strings.NewReplacer(pairs...)
	for _, p := range d.Panels {
		t.Run(p.Title, func(t *testing.T) {
			w, ok := wants[p.Title]
			if !ok {
				t.Fatalf("no expectation for panel %q: add one", p.Title)
			}
			if len(p.Targets) != 1 {
				t.Fatalf("%d queries; the test evaluates one", len(p.Targets))
			}
			expr := subst.Replace(p.Targets[0].Expr)
			got := map[string]float64{}
			for _, smp := range s.Query(t, expr, end) {
				// A label a series lacks renders empty, as in Grafana.
				legend := legendLabel.ReplaceAllStringFunc(p.Targets[0].LegendFormat, func(m string) string {
					return smp.Labels[legendLabel.FindStringSubmatch(m)[1]]
				})
				v := smp.Value
				if w.Rate {
					v *= float64(window) / 1000
				}
				got[strings.TrimSpace(legend)] = v
			}
			if w.Between != nil {
				if len(got) != 1 {
					t.Fatalf("%s: want one series, got %v", expr, got)
				}
				for k, v := range got {
					if v <= w.Between[0] || v >= w.Between[1] {
						t.Errorf("%s: series %q = %v, want inside %v", expr, k, v, *w.Between)
					}
				}
				return
			}
			if len(got) != len(w.Values) {
				t.Fatalf("%s:\n got %v\nwant %v", expr, got, w.Values)
			}
			for k, v := range w.Values {
				g, ok := got[k]
				if !ok || math.Abs(g-v) > 1e-6*math.Max(1, math.Abs(v)) {
					t.Errorf("%s: series %q = %v (present %t), want %v\nall: %v", expr, k, g, ok, v, got)
				}
			}
		})
	}
}
