package main

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/pktstat-bpf/pktstat-bpf/bpf"
)

// cycleFlows is how many distinct flows the cycling measurements rotate through.
const cycleFlows = 10000

// Warm-up before timing: every flow exists and its application protocol is
// decided (the kernel gives up after four payload packets per CPU), so the
// timed runs see established flows only.
const (
	warmRuns   = 10 // repeats per flow
	warmPasses = 5  // passes over the 10,000 packets, one syscall each
)

// packetCase is one frame of the mix and where in it the low 16 bits of the
// source address (IP or ARP sender) sit: changing them makes a new flow for
// every program, which is how the cycling runs make 10,000 distinct flows.
type packetCase struct {
	name   string
	frame  []byte
	varOff int
}

func serialize(ls ...gopacket.SerializableLayer) []byte {
	buf := gopacket.NewSerializeBuffer()
	opts := gopacket.SerializeOptions{FixLengths: true, ComputeChecksums: true}
	for _, l := range ls {
		if t, ok := l.(interface {
			SetNetworkLayerForChecksum(gopacket.NetworkLayer) error
		}); ok {
			for _, nl := range ls {
				if nl, ok := nl.(gopacket.NetworkLayer); ok {
					_ = t.SetNetworkLayerForChecksum(nl)
				}
			}
		}
	}
	if err := gopacket.SerializeLayers(buf, opts, ls...); err != nil {
		panic(fmt.Sprintf("serialize bench packet: %v", err))
	}
	return buf.Bytes()
}

func packetMix() []packetCase {
	macA := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	macB := net.HardwareAddr{2, 0, 0, 0, 0, 2}
	eth := func(t layers.EthernetType) *layers.Ethernet {
		return &layers.Ethernet{SrcMAC: macA, DstMAC: macB, EthernetType: t}
	}
	// The varied bytes start at 0 so that the mutator's counter, which
	// wraps at cycleFlows, starts at the first flow.
	ip4 := func(p layers.IPProtocol) *layers.IPv4 {
		return &layers.IPv4{Version: 4, IHL: 5, TTL: 64, Protocol: p, SrcIP: net.IP{10, 1, 0, 0}, DstIP: net.IP{10, 2, 0, 1}}
	}
	ip6 := func(p layers.IPProtocol) *layers.IPv6 {
		return &layers.IPv6{Version: 6, HopLimit: 64, NextHeader: p, SrcIP: net.ParseIP("2001:db8:1::"), DstIP: net.ParseIP("2001:db8:2::1")}
	}
	tcp := func() *layers.TCP {
		return &layers.TCP{SrcPort: 40000, DstPort: 443, ACK: true, PSH: true, Window: 1000}
	}
	payload := gopacket.Payload(make([]byte, 512))
	arp := &layers.ARP{AddrType: layers.LinkTypeEthernet, Protocol: layers.EthernetTypeIPv4, HwAddressSize: 6, ProtAddressSize: 4,
		Operation: 1, SourceHwAddress: macA, SourceProtAddress: []byte{10, 1, 0, 0}, DstHwAddress: make([]byte, 6), DstProtAddress: []byte{10, 2, 0, 1}}
	return []packetCase{
		{"ipv4/tcp+512B", serialize(eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolTCP), tcp(), payload), 14 + 12 + 2},
		{"ipv4/udp", serialize(eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolUDP), &layers.UDP{SrcPort: 5353, DstPort: 53}, gopacket.Payload(make([]byte, 64))), 14 + 12 + 2},
		{"ipv6/tcp", serialize(eth(layers.EthernetTypeIPv6), ip6(layers.IPProtocolTCP), tcp(), gopacket.Payload(make([]byte, 64))), 14 + 8 + 14},
		{"802.1q/ipv4/tcp", serialize(eth(layers.EthernetTypeDot1Q), &layers.Dot1Q{VLANIdentifier: 100, Type: layers.EthernetTypeIPv4}, ip4(layers.IPProtocolTCP), tcp(), gopacket.Payload(make([]byte, 64))), 18 + 12 + 2},
		{"arp", serialize(eth(layers.EthernetTypeARP), arp), 14 + 14 + 2},
		{"ipv4/icmp", serialize(eth(layers.EthernetTypeIPv4), ip4(layers.IPProtocolICMPv4), &layers.ICMPv4{TypeCode: layers.CreateICMPv4TypeCode(8, 0), Id: 1, Seq: 1}, gopacket.Payload(make([]byte, 56))), 14 + 12 + 2},
	}
}

