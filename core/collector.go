// Package core loads the pktstat-bpf kernel programs, attaches them, and
// drains their flow tables into cumulative per-flow records.
package core

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/pktstat-bpf/pktstat-bpf/bpf"
)

// ErrNotSupported is wrapped by errors caused by a kernel that lacks a
// program type, attach type or helper a mode needs.
var ErrNotSupported = ebpf.ErrNotSupported

// Collector owns the kernel objects of one capture. Start attaches, Read
// drains, Close detaches. Read may be called from one goroutine at a time.
type Collector struct {
	cfg Config

	mu      sync.Mutex // guards the lifecycle and Read
	started bool
	closed  bool

	ns     *nsContext
	pins   *pinStore // pin_path, nil without
	ifaces *ifaceSet // tc and xdp
	hooks  []*hook   // cgroup, kprobe
	kp     *kprobeCapture
	drops  *dropCapture // drops = true
	// kernelBTF is the running kernel's BTF, decoded once for every object
	// one Start loads (flow or cgroup, socket, drops, kprobe); nil outside Start.
	kernelBTF *btf.Cache
	// tcpsock is tc and cgroup modes' retransmits and RTT, nil without.
	tcpsock *tcpsockCapture
	cgRel   string // cgroup mode's cgroup_path below the mount ("/" for all)

	flowObjs   *bpf.FlowObjects
	cgroupObjs *bpf.CgroupObjects

	flows    *table[bpf.FlowFlowKey]
	cgFlows  *table[bpf.CgroupCgroupFlowKey]
	overflow *table[bpf.FlowOverflowKey]
	filtered *table[bpf.FlowOverflowKey]
	ovTotal  *ebpf.Map
	ovBuf    []counters
	ovState  flowState // the last-resort overflow total, as one series
	cgroups  *cgroupResolver
	cgIfaces ifaceNames
	comms    map[[16]int8]string

	// records is Read's result; ReadFunc leaves it alone. collect is set
	// while Read fills it.
	records []Record
	collect bool
	// sink receives the records of the Read in progress; scratch is the
	// one record that emit fills before handing it on.
	sink    func(*Record)
	scratch Record
	expired uint64
	// kernelMem is what the capture's BPF maps hold in the kernel, summed
	// at Start (Health.KernelMemory).
	kernelMem uint64
	// clockOffset converts kernel times to wall time, fixed at Start (and
	// kept in pin_path across restarts).
	clockOffset int64
}

// New validates cfg and returns a Collector that has not touched the kernel yet.
func New(cfg Config) (*Collector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("pktstat-bpf config: %w", err)
	}
	return &Collector{cfg: cfg.withDefaults()}, nil
}

// Config returns the configuration in force, defaults applied.
func (c *Collector) Config() Config { return c.cfg }

// Start loads the kernel programs and attaches them. It returns an error that
// says what to do when a privilege, kernel feature or interface is missing.
// On error nothing stays attached.
func (c *Collector) Start(ctx context.Context) (err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return errors.New("start: collector is closed")
	}
	if c.started {
		return errors.New("start: already started")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK. Without
	// privileges this fails too; the load below then fails with an error
	// that names the capabilities and the memlock limit, which says more.
	if err := rlimit.RemoveMemlock(); err != nil {
		c.cfg.Logger.Debug("pktstat-bpf: could not raise RLIMIT_MEMLOCK", "err", err)
	}
	// Decoding the kernel's BTF costs more than verifying a program: do it
	// once per Start, and drop it afterwards (it is megabytes of types).
	c.kernelBTF = btf.NewCache()
	defer func() { c.kernelBTF = nil }()
	defer func() {
		if err != nil {
			c.release()
		}
	}()
	switch c.cfg.Mode {
	case ModeTC, ModeXDP:
		err = c.startInterfaces()
	case ModeCgroup:
		err = c.startCgroup()
	case ModeKprobe:
		err = c.startKprobe()
	}
	if err == nil && (c.cfg.Mode == ModeTC || c.cfg.Mode == ModeCgroup) {
		err = c.startTCPSock()
	}
	if err != nil {
		return err
	}
	c.clockOffset = readClock(0).offset
	if c.pins != nil {
		if c.clockOffset, err = c.pins.clockOffset(c.clockOffset); err != nil {
			return err
		}
	}
	c.kernelMem = c.kernelMemory()
	ncpu, _ := ebpf.PossibleCPU()
	c.cfg.Logger.Info("pktstat-bpf: kernel tables loaded; their memory is charged to this process's memory cgroup",
		"kernel_memory_mib", (c.kernelMem+1<<19)>>20, "max_flows", c.cfg.MaxFlows, "possible_cpus", ncpu)
	c.started = true
	return nil
}

