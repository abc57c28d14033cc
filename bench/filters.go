package main

import (
	"fmt"
	"net"
	"slices"

	"github.com/cilium/ebpf"

	"github.com/pktstat-bpf/pktstat-bpf/bpf"
	"github.com/pktstat-bpf/pktstat-bpf/core"
)

// benchFilters has a key of every kind, as a deployment would: the counted
// packet passes all three checks (protocol, ports, two CIDR lookups), and
// the filtered-out one fails only the last, so it pays for every check too.
var benchFilters = core.Filters{
	IncludeCIDRs:     []string{"10.0.0.0/8", "2001:db8::/32"},
	ExcludeCIDRs:     []string{"10.9.0.0/16"},
	ExcludeProtocols: []string{"other"},
	ExcludePorts:     []string{"22", "30000-32767"},
}

// loadTCFiltered loads tc_ingress with f applied the way the collector does.
func loadTCFiltered(f core.Filters) (*loaded, *ebpf.Map, error) {
	spec, err := bpf.LoadFlow()
	if err != nil {
		return nil, nil, fmt.Errorf("load flow spec: %w", err)
	}
	fill, err := core.ApplyFilters(spec, f)
	if err != nil {
		return nil, nil, err
	}
	var o bpf.FlowObjects
	if err := spec.LoadAndAssign(&o, nil); err != nil {
		return nil, nil, fmt.Errorf("load flow object: %w", err)
	}
	if err := fill(o.FilterCidrs, o.FilterProtos, o.FilterPorts); err != nil {
		o.Close()
		return nil, nil, err
	}
	return &loaded{prog: o.TcIngress, flows: o.Flows, close: func() { o.Close() }}, o.FlowsFiltered, nil
}

type filterResult struct {
	name          string
	hot, hotEmpty []float64
	cyc, cycEmpty []float64
}

// measureFilters runs tc_ingress on the TCP packet of the mix three ways,
// each beside the empty program and its cycler in the same rounds: with no
// filter keys, with benchFilters on a packet they keep, and with
// benchFilters on a packet outside the included CIDRs.
func measureFilters(rounds, repeat int) ([]filterResult, error) {
	base := packetMix()[0] // ipv4/tcp+512B, source 10.1.x.x
	outside := slices.Clone(base.frame)
	copy(outside[14+12:], net.IP{192, 168, 0, 0}.To4()) // source 192.168.x.x
	copy(outside[14+16:], net.IP{172, 16, 0, 1}.To4())  // destination
	// The addresses changed: the IPv4 checksum is left wrong, which no
	// program here checks.
	cases := []struct {
		name     string
		f        core.Filters
		frame    []byte
		filtered bool
	}{
		{"no filter keys, counted", core.Filters{}, base.frame, false},
		{"filters set, counted", benchFilters, base.frame, false},
		{"filters set, filtered out", benchFilters, outside, true},
	}
	empty, err := emptyProg(kindTC)
	if err != nil {
		return nil, err
	}
	defer empty.Close()
	var out []filterResult
	for _, c := range cases {
		obj, filtered, err := loadTCFiltered(c.f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.name, err)
		}
		r, err := measureFiltered(obj, empty, c.frame, base.varOff, rounds, repeat)
		if err == nil {
			err = checkFilterMaps(obj.flows, filtered, c.filtered)
		}
		obj.close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.name, err)
		}
		r.name = c.name
		out = append(out, r)
	}
	return out, nil
}

func measureFiltered(obj *loaded, empty *ebpf.Program, frame []byte, varOff, rounds, repeat int) (filterResult, error) {
	var r filterResult
	if _, err := benchRun(obj.prog, frame, warmRuns); err != nil {
		return r, err
	}
	cframe := slices.Clone(frame)
	cframe[varOff], cframe[varOff+1] = 0, 0
	cp, err := newCycler(kindTC, varOff, obj.prog)
	if err != nil {
		return r, err
	}
	defer cp.Close()
	ce, err := newCycler(kindTC, varOff, empty)
	if err != nil {
		return r, err
	}
	defer ce.Close()
	if _, err := benchRun(cp.prog, cframe, warmRuns*cycleFlows); err != nil {
		return r, err
	}
	for i := 0; i < rounds; i++ {
		for _, m := range []struct {
			p    *ebpf.Program
			f    []byte
			dest *[]float64
		}{{empty, frame, &r.hotEmpty}, {obj.prog, frame, &r.hot}, {ce.prog, cframe, &r.cycEmpty}, {cp.prog, cframe, &r.cyc}} {
			ns, err := benchRun(m.p, m.f, repeat)
			if err != nil {
				return r, err
			}
			*m.dest = append(*m.dest, ns)
		}
	}
	return r, nil
}

// checkFilterMaps makes sure the packets went where the row says: flows in
// the flow table and nothing filtered, or the reverse.
func checkFilterMaps(flows, filtered *ebpf.Map, wantFiltered bool) error {
	nf, err := countEntries(flows)
	if err != nil {
		return err
	}
	nx, err := countEntries(filtered)
	if err != nil {
		return err
	}
	if wantFiltered && (nf != 0 || nx != 1) || !wantFiltered && (nf < cycleFlows || nx != 0) {
		return fmt.Errorf("%d flow entries and %d filtered totals after the runs: the packets did not go where the row says", nf, nx)
	}
	return nil
}

func filterRows(t *table, rounds int) {
	rs, err := measureFilters(rounds, 100000)
	if err != nil {
		fatal("filters, BPF_PROG_TEST_RUN: %v", err)
	}
	sec := "per packet: tc_ingress filters (ns/pkt, BPF_PROG_TEST_RUN, ipv4/tcp+512B)"
	marg := map[string][]float64{}
	for _, r := range rs {
		hot, cyc := diffs(r.hot, r.hotEmpty), diffs(r.cyc, r.cycEmpty)
		marg[r.name+" hot"], marg[r.name+" cyc"] = hot, cyc
		t.add(row{section: sec, name: r.name + ", 1 hot flow", value: fmt.Sprintf("%.0f", median(r.hot)),
			baseline: fmt.Sprintf("%.0f empty", median(r.hotEmpty)), delta: fmt.Sprintf("%+.0f", median(hot)), spread: spread(hot, "%+.0f")})
		t.add(row{section: sec, name: r.name + ", 10k flows cycling", value: fmt.Sprintf("%.0f", median(r.cyc)),
			baseline: fmt.Sprintf("%.0f empty", median(r.cycEmpty)), delta: fmt.Sprintf("%+.0f", median(cyc)), spread: spread(cyc, "%+.0f")})
	}
	// A filtered-out packet skips the flow table: it must cost less than
	// a counted one under the same filters, hot flow or not.
	for _, how := range []string{"hot", "cyc"} {
		f, c := median(marg["filters set, filtered out "+how]), median(marg["filters set, counted "+how])
		name := map[string]string{"hot": "1 hot flow", "cyc": "10k flows cycling"}[how]
		t.judge(row{section: sec, name: "filtered out vs counted, " + name, value: fmt.Sprintf("%+.0f", f),
			baseline: fmt.Sprintf("%+.0f counted", c), delta: fmt.Sprintf("%+.0f", f-c), target: "< counted"}, f < c)
	}
}
