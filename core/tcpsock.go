package core

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/pktstat-bpf/pktstat-bpf/bpf"
)

// tcpsockCapture counts what tc and cgroup modes cannot see in packets:
// TCP retransmissions (tp_btf/tcp_retransmit_skb, on whenever the kernel
// has the tracepoint) and, with tcp_rtt, the sockets' smoothed RTT
// (tp_btf/tcp_probe). bpf/tcpsock.c keys both by the socket's ends as an
// egress flow; joinTCPSock joins them to the egress records of those ends.
type tcpsockCapture struct {
	coll  *ebpf.Collection
	links []link.Link

	retrans *table[bpf.TcpsockCgroupFlowKey]
	rov     retransOverflow

	rtt     *ebpf.Map // nil without tcp_rtt
	rttOv   *ebpf.Map
	rttKeys []bpf.TcpsockCgroupFlowKey
	rttVals []bpf.TcpsockRttStats
	ncpu    int

	// A Read first reads the socket tables into events, and ends lists
	// the socket ends they have. The flow drain then sets aside in held
	// the egress records of those ends (few: the sockets that retransmitted
	// or, with tcp_rtt, took RTT samples in the interval), and joins
	// indexes held by socket ends. Every other record is handed on at once.
	events []sockEvent
	ends   map[sockEnds]struct{}
	held   []Record
	joins  map[sockEnds][]int
}

// sockEvent is one socket table entry of a Read: a socket's retransmits or
// its RTT samples (rtt.Samples > 0), with the state a record of its own
// would start from when no flow record of its ends is found.
type sockEvent struct {
	key               bpf.TcpsockCgroupFlowKey
	start             int64
	lastSeen          stamp
	expired           bool
	retrans, dRetrans uint64
	rtt               RTTStats
}

// sockEnds is what a socket event and a flow record have in common: the
// ends (and, in cgroup mode, the cgroup), not the interface, which the
// socket knows only as its cached route's device.
type sockEnds struct {
	etherType        uint16
	src, dst         netip.Addr
	srcPort, dstPort uint16
	cgroupID         uint64
}

func (t *tcpsockCapture) close() {
	for _, l := range t.links {
		l.Close()
	}
	if t.coll != nil {
		t.coll.Close()
	}
}

// tracepointArgs returns the number of arguments of the BTF raw tracepoint
// tp (without the context pointer), or an error if the kernel has none.
func tracepointArgs(spec *btf.Spec, tp string) (int, error) {
	var td *btf.Typedef
	if err := spec.TypeByName("btf_trace_"+tp, &td); err != nil {
		return 0, err
	}
	ptr, ok := td.Type.(*btf.Pointer)
	if !ok {
		return 0, fmt.Errorf("btf_trace_%s is not a function pointer", tp)
	}
	fp, ok := ptr.Target.(*btf.FuncProto)
	if !ok || len(fp.Params) == 0 {
		return 0, fmt.Errorf("btf_trace_%s is not a function pointer", tp)
	}
	return len(fp.Params) - 1, nil
}