func (c *Collector) startInterfaces() error {
	spec, err := bpf.LoadFlow()
	if err != nil {
		return fmt.Errorf("load flow object spec: %w", err)
	}
	spec.Maps[bpf.FlowMapFlows].MaxEntries = uint32(c.cfg.MaxFlows)
	fillFilters, err := ApplyFilters(spec, c.cfg.Filters)
	if err != nil {
		return err
	}
	opts, err := c.openPins(spec)
	if err != nil {
		return err
	}
	objs, err := loadFlowObjects(spec, opts, c.cfg.Mode)
	if err != nil {
		return explainLoad("tc/xdp programs", err)
	}
	c.flowObjs = objs
	if err := fillFilters(objs.FilterCidrs, objs.FilterProtos, objs.FilterPorts); err != nil {
		return err
	}
	if err := c.startFiltered(objs.FlowsFiltered); err != nil {
		return err
	}
	if c.flows, err = newTable[bpf.FlowFlowKey](objs.Flows); err != nil {
		return err
	}
	c.flows.reserve = c.reserveRecords
	useWalker(c.flows, walkFlows, c.cfg.Logger)
	if err := c.startOverflow(objs.FlowsOverflow, objs.FlowsOverflowTotal); err != nil {
		return err
	}
	if c.ns, err = openNS(c.cfg.NetNS); err != nil {
		return err
	}
	patterns := c.cfg.Interfaces
	if len(patterns) == 0 {
		name, err := defaultRouteInterface(c.ns)
		if err != nil {
			return err
		}
		patterns = []string{name}
	}
	var attach func(ifindex int, name string) ([]*hook, error)
	if c.cfg.Mode == ModeTC {
		progs := []tcProgram{
			{prog: objs.TcIngress, attach: ebpf.AttachTCXIngress, suffix: "ingress"},
			{prog: objs.TcEgress, attach: ebpf.AttachTCXEgress, suffix: "egress"},
		}
		for i := range progs {
			if progs[i].id, err = programID(progs[i].prog); err != nil {
				return err
			}
		}
		attach = func(ifindex int, name string) ([]*hook, error) {
			return attachTC(c.ns, progs, ifindex, name, c.cfg.legacyTC, c.pins)
		}
	} else {
		c.cfg.Logger.Info("pktstat-bpf: xdp mode counts ingress only; use mode tc for egress too")
		attach = func(ifindex int, name string) ([]*hook, error) {
			return attachXDP(c.ns, objs.XdpIngress, ifindex, name, c.cfg.XDPMode, c.pins)
		}
	}
	c.ifaces = &ifaceSet{ns: c.ns, patterns: patterns, attach: attach, log: c.cfg.Logger}
	if c.cfg.Drops {
		// Before the interfaces, so that each one is watched for drops as it is attached.
		if c.drops, err = startDrops(c.cfg, c.ns, c.kernelBTF); err != nil {
			return err
		}
		c.ifaces.watch = c.drops.watch
	}
	if err := c.ifaces.start(); err != nil {
		return err
	}
	if c.pins != nil {
		c.pins.prune(pinnedMaps(spec), c.ifaces.pinned)
	}
	return nil
}

