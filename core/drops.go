package core

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/pktstat-bpf/pktstat-bpf/bpf"
)

// Drops (drops = true) come from the kfree_skb tracepoint (bpf/drops.c), a
// program of its own: with the key off it is not loaded, and the TC and XDP
// programs do not change either way.
//
// What is counted: every skb the kernel frees with a drop reason other
// than SKB_CONSUMED (a normal free) and SKB_NOT_DROPPED_YET, while it is on
// a watched interface of the watched network namespace (skb->dev). A drop on
// no device (some socket-level drops after the stack let go of the device)
// cannot be told from another namespace's, so it is not counted. Bytes are
// L3 lengths (the TC program counts L2 frames, 14 bytes more on Ethernet).
//
// Direction: ingress when the skb came into the stack on this device
// (skb_iif) or is a received frame the stack has not seen yet (its MAC
// header already pulled); egress when it never came in on any device (this
// host sent it); unknown when it came in on another device and is now on
// this one (forwarded: in or out is not known from the skb).
//
// Drop counts are not pinned with pin_path: a tracing link cannot be
// adopted by the next run as TC and XDP links are, so they start again
// with each Start (each series with its own StartTime).

// dropTableSize is the drop table's capacity (flow + reason entries); drops
// past it go to per-interface overflow records, none is lost.
const dropTableSize = 16384

// reasonNone stands for a reason the kernel does not have: no drop has it.
const reasonNone = math.MaxUint32

// dropReasons are the running kernel's skb_drop_reason values.
type dropReasons struct {
	names         map[uint32]string
	consumed      uint32 // SKB_CONSUMED, reasonNone if absent
	notDroppedYet uint32 // SKB_NOT_DROPPED_YET, reasonNone if absent
}

// name returns the reason's name, lower case without SKB_DROP_REASON_; a
// value the enum lacks (a subsystem's reason) is reason_N.
func (r *dropReasons) name(v uint32) string {
	if n, ok := r.names[v]; ok {
		return n
	}
	return fmt.Sprintf("reason_%d", v)
}

// probeDrops decides from a kernel's BTF whether drops can be counted: the
// kfree_skb tracepoint must exist and pass the reason (Linux 5.17 added
// it; 5.10 has none), and the skb_drop_reason enum must name the reasons.
func probeDrops(spec *btf.Spec, release string) (*dropReasons, error) {
	var tp *btf.Typedef
	if err := spec.TypeByName("btf_trace_kfree_skb", &tp); err != nil {
		return nil, fmt.Errorf("drops: kernel %s has no kfree_skb tracepoint in its BTF: remove drops, or use Linux 5.17 or later (tc and xdp counting work without it): %w",
			release, ErrNotSupported)
	}
	ptr, ok := tp.Type.(*btf.Pointer)
	var proto *btf.FuncProto
	if ok {
		proto, ok = ptr.Target.(*btf.FuncProto)
	}
	// The first parameter is the tracepoint's context, then skb, location, reason.
	if !ok || len(proto.Params) < 4 || !isDropReasonEnum(proto.Params[3].Type) {
		return nil, fmt.Errorf("drops: the kfree_skb tracepoint of kernel %s passes no drop reason (added in Linux 5.17): remove drops, or use Linux 5.17 or later (tc and xdp counting work without it): %w",
			release, ErrNotSupported)
	}
	var enum *btf.Enum
	if err := spec.TypeByName("skb_drop_reason", &enum); err != nil {
		return nil, fmt.Errorf("drops: kernel %s has no skb_drop_reason enum in its BTF: remove drops, or use Linux 5.17 or later: %w", release, ErrNotSupported)
	}
	r := &dropReasons{names: map[uint32]string{}, consumed: reasonNone, notDroppedYet: reasonNone}
	for _, v := range enum.Values {
		switch v.Name {
		case "SKB_CONSUMED":
			r.consumed = uint32(v.Value)
		case "SKB_NOT_DROPPED_YET":
			r.notDroppedYet = uint32(v.Value)
		}
		name := strings.TrimPrefix(v.Name, "SKB_DROP_REASON_")
		name = strings.TrimPrefix(name, "SKB_")
		r.names[uint32(v.Value)] = strings.ToLower(name)
	}
	return r, nil
}

