// Command bench measures pktstat-bpf's per-packet, drain, conversion,
// end-to-end and agent costs and prints them as one table (see README.md).
// It exits non-zero when a measurement cannot run; missed targets are
// marked MISSED in the table and make it exit 2 when -strict is given.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cilium/ebpf/rlimit"
)

// row is one line of the table. Every number in it comes from this run.
type row struct {
	section, name   string
	value, baseline string
	delta, spread   string
	target, status  string
}

type table struct {
	rows   []row
	missed []string
}

func (t *table) add(r row) { t.rows = append(t.rows, r) }

// judge fills in status: met when ok, MISSED otherwise.
func (t *table) judge(r row, ok bool) {
	r.status = "met"
	if !ok {
		r.status = "MISSED"
		t.missed = append(t.missed, r.section+": "+r.name)
	}
	t.add(r)
}

func (t *table) print() {
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "section\tmeasurement\tvalue\tbaseline\tmarginal/ratio\tspread (min..max of rounds)\ttarget\tstatus")
	last := ""
	for _, r := range t.rows {
		sec := r.section
		if sec == last {
			sec = ""
		}
		last = r.section
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", sec, r.name, r.value, r.baseline, r.delta, r.spread, r.target, r.status)
	}
	w.Flush()
}

func spread(xs []float64, format string) string {
	if len(xs) == 0 {
		return ""
	}
	return fmt.Sprintf(format+".."+format, slices.Min(xs), slices.Max(xs))
}

func fatal(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: FAILED: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	root := flag.String("root", ".", "repository root (for build/ and the Go modules)")
	rounds := flag.Int("rounds", 5, "rounds of each BPF_PROG_TEST_RUN and end-to-end measurement")
	intervals := flag.Int("intervals", 10, "1 s drain intervals sampled per agent and flow level")
	skip := flag.String("skip", "", "comma-separated sections not to run (packet,drain,e2e,agents); skipped sections are marked NOT RUN")
	strict := flag.Bool("strict", false, "exit 2 when a target is missed")
	flag.Parse()
	skipped := map[string]bool{}
	for _, s := range strings.Split(*skip, ",") {
		skipped[strings.TrimSpace(s)] = true
	}
	absRoot, err := filepath.Abs(*root)
	if err != nil {
		fatal("%v", err)
	}
	if os.Geteuid() != 0 {
		fatal("needs root: BPF_PROG_TEST_RUN, network namespaces and attaching programs (run `sudo make bench`)")
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		fatal("remove memlock limit: %v", err)
	}
	tmp, err := os.MkdirTemp("", "pktstat-bench-")
	if err != nil {
		fatal("%v", err)
	}
	defer os.RemoveAll(tmp)
	t := &table{}
	start := time.Now()
	host, _ := os.Hostname()
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	fmt.Printf("pktstat-bpf bench, %s, kernel %s, %s\n\n", host, strings.TrimSpace(string(kernel)), start.UTC().Format(time.RFC3339))

	step := func(name string) bool {
		if skipped[name] {
			t.add(row{section: name, name: "(skipped with -skip)", status: "NOT RUN"})
			return false
		}
		fmt.Fprintf(os.Stderr, "bench: %s (%s elapsed)\n", name, time.Since(start).Round(time.Second))
		return true
	}
	if step("packet") {
		packetRows(t, *rounds)
		filterRows(t, *rounds)
	}
	if step("drain") {
		drainRows(t, absRoot, tmp)
	}
	if step("e2e") {
		e2eRows(t, *rounds, tmp)
	}
	if step("agents") {
		agentRows(t, absRoot, tmp, *intervals)
	}
	t.print()
	fmt.Printf("\n%d targets missed; took %s\n", len(t.missed), time.Since(start).Round(time.Second))
	for _, m := range t.missed {
		fmt.Println("  MISSED:", m)
	}
	if *strict && len(t.missed) > 0 {
		os.Exit(2)
	}
}