// openPins opens pin_path for spec's maps and returns the load options
// that pin them there, or adopt the ones a previous run pinned; without
// pin_path, options that only share the Start's kernel BTF.
func (c *Collector) openPins(spec *ebpf.CollectionSpec) (*ebpf.CollectionOptions, error) {
	if c.cfg.PinPath == "" {
		return &ebpf.CollectionOptions{Cache: c.kernelBTF}, nil
	}
	maps := pinnedMaps(spec)
	pins, err := openPins(c.cfg.PinPath, c.cfg.Mode, spec, maps, c.cfg.Logger)
	if err != nil {
		return nil, err
	}
	c.pins = pins
	pinMaps(spec, maps)
	return &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: pins.dir}, Cache: c.kernelBTF}, nil
}

func (c *Collector) startOverflow(m, total *ebpf.Map) error {
	var err error
	c.overflow, err = newTable[bpf.FlowOverflowKey](m)
	if err != nil {
		return err
	}
	c.ovTotal = total
	c.ovBuf = make([]counters, c.overflow.ncpu)
	return nil
}

func (c *Collector) startCgroup() error {
	mount, err := cgroup2Mount()
	if err != nil {
		return err
	}
	cgPath := c.cfg.CgroupPath
	if cgPath == "" {
		cgPath = mount
	}
	cgPath = filepath.Clean(cgPath)
	rel, ok := strings.CutPrefix(cgPath, mount)
	if !ok || (rel != "" && !strings.HasPrefix(rel, "/")) {
		return fmt.Errorf("cgroup_path %s is not below the cgroup2 mount %s", cgPath, mount)
	}
	if rel == "" {
		rel = "/"
	}
	c.cgroups = &cgroupResolver{root: mount}
	c.cgRel = rel

	spec, err := bpf.LoadCgroup()
	if err != nil {
		return fmt.Errorf("load cgroup object spec: %w", err)
	}
	spec.Maps[bpf.CgroupMapCgroupFlows].MaxEntries = uint32(c.cfg.MaxFlows)
	fillFilters, err := ApplyFilters(spec, c.cfg.Filters)
	if err != nil {
		return err
	}
	opts, err := c.openPins(spec)
	if err != nil {
		return err
	}
	objs := &bpf.CgroupObjects{}
	if err := spec.LoadAndAssign(objs, opts); err != nil {
		return explainLoad("cgroup programs", err)
	}
	c.cgroupObjs = objs
	if err := fillFilters(objs.FilterCidrs, objs.FilterProtos, objs.FilterPorts); err != nil {
		return err
	}
	if err := c.startFiltered(objs.FlowsFiltered); err != nil {
		return err
	}
	if c.cgFlows, err = newTable[bpf.CgroupCgroupFlowKey](objs.CgroupFlows); err != nil {
		return err
	}
	c.cgFlows.reserve = c.reserveRecords
	useWalker(c.cgFlows, walkCgroupFlows, c.cfg.Logger)
	if err := c.startOverflow(objs.FlowsOverflow, objs.FlowsOverflowTotal); err != nil {
		return err
	}
	// Owners first, so packets of sockets created from now on are attributed.
	for _, a := range []struct {
		prog     *ebpf.Program
		attach   ebpf.AttachType
		kind     string
		optional bool
	}{
		{objs.SockCreate, ebpf.AttachCGroupInetSockCreate, "cgroup/sock_create", false},
		// sock_release needs Linux 5.9; without it the LRU owner map ages out entries.
		{objs.SockRelease, ebpf.AttachCgroupInetSockRelease, "cgroup/sock_release", true},
		{objs.CgroupIngress, ebpf.AttachCGroupInetIngress, "cgroup_skb/ingress", false},
		{objs.CgroupEgress, ebpf.AttachCGroupInetEgress, "cgroup_skb/egress", false},
	} {
		h := &hook{target: cgPath, kind: a.kind}
		l, err := c.attachCgroup(h, cgPath, a.attach, a.prog)
		if err != nil {
			if a.optional {
				c.cfg.Logger.Warn("pktstat-bpf: optional hook not attached", "hook", a.kind, "err", err)
				continue
			}
			if isNotExist(err) {
				return fmt.Errorf("attach %s to %s: cgroup directory not found: %w", a.kind, cgPath, err)
			}
			return needPrivilege(fmt.Sprintf("attach %s to %s", a.kind, cgPath), err)
		}
		h.link = l
		c.hooks = append(c.hooks, h)
	}
	if c.pins != nil {
		c.pins.prune(pinnedMaps(spec), func(path string) bool {
			return slices.ContainsFunc(c.hooks, func(h *hook) bool { return h.pin == path })
		})
	}
	n, err := seedSocketOwners(objs.SockOwners, rel)
	if err != nil {
		c.cfg.Logger.Warn("pktstat-bpf: existing sockets not attributed", "err", err)
	}
	c.cfg.Logger.Info("pktstat-bpf: attached", "cgroup", cgPath, "existing_sockets_attributed", n)
	return nil
}