// progKind is one program under test with an empty program of its type.
type progKind struct {
	name     string
	typ      ebpf.ProgramType
	attach   ebpf.AttachType
	retEmpty int32
	// ctx offsets of the packet pointers, for the cycling mutator.
	dataOff, endOff int16
	// canWrite: the program type may write packet data directly (cgroup_skb may not).
	canWrite bool
}

var (
	kindTC     = progKind{"tc_ingress", ebpf.SchedCLS, ebpf.AttachNone, -1, 76, 80, true}
	kindXDP    = progKind{"xdp_ingress", ebpf.XDP, ebpf.AttachXDP, 2, 0, 4, true}
	kindCgroup = progKind{"cgroup_egress", ebpf.CGroupSKB, ebpf.AttachCGroupInetEgress, 1, 76, 80, false}
)

func emptyProg(k progKind) (*ebpf.Program, error) {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name: "empty", Type: k.typ, AttachType: k.attach, License: "MIT",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, k.retEmpty), asm.Return()},
	})
	if err != nil {
		return nil, fmt.Errorf("load empty %s program: %w", k.typ, err)
	}
	return p, nil
}

// cycler is a program of the same type that, on every run, advances a
// 16-bit counter stored in the packet at varOff (wrapping at cycleFlows)
// and tail-calls the program under test. BPF_PROG_TEST_RUN keeps one packet
// buffer across repeats, so each repeat sees the next of cycleFlows flows:
// distinct flows in turn within one run, repeat >= 1000, no syscall between
// packets. The same cycler in front of the empty program is the baseline.
type cycler struct {
	prog  *ebpf.Program
	table *ebpf.Map
}

func newCycler(k progKind, varOff int, target *ebpf.Program) (*cycler, error) {
	table, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.ProgramArray, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		return nil, fmt.Errorf("create prog array: %w", err)
	}
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.LoadMem(asm.R2, asm.R1, k.dataOff, asm.Word),
		asm.LoadMem(asm.R3, asm.R1, k.endOff, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, int32(varOff+2)),
		asm.JGT.Reg(asm.R4, asm.R3, "call"),
		asm.LoadMem(asm.R5, asm.R2, int16(varOff), asm.Half),
		asm.Add.Imm(asm.R5, 1),
		asm.JLT.Imm(asm.R5, cycleFlows, "store"),
		asm.Mov.Imm(asm.R5, 0),
		asm.StoreMem(asm.R2, int16(varOff), asm.R5, asm.Half).WithSymbol("store"),
		asm.Mov.Reg(asm.R1, asm.R6).WithSymbol("call"),
		asm.LoadMapPtr(asm.R2, table.FD()),
		asm.Mov.Imm(asm.R3, 0),
		asm.FnTailCall.Call(),
		asm.Mov.Imm(asm.R0, k.retEmpty),
		asm.Return(),
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: "cycler", Type: k.typ, AttachType: k.attach, License: "MIT", Instructions: insns})
	if err != nil {
		table.Close()
		return nil, fmt.Errorf("load %s cycler: %w", k.typ, err)
	}
	if err := table.Put(uint32(0), target); err != nil {
		prog.Close()
		table.Close()
		return nil, fmt.Errorf("put %s into the cycler's prog array: %w", k.name, err)
	}
	return &cycler{prog: prog, table: table}, nil
}