func packetRows(t *table, rounds int) {
	rs, err := measurePackets(rounds, 100000, 100000)
	if err != nil {
		fatal("BPF_PROG_TEST_RUN: %v", err)
	}
	for _, r := range rs {
		sec := "per packet: " + r.prog + " (ns/pkt, BPF_PROG_TEST_RUN)"
		hot := diffs(r.hot, r.hotEmpty)
		cyc := diffs(r.cycle, r.cycleEmpty)
		hr := row{section: sec, name: r.pkt + ", 1 hot flow", value: fmt.Sprintf("%.0f", median(r.hot)),
			baseline: fmt.Sprintf("%.0f empty", median(r.hotEmpty)), delta: fmt.Sprintf("%+.0f", median(hot)), spread: spread(hot, "%+.0f")}
		// Issue 14's targets, for an existing IPv4/TCP flow with TCP flags
		// counted: TC and XDP <= +30 ns hot and <= +35 ns with 10k flows
		// cycling; cgroup_skb <= +50 ns hot (its 10k row runs one packet per
		// syscall, with cold caches: not comparable, so not judged).
		judged := r.pkt == "ipv4/tcp+512B"
		hotTarget, cycTarget := 30.0, 35.0
		if r.prog == kindCgroup.name {
			hotTarget, cycTarget = 50, 0
		}
		if judged {
			hr.target = fmt.Sprintf("<= %+.0f", hotTarget)
			t.judge(hr, median(hot) <= hotTarget)
		} else {
			t.add(hr)
		}
		how := "10k flows cycling"
		if r.cycleMethod != "in-kernel cycler, tail call" {
			how = "10k flows, 1 run/syscall"
		}
		cr := row{section: sec, name: r.pkt + ", " + how, value: fmt.Sprintf("%.0f", median(r.cycle)),
			baseline: fmt.Sprintf("%.0f empty", median(r.cycleEmpty)), delta: fmt.Sprintf("%+.0f", median(cyc)), spread: spread(cyc, "%+.0f")}
		if judged && cycTarget > 0 {
			cr.target = fmt.Sprintf("<= %+.0f", cycTarget)
			t.judge(cr, median(cyc) <= cycTarget)
		} else {
			t.add(cr)
		}
	}
}