// Read drains the kernel tables and returns every active flow, the overflow
// records and the flows that expired since the previous Read. The returned
// records are valid until the next Read.
func (c *Collector) Read(ctx context.Context) (Snapshot, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.records = c.records[:0]
	c.collect = true
	snap, err := c.read(ctx, c.appendRecord)
	c.collect = false
	if err != nil {
		return Snapshot{}, err
	}
	snap.Records = c.records
	return snap, nil
}

// ReadFunc is Read that hands each record to fn as the drain makes it,
// instead of returning them in a slice (the returned Snapshot's Records is
// nil): a full table's records (about 45 MB at 131,072 flows) are then
// never in memory at once. r and what it points to are valid only during
// the call, and fn must not call the Collector. The records are the ones
// Read returns, in the same order, except that the egress TCP records a
// socket event (retransmits, tcp_rtt) joins come after the others.
func (c *Collector) ReadFunc(ctx context.Context, fn func(r *Record)) (Snapshot, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.read(ctx, fn)
}

func (c *Collector) appendRecord(r *Record) { c.records = append(c.records, *r) }

func (c *Collector) read(ctx context.Context, sink func(*Record)) (Snapshot, error) {
	if !c.started || c.closed {
		return Snapshot{}, errors.New("read: collector is not running (call Start first)")
	}
	if err := ctx.Err(); err != nil {
		return Snapshot{}, err
	}
	c.sink = sink
	defer func() { c.sink = nil }()
	t0 := time.Now()
	clock := readClock(c.clockOffset)
	now := clock.wall
	var active int
	var err error
	if c.tcpsock != nil {
		// The socket tables are read first, so that the flow drain can set
		// aside the few egress records their events join and hand every
		// other record on at once.
		err = c.readTCPSock(now, clock)
	}
	if err == nil {
		switch {
		case c.flows != nil:
			active, err = c.flows.drain(now, clock, c.cfg.IdleTimeout, func(k bpf.FlowFlowKey, st *flowState, dp, db uint64, expired bool) {
				c.emit(decodeKey(k), st, dp, db, expired, false)
			})
		case c.kp != nil:
			active, err = c.drainKprobe(now, clock)
		default:
			active, err = c.cgFlows.drain(now, clock, c.cfg.IdleTimeout, func(k bpf.CgroupCgroupFlowKey, st *flowState, dp, db uint64, expired bool) {
				fk := decodeKey(bpf.FlowFlowKey(k.Flow))
				fk.CgroupID, fk.PID, fk.Comm = k.CgroupId, k.Pid, c.comm(k.Comm)
				c.emit(fk, st, dp, db, expired, false)
			})
		}
	}
	if err == nil && c.tcpsock != nil {
		c.joinTCPSock()
	}
	if err != nil {
		return Snapshot{}, err
	}
	h := Health{ActiveFlows: active, Capacity: c.cfg.MaxFlows, KernelMemory: c.kernelMem}
	// Overflow entries never expire: there are few, and they are the
	// evidence that max_flows is too small.
	if _, err := c.overflow.drain(now, clock, math.MaxInt64, func(k bpf.FlowOverflowKey, st *flowState, dp, db uint64, expired bool) {
		c.emit(FlowKey{Ifindex: k.Ifindex, Direction: Direction(k.Direction)}, st, dp, db, expired, true)
		h.OverflowPackets += st.packets
		h.OverflowBytes += st.bytes
	}); err != nil {
		return Snapshot{}, err
	}
	if err := c.drainFiltered(now, clock); err != nil {
		return Snapshot{}, err
	}
	var zero uint32
	if err := c.ovTotal.Lookup(&zero, c.ovBuf); err != nil {
		return Snapshot{}, fmt.Errorf("read overflow total: %w", err)
	}
	if dp, db, ok := c.ovState.total(c.ovBuf, clock, now); ok {
		c.emit(FlowKey{}, &c.ovState, dp, db, false, true)
		c.ovState.reported.tcp = c.ovState.tcp
		h.OverflowPackets += c.ovState.packets
		h.OverflowBytes += c.ovState.bytes
	}
	h.ExpiredFlows = c.expired
	h.DrainDuration = time.Since(t0)
	if c.ifaces != nil {
		h.Hooks = c.ifaces.states()
	}
	for _, hk := range c.hooks {
		h.Hooks = append(h.Hooks, HookState{Target: hk.target, Hook: hk.kind, Attached: true})
	}
	snap := Snapshot{Time: now, Health: h}
	if c.drops != nil {
		if snap.Drops, err = c.drops.read(now, clock, c.cfg.IdleTimeout, c.newRecord); err != nil {
			return Snapshot{}, err
		}
	}
	return snap, nil
}

