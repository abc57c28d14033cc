package core

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"

	"github.com/pktstat-bpf/pktstat-bpf/bpf"
)

// Filters choose, in the kernel, which packets become flows. A packet that a
// filter leaves out is still passed on and still counted: it goes to the
// filtered series of its interface and direction. Exclude keys win over
// include keys; a kind without keys keeps everything. Both agents take these
// keys: embed Filters in the Telegraf plugin struct and in the receiver
// config with `mapstructure:",squash"`.
type Filters struct {
	// IncludeCIDRs keeps packets with either address in one of these
	// prefixes ("10.0.0.0/8", "2001:db8::/32"; a bare address is one host).
	IncludeCIDRs []string `toml:"include_cidrs" mapstructure:"include_cidrs"`
	// ExcludeCIDRs leaves out packets with either address in one of them.
	ExcludeCIDRs []string `toml:"exclude_cidrs" mapstructure:"exclude_cidrs"`
	// IncludeProtocols keeps packets of these protocols: the names of the
	// proto tag (tcp, udp, icmp, ipv6-icmp, ...), an IP protocol number,
	// arp, or other (any other non-IP protocol).
	IncludeProtocols []string `toml:"include_protocols" mapstructure:"include_protocols"`
	// ExcludeProtocols leaves out packets of these protocols.
	ExcludeProtocols []string `toml:"exclude_protocols" mapstructure:"exclude_protocols"`
	// IncludePorts keeps tcp, udp, udplite and sctp packets with either
	// port in one of these ports or ranges ("443", "30000-32767"); packets
	// without ports are left out when it is set.
	IncludePorts []string `toml:"include_ports" mapstructure:"include_ports"`
	// ExcludePorts leaves out packets with either port in one of them.
	ExcludePorts []string `toml:"exclude_ports" mapstructure:"exclude_ports"`
}

// Bits of the filter_enabled, filter_has_in and filter_has_out knobs (bpf/filter.h).
const (
	filterCIDRs  = 1 << 0
	filterProtos = 1 << 1
	filterPorts  = 1 << 2
)

// Bits of a CIDR trie value and of the port bitmaps: in an include key, in
// an exclude key.
const (
	filterIn  = 1 << 0
	filterOut = 1 << 1
)

// Indexes past the IP protocols in the protocol verdict table.
const (
	filterProtoARP   = 256
	filterProtoOther = 257
)

// maxFilterCIDRs is the size of the kernel's CIDR trie (filter_cidrs).
const maxFilterCIDRs = 4096

// filterTables are the Filters compiled for the kernel maps.
type filterTables struct {
	enabled, hasIn, hasOut uint32
	cidrs                  map[netip.Prefix]uint8
	protos                 bpf.FlowProtoVerdicts
	ports                  bpf.FlowPortBitmaps
}

// empty reports whether no key is set.
func (f Filters) empty() bool {
	return len(f.IncludeCIDRs)+len(f.ExcludeCIDRs)+len(f.IncludeProtocols)+len(f.ExcludeProtocols)+
		len(f.IncludePorts)+len(f.ExcludePorts) == 0
}

// firstKey names a key that is set, for errors about filters as a whole.
func (f Filters) firstKey() string {
	for _, k := range []struct {
		name string
		v    []string
	}{
		{"include_cidrs", f.IncludeCIDRs}, {"exclude_cidrs", f.ExcludeCIDRs},
		{"include_protocols", f.IncludeProtocols}, {"exclude_protocols", f.ExcludeProtocols},
		{"include_ports", f.IncludePorts}, {"exclude_ports", f.ExcludePorts},
	} {
		if len(k.v) > 0 {
			return k.name
		}
	}
	return ""
}