func isDropReasonEnum(t btf.Type) bool {
	e, ok := btf.UnderlyingType(t).(*btf.Enum)
	return ok && e.Name == "skb_drop_reason"
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "(unknown)"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// dropObjects are the parts of the drops object that are loaded; the
// packet hooks' maps that filter.h declares are left out.
type dropObjects struct {
	Prog         *ebpf.Program `ebpf:"kfree_skb"`
	Drops        *ebpf.Map     `ebpf:"drops"`
	Overflow     *ebpf.Map     `ebpf:"drops_overflow"`
	Total        *ebpf.Map     `ebpf:"drops_overflow_total"`
	Filtered     *ebpf.Map     `ebpf:"drops_filtered"`
	Ifaces       *ebpf.Map     `ebpf:"drop_ifaces"`
	FilterCidrs  *ebpf.Map     `ebpf:"filter_cidrs"`
	FilterProtos *ebpf.Map     `ebpf:"filter_protos"`
	FilterPorts  *ebpf.Map     `ebpf:"filter_ports"`
}

// dropCapture is the loaded drops program and the drain of its tables.
type dropCapture struct {
	objs    dropObjects
	link    link.Link
	reasons *dropReasons
	log     func(msg string, args ...any)

	flows, overflow, filtered *table[bpf.DropsDropKey]
	total                     *ebpf.Map
	totalBuf                  []counters
	totalState                flowState
	records                   []Record
}

// startDrops probes the kernel, loads the drops program for the watched
// namespace and attaches it; interfaces are added with watch.
func startDrops(cfg Config, ns *nsContext, kernelBTF *btf.Cache) (*dropCapture, error) {
	kspec, err := kernelBTF.Kernel()
	if err != nil {
		return nil, fmt.Errorf("drops: read the kernel's BTF (/sys/kernel/btf/vmlinux) for its drop reasons: %w", err)
	}
	reasons, err := probeDrops(kspec, kernelRelease())
	if err != nil {
		return nil, err
	}
	nsPath := ns.path
	if nsPath == "" {
		nsPath = "/proc/self/ns/net"
	}
	fi, err := os.Stat(nsPath)
	if err != nil {
		return nil, fmt.Errorf("drops: stat network namespace %s: %w", nsPath, err)
	}
	ino := uint32(fi.Sys().(*syscall.Stat_t).Ino)

	spec, err := bpf.LoadDrops()
	if err != nil {
		return nil, fmt.Errorf("load drops object spec: %w", err)
	}
	for name, v := range map[string]uint32{"reason_consumed": reasons.consumed, "reason_not_dropped_yet": reasons.notDroppedYet, "netns_ino": ino} {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("set drops knob %s: %w", name, err)
		}
	}
	spec.Maps[bpf.DropsMapDrops].MaxEntries = dropTableSize
	if cfg.dropTable > 0 {
		spec.Maps[bpf.DropsMapDrops].MaxEntries = uint32(cfg.dropTable)
	}
	fillFilters, err := ApplyFilters(spec, cfg.Filters)
	if err != nil {
		return nil, err
	}
	d := &dropCapture{reasons: reasons, log: cfg.Logger.Warn}
	if err := spec.LoadAndAssign(&d.objs, &ebpf.CollectionOptions{Cache: kernelBTF}); err != nil {
		return nil, explainLoad("drops program (kfree_skb tracepoint)", err)
	}
	if err := d.start(fillFilters); err != nil {
		d.close()
		return nil, err
	}
	return d, nil
}