// startTCPSock loads and attaches the socket programs of tc and cgroup
// modes. Retransmits are best effort: a kernel without the tracepoint (or
// without tp_btf) logs why and counts everything else. tcp_rtt was asked
// for, so without its hook Start fails and says what works instead.
func (c *Collector) startTCPSock() error {
	kernel := kernelRelease()
	kspec, err := c.kernelBTF.Kernel()
	if err != nil {
		if c.cfg.TCPRTT {
			return fmt.Errorf("tcp_rtt = true: kernel %s has no BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF) for tp_btf/tcp_probe: %w: set tcp_rtt = false", kernel, ErrNotSupported)
		}
		c.cfg.Logger.Info("pktstat-bpf: TCP retransmits not counted: the kernel has no BTF for tp_btf/tcp_retransmit_skb (CONFIG_DEBUG_INFO_BTF); mode kprobe counts them", "kernel", kernel, "err", err)
		return nil
	}
	probe := func(tp string) (int, error) {
		if tp == c.cfg.hideTracepoint {
			return 0, fmt.Errorf("btf_trace_%s: %w", tp, btf.ErrNotFound)
		}
		return tracepointArgs(kspec, tp)
	}
	retransArgs, retransErr := probe("tcp_retransmit_skb")
	if c.cfg.TCPRTT {
		if _, err := probe("tcp_probe"); err != nil {
			return fmt.Errorf("tcp_rtt = true: kernel %s has no tcp_probe tracepoint in its BTF (btf_trace_tcp_probe, Linux 4.16+ with CONFIG_DEBUG_INFO_BTF): %w: set tcp_rtt = false", kernel, ErrNotSupported)
		}
	}
	if retransErr != nil {
		c.cfg.Logger.Info("pktstat-bpf: TCP retransmits not counted: the kernel's BTF has no tcp_retransmit_skb tracepoint (btf_trace_tcp_retransmit_skb); mode kprobe counts them", "kernel", kernel)
		if !c.cfg.TCPRTT {
			return nil
		}
	}

	spec, err := bpf.LoadTcpsock()
	if err != nil {
		return fmt.Errorf("load tcpsock object spec: %w", err)
	}
	spec.Maps[bpf.TcpsockMapTcpRetransmits].MaxEntries = uint32(c.cfg.MaxFlows)
	spec.Maps[bpf.TcpsockMapTcpRtt].MaxEntries = uint32(c.cfg.MaxFlows)
	var bounds [RTTBuckets - 1]uint32
	for i, b := range RTTBucketBounds {
		bounds[i] = uint32(b / time.Microsecond)
	}
	if err := spec.Variables[bpf.TcpsockVarRttBoundsUs].Set(bounds); err != nil {
		return fmt.Errorf("set rtt_bounds_us: %w", err)
	}
	if c.cfg.Mode != ModeCgroup {
		ino, err := netnsInode(c.cfg.NetNS)
		if err != nil {
			return err
		}
		if err := spec.Variables[bpf.TcpsockVarWantNetns].Set(ino); err != nil {
			return fmt.Errorf("set want_netns: %w", err)
		}
	}
	keep := map[string]bool{}
	switch {
	case retransErr != nil:
	case retransArgs >= 3: // sk, skb, err (Linux 6.x)
		keep[bpf.TcpsockProgTcpRetransmitErr] = true
	default:
		keep[bpf.TcpsockProgTcpRetransmit] = true
	}
	if c.cfg.TCPRTT {
		keep[bpf.TcpsockProgTcpProbeRtt] = true
	} else {
		delete(spec.Maps, bpf.TcpsockMapTcpRtt)
		delete(spec.Maps, bpf.TcpsockMapTcpRttOverflow)
	}
	for n := range spec.Programs {
		if !keep[n] {
			delete(spec.Programs, n)
		}
	}
	ts := &tcpsockCapture{ends: map[sockEnds]struct{}{}, joins: map[sockEnds][]int{}}
	c.tcpsock = ts
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{Cache: c.kernelBTF})
	if err != nil {
		err = explainLoad("tcpsock programs", err)
		if c.cfg.TCPRTT {
			return fmt.Errorf("tcp_rtt = true on kernel %s: %w: set tcp_rtt = false", kernel, err)
		}
		c.cfg.Logger.Info("pktstat-bpf: TCP retransmits not counted: tp_btf/tcp_retransmit_skb did not load; mode kprobe counts them", "kernel", kernel, "err", err)
		c.tcpsock = nil
		return nil
	}
	ts.coll = coll
	if ts.retrans, err = newTable[bpf.TcpsockCgroupFlowKey](coll.Maps[bpf.TcpsockMapTcpRetransmits]); err != nil {
		return err
	}
	// The overflow total and the RTT tables are per CPU; tcp_retransmits
	// is shared (one value per flow).
	rov := coll.Maps[bpf.TcpsockMapTcpRetransmitsOverflow]
	if ts.ncpu, err = valueLanes(rov); err != nil {
		return err
	}
	ts.rov = retransOverflow{m: rov, buf: make([]counters, ts.ncpu)}
	if c.cfg.TCPRTT {
		ts.rtt, ts.rttOv = coll.Maps[bpf.TcpsockMapTcpRtt], coll.Maps[bpf.TcpsockMapTcpRttOverflow]
		ts.rttKeys = make([]bpf.TcpsockCgroupFlowKey, batchSize)
		ts.rttVals = make([]bpf.TcpsockRttStats, batchSize*ts.ncpu)
	}
	retransmits := false
	for name, prog := range coll.Programs {
		l, err := link.AttachTracing(link.TracingOptions{Program: prog})
		if err != nil {
			err = needPrivilege("attach "+spec.Programs[name].SectionName, err)
			if name == bpf.TcpsockProgTcpProbeRtt {
				return fmt.Errorf("tcp_rtt = true on kernel %s: %w: set tcp_rtt = false", kernel, err)
			}
			c.cfg.Logger.Info("pktstat-bpf: TCP retransmits not counted; mode kprobe counts them", "kernel", kernel, "err", err)
			continue
		}
		ts.links = append(ts.links, l)
		retransmits = retransmits || name != bpf.TcpsockProgTcpProbeRtt
	}
	c.cfg.Logger.Info("pktstat-bpf: TCP socket hooks attached", "retransmits", retransmits, "tcp_rtt", c.cfg.TCPRTT)
	return nil
}