// emit makes the record of one kernel entry and hands it on.
func (c *Collector) emit(k FlowKey, st *flowState, dp, db uint64, expired, overflow bool) {
	c.put(c.record(k, st, dp, db, expired, overflow))
}

// record fills the collector's one scratch record from a kernel entry, for
// the caller to complete and put: a full table's records are written once
// per Read, not built and then copied.
func (c *Collector) record(k FlowKey, st *flowState, dp, db uint64, expired, overflow bool) *Record {
	c.scratch = Record{}
	c.fillRecord(&c.scratch, k, st, dp, db, expired, overflow)
	return &c.scratch
}

// put hands a finished record to the Read's sink, or sets it aside when a
// socket event of this Read joins it (tcpsock.go).
func (c *Collector) put(r *Record) {
	if c.tcpsock != nil && c.tcpsock.hold(r) {
		return
	}
	c.deliver(r)
}

func (c *Collector) deliver(r *Record) {
	if r.Expired {
		c.expired++
	}
	c.sink(r)
}

// newRecord builds the record of one kernel entry.
func (c *Collector) newRecord(k FlowKey, st *flowState, dp, db uint64, expired, overflow bool) Record {
	var r Record
	c.fillRecord(&r, k, st, dp, db, expired, overflow)
	return r
}

// fillRecord sets r, a zero record, from one kernel entry's state.
func (c *Collector) fillRecord(r *Record, k FlowKey, st *flowState, dp, db uint64, expired, overflow bool) {
	r.FlowKey = k
	r.Packets, r.Bytes = st.packets, st.bytes
	r.DeltaPackets, r.DeltaBytes = dp, db
	r.TCP, r.DeltaTCP = st.tcp, st.deltaTCP()
	r.StartTime, r.LastSeen = time.Unix(0, st.start), st.lastSeen.time()
	r.Overflow, r.Expired = overflow, expired
	r.AppProto = appProtoName(st.appProto)
	switch {
	case c.ifaces != nil:
		r.Interface = c.ifaces.name(int(k.Ifindex))
	case c.cgroups != nil:
		r.Interface = c.cgIfaces.name(k.PID, k.Ifindex)
	}
	if c.cgroups != nil {
		r.CgroupPath = c.cgroups.path(k.CgroupID)
	}
}

// reserveRecords makes room for n more records before a table emits them
// into Read's slice: appending 131,072 records one by one copies the slice
// over and over. ReadFunc keeps no slice.
func (c *Collector) reserveRecords(n int) {
	if c.collect {
		c.records = slices.Grow(c.records, n)
	}
}

// comm interns process names: many flows share a few.
func (c *Collector) comm(raw [16]int8) string {
	if raw[0] == 0 {
		return ""
	}
	if s, ok := c.comms[raw]; ok {
		return s
	}
	if c.comms == nil {
		c.comms = map[[16]int8]string{}
	}
	s := commString(raw)
	c.comms[raw] = s
	return s
}

