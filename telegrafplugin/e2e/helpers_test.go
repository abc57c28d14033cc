// Package e2e runs the built binaries, build/telegraf and
// build/telegraf-pktstat-bpf, against traffic the tests send through
// throw-away network namespaces, and into a real InfluxDB.
package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/plugins/parsers/influx"
	"github.com/stretchr/testify/require"

	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// requireBinary returns the path of a built binary. A missing binary is a
// failure under PKTSTAT_REQUIRE_BPF=1 (make test builds them first).
func requireBinary(t *testing.T, name string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("runs the built binaries; skipped in -short mode")
	}
	dir := os.Getenv("PKTSTAT_BUILD")
	if dir == "" {
		dir = filepath.Join("..", "..", "build")
	}
	path, err := filepath.Abs(filepath.Join(dir, name))
	require.NoError(t, err)
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("PKTSTAT_REQUIRE_BPF") == "1" {
			t.Fatalf("%s is missing: run `make build` (make test does): %v", path, err)
		}
		t.Skipf("%s is missing: run `make build` first", path)
	}
	return path
}

// influxdPath finds influxd 1.8: $INFLUXD, then PATH, then ~/go/bin, where
// `make deps` installs it.
func influxdPath(t *testing.T) string {
	t.Helper()
	candidates := []string{os.Getenv("INFLUXD")}
	if p, err := exec.LookPath("influxd"); err == nil {
		candidates = append(candidates, p)
	}
	if home, err := os.UserHomeDir(); err == nil {
		candidates = append(candidates, filepath.Join(home, "go", "bin", "influxd"))
	}
	for _, c := range candidates {
		if c == "" {
			continue
		}
		if _, err := os.Stat(c); err == nil {
			return c
		}
	}
	if os.Getenv("PKTSTAT_REQUIRE_BPF") == "1" {
		t.Fatal("influxd is missing: run `make deps` (installs influxd 1.8.10 into ~/go/bin)")
	}
	t.Skip("influxd is missing: run `make deps`")
	return ""
}

// process is a command the test started; t.Cleanup stops it.
type process struct {
	cmd  *exec.Cmd
	name string

	mu     sync.Mutex
	stderr []string
	done   chan struct{}
	err    error
}

// runTelegraf starts telegrafBin inside namespace A with the config text
// and waits until the input has attached.
func runTelegraf(t *testing.T, p *nettest.Pair, telegrafBin, config string) *process {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "telegraf.conf")
	require.NoError(t, os.WriteFile(conf, []byte(config), 0o600))
	proc := startProcess(t, nil, "ip", "netns", "exec", p.NSA, telegrafBin, "--config", conf)
	proc.waitLog(t, "counting started", 60*time.Second)
	return proc
}

// startProcess starts args[0] with its stderr collected line by line.
// stdout and stdin are the caller's to set up through setup.
func startProcess(t *testing.T, setup func(*exec.Cmd), args ...string) *process {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = os.Environ()
	if setup != nil {
		setup(cmd)
	}
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	p := &process{cmd: cmd, name: filepath.Base(args[0]), done: make(chan struct{})}
	require.NoError(t, cmd.Start(), "start %s", strings.Join(args, " "))
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.stderr = append(p.stderr, sc.Text())
			p.mu.Unlock()
		}
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() { p.stop(t) })
	return p
}

// stop ends the process if it still runs: SIGTERM, then SIGKILL.
func (p *process) stop(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Errorf("%s ignored SIGTERM for 10s; killing it", p.name)
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *process) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.stderr, "\n")
}

// waitLog waits until a line of stderr contains substr.
func (p *process) waitLog(t *testing.T, substr string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if strings.Contains(p.log(), substr) {
			return
		}
		select {
		case <-p.done:
			if strings.Contains(p.log(), substr) {
				return
			}
			t.Fatalf("%s exited (%v) before logging %q; stderr:\n%s", p.name, p.err, substr, p.log())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("%s did not log %q within %s; stderr:\n%s", p.name, substr, timeout, p.log())
}

// wait waits for the process to exit by itself and requires success.
func (p *process) wait(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("%s still runs after %s; stderr:\n%s", p.name, timeout, p.log())
	}
	require.NoError(t, p.err, "%s failed; stderr:\n%s", p.name, p.log())
}