func (d *dropCapture) start(fillFilters func(cidrs, protos, ports *ebpf.Map) error) error {
	if err := fillFilters(d.objs.FilterCidrs, d.objs.FilterProtos, d.objs.FilterPorts); err != nil {
		return err
	}
	var err error
	for _, t := range []struct {
		dst **table[bpf.DropsDropKey]
		m   *ebpf.Map
	}{{&d.flows, d.objs.Drops}, {&d.overflow, d.objs.Overflow}, {&d.filtered, d.objs.Filtered}} {
		if *t.dst, err = newTable[bpf.DropsDropKey](t.m); err != nil {
			return err
		}
	}
	d.total = d.objs.Total
	d.totalBuf = make([]counters, d.flows.ncpu)
	if d.link, err = link.AttachTracing(link.TracingOptions{Program: d.objs.Prog}); err != nil {
		if errors.Is(err, ErrNotSupported) {
			return fmt.Errorf("drops: attach tp_btf/kfree_skb on kernel %s: BTF tracepoints are not supported: remove drops: %w", kernelRelease(), err)
		}
		return needPrivilege("attach tp_btf/kfree_skb (drops)", err)
	}
	return nil
}

// watch adds an attached interface to the ones drops are counted on, or
// removes one that is no longer watched.
func (d *dropCapture) watch(ifindex int, on bool) {
	key := uint32(ifindex)
	var err error
	if on {
		err = d.objs.Ifaces.Put(&key, uint8(1))
	} else if err = d.objs.Ifaces.Delete(&key); errors.Is(err, ebpf.ErrKeyNotExist) {
		err = nil
	}
	if err != nil {
		d.log("pktstat-bpf: drops not followed on interface", "ifindex", ifindex, "on", on, "err", err)
	}
}

// newRecordFunc builds a record the way the collector does (naming the interface).
type newRecordFunc func(k FlowKey, st *flowState, dp, db uint64, expired, overflow bool) Record

// read drains the drop tables: drop flows expire like flows; the overflow
// and filtered entries, few and telling, never do.
func (d *dropCapture) read(now time.Time, clock monoClock, idle time.Duration, rec newRecordFunc) ([]Record, error) {
	d.records = d.records[:0]
	add := func(idle time.Duration, t *table[bpf.DropsDropKey], overflow, filtered bool) error {
		_, err := t.drain(now, clock, idle, func(k bpf.DropsDropKey, st *flowState, dp, db uint64, expired bool) {
			r := rec(decodeKey(bpf.FlowFlowKey(k.Flow)), st, dp, db, expired, overflow)
			r.Filtered = filtered
			r.DropReason = d.reasons.name(k.Reason)
			r.AppProto = ""
			d.records = append(d.records, r)
		})
		return err
	}
	if err := add(idle, d.flows, false, false); err != nil {
		return nil, err
	}
	if err := add(math.MaxInt64, d.overflow, true, false); err != nil {
		return nil, err
	}
	if err := add(math.MaxInt64, d.filtered, false, true); err != nil {
		return nil, err
	}
	var zero uint32
	if err := d.total.Lookup(&zero, d.totalBuf); err != nil {
		return nil, fmt.Errorf("read drops overflow total: %w", err)
	}
	if dp, db, ok := d.totalState.total(d.totalBuf, clock, now); ok {
		r := rec(FlowKey{}, &d.totalState, dp, db, false, true)
		r.DropReason = "unknown"
		d.records = append(d.records, r)
	}
	return d.records, nil
}

func (d *dropCapture) close() error {
	var errs []error
	if d.link != nil {
		errs = append(errs, d.link.Close())
	}
	for _, c := range []interface{ Close() error }{d.objs.Prog, d.objs.Drops, d.objs.Overflow, d.objs.Total, d.objs.Filtered,
		d.objs.Ifaces, d.objs.FilterCidrs, d.objs.FilterProtos, d.objs.FilterPorts} {
		if c != nil {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}
