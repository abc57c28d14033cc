package e2e

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/stretchr/testify/require"

	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// TestShim drives build/telegraf-pktstat-bpf the way inputs.execd with
// signal = "STDIN" does: a newline on stdin asks for one gather.
func TestShim(t *testing.T) {
	nettest.RequireBPF(t)
	shimBin := requireBinary(t, "telegraf-pktstat-bpf")
	p := nettest.NewPair(t)
	runShim(t, p, shimBin, nil)
}

// runShim runs the shim inside A, optionally wrapped (prefix), sends
// traffic, prompts a gather and checks the counts.
func runShim(t *testing.T, p *nettest.Pair, shimBin string, prefix []string) {
	t.Helper()
	conf := filepath.Join(sharedTempDir(t), "pktstat_bpf.conf")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf("[[inputs.pktstat_bpf]]\n  interfaces = [%q]\n", p.IfA)), 0o644))

	var stdin io.WriteCloser
	var stdout io.ReadCloser
	args := append([]string{"ip", "netns", "exec", p.NSA}, prefix...)
	args = append(args, shimBin, "-config", conf, "-poll_interval_disabled")
	proc := startProcess(t, func(cmd *exec.Cmd) {
		var err error
		stdin, err = cmd.StdinPipe()
		require.NoError(t, err)
		stdout, err = cmd.StdoutPipe()
		require.NoError(t, err)
	}, args...)
	proc.waitLog(t, "counting started", 60*time.Second)
	if prefix != nil {
		requireUnprivileged(t, proc)
	}

	flows := []flow{
		{n: 250, payload: 64, srcPort: 41001, dstPort: 51001},
		{n: 20, payload: 1400, srcPort: 41002, dstPort: 51002, v6: true},
	}
	link := sendAll(t, p, flows)
	_, err := io.WriteString(stdin, "\n")
	require.NoError(t, err)
	ms := readUntil(t, bufio.NewReader(stdout), 30*time.Second, func(ms []telegraf.Metric) bool {
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
	})
	requireCounted(t, p, ms, flows, link, true)

	// Closing stdin is how Telegraf stops the shim: it must detach and exit 0.
	require.NoError(t, stdin.Close())
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	proc.wait(t, 30*time.Second)
}

// TestShimRejectsUnknownKey checks the built shim, not just its loader.
func TestShimRejectsUnknownKey(t *testing.T) {
	shimBin := requireBinary(t, "telegraf-pktstat-bpf")
	conf := filepath.Join(t.TempDir(), "pktstat_bpf.conf")
	require.NoError(t, os.WriteFile(conf, []byte("[[inputs.pktstat_bpf]]\n  max_flow = 10\n"), 0o600))
	out, err := execOutput(shimBin, "-config", conf)
	require.Error(t, err)
	require.Equal(t, "telegraf-pktstat-bpf: config "+conf+
		": unknown keys inputs.pktstat_bpf.max_flow: fix the spelling or remove them (see the plugin's sample.conf)\n", out)
}

func execOutput(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	return string(out), err
}