// netnsInode returns the inode of the network namespace at path, or of
// this process's when path is empty: the kernel's net->ns.inum.
func netnsInode(path string) (uint32, error) {
	if path == "" {
		path = "/proc/self/ns/net"
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat network namespace %s: %w", path, err)
	}
	return uint32(st.Ino), nil
}

// readTCPSock runs right before the flow drain: it reads the retransmit
// and RTT tables into events, for joinTCPSock to attach to this Read's
// egress records of the same socket ends, and emits their overflow totals.
func (c *Collector) readTCPSock(now time.Time, clock monoClock) error {
	ts := c.tcpsock
	ts.events, ts.held = ts.events[:0], ts.held[:0]
	clear(ts.ends)
	clear(ts.joins)
	if _, err := ts.retrans.drain(now, clock, c.cfg.IdleTimeout, func(k bpf.TcpsockCgroupFlowKey, st *flowState, dp, _ uint64, expired bool) {
		ts.addEvent(sockEvent{key: k, start: st.start, lastSeen: st.lastSeen, expired: expired, retrans: st.packets, dRetrans: dp}, c.cfg.Mode)
	}); err != nil {
		return err
	}
	if err := ts.rov.read(c, now, clock); err != nil {
		return err
	}
	if ts.rtt == nil {
		return nil
	}
	var cursor ebpf.MapBatchCursor
	for {
		n, err := ts.rtt.BatchLookupAndDelete(&cursor, ts.rttKeys, ts.rttVals, nil)
		for i := 0; i < n; i++ {
			s := rttStats(ts.rttVals[i*ts.ncpu : (i+1)*ts.ncpu])
			if s.Samples == 0 {
				continue
			}
			ts.addEvent(sockEvent{key: ts.rttKeys[i], start: now.UnixNano(), lastSeen: stampOf(now), rtt: s}, c.cfg.Mode)
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return fmt.Errorf("drain %s: %w", ts.rtt.String(), err)
		}
	}
	var zero uint32
	vals := ts.rttVals[:ts.ncpu]
	if err := ts.rttOv.Lookup(&zero, vals); err != nil {
		return fmt.Errorf("read tcp_rtt overflow: %w", err)
	}
	if s := rttStats(vals); s.Samples > 0 {
		// Samples taken between the lookup and the reset are lost; this
		// total only counts while tcp_rtt (max_flows entries) is full.
		clear(vals)
		if err := ts.rttOv.Put(&zero, vals); err != nil {
			return fmt.Errorf("reset tcp_rtt overflow: %w", err)
		}
		st := flowState{start: now.UnixNano(), lastSeen: stampOf(now)}
		r := c.record(FlowKey{}, &st, 0, 0, false, true)
		r.RTT = &s
		c.put(r)
	}
	return nil
}

func (ts *tcpsockCapture) addEvent(ev sockEvent, mode Mode) {
	ts.events = append(ts.events, ev)
	ts.ends[endsOf(sockFlowKey(ev.key, mode))] = struct{}{}
}

// hold sets r aside, a copy in held, when it is an egress TCP record whose
// socket ends have an event in this Read.
func (ts *tcpsockCapture) hold(r *Record) bool {
	if len(ts.ends) == 0 || r.Direction != Egress || r.Proto != ProtoTCP || r.Overflow || r.Filtered {
		return false
	}
	e := endsOf(r.FlowKey)
	if _, ok := ts.ends[e]; !ok {
		return false
	}
	ts.held = append(ts.held, *r)
	ts.joins[e] = append(ts.joins[e], len(ts.held)-1)
	return true
}

