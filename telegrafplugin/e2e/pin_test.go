package e2e

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/influxdata/telegraf"
	"github.com/stretchr/testify/require"

	"github.com/pktstat-bpf/pktstat-bpf/internal/bpftest"
	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// With pin_path, under continuous traffic, build/telegraf is reloaded with
// SIGHUP, killed with SIGKILL and started again, and the execd shim is
// run with -unpin at the end: the flow's series never goes backwards, and
// its last value equals every datagram sent, including those sent while no
// Telegraf ran.
func TestTelegrafPinPathAcrossReloadAndKill(t *testing.T) {
	nettest.RequireBPF(t)
	telegrafBin := requireBinary(t, "telegraf")
	shimBin := requireBinary(t, "telegraf-pktstat-bpf")
	p := nettest.NewPair(t)
	pin := filepath.Join(nettest.BPFFS(t), "telegraf", p.IfA)
	dir := t.TempDir()
	plugin := fmt.Sprintf("[[inputs.pktstat_bpf]]\n  interfaces = [%q]\n  netns = %q\n  pin_path = %q\n", p.IfA, p.NSPathA(), pin)
	conf := func(run int) string {
		path := filepath.Join(dir, fmt.Sprintf("telegraf-%d.conf", run))
		intervalConfig(t, path, plugin, filepath.Join(dir, fmt.Sprintf("metrics-%d.out", run)))
		return path
	}

	first := startProcess(t, nil, telegrafBin, "--config", conf(0))
	first.waitLog(t, "counting started", 60*time.Second)
	stream := p.StartStream(t, 120, 41301, 7301, 2*time.Millisecond)
	time.Sleep(2 * time.Second)

	// Reload: Telegraf stops the input and starts a new one in the same process.
	require.NoError(t, first.cmd.Process.Signal(syscall.SIGHUP))
	waitCount(t, first, "counting started", 2, 60*time.Second)
	time.Sleep(2 * time.Second)

	// A crash: nothing drains or detaches, and traffic goes on without an agent.
	require.NoError(t, first.cmd.Process.Kill())
	<-first.done
	time.Sleep(1500 * time.Millisecond)

	second := startProcess(t, nil, telegrafBin, "--config", conf(1))
	second.waitLog(t, "counting started", 60*time.Second)
	require.Contains(t, second.log(), "adopted_pinned=2", "the restart must adopt the pinned links")
	time.Sleep(2 * time.Second)
	n := stream.Stop(t)
	time.Sleep(2500 * time.Millisecond) // a gather after the last datagram
	second.stop(t)
	require.NoError(t, second.err, "stderr:\n%s", second.log())

	tags := map[string]string{"interface": p.IfA, "direction": "egress", "ip_version": "4", "proto": "udp",
		"src_ip": p.A4.String(), "dst_ip": p.B4.String(), "src_port": "41301", "dst_port": "7301"}
	var series []telegraf.Metric
	for run := 0; run < 2; run++ {
		data, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("metrics-%d.out", run)))
		require.NoError(t, err)
		for _, m := range parseLines(t, data) {
			if m.Name() == "pktstat_bpf" && maps.Equal(m.Tags(), tags) {
				series = append(series, m)
			}
		}
	}
	require.NotEmpty(t, series)
	var last uint64
	for i, m := range series {
		v, _ := m.GetField("packets")
		got := v.(uint64)
		require.GreaterOrEqual(t, got, last, "point %d of the series went backwards: %s", i, dump(series))
		last = got
	}
	frame := uint64(nettest.UDPFrameLen(120, false))
	lastM := series[len(series)-1]
	require.Equal(t, map[string]interface{}{"packets": uint64(n), "bytes": uint64(n) * frame}, lastM.Fields(),
		"sent %d datagrams in all; the series:\n%s", n, dump(series))
	require.Greater(t, n, 1000, "the stream sent too little to cover the reload, the kill and the restart")
	t.Logf("%d datagrams across a SIGHUP reload, a SIGKILL and a restart: all %d counted, %d points, never decreasing", n, n, len(series))

	// Stopped, the programs stay attached and counting.
	require.Equal(t, 2, nettest.TCXPrograms(t, p.NSPathA(), p.IfA), "after stop with pin_path, want both TCX programs attached")

	// Removing the pinned state for good detaches everything.
	unpinConf := filepath.Join(dir, "plugin.conf")
	require.NoError(t, os.WriteFile(unpinConf, []byte(plugin), 0o600))
	out, err := execOutput(shimBin, "-config", unpinConf, "-unpin")
	require.NoError(t, err, out)
	_, err = os.Stat(pin)
	require.True(t, os.IsNotExist(err), "pin_path still exists after -unpin: %v", err)
	requireNothingAttached(t, p)
}

// waitCount waits until substr appears n times in the process's stderr.
func waitCount(t *testing.T, p *process, substr string, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for strings.Count(p.log(), substr) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s logged %q %d times within %s, want %d; stderr:\n%s", p.name, substr, strings.Count(p.log(), substr), timeout, n, p.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// requireNothingAttached waits for A's interface to hold no TCX program
// (the kernel frees a link whose last pin went in a work item).
func requireNothingAttached(t *testing.T, p *nettest.Pair) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for nettest.TCXPrograms(t, p.NSPathA(), p.IfA) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d TCX programs still attached to %s", nettest.TCXPrograms(t, p.NSPathA(), p.IfA), p.IfA)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A program inserted at the head of our hook while Telegraf runs shows in
// the next gathers' hooks_not_first, and one warning names it; when it
// goes, the field drops back to zero.
func TestTelegrafReportsProgramInFront(t *testing.T) {
	nettest.RequireBPF(t)
	telegrafBin := requireBinary(t, "telegraf")
	p := nettest.NewPair(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "metrics.out")
	conf := filepath.Join(dir, "telegraf.conf")
	intervalConfig(t, conf, fmt.Sprintf("[[inputs.pktstat_bpf]]\n  interfaces = [%q]\n  netns = %q\n", p.IfA, p.NSPathA()), out)
	proc := startProcess(t, nil, telegrafBin, "--config", conf)
	proc.waitLog(t, "counting started", 60*time.Second)

	notFirst := func() int64 {
		data, _ := os.ReadFile(out)
		m := lastSeries(parseLines(t, data), "pktstat_bpf_internal", map[string]string{"mode": "tc"})
		if m == nil {
			return -1
		}
		v, _ := m.GetField("hooks_not_first")
		n, _ := v.(int64)
		return n
	}
	waitUntil(t, 10*time.Second, "a gather with hooks_not_first=0", func() bool { return notFirst() == 0 })
	intruder := bpftest.NewFront(t, "intruder", bpftest.TCXNext, 0)
	l := bpftest.AttachTCX(t, p.NSPathA(), p.IfA, intruder.Prog, ebpf.AttachTCXEgress, link.Head())
	waitUntil(t, 3*time.Second, "hooks_not_first=1 within one interval", func() bool { return notFirst() == 1 })
	proc.waitLog(t, fmt.Sprintf("in_front=program id %d name intruder type SchedCLS", intruder.ID(t)), 3*time.Second)
	require.NoError(t, l.Close())
	waitUntil(t, 3*time.Second, "hooks_not_first=0 after the intruder left", func() bool { return notFirst() == 0 })
	require.Equal(t, 1, strings.Count(proc.log(), "another program runs before ours"), "one warning, not one per gather:\n%s", proc.log())
}

func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s", what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