func drainRows(t *table, root, tmp string) {
	core, err := runGoBench(root, "./core", "^BenchmarkDrain$", "5x", 3, tmp)
	if err != nil {
		fatal("%v", err)
	}
	tg, err := runGoBench(filepath.Join(root, "telegrafplugin"), "./pktstat_bpf", "^BenchmarkTableToMetrics$", "3x", 3, tmp)
	if err != nil {
		fatal("%v", err)
	}
	otel, err := runGoBench(filepath.Join(root, "otelreceiver"), ".", "^BenchmarkTableToPdata$", "3x", 3, tmp)
	if err != nil {
		fatal("%v", err)
	}
	ms := func(ls []benchLine) []float64 {
		out := nsOf(ls)
		for i := range out {
			out[i] /= 1e6
		}
		return out
	}
	for _, b := range []struct {
		gb               *goBench
		name, label      string
		target           float64 // ms, 0: none
		allocTarget      bool
		section, rssNote string
	}{
		{core, "BenchmarkDrain/flows=10000/first", "core drain, 10,000 flows, first Read", 0, true, "drain (Go, ms per Read)", ""},
		{core, "BenchmarkDrain/flows=10000/steady", "core drain, 10,000 flows, steady Read", 0, true, "drain (Go, ms per Read)", ""},
		{core, "BenchmarkDrain/flows=131072/first", "core drain, 131,072 flows, first Read", 0, true, "drain (Go, ms per Read)", ""},
		{core, "BenchmarkDrain/flows=131072/steady", "core drain, 131,072 flows, steady Read (the walk, where the kernel has it)", 50, true, "drain (Go, ms per Read)", ""},
		{core, "BenchmarkDrain/flows=131072/steady-batch", "baseline: the same, read by batch lookups", 0, true, "drain (Go, ms per Read)", ""},
		{core, "BenchmarkDrain/flows=131072/steady-func", "the same by ReadFunc, as the agents drain: each record handed on, none kept", 0, true, "drain (Go, ms per Read)", ""},
		{tg, "BenchmarkTableToMetrics/first", "131,072 records -> telegraf metrics, first gather", 0, false, "conversion (Go, ms per drain)", ""},
		{tg, "BenchmarkTableToMetrics/steady", "131,072 records -> telegraf metrics, steady gather", 200, false, "conversion (Go, ms per drain)", ""},
		{otel, "BenchmarkTableToPdata/first", "131,072 records -> pdata, first scrape", 0, false, "conversion (Go, ms per drain)", ""},
		{otel, "BenchmarkTableToPdata/steady", "131,072 records -> pdata, steady scrape", 150, false, "conversion (Go, ms per drain)", ""},
		{otel, "BenchmarkTableToPdata/steady-batched", "the same in batches of max_points_per_batch (8,192), each dropped when sent", 0, false, "conversion (Go, ms per drain)", ""},
	} {
		ls, err := b.gb.get(b.name)
		if err != nil {
			fatal("%v", err)
		}
		v := ms(ls)
		apf := allocsPerFlow(ls)
		r := row{section: b.section, name: b.label, value: fmt.Sprintf("%.1f ms", median(v)), spread: spread(v, "%.1f"),
			delta: fmt.Sprintf("%.2f allocs/flow, %.0f B/flow", median(apf), ls[0].bytesPerOp/ls[0].flows)}
		if live := ls[len(ls)-1].livePerFlow; live > 0 {
			// What stays allocated after the last call (the state kept
			// between intervals and its output), not what a call allocates.
			r.delta += fmt.Sprintf(", %.0f B/flow live", live)
		}
		switch {
		case b.target > 0:
			r.target = fmt.Sprintf("<= %.0f ms", b.target)
			if b.allocTarget {
				r.target += ", <= 2 allocs/flow"
			}
			t.judge(r, median(v) <= b.target && (!b.allocTarget || median(apf) <= 2))
		case b.allocTarget:
			r.target = "<= 2 allocs/flow"
			t.judge(r, median(apf) <= 2)
		default:
			t.add(r)
		}
	}
	for _, p := range []struct {
		name string
		gb   *goBench
	}{{"core drain benchmark process", core}, {"telegraf conversion benchmark process", tg}, {"pdata conversion benchmark process", otel}} {
		t.add(row{section: "peak RSS", name: p.name, value: fmt.Sprintf("%d MiB", p.gb.peakRSS>>20)})
	}
}

func e2eRows(t *table, rounds int, tmp string) {
	r, err := measureE2E(rounds, 200000, tmp)
	if err != nil {
		fatal("end to end: %v", err)
	}
	for _, g := range r.gens {
		sec := "end to end: veth, trafgen TX ring (kpps; generator CPU ns/pkt)"
		if g != "trafgen" {
			sec = "end to end: veth, AF_PACKET sendto (kpps; sender CPU ns/pkt)"
		}
		none, noneCPU := r.pps[g]["none"], r.cpu[g]["none"]
		withCPU := median(noneCPU) > 0
		show := func(pps, cpu []float64) string {
			if withCPU {
				return fmt.Sprintf("%.0f kpps; %.0f ns", median(pps)/1000, median(cpu))
			}
			return fmt.Sprintf("%.0f kpps", median(pps)/1000)
		}
		for _, c := range r.configs {
			v, cpu := r.pps[g][c], r.cpu[g][c]
			kpps := make([]float64, len(v))
			for i := range v {
				kpps[i] = v[i] / 1000
			}
			rw := row{section: sec, name: c, value: show(v, cpu)}
			if c == "none" {
				rw.spread = "kpps " + spread(kpps, "%.0f")
				t.add(rw)
				continue
			}
			if ns := r.nsPerPkt[g][c]; len(ns) > 0 {
				rw.name = fmt.Sprintf("%s (bpf_stats %.0f ns/pkt)", c, median(ns))
			}
			rw.baseline = show(none, noneCPU)
			// Each round alternates every configuration, so a round's ratio
			// compares runs seconds apart: the median of those is the result.
			wall := diffsRatio(v, none)
			rw.delta = fmt.Sprintf("%.2f x", median(wall))
			rw.spread = "rounds " + spread(wall, "%.2f")
			// The wall ratio moves with whatever else runs on the shared
			// CPUs; packets per generator CPU-second do not, so they decide.
			ratio := median(wall)
			if withCPU {
				perCPU := diffsRatio(noneCPU, cpu) // packets per generator CPU-second, relative
				ratio = median(perCPU)
				rw.delta = fmt.Sprintf("per CPU %.2f x; wall %.2f x", median(perCPU), median(wall))
				rw.spread = "per CPU " + spread(perCPU, "%.2f") + "; wall " + spread(wall, "%.2f")
			}
			if c == "tc" {
				rw.target = ">= 0.95 x"
				t.judge(rw, ratio >= 0.95)
			} else {
				t.add(rw)
			}
		}
	}
}

