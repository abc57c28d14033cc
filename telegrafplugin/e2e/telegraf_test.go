package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pktstat-bpf/pktstat-bpf/core"
	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// Long enough for the test to send its traffic between Telegraf's first
// gather and its stop, whose final drain holds the totals.
const onceWait = 8

// TestTelegrafOnce runs build/telegraf --once inside namespace A with the
// input compiled in and reads the flows from its file output.
func TestTelegrafOnce(t *testing.T) {
	nettest.RequireBPF(t)
	telegrafBin := requireBinary(t, "telegraf")
	p := nettest.NewPair(t)
	runTelegrafOnce(t, p, telegrafBin, nil, false)
}

// TestTelegrafNetNSKey runs build/telegraf in the host's namespace and
// counts in A through the netns key.
func TestTelegrafNetNSKey(t *testing.T) {
	nettest.RequireBPF(t)
	telegrafBin := requireBinary(t, "telegraf")
	p := nettest.NewPair(t)
	runTelegrafOnce(t, p, telegrafBin, nil, true)
}

// runTelegrafOnce runs telegraf --once in A (or, with netnsKey, in the
// host's namespace with netns pointing at A), optionally wrapped (prefix),
// sends traffic while it waits, and checks the counts it wrote. It returns
// the process, which has exited.
func runTelegrafOnce(t *testing.T, p *nettest.Pair, telegrafBin string, prefix []string, netnsKey bool) *process {
	t.Helper()
	netns := ""
	var args []string
	if netnsKey {
		netns = fmt.Sprintf("  netns = %q\n", p.NSPathA())
	} else {
		args = []string{"ip", "netns", "exec", p.NSA}
	}
	conf, out := onceConfig(t, p, "  mode = \"tc\"\n"+netns)

	args = append(args, prefix...)
	args = append(args, telegrafBin, "--config", conf, "--once", "--test-wait", fmt.Sprint(onceWait))
	proc := startProcess(t, nil, args...)
	proc.waitLog(t, "counting started", 60*time.Second)
	if prefix != nil {
		requireUnprivileged(t, proc)
	}
	flows := []flow{
		{n: 100, payload: 200, srcPort: 40001, dstPort: 50001},
		{n: 37, payload: 1000, srcPort: 40002, dstPort: 50002, v6: true},
	}
	link := sendAll(t, p, flows)
	proc.wait(t, onceWait*time.Second+60*time.Second)

	ms := readMetrics(t, out)
	requireCounted(t, p, ms, flows, link, false)

	internal := lastSeries(ms, "pktstat_bpf_internal", map[string]string{"mode": "tc"})
	require.NotNil(t, internal, "no pktstat_bpf_internal metric in:\n%s", dump(ms))
	attached, _ := internal.GetField("hooks_attached")
	failed, _ := internal.GetField("hooks_failed")
	require.Equal(t, []interface{}{int64(2), int64(0)}, []interface{}{attached, failed},
		"tc mode on one interface attaches ingress and egress")
	// The flow table at the default 131,072 flows holds 160 bytes a flow,
	// the drain's walk array (where the kernel has bpf_for_each_map_elem)
	// 96 and the retransmit table (where the kernel has its hook) 192, one
	// value each whatever the CPU count, plus the small per-CPU tables (a
	// few hundred KiB a CPU).
	kmem, _ := internal.GetField("kernel_memory")
	capacity, _ := internal.GetField("capacity")
	require.Equal(t, int64(131072), capacity)
	require.IsType(t, uint64(0), kmem)
	require.GreaterOrEqual(t, kmem.(uint64), uint64(131072*160), "kernel_memory")
	require.Less(t, kmem.(uint64), uint64(131072*(160+96+192)+(4<<20)+runtime.NumCPU()*(1<<20)), "kernel_memory")
	return proc
}

// TestTelegrafPluginsList checks that the build lists the input.
func TestTelegrafPluginsList(t *testing.T) {
	telegrafBin := requireBinary(t, "telegraf")
	out, err := execOutput(telegrafBin, "plugins", "inputs")
	require.NoError(t, err, out)
	require.Contains(t, "\n"+out, "\ninputs.pktstat_bpf\n")
}

// TestTelegrafRejectsUnknownKey checks Telegraf's own loader on the built binary.
func TestTelegrafRejectsUnknownKey(t *testing.T) {
	telegrafBin := requireBinary(t, "telegraf")
	conf := filepath.Join(t.TempDir(), "telegraf.conf")
	require.NoError(t, os.WriteFile(conf, []byte("[[inputs.pktstat_bpf]]\n  max_flow = 10\n"), 0o600))
	out, err := execOutput(telegrafBin, "--config", conf, "--test")
	require.Error(t, err)
	require.Contains(t, out, `plugin inputs.pktstat_bpf: line 1: configuration specified the fields ["max_flow"], but they were not used`)
}

// TestTelegrafUnsupportedModeFailsAtStart: a mode the kernel or this build
// cannot do stops Telegraf at start (not --once, which only logs start
// errors) with the reason and the alternative.
func TestTelegrafUnsupportedModeFailsAtStart(t *testing.T) {
	nettest.RequireBPF(t)
	telegrafBin := requireBinary(t, "telegraf")
	conf := filepath.Join(t.TempDir(), "telegraf.conf")
	require.NoError(t, os.WriteFile(conf, []byte("[[inputs.pktstat_bpf]]\n  mode = \"kprobe\"\n[[outputs.discard]]\n"), 0o600))
	proc := startProcess(t, nil, telegrafBin, "--config", conf)
	select {
	case <-proc.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("telegraf still runs 60s after a start failure; stderr:\n%s", proc.log())
	}
	var exit *exec.ExitError
	require.ErrorAs(t, proc.err, &exit, "telegraf must fail; stderr:\n%s", proc.log())
	// This kernel has neither kprobes nor fentry (NOTES.md): core's
	// ErrNotSupported, with its reason, stops Telegraf.
	require.Contains(t, proc.log(), "Error running agent: starting input inputs.pktstat_bpf: ")
	require.Contains(t, proc.log(), core.ErrNotSupported.Error())
}