// parseLines parses InfluxDB line protocol as Telegraf writes it.
func parseLines(t *testing.T, data []byte) []telegraf.Metric {
	t.Helper()
	parser := &influx.Parser{}
	require.NoError(t, parser.Init())
	ms, err := parser.Parse(data)
	require.NoError(t, err, "parse line protocol:\n%s", data)
	return ms
}

// lastSeries returns the last metric of measurement name whose tags are
// exactly tags; the fields are cumulative, so the last one is the total.
func lastSeries(ms []telegraf.Metric, name string, tags map[string]string) telegraf.Metric {
	var last telegraf.Metric
	for _, m := range ms {
		if m.Name() == name && maps.Equal(m.Tags(), tags) && (last == nil || !m.Time().Before(last.Time())) {
			last = m
		}
	}
	return last
}

// lastDrain returns the metrics of measurement name stamped with the
// latest time: one drain's, whose cumulative fields hold every live series.
func lastDrain(ms []telegraf.Metric, name string) []telegraf.Metric {
	var out []telegraf.Metric
	for _, m := range ms {
		if m.Name() != name {
			continue
		}
		switch {
		case len(out) == 0 || m.Time().After(out[0].Time()):
			out = append(out[:0], m)
		case m.Time().Equal(out[0].Time()):
			out = append(out, m)
		}
	}
	return out
}

// flow is one UDP flow a test sends from A to B, and what the plugin must
// report for it on A's interface.
type flow struct {
	n, payload       int
	srcPort, dstPort uint16
	v6               bool
}

func (f flow) send(t *testing.T, p *nettest.Pair) {
	t.Helper()
	p.SendUDP(t, f.n, f.payload, f.srcPort, f.dstPort, f.v6)
}

func (f flow) bytes() uint64 { return uint64(f.n * nettest.UDPFrameLen(f.payload, f.v6)) }

// egressTags are the tags of the flow as counted by tc egress on A's veth end.
func (f flow) egressTags(p *nettest.Pair) map[string]string {
	src, dst, v := p.A4, p.B4, "4"
	if f.v6 {
		src, dst, v = p.A6, p.B6, "6"
	}
	return map[string]string{
		"interface":  p.IfA,
		"direction":  "egress",
		"ip_version": v,
		"proto":      "udp",
		"src_ip":     src.String(),
		"dst_ip":     dst.String(),
		"src_port":   fmt.Sprint(f.srcPort),
		"dst_port":   fmt.Sprint(f.dstPort),
	}
}

// requireCounted checks that the metrics hold each flow's exact packets and
// bytes, and that they add up to what A's interface itself transmitted.
// intFields is for line protocol written without unsigned support (the
// shim's serializer), where the uint64 counters arrive as int64.
func requireCounted(t *testing.T, p *nettest.Pair, ms []telegraf.Metric, flows []flow, link nettest.LinkStats, intFields bool) {
	t.Helper()
	var packets, bytes uint64
	for _, f := range flows {
		m := lastSeries(ms, "pktstat_bpf", f.egressTags(p))
		require.NotNil(t, m, "no pktstat_bpf metric with tags %v in:\n%s", f.egressTags(p), dump(ms))
		want := map[string]interface{}{"packets": uint64(f.n), "bytes": f.bytes()}
		if intFields {
			want = map[string]interface{}{"packets": int64(f.n), "bytes": int64(f.bytes())}
		}
		require.Equal(t, want, m.Fields(), "flow %+v", f)
		packets += uint64(f.n)
		bytes += f.bytes()
	}
	require.Equal(t, nettest.LinkStats{TxPackets: packets, TxBytes: bytes}, link,
		"A's own interface counters disagree with the traffic sent")
}

func dump(ms []telegraf.Metric) string {
	var b strings.Builder
	for _, m := range ms {
		fmt.Fprintf(&b, "%s %v %v %s\n", m.Name(), m.Tags(), m.Fields(), m.Time().Format(time.RFC3339Nano))
	}
	return b.String()
}