// compile checks every key, naming the key and the value of each mistake,
// and builds the kernel tables.
func (f Filters) compile() (*filterTables, error) {
	t := &filterTables{cidrs: map[netip.Prefix]uint8{}}
	var errs []error

	in := parseCIDRs("include_cidrs", f.IncludeCIDRs, &errs)
	out := parseCIDRs("exclude_cidrs", f.ExcludeCIDRs, &errs)
	for _, p := range in {
		t.cidrs[p] |= filterIn
	}
	for _, p := range out {
		t.cidrs[p] |= filterOut
	}
	if len(t.cidrs) > maxFilterCIDRs {
		errs = append(errs, fmt.Errorf("include_cidrs and exclude_cidrs hold %d distinct prefixes, more than the kernel table's %d: merge them into shorter prefixes",
			len(t.cidrs), maxFilterCIDRs))
	}
	// An LPM lookup returns only the longest prefix holding an address, so
	// each prefix also carries the bits of every shorter prefix around it.
	for p := range t.cidrs {
		if len(t.cidrs) > maxFilterCIDRs {
			break
		}
		for q, bits := range t.cidrs {
			if q.Bits() < p.Bits() && q.Addr().Is4() == p.Addr().Is4() && q.Contains(p.Addr()) {
				t.cidrs[p] |= bits & (filterIn | filterOut)
			}
		}
	}
	if len(in) > 0 && !slices.ContainsFunc(in, func(p netip.Prefix) bool { return !covered(p, out) }) {
		errs = append(errs, fmt.Errorf("include_cidrs %s and exclude_cidrs %s leave nothing: every included prefix is inside an excluded one",
			quoteList(f.IncludeCIDRs), quoteList(f.ExcludeCIDRs)))
	}

	inProtos := parseProtocols("include_protocols", f.IncludeProtocols, &errs)
	outProtos := parseProtocols("exclude_protocols", f.ExcludeProtocols, &errs)
	kept := 0
	for i := range filterProtoOther + 1 {
		keep := (len(inProtos) == 0 || slices.Contains(inProtos, i)) && !slices.Contains(outProtos, i)
		if keep {
			t.protos.Keep[i] = 1
			kept++
		}
	}
	if kept == 0 {
		errs = append(errs, fmt.Errorf("include_protocols %s and exclude_protocols %s leave nothing: every included protocol is also excluded",
			quoteList(f.IncludeProtocols), quoteList(f.ExcludeProtocols)))
	}

	inPorts := parsePorts("include_ports", f.IncludePorts, &errs, &t.ports.In)
	parsePorts("exclude_ports", f.ExcludePorts, &errs, &t.ports.Out)
	if inPorts {
		left := false
		for w := range t.ports.In {
			if t.ports.In[w]&^t.ports.Out[w] != 0 {
				left = true
				break
			}
		}
		if !left {
			errs = append(errs, fmt.Errorf("include_ports %s and exclude_ports %s leave nothing: every included port is also excluded",
				quoteList(f.IncludePorts), quoteList(f.ExcludePorts)))
		}
		if kept > 0 && !slices.ContainsFunc([]int{ProtoTCP, ProtoUDP, ProtoUDPLite, ProtoSCTP}, func(p int) bool { return t.protos.Keep[p] == 1 }) {
			errs = append(errs, fmt.Errorf("include_ports %s leaves nothing with the protocol filters: only tcp, udp, udplite and sctp have ports; keep one of them or remove include_ports",
				quoteList(f.IncludePorts)))
		}
	}
	if len(in) > 0 && kept == 1 && t.protos.Keep[filterProtoOther] == 1 {
		errs = append(errs, fmt.Errorf("include_cidrs %s leaves nothing with the protocol filters: protocol \"other\" has no addresses; keep an IP protocol or arp, or remove include_cidrs",
			quoteList(f.IncludeCIDRs)))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	if len(t.cidrs) > 0 {
		t.enabled |= filterCIDRs
	}
	if len(in) > 0 {
		t.hasIn |= filterCIDRs
	}
	if len(out) > 0 {
		t.hasOut |= filterCIDRs
	}
	if len(f.IncludeProtocols)+len(f.ExcludeProtocols) > 0 {
		t.enabled |= filterProtos
	}
	if len(f.IncludePorts)+len(f.ExcludePorts) > 0 {
		t.enabled |= filterPorts
	}
	if inPorts {
		t.hasIn |= filterPorts
	}
	return t, nil
}

func parseCIDRs(key string, vals []string, errs *[]error) []netip.Prefix {
	var out []netip.Prefix
	for _, v := range vals {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			a, aerr := netip.ParseAddr(v)
			if aerr != nil || a.Zone() != "" {
				*errs = append(*errs, fmt.Errorf("%s %q is not a CIDR: write it like \"10.0.0.0/8\" or \"2001:db8::/32\"", key, v))
				continue
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if m := p.Masked(); m != p {
			*errs = append(*errs, fmt.Errorf("%s %q has host bits set: write %q", key, v, m.String()))
			continue
		}
		out = append(out, p)
	}
	return out
}

// covered reports whether p lies inside one of qs.
func covered(p netip.Prefix, qs []netip.Prefix) bool {
	return slices.ContainsFunc(qs, func(q netip.Prefix) bool {
		return q.Bits() <= p.Bits() && q.Addr().Is4() == p.Addr().Is4() && q.Contains(p.Addr())
	})
}

// protoNumbers maps the proto tag's names to the verdict table's indexes.
var protoNumbers = func() map[string]int {
	m := map[string]int{"arp": filterProtoARP, "other": filterProtoOther}
	for n, name := range protoNames {
		m[name] = int(n)
	}
	return m
}()

func parseProtocols(key string, vals []string, errs *[]error) []int {
	var out []int
	for _, v := range vals {
		if i, ok := protoNumbers[v]; ok {
			out = append(out, i)
			continue
		}
		if n, err := strconv.ParseUint(v, 10, 8); err == nil {
			out = append(out, int(n))
			continue
		}
		*errs = append(*errs, fmt.Errorf("%s %q is not a protocol: use a lower-case IANA keyword as in the proto tag (tcp, udp, icmp, ipv6-icmp, gre, esp, sctp, ...), an IP protocol number 0-255, arp, or other (any other non-IP protocol)", key, v))
	}
	return out
}

// parsePorts sets the bits of each port and range in bits and reports
// whether any value was valid.
func parsePorts(key string, vals []string, errs *[]error, bits *[1024]uint64) bool {
	valid := false
	for _, v := range vals {
		lo, hi, ok := strings.Cut(v, "-")
		if !ok {
			hi = lo
		}
		a, errA := parsePort(lo)
		b, errB := parsePort(hi)
		switch {
		case errA != nil || errB != nil:
			err := errA
			if err == nil {
				err = errB
			}
			*errs = append(*errs, fmt.Errorf("%s %q %v", key, v, err))
			continue
		case a > b:
			*errs = append(*errs, fmt.Errorf("%s %q is an empty range: write the lower port first, like \"%d-%d\"", key, v, b, a))
			continue
		}
		for p := a; p <= b; p++ {
			bits[p>>6] |= 1 << (p & 63)
		}
		valid = true
	}
	return valid
}

func parsePort(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	switch {
	case err != nil:
		return 0, errors.New(`is not a port or range: write a number like "443" or a range like "30000-32767"`)
	case n < 0 || n > math.MaxUint16:
		return 0, fmt.Errorf("is out of range: %d is not in [0, 65535]", n)
	}
	return n, nil
}

func quoteList(vals []string) string {
	q := make([]string, len(vals))
	for i, v := range vals {
		q[i] = strconv.Quote(v)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// cidrKey is p as a key of the kernel's CIDR trie: the family byte first,
// so that IPv4 and IPv6 prefixes never match each other.
func cidrKey(p netip.Prefix) bpf.FlowFilterCidrKey {
	k := bpf.FlowFilterCidrKey{Prefixlen: uint32(8 + p.Bits()), Family: 6}
	if p.Addr().Is4() {
		k.Family = 4
		a := p.Addr().As4()
		copy(k.Addr[:], a[:])
	} else {
		k.Addr = p.Addr().As16()
	}
	return k
}

// ApplyFilters compiles f, sets its knobs in a flow or cgroup object spec
// before the spec is loaded, and returns the function that fills the loaded
// object's filter maps (filter_cidrs, filter_protos, filter_ports); call it
// before attaching. The collector loads its objects this way, and so can a
// tool that runs the programs without attaching them (make bench).
func ApplyFilters(spec *ebpf.CollectionSpec, f Filters) (fill func(cidrs, protos, ports *ebpf.Map) error, err error) {
	t, err := f.compile()
	if err != nil {
		return nil, err
	}
	if err := t.setKnobs(spec); err != nil {
		return nil, err
	}
	return t.fill, nil
}

// setKnobs writes the filter_enabled, filter_has_in and filter_has_out constants of an
// object spec before it is loaded: with no keys the verifier sees the check
// as dead code and removes it.
func (t *filterTables) setKnobs(spec *ebpf.CollectionSpec) error {
	for name, v := range map[string]uint32{"filter_enabled": t.enabled, "filter_has_in": t.hasIn, "filter_has_out": t.hasOut} {
		vs, ok := spec.Variables[name]
		if !ok {
			return fmt.Errorf("set filter knob %s: not in the object", name)
		}
		if err := vs.Set(v); err != nil {
			return fmt.Errorf("set filter knob %s: %w", name, err)
		}
	}
	return nil
}

// fill writes the tables into the loaded maps, before any program is attached.
func (t *filterTables) fill(cidrs, protos, ports *ebpf.Map) error {
	var zero uint32
	if t.enabled&filterProtos != 0 {
		if err := protos.Put(&zero, &t.protos); err != nil {
			return fmt.Errorf("fill protocol filter: %w", err)
		}
	}
	if t.enabled&filterPorts != 0 {
		if err := ports.Put(&zero, &t.ports); err != nil {
			return fmt.Errorf("fill port filter: %w", err)
		}
	}
	for p, bits := range t.cidrs {
		k := cidrKey(p)
		if err := cidrs.Put(&k, &bits); err != nil {
			return fmt.Errorf("fill cidr filter %s: %w", p, err)
		}
	}
	return nil
}

// startFiltered prepares the drain of the filtered totals.
func (c *Collector) startFiltered(m *ebpf.Map) error {
	var err error
	c.filtered, err = newTable[bpf.FlowOverflowKey](m)
	return err
}

// drainFiltered emits one Filtered record per interface and direction that
// the filters left packets out of. Like overflow entries they never expire.
func (c *Collector) drainFiltered(now time.Time, clock monoClock) error {
	if c.filtered == nil {
		return nil
	}
	_, err := c.filtered.drain(now, clock, math.MaxInt64, func(k bpf.FlowOverflowKey, st *flowState, dp, db uint64, expired bool) {
		r := c.record(FlowKey{Ifindex: k.Ifindex, Direction: Direction(k.Direction)}, st, dp, db, expired, false)
		r.Filtered = true
		c.put(r)
	})
	return err
}
