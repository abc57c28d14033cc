package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// agentResult is one agent's CPU time per drain at each flow count.
type agentResult struct {
	name      string
	cpuPerInt map[int][]float64 // flows -> ms of CPU per 1 s interval, one entry per interval window
	peakRSS   int64
	// rssAt is the peak RSS (VmHWM) at the end of each flow level: the
	// levels rise, so it is the peak with at most that many flows.
	rssAt map[int]int64
	// rssNow is the resident set (VmRSS) after each measured interval of a
	// level: what the agent holds in steady state, beside the peak.
	rssNow  map[int][]float64
	emitted map[int]string // flows -> what the agent reported per drain (sanity)
}

// agentFlowCounts are the active-flow levels measured, after an idle level.
var agentFlowCounts = []int{0, 10000, 131072}

// procCPU returns utime+stime of pid in milliseconds.
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, err1 := strconv.ParseFloat(f[11], 64)
	st, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat", pid)
	}
	// USER_HZ is 100 on Linux for every architecture Go supports here.
	return (ut + st) * 10, nil
}

// procRSS returns the peak resident set (VmHWM) of pid in bytes.
func procRSS(pid int) int64 { return procStatus(pid, "VmHWM:") }

// procStatus returns a kB field of /proc/PID/status in bytes, 0 if absent.
func procStatus(pid int, field string) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, field) {
			f := strings.Fields(l)
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// logTail keeps the last lines an agent wrote and the last value a pattern
// matched, for error messages and for checking the agent really drains.
type logTail struct {
	mu    sync.Mutex
	lines []string
	re    *regexp.Regexp
	last  int
	total int
}

func (l *logTail) consume(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		l.mu.Lock()
		l.lines = append(l.lines, line)
		if len(l.lines) > 30 {
			l.lines = l.lines[1:]
		}
		if m := l.re.FindStringSubmatch(line); m != nil {
			n, _ := strconv.Atoi(m[1])
			l.last = n
			l.total += n
		}
		l.mu.Unlock()
	}
}

func (l *logTail) get() (last, total int, tail string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last, l.total, strings.Join(l.lines, "\n")
}

// measureAgent runs an agent binary inside B, where it attaches TC to B's
// veth end, feeds it the flow levels from A and samples its CPU time.
func measureAgent(p *vethPair, name, bin string, args []string, countRE, countUnit string, intervals int) (*agentResult, error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("%s not built (%v): run `make build`", bin, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", p.nsB, bin}, args...)...)
	cmd.Cancel = func() error { return cmd.Process.Signal(unix.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = cmd.Stdout
	tail := &logTail{re: regexp.MustCompile(countRE)}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go tail.consume(out)
	defer func() {
		_ = cmd.Process.Signal(unix.SIGTERM)
		_ = cmd.Wait()
	}()
	pid := cmd.Process.Pid // `ip netns exec` execs the agent: same pid
	alive := func() error {
		if err := unix.Kill(pid, 0); err != nil {
			_, _, t := tail.get()
			return fmt.Errorf("%s exited: %v\n%s", name, err, t)
		}
		return nil
	}
	// Attach and a first drain.
	time.Sleep(4 * time.Second)
	if err := alive(); err != nil {
		return nil, err
	}
	sender, err := p.newSender()
	if err != nil {
		return nil, err
	}
	defer sender.Close()
	res := &agentResult{name: name, cpuPerInt: map[int][]float64{}, rssAt: map[int]int64{}, rssNow: map[int][]float64{}, emitted: map[int]string{}}
	for _, n := range agentFlowCounts {
		frames := p.flowFrames(n)
		// Every flow gets a packet each interval: all are active and growing.
		refresh := func() error { return sender.send(frames) }
		// Warm-up: the first drains at a new level create the series.
		for i := 0; i < 3; i++ {
			if err := refresh(); err != nil {
				return nil, err
			}
			time.Sleep(time.Second)
		}
		if err := alive(); err != nil {
			return nil, err
		}
		c0, err := procCPU(pid)
		if err != nil {
			return nil, err
		}
		_, total0, _ := tail.get()
		for i := 0; i < intervals; i++ {
			t0 := time.Now()
			if err := refresh(); err != nil {
				return nil, err
			}
			time.Sleep(time.Second - time.Since(t0))
			c1, err := procCPU(pid)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			res.cpuPerInt[n] = append(res.cpuPerInt[n], c1-c0)
			res.rssNow[n] = append(res.rssNow[n], float64(procStatus(pid, "VmRSS:")>>20))
			c0 = c1
		}
		_, total1, _ := tail.get()
		res.rssAt[n] = procRSS(pid)
		perDrain := float64(total1-total0) / float64(intervals)
		res.emitted[n] = fmt.Sprintf("%.0f %s/drain", perDrain, countUnit)
		// No output at all means the agent does not drain: a failed run, not a measurement.
		if n > 0 && perDrain == 0 {
			_, _, t := tail.get()
			return nil, fmt.Errorf("%s reported no %s for %d active flows:\n%s", name, countUnit, n, t)
		}
	}
	res.peakRSS = procRSS(pid)
	if err := alive(); err != nil {
		return nil, err
	}
	return res, nil
}

// measureAgents runs the collector and Telegraf, one after the other, on
// one veth pair, each draining every second in TC mode.
func measureAgents(root, tmp string, intervals int) ([]*agentResult, error) {
	p, err := newVethPair()
	if err != nil {
		return nil, err
	}
	defer p.Close()
	otelConf := filepath.Join(tmp, "otelcol.yaml")
	if err := os.WriteFile(otelConf, []byte(fmt.Sprintf(`receivers:
  pktstatbpf:
    mode: tc
    interfaces: [%s]
    collection_interval: 1s
exporters:
  debug:
    verbosity: basic
service:
  telemetry:
    metrics:
      level: none
    # The count per drain is read from the debug exporter's line per
    # batch: the logger's default sampling (10 lines per 10 s, then every
    # 100th) would drop most of a scrape's 33 batches.
    logs:
      sampling:
        enabled: false
  pipelines:
    metrics:
      receivers: [pktstatbpf]
      exporters: [debug]
`, p.ifB)), 0o600); err != nil {
		return nil, err
	}
	tgConf := filepath.Join(tmp, "telegraf.conf")
	if err := os.WriteFile(tgConf, []byte(fmt.Sprintf(`[agent]
  interval = "1s"
  flush_interval = "1s"
  metric_batch_size = 200000
  metric_buffer_limit = 400000
  omit_hostname = true
  debug = true
[[inputs.pktstat_bpf]]
  mode = "tc"
  interfaces = ["%s"]
[[outputs.discard]]
`, p.ifB)), 0o600); err != nil {
		return nil, err
	}
	var out []*agentResult
	for _, a := range []struct {
		name, bin string
		args      []string
		re, unit  string
	}{
		// The debug exporter logs the data points of each export: two per flow.
		{"otelcol-pktstat", filepath.Join(root, "build/otelcol-pktstat"), []string{"--config", otelConf}, `"data points": (\d+)`, "data points"},
		// outputs.discard logs each batch it "wrote" in debug mode.
		{"telegraf", filepath.Join(root, "build/telegraf"), []string{"--config", tgConf}, `Wrote batch of (\d+) metrics`, "metrics"},
	} {
		r, err := measureAgent(p, a.name, a.bin, a.args, a.re, a.unit, intervals)
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}