func (c *cycler) Close() { c.prog.Close(); c.table.Close() }

// loaded is a fresh flow or cgroup object (default 131,072-entry table) and
// its program of one kind.
type loaded struct {
	prog  *ebpf.Program
	flows *ebpf.Map
	close func()
}

func loadKind(k progKind) (*loaded, error) {
	switch k.name {
	case kindCgroup.name:
		spec, err := bpf.LoadCgroup()
		if err != nil {
			return nil, fmt.Errorf("load cgroup spec: %w", err)
		}
		var o bpf.CgroupObjects
		if err := spec.LoadAndAssign(&o, nil); err != nil {
			return nil, fmt.Errorf("load cgroup object: %w", err)
		}
		return &loaded{prog: o.CgroupEgress, flows: o.CgroupFlows, close: func() { o.Close() }}, nil
	default:
		spec, err := bpf.LoadFlow()
		if err != nil {
			return nil, fmt.Errorf("load flow spec: %w", err)
		}
		var o bpf.FlowObjects
		if err := spec.LoadAndAssign(&o, nil); err != nil {
			return nil, fmt.Errorf("load flow object: %w", err)
		}
		p := o.TcIngress
		if k.name == kindXDP.name {
			p = o.XdpIngress
		}
		return &loaded{prog: p, flows: o.Flows, close: func() { o.Close() }}, nil
	}
}

// benchRun runs p on frame for repeat iterations and returns ns per run.
func benchRun(p *ebpf.Program, frame []byte, repeat int) (float64, error) {
	_, d, err := p.Benchmark(frame, repeat, nil)
	if err != nil {
		return 0, err
	}
	return float64(d.Nanoseconds()), nil
}

// perCallCycle runs each of the 10,000 frames once (Repeat 1) and averages
// the kernel-reported run time. Used for cgroup_skb, which cannot write the
// packet, so the in-kernel cycler does not work for it. The kernel times only
// the program loop (one run plus a clock read), not the syscall or skb setup,
// and the same is true of the empty program it is compared with.
func perCallCycle(p *ebpf.Program, frames [][]byte) (float64, error) {
	var total time.Duration
	for _, f := range frames {
		_, d, err := p.Benchmark(f, 1, nil)
		if err != nil {
			return 0, err
		}
		total += d
	}
	return float64(total.Nanoseconds()) / float64(len(frames)), nil
}

type pktResult struct {
	prog, pkt         string
	hot, hotEmpty     []float64
	cycle, cycleEmpty []float64
	cycleMethod       string
	entriesAfter      int
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func diffs(a, b []float64) []float64 {
	out := make([]float64, len(a))
	for i := range a {
		out[i] = a[i] - b[i]
	}
	return out
}

// countEntries counts the keys of m, to check the cycling runs made their flows.
func countEntries(m *ebpf.Map) (int, error) {
	k := make([]byte, m.KeySize())
	next := make([]byte, m.KeySize())
	n := 0
	err := m.NextKey(nil, next)
	for err == nil {
		n++
		copy(k, next)
		err = m.NextKey(k, next)
	}
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return n, nil
	}
	return n, fmt.Errorf("iterate %s: %w", m, err)
}

// measurePackets measures every program kind on every packet of the mix.
func measurePackets(rounds, hotRepeat, cycleRepeat int) ([]pktResult, error) {
	var out []pktResult
	for _, k := range []progKind{kindTC, kindXDP, kindCgroup} {
		empty, err := emptyProg(k)
		if err != nil {
			return nil, err
		}
		for _, pc := range packetMix() {
			r, err := measureOne(k, empty, pc, rounds, hotRepeat, cycleRepeat)
			if err != nil {
				empty.Close()
				return nil, fmt.Errorf("%s %s: %w", k.name, pc.name, err)
			}
			out = append(out, r)
		}
		empty.Close()
	}
	return out, nil
}