// joinTCPSock runs right after the flow drain: it attaches each socket
// event to a held record of its ends, preferring the record on the
// socket's route device when a flow crossed several watched interfaces. An
// event without a record (its flow expired, or found the flow table full)
// gets a record of its own when it belongs to this collector: in tc mode a
// watched interface, in cgroup mode a cgroup below cgroup_path. Then the
// held records are handed on.
func (c *Collector) joinTCPSock() {
	ts := c.tcpsock
	for i := range ts.events {
		ev := &ts.events[i]
		r := c.tcpsockRecord(ev)
		if r == nil {
			continue
		}
		r.Retransmits += ev.retrans
		r.DeltaRetransmits += ev.dRetrans
		if ev.rtt.Samples > 0 {
			if r.RTT == nil {
				r.RTT = new(RTTStats)
			}
			r.RTT.Merge(ev.rtt)
		}
	}
	for i := range ts.held {
		c.deliver(&ts.held[i])
	}
	// The held records are not cleared here: Read's slice and ReadFunc's
	// callers are done with them, and the next readTCPSock truncates held.
}

// rttStats merges one entry's per-CPU samples.
func rttStats(vals []bpf.TcpsockRttStats) RTTStats {
	var s RTTStats
	for _, v := range vals {
		if v.Samples == 0 {
			continue
		}
		o := RTTStats{
			Samples: v.Samples,
			Sum:     time.Duration(v.SumUs) * time.Microsecond,
			Min:     time.Duration(v.MinUs) * time.Microsecond,
			Max:     time.Duration(v.MaxUs) * time.Microsecond,
		}
		for i, n := range v.Buckets {
			o.Buckets[i] = uint64(n)
		}
		s.Merge(o)
	}
	return s
}

func endsOf(k FlowKey) sockEnds {
	return sockEnds{etherType: k.EtherType, src: k.SrcAddr, dst: k.DstAddr, srcPort: k.SrcPort, dstPort: k.DstPort, cgroupID: k.CgroupID}
}

// sockFlowKey is the flow key of a socket event's ends.
func sockFlowKey(k bpf.TcpsockCgroupFlowKey, mode Mode) FlowKey {
	fk := decodeKey(bpf.FlowFlowKey(k.Flow))
	if mode == ModeCgroup {
		fk.CgroupID = k.CgroupId
	}
	return fk
}

// tcpsockRecord returns the held record a socket event joins, making one
// (from the event's state) when the Read has none, or nil when the event is
// not this collector's socket.
func (c *Collector) tcpsockRecord(ev *sockEvent) *Record {
	ts := c.tcpsock
	fk := sockFlowKey(ev.key, c.cfg.Mode)
	e := endsOf(fk)
	if idx := ts.joins[e]; len(idx) > 0 {
		best := idx[0]
		for _, i := range idx {
			if ts.held[i].Ifindex == fk.Ifindex {
				best = i
				break
			}
		}
		return &ts.held[best]
	}
	switch {
	case c.ifaces != nil:
		if !c.ifaces.watched(int(fk.Ifindex)) {
			return nil // routed through an interface this collector does not watch
		}
	case c.cgroups != nil && c.cgRel != "/":
		// Sockets of other cgroups are not this collector's.
		p := c.cgroups.path(fk.CgroupID)
		if p != c.cgRel && !strings.HasPrefix(p, c.cgRel+"/") {
			return nil
		}
	}
	orphan := flowState{start: ev.start, lastSeen: ev.lastSeen}
	ts.held = append(ts.held, *c.record(fk, &orphan, 0, 0, ev.expired, false))
	ts.joins[e] = append(ts.joins[e], len(ts.held)-1)
	return &ts.held[len(ts.held)-1]
}

// watched reports whether programs are attached to ifindex now. (name
// also knows interfaces seen but never matched, such as lo.)
func (s *ifaceSet) watched(ifindex int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.attached[ifindex]
	return ok
}

// retransOverflow is a retransmit table's last-resort total (the skbs that
// found it full), reported as one overflow record.
type retransOverflow struct {
	m    *ebpf.Map
	buf  []counters
	last uint64
	st   flowState
}

// read emits the total's record (the same key as the flows' last-resort
// total, which consumers merge) once it has counted anything.
func (o *retransOverflow) read(c *Collector, now time.Time, clock monoClock) error {
	var zero uint32
	if err := o.m.Lookup(&zero, o.buf); err != nil {
		return fmt.Errorf("read retransmits overflow: %w", err)
	}
	n, _, ks := sum(o.buf)
	if n == 0 {
		return nil
	}
	if o.st.start == 0 {
		o.st.start = clock.toNanos(ks)
	}
	if n != o.last {
		o.st.lastSeen = stampOf(now)
	}
	r := c.record(FlowKey{}, &o.st, 0, 0, false, true)
	r.Retransmits, r.DeltaRetransmits = n, n-o.last
	o.last = n
	c.put(r)
	return nil
}