func decodeKey(k bpf.FlowFlowKey) FlowKey {
	fk := FlowKey{
		Ifindex:   k.Ifindex,
		Direction: Direction(k.Direction),
		EtherType: k.EthProto,
		VLAN:      k.VlanId,
		Proto:     k.IpProto,
		SrcPort:   k.SrcPort,
		DstPort:   k.DstPort,
		Flags:     Flags(k.Flags),
	}
	switch k.EthProto {
	case EtherTypeIPv4, EtherTypeARP:
		if k.EthProto == EtherTypeIPv4 || k.SrcAddr != [16]byte{} || k.DstAddr != [16]byte{} {
			fk.SrcAddr = netip.AddrFrom4([4]byte(k.SrcAddr[:4]))
			fk.DstAddr = netip.AddrFrom4([4]byte(k.DstAddr[:4]))
		}
	case EtherTypeIPv6:
		fk.SrcAddr = netip.AddrFrom16(k.SrcAddr)
		fk.DstAddr = netip.AddrFrom16(k.DstAddr)
	}
	if fk.Flags&FlagTruncated != 0 && fk.IPVersion() != 0 && k.SrcAddr == [16]byte{} && k.DstAddr == [16]byte{} {
		// The IP header itself was short: there are no addresses.
		fk.SrcAddr, fk.DstAddr = netip.Addr{}, netip.Addr{}
	}
	return fk
}

// Close detaches every program and releases every kernel object. It is safe
// to call more than once.
func (c *Collector) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	return c.release()
}

func (c *Collector) release() error {
	var errs []error
	if c.ifaces != nil {
		errs = append(errs, c.ifaces.stop())
		c.ifaces = nil
	}
	// Pinned hooks stay in the kernel (pin_path), the rest is detached.
	errs = append(errs, closeHooks(c.hooks, false))
	c.hooks = nil
	if c.flows != nil {
		c.flows.walk.close()
		c.flows.walk = nil
	}
	if c.cgFlows != nil {
		c.cgFlows.walk.close()
		c.cgFlows.walk = nil
	}
	if c.flowObjs != nil {
		errs = append(errs, c.flowObjs.Close())
		c.flowObjs = nil
	}
	if c.cgroupObjs != nil {
		errs = append(errs, c.cgroupObjs.Close())
		c.cgroupObjs = nil
	}
	if c.kp != nil {
		errs = append(errs, c.kp.close())
		c.kp = nil
	}
	if c.drops != nil {
		errs = append(errs, c.drops.close())
		c.drops = nil
	}
	if c.tcpsock != nil {
		c.tcpsock.close()
		c.tcpsock = nil
	}
	if c.ns != nil {
		c.ns.close()
		c.ns = nil
	}
	if c.pins != nil {
		c.pins.close()
		c.pins = nil
	}
	return errors.Join(errs...)
}

// loadFlowObjects loads the flow object's maps and only the programs of mode:
// the two tc programs, or the xdp one. The kernel verifies every program it
// is given, which costs start time and kernel memory, so a program that would
// never be attached is not loaded (the other fields stay nil).
func loadFlowObjects(spec *ebpf.CollectionSpec, opts *ebpf.CollectionOptions, mode Mode) (*bpf.FlowObjects, error) {
	if mode == ModeXDP {
		var l struct {
			bpf.FlowMaps
			XdpIngress *ebpf.Program `ebpf:"xdp_ingress"`
		}
		if err := spec.LoadAndAssign(&l, opts); err != nil {
			return nil, err
		}
		return &bpf.FlowObjects{FlowMaps: l.FlowMaps, FlowPrograms: bpf.FlowPrograms{XdpIngress: l.XdpIngress}}, nil
	}
	var l struct {
		bpf.FlowMaps
		TcIngress *ebpf.Program `ebpf:"tc_ingress"`
		TcEgress  *ebpf.Program `ebpf:"tc_egress"`
	}
	if err := spec.LoadAndAssign(&l, opts); err != nil {
		return nil, err
	}
	return &bpf.FlowObjects{FlowMaps: l.FlowMaps, FlowPrograms: bpf.FlowPrograms{TcIngress: l.TcIngress, TcEgress: l.TcEgress}}, nil
}