func measureOne(k progKind, empty *ebpf.Program, pc packetCase, rounds, hotRepeat, cycleRepeat int) (pktResult, error) {
	r := pktResult{prog: k.name, pkt: pc.name}
	obj, err := loadKind(k)
	if err != nil {
		return r, err
	}
	defer obj.close()

	// Hot: one flow, created by a first run, then repeated. Warm-up runs
	// also let the flow's application protocol be decided (at most four
	// payload packets per CPU), as it is for any established flow.
	if _, err := benchRun(obj.prog, pc.frame, warmRuns); err != nil {
		return r, fmt.Errorf("run %s: %w", k.name, err)
	}
	for i := 0; i < rounds; i++ {
		e, err := benchRun(empty, pc.frame, hotRepeat)
		if err != nil {
			return r, fmt.Errorf("run empty: %w", err)
		}
		p, err := benchRun(obj.prog, pc.frame, hotRepeat)
		if err != nil {
			return r, fmt.Errorf("run %s: %w", k.name, err)
		}
		r.hot, r.hotEmpty = append(r.hot, p), append(r.hotEmpty, e)
	}

	// Cycling: 10,000 distinct flows in turn, all created before timing.
	if k.canWrite {
		r.cycleMethod = "in-kernel cycler, tail call"
		frame := slices.Clone(pc.frame)
		frame[pc.varOff], frame[pc.varOff+1] = 0, 0
		cp, err := newCycler(k, pc.varOff, obj.prog)
		if err != nil {
			return r, err
		}
		defer cp.Close()
		ce, err := newCycler(k, pc.varOff, empty)
		if err != nil {
			return r, err
		}
		defer ce.Close()
		if _, err := benchRun(cp.prog, frame, warmRuns*cycleFlows); err != nil { // creates the flows
			return r, fmt.Errorf("run cycler: %w", err)
		}
		for i := 0; i < rounds; i++ {
			e, err := benchRun(ce.prog, frame, cycleRepeat)
			if err != nil {
				return r, fmt.Errorf("run empty cycler: %w", err)
			}
			p, err := benchRun(cp.prog, frame, cycleRepeat)
			if err != nil {
				return r, fmt.Errorf("run cycler: %w", err)
			}
			r.cycle, r.cycleEmpty = append(r.cycle, p), append(r.cycleEmpty, e)
		}
	} else {
		r.cycleMethod = "one BPF_PROG_TEST_RUN per packet (repeat 1)"
		frames := make([][]byte, cycleFlows)
		for i := range frames {
			f := slices.Clone(pc.frame)
			f[pc.varOff], f[pc.varOff+1] = byte(i), byte(i>>8)
			frames[i] = f
		}
		for i := 0; i < warmPasses; i++ {
			if _, err := perCallCycle(obj.prog, frames); err != nil {
				return r, fmt.Errorf("run %s: %w", k.name, err)
			}
		}
		for i := 0; i < rounds; i++ {
			e, err := perCallCycle(empty, frames)
			if err != nil {
				return r, fmt.Errorf("run empty: %w", err)
			}
			p, err := perCallCycle(obj.prog, frames)
			if err != nil {
				return r, fmt.Errorf("run %s: %w", k.name, err)
			}
			r.cycle, r.cycleEmpty = append(r.cycle, p), append(r.cycleEmpty, e)
		}
	}
	n, err := countEntries(obj.flows)
	if err != nil {
		return r, err
	}
	// One flow from the hot run (its source low bits are not 0) plus the cycled ones.
	// cgroup_skb starts at L3 and BPF_PROG_TEST_RUN keeps an in-band tag
	// there: the program sees EtherType 0x8100 and no addresses, one flow.
	vlanInCgroup := !k.canWrite && strings.HasPrefix(pc.name, "802.1q")
	if n < cycleFlows && !vlanInCgroup {
		return r, fmt.Errorf("flow table has %d entries after cycling, want at least %d: the cycler did not make distinct flows", n, cycleFlows)
	}
	r.entriesAfter = n
	return r, nil
}