// diffsRatio is a/b per round: each round alternates all configurations, so
// a round's ratio compares measurements taken seconds apart.
func diffsRatio(a, b []float64) []float64 {
	out := make([]float64, len(a))
	for i := range a {
		out[i] = a[i] / b[i]
	}
	return out
}

// Agent targets (issue 14), at a full default table.
const (
	agentFullTable          = 131072
	agentMidTable           = 10000
	agentCPUTarget          = 250.0     // ms of CPU per 1 s drain
	agentRSSTarget          = 250 << 20 // bytes
	agentBytesPerFlowTarget = 1536.0    // marginal RSS per active flow
)

func agentRows(t *table, root, tmp string, intervals int) {
	rs, err := measureAgents(root, tmp, intervals)
	if err != nil {
		fatal("agents: %v", err)
	}
	for _, r := range rs {
		sec := "agent CPU: " + r.name + " (ms CPU per 1 s drain)"
		idle := median(r.cpuPerInt[0])
		for _, n := range agentFlowCounts {
			v := r.cpuPerInt[n]
			name := fmt.Sprintf("%d active flows (%s)", n, r.emitted[n])
			rw := row{section: sec, name: name, value: fmt.Sprintf("%.0f", median(v)), spread: spread(v, "%.0f")}
			if n > 0 {
				rw.baseline = fmt.Sprintf("%.0f idle", idle)
				rw.delta = fmt.Sprintf("%.0f%% of a core", median(v)/10)
			}
			if n == agentFullTable {
				rw.target = fmt.Sprintf("<= %.0f ms", agentCPUTarget)
				t.judge(rw, median(v) <= agentCPUTarget)
				continue
			}
			t.add(rw)
		}
		for _, n := range agentFlowCounts {
			t.add(row{section: sec, name: fmt.Sprintf("peak RSS up to %d active flows", n), value: fmt.Sprintf("%d MiB", r.rssAt[n]>>20)})
		}
		// The peak is reached once (often in the first drains of a level,
		// when every series is new); this is what the agent keeps resident
		// interval after interval at a full table.
		now := r.rssNow[agentFullTable]
		t.add(row{section: sec, name: fmt.Sprintf("RSS during the %d-flow intervals (VmRSS)", agentFullTable),
			value: fmt.Sprintf("%.0f MiB", median(now)), spread: spread(now, "%.0f")})
		// The marginal cost of a flow, all layers together (core state,
		// aggregation, conversion, the agent's own buffers), from the two
		// loaded levels of the same process.
		perFlow := float64(r.rssAt[agentFullTable]-r.rssAt[agentMidTable]) / float64(agentFullTable-agentMidTable)
		t.judge(row{section: sec, name: fmt.Sprintf("marginal RSS per flow, %d -> %d flows", agentMidTable, agentFullTable),
			value: fmt.Sprintf("%.0f B/flow", perFlow), target: fmt.Sprintf("<= %.0f B/flow (aim)", agentBytesPerFlowTarget)},
			perFlow <= agentBytesPerFlowTarget)
		t.judge(row{section: sec, name: fmt.Sprintf("peak RSS, %d active flows", agentFullTable), value: fmt.Sprintf("%d MiB", r.peakRSS>>20),
			target: fmt.Sprintf("<= %d MiB", agentRSSTarget>>20)}, r.peakRSS <= agentRSSTarget)
	}
}
