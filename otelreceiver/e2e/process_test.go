package e2e

import (
	"bufio"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// collectorPath returns build/otelcol-pktstat ($OTELCOL_PKTSTAT overrides).
// A missing binary fails under PKTSTAT_REQUIRE_BPF=1: make test builds it.
func collectorPath(t *testing.T) string {
	t.Helper()
	path := os.Getenv("OTELCOL_PKTSTAT")
	if path == "" {
		path = filepath.Join("..", "..", "build", "otelcol-pktstat")
	}
	path, err := filepath.Abs(path)
	require.NoError(t, err)
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("PKTSTAT_REQUIRE_BPF") == "1" {
			t.Fatalf("%s is missing: run `make build` (make test does): %v", path, err)
		}
		t.Skipf("%s is missing: run `make build` first", path)
	}
	return path
}

// worldReadableCopy copies files into a fresh directory that any user can
// read, for a collector that runs as nobody: the checkout and t.TempDir()
// may not be reachable by other users. It returns the copies' paths.
func worldReadableCopy(t *testing.T, files ...string) []string {
	t.Helper()
	dir, err := os.MkdirTemp("", "otelcol-pktstat-e2e-")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	require.NoError(t, os.Chmod(dir, 0o755))
	var out []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		require.NoError(t, err)
		dst := filepath.Join(dir, filepath.Base(f))
		require.NoError(t, os.WriteFile(dst, data, 0o755))
		out = append(out, dst)
	}
	return out
}

// configPath is a file under the repository's testdata/otel.
func configPath(name string) string {
	return filepath.Join("..", "..", "testdata", "otel", name)
}

// collector is a collector process the test started; t.Cleanup stops it.
type collector struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}

	mu  sync.Mutex
	log []string // stderr: the collector's log
	out []string // stdout: the debug exporter without the internal logger
	err error
}

// startCollector runs the collector with config inside the namespace nsName
// (`ip netns exec`, which execs, as does every wrap command, so the pid is
// the collector's) and waits until it reports that every pipeline is running.
func startCollector(t *testing.T, name, nsName, bin, config string, wrap []string, env ...string) *collector {
	t.Helper()
	return startCollectorArgs(t, name, nsName, bin, []string{"--config", config}, wrap, env...)
}

// startCollectorArgs is startCollector with the collector's arguments.
func startCollectorArgs(t *testing.T, name, nsName, bin string, binArgs, wrap []string, env ...string) *collector {
	t.Helper()
	args := append([]string{"netns", "exec", nsName}, wrap...)
	args = append(append(args, bin), binArgs...)
	cmd := exec.Command("ip", args...)
	cmd.Env = append(os.Environ(), env...)
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start(), "start %s", name)
	c := &collector{name: name, cmd: cmd, done: make(chan struct{})}
	var readers sync.WaitGroup
	for _, r := range []struct {
		from io.Reader
		to   *[]string
	}{{stderr, &c.log}, {stdout, &c.out}} {
		readers.Go(func() {
			sc := bufio.NewScanner(r.from)
			sc.Buffer(make([]byte, 1<<20), 1<<20)
			for sc.Scan() {
				c.mu.Lock()
				*r.to = append(*r.to, sc.Text())
				c.mu.Unlock()
			}
		})
	}
	go func() {
		// Wait closes the pipes: read them to the end first.
		readers.Wait()
		err := cmd.Wait()
		c.mu.Lock()
		c.err = err
		c.mu.Unlock()
		close(c.done)
	}()
	t.Cleanup(func() { c.stop(t) })
	deadline := time.After(60 * time.Second)
	for !c.logged("Everything is ready") {
		select {
		case <-c.done:
			t.Fatalf("%s exited before it was ready: %v\n%s", name, c.exitErr(), c.logText())
		case <-deadline:
			t.Fatalf("%s not ready after 60s:\n%s", name, c.logText())
		case <-time.After(50 * time.Millisecond):
		}
	}
	// otelcol logs "Everything is ready" just before it subscribes to
	// SIGTERM (otelcol/collector.go, Run); a SIGTERM in between kills it
	// without a graceful shutdown, and with it the receiver's final flush.
	// On a loaded machine that gap has lasted milliseconds: wait it out.
	time.Sleep(500 * time.Millisecond)
	return c
}

func (c *collector) logged(s string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, l := range c.log {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

// stdoutLines returns what the collector has written to stdout so far.
func (c *collector) stdoutLines() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.out...)
}

func (c *collector) logText() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.log, "\n")
}

func (c *collector) exitErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// stop sends SIGTERM, the signal the collector shuts down cleanly on, and
// kills the process if it has not exited within 20 s. It fails t when the
// shutdown was not clean.
func (c *collector) stop(t *testing.T) {
	t.Helper()
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(20 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
		t.Errorf("%s ignored SIGTERM for 20s and was killed:\n%s", c.name, c.logText())
		return
	}
	if err := c.exitErr(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("%s exited with %v:\n%s", c.name, err, c.logText())
	}
}

// startPipeline runs, in p's namespace A, the sink collector (OTLP in on
// otlpPort, flows out to a file and to Prometheus on promPort) and the
// capture collector (bin with captureConfig behind the wrap prefix, env
// added) counting on A's veth end and sending to the sink. It returns the
// sink's output file and the capture collector, which has attached.
func startPipeline(t *testing.T, p *nettest.Pair, bin, captureConfig string, wrap []string, otlpPort, promPort string, env ...string) (string, *collector) {
	t.Helper()
	outFile := filepath.Join(t.TempDir(), "metrics.json")
	startCollector(t, "sink collector", p.NSA, collectorPath(t), configPath("sink.yaml"), nil,
		"PKTSTAT_OTLP_PORT="+otlpPort, "PKTSTAT_PROM_PORT="+promPort, "PKTSTAT_OUT_FILE="+outFile)
	capture := startCollector(t, "capture collector", p.NSA, bin, captureConfig, wrap,
		append([]string{"PKTSTAT_IFACE=" + p.IfA, "PKTSTAT_OTLP_PORT=" + otlpPort}, env...)...)
	require.True(t, capture.logged(`"interface": "`+p.IfA+`"`), "capture collector did not log attaching to %s:\n%s", p.IfA, capture.logText())
	return outFile, capture
}