// sendAll sends every flow and returns the change of A's interface counters.
func sendAll(t *testing.T, p *nettest.Pair, flows []flow) nettest.LinkStats {
	t.Helper()
	before := p.LinkStats(t, p.NSA, p.IfA)
	for _, f := range flows {
		f.send(t, p)
	}
	return p.LinkStats(t, p.NSA, p.IfA).Sub(before)
}

// readUntil reads lines from r until match reports true for the metrics
// parsed so far, or the timeout passes.
func readUntil(t *testing.T, r *bufio.Reader, timeout time.Duration, match func([]telegraf.Metric) bool) []telegraf.Metric {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	lines := make(chan string)
	errc := make(chan error, 1)
	go func() {
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				errc <- err
				return
			}
			select {
			case lines <- line:
			case <-ctx.Done():
				return
			}
		}
	}()
	var got []byte
	for {
		select {
		case line := <-lines:
			got = append(got, line...)
			if ms := parseLines(t, got); match(ms) {
				return ms
			}
		case err := <-errc:
			if errors.Is(err, io.EOF) {
				t.Fatalf("output ended before the expected metrics; got:\n%s", got)
			}
			t.Fatalf("read output: %v; got:\n%s", err, got)
		case <-ctx.Done():
			t.Fatalf("expected metrics not seen within %s; got:\n%s", timeout, got)
		}
	}
}

// gatherReader splits a shim's stdout into gathers: each gather ends with
// its pktstat_bpf_internal line.
type gatherReader struct {
	lines chan string
}

func newGatherReader(r io.Reader) *gatherReader {
	g := &gatherReader{lines: make(chan string, 4096)}
	go func() {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			g.lines <- sc.Text() + "\n"
		}
		close(g.lines)
	}()
	return g
}

// next returns the metrics of the next complete gather.
func (g *gatherReader) next(t *testing.T, timeout time.Duration) []telegraf.Metric {
	t.Helper()
	var got []byte
	deadline := time.After(timeout)
	for {
		select {
		case line, ok := <-g.lines:
			if !ok {
				t.Fatalf("output ended inside a gather; got:\n%s", got)
			}
			got = append(got, line...)
			if strings.HasPrefix(line, "pktstat_bpf_internal") {
				return parseLines(t, got)
			}
		case <-deadline:
			t.Fatalf("no complete gather within %s; got:\n%s", timeout, got)
		}
	}
}

// onceConfig writes the telegraf.conf of a `telegraf --once` run: the input
// on A's veth end with the extra keys (TOML lines), and the file output in
// line protocol with unsigned integers. It returns the config's path and the
// output file's.
func onceConfig(t *testing.T, p *nettest.Pair, keys string) (conf, out string) {
	t.Helper()
	dir := sharedTempDir(t)
	out = filepath.Join(dir, "metrics.out")
	conf = filepath.Join(dir, "telegraf.conf")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf(`
[agent]
  omit_hostname = true
  interval = "1h"
  flush_interval = "1h"

[[inputs.pktstat_bpf]]
  interfaces = [%q]
%s
[[outputs.file]]
  files = [%q]
  data_format = "influx"
  influx_uint_support = true
`, p.IfA, keys, out)), 0o644))
	return conf, out
}

// readMetrics parses the line protocol a run wrote to out.
// intervalConfig writes to path a Telegraf config that gathers plugin, one
// [[inputs.pktstat_bpf]] table, every second into the file out, for tests
// that keep Telegraf running.
func intervalConfig(t *testing.T, path, plugin, out string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(fmt.Sprintf(`
[agent]
  omit_hostname = true
  interval = "1s"
  flush_interval = "1s"

%s
[[outputs.file]]
  files = [%q]
  data_format = "influx"
  influx_uint_support = true
`, plugin, out)), 0o600))
}

func readMetrics(t *testing.T, out string) []telegraf.Metric {
	t.Helper()
	data, err := os.ReadFile(out)
	require.NoError(t, err)
	return parseLines(t, data)
}
