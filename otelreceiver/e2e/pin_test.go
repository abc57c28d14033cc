package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/pktstat-bpf/pktstat-bpf/internal/bpftest"
	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// With pin_path, under continuous traffic, the collector is stopped and
// started, then killed with SIGKILL and started again: the flow's
// cumulative series keeps one start time and never goes backwards, and its
// last value equals every datagram sent, those sent while no collector
// ran included. Removing the directory detaches the programs.
func TestDistributionPinPathAcrossRestartAndKill(t *testing.T) {
	bin := collectorPath(t)
	p := nettest.NewPair(t)
	pin := filepath.Join(nettest.BPFFS(t), "otelcol", p.IfA)
	dir := t.TempDir()
	out := func(run int) string { return filepath.Join(dir, fmt.Sprintf("metrics-%d.json", run)) }
	run := func(i int) *collector {
		return startCollector(t, fmt.Sprintf("collector run %d", i), p.NSA, bin, configPath("capture-pinned.yaml"), nil,
			"PKTSTAT_IFACE="+p.IfA, "PKTSTAT_PIN_PATH="+pin, "PKTSTAT_OUT_FILE="+out(i))
	}

	c0 := run(0)
	stream := p.StartStream(t, 90, 41401, 7401, 2*time.Millisecond)
	time.Sleep(2 * time.Second)
	c0.stop(t) // clean shutdown: the links stay pinned and counting
	time.Sleep(time.Second)

	c1 := run(1)
	require.True(t, c1.logged(`"adopted_pinned": 2`), "restart did not adopt the pinned links:\n%s", c1.logText())
	time.Sleep(2 * time.Second)
	require.NoError(t, c1.cmd.Process.Kill())
	<-c1.done
	time.Sleep(time.Second)

	c2 := run(2)
	time.Sleep(2 * time.Second)
	n := stream.Stop(t)
	time.Sleep(2500 * time.Millisecond) // a scrape after the last datagram
	c2.stop(t)

	type point struct {
		start pcommon.Timestamp
		v     int64
	}
	series := map[string][]point{}
	for i := 0; i < 3; i++ {
		eachFlowPoint(t, out(i), func(m pmetric.Metric, dp pmetric.NumberDataPoint) {
			a := dp.Attributes().AsRaw()
			if a["network.io.direction"] == "transmit" && a["source.port"] == int64(41401) && a["destination.port"] == int64(7401) {
				series[m.Name()] = append(series[m.Name()], point{dp.StartTimestamp(), dp.IntValue()})
			}
		})
	}
	frame := int64(nettest.UDPFrameLen(90, false))
	require.Greater(t, n, 1000, "the stream sent too little to cover the restarts")
	t.Logf("%d datagrams across a clean restart, a SIGKILL and a restart", n)
	for name, want := range map[string]int64{"pktstatbpf.network.flow.packets": int64(n), "pktstatbpf.network.flow.bytes": int64(n) * frame} {
		pts := series[name]
		require.NotEmpty(t, pts, "no %s points of the flow", name)
		for i, pt := range pts {
			require.Equal(t, pts[0].start, pt.start, "%s point %d: the series start time changed across restarts: %v", name, i, pts)
			if i > 0 {
				require.GreaterOrEqual(t, pt.v, pts[i-1].v, "%s point %d went backwards: %v", name, i, pts)
			}
		}
		require.Equal(t, want, pts[len(pts)-1].v, "%s: last value after %d datagrams: %v", name, n, pts)
	}

	require.Equal(t, 2, nettest.TCXPrograms(t, p.NSPathA(), p.IfA), "after shutdown with pin_path both programs stay")
	// The README's way to remove the state for good when no shim is at hand.
	require.NoError(t, os.RemoveAll(pin))
	deadline := time.Now().Add(5 * time.Second)
	for nettest.TCXPrograms(t, p.NSPathA(), p.IfA) != 0 {
		require.True(t, time.Now().Before(deadline), "programs still attached after removing %s", pin)
		time.Sleep(100 * time.Millisecond)
	}
}

// A program inserted at the head of our hook while the collector runs
// shows in pktstatbpf.hook.not_first within an interval, and one warning
// names it.
func TestDistributionReportsProgramInFront(t *testing.T) {
	bin := collectorPath(t)
	p := nettest.NewPair(t)
	outFile := filepath.Join(t.TempDir(), "metrics.json")
	c := startCollector(t, "collector", p.NSA, bin, configPath("capture-pinned.yaml"), nil,
		"PKTSTAT_IFACE="+p.IfA, "PKTSTAT_PIN_PATH=", "PKTSTAT_OUT_FILE="+outFile)
	notFirst := func() int64 {
		v := int64(-1)
		eachMetric(t, outFile, func(m pmetric.Metric) {
			if m.Name() == "pktstatbpf.hook.not_first" && m.Sum().DataPoints().Len() > 0 {
				v = m.Sum().DataPoints().At(0).IntValue()
			}
		})
		return v
	}
	waitFor(t, 10*time.Second, "scrape with pktstatbpf.hook.not_first = 0", func() bool { return notFirst() == 0 })
	intruder := bpftest.NewFront(t, "intruder", bpftest.TCXNext, 0)
	bpftest.AttachTCX(t, p.NSPathA(), p.IfA, intruder.Prog, ebpf.AttachTCXIngress, link.Head())
	waitFor(t, 3*time.Second, "pktstatbpf.hook.not_first = 1 within one interval", func() bool { return notFirst() == 1 })
	want := fmt.Sprintf(`"in_front": "program id %d name intruder type SchedCLS"`, intruder.ID(t))
	waitFor(t, 3*time.Second, "a warning naming the intruder", func() bool { return c.logged(want) })
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %s", what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
