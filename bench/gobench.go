package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// goBench is one `go test -bench` binary run: its parsed results by
// benchmark name (one entry per -count round) and its peak RSS.
type goBench struct {
	results map[string][]benchLine
	order   []string
	peakRSS int64 // bytes
}

type benchLine struct {
	nsPerOp, bytesPerOp, allocsPerOp, flows float64
	// livePerFlow is the heap the benchmark's state keeps alive per flow
	// (internal/benchmem), 0 when it does not report it.
	livePerFlow float64
}

// runGoBench compiles the tests of pkg in module directory dir and runs the
// benchmarks matching pattern in a child process, so that its peak RSS is
// the benchmark's own.
func runGoBench(dir, pkg, pattern, benchtime string, count int, tmp string) (*goBench, error) {
	bin := filepath.Join(tmp, strings.NewReplacer("/", "_", ".", "_").Replace(filepath.Base(dir)+pkg)+".test")
	build := exec.Command("go", "test", "-c", "-o", bin, pkg)
	build.Dir = dir
	if out, err := build.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("build benchmarks of %s in %s: %v\n%s", pkg, dir, err, out)
	}
	run := exec.Command(bin, "-test.run", "^$", "-test.bench", pattern, "-test.benchmem",
		"-test.benchtime", benchtime, "-test.count", strconv.Itoa(count))
	// A test binary runs in its package directory, as `go test` does.
	run.Dir = filepath.Join(dir, pkg)
	run.Env = append(os.Environ(), "PKTSTAT_REQUIRE_BPF=1")
	var out bytes.Buffer
	run.Stdout, run.Stderr = &out, &out
	if err := run.Run(); err != nil {
		return nil, fmt.Errorf("run benchmarks %s of %s: %v\n%s", pattern, pkg, err, out.String())
	}
	gb := &goBench{results: map[string][]benchLine{}}
	if ru, ok := run.ProcessState.SysUsage().(*syscall.Rusage); ok {
		gb.peakRSS = ru.Maxrss * 1024
	}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		name := f[0]
		if i := strings.LastIndex(name, "-"); i > 0 {
			name = name[:i] // GOMAXPROCS suffix
		}
		var bl benchLine
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			switch f[i+1] {
			case "ns/op":
				bl.nsPerOp = v
			case "B/op":
				bl.bytesPerOp = v
			case "allocs/op":
				bl.allocsPerOp = v
			case "flows":
				bl.flows = v
			case "live-B/flow":
				bl.livePerFlow = v
			}
		}
		if _, ok := gb.results[name]; !ok {
			gb.order = append(gb.order, name)
		}
		gb.results[name] = append(gb.results[name], bl)
	}
	if len(gb.results) == 0 {
		return nil, fmt.Errorf("benchmarks %s of %s printed no results:\n%s", pattern, pkg, out.String())
	}
	return gb, nil
}

// get returns the rounds of one benchmark or an error naming it.
func (g *goBench) get(name string) ([]benchLine, error) {
	r, ok := g.results[name]
	if !ok {
		return nil, fmt.Errorf("benchmark %s did not run (have %v)", name, g.order)
	}
	return r, nil
}

func nsOf(ls []benchLine) []float64 {
	out := make([]float64, len(ls))
	for i, l := range ls {
		out[i] = l.nsPerOp
	}
	return out
}

func allocsPerFlow(ls []benchLine) []float64 {
	out := make([]float64, len(ls))
	for i, l := range ls {
		if l.flows > 0 {
			out[i] = l.allocsPerOp / l.flows
		}
	}
	return out
}
