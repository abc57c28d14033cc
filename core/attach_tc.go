package core

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// legacyFilterPrefix names our cls_bpf filters so that a later run can find
// and remove the ones a killed predecessor left behind (they outlive it).
const legacyFilterPrefix = "pktstat-bpf"

// tcProgram is one direction's program and what to attach it as.
type tcProgram struct {
	prog   *ebpf.Program
	id     ebpf.ProgramID
	attach ebpf.AttachType // AttachTCXIngress or AttachTCXEgress
	suffix string          // "ingress" or "egress"
}

// attachTC attaches ingress and egress, with TCX where the kernel has it
// (6.6+) and a clsact qdisc with direct-action cls_bpf filters otherwise.
// TCX links go to the head of each chain and our programs return TCX_NEXT,
// so whatever another program does with a packet afterwards, we counted it.
// With pins, a link that a previous run pinned for this interface is
// adopted and switched to prog instead of a new one being attached.
func attachTC(ns *nsContext, progs []tcProgram, ifindex int, name string, legacyOnly bool, pins *pinStore) ([]*hook, error) {
	var hooks []*hook
	fail := func(err error) ([]*hook, error) {
		_ = closeHooks(hooks, pins == nil)
		return nil, err
	}
	for _, p := range progs {
		h := &hook{target: name, kind: "tcx/" + p.suffix, ifindex: ifindex, attach: p.attach, progID: p.id}
		err := fmt.Errorf("legacy tc forced: %w", ebpf.ErrNotSupported)
		if !legacyOnly {
			err = ns.do(func() error { return attachTCXLink(h, p, ifindex, pins) })
		}
		if err == nil {
			hooks = append(hooks, h)
			continue
		}
		if !errors.Is(err, ebpf.ErrNotSupported) {
			return fail(needPrivilege(fmt.Sprintf("attach tcx/%s to %s", p.suffix, name), err))
		}
		f, lerr := attachLegacyTC(ns, p.prog, ifindex, name, p.suffix == "ingress", pins != nil)
		if lerr != nil {
			return fail(fmt.Errorf("attach tc/%s to %s (no TCX on this kernel, legacy clsact fallback): %w", p.suffix, name, lerr))
		}
		h.kind, h.legacy = "tc/"+p.suffix, f
		hooks = append(hooks, h)
	}
	return hooks, nil
}

// attachTCXLink attaches p at the head of the chain, or adopts the link a
// previous run pinned. It runs inside the capture's network namespace.
func attachTCXLink(h *hook, p tcProgram, ifindex int, pins *pinStore) error {
	if pins != nil {
		h.pin = pins.path("tcx-" + p.suffix + "-" + h.target)
		if l := adoptLink(h.pin, func(info *link.Info) bool {
			tcx := info.TCX()
			return tcx != nil && int(tcx.Ifindex) == ifindex && ebpf.AttachType(tcx.AttachType) == p.attach
		}); l != nil {
			// Atomic: each packet runs the old program or the new one, and
			// both count into the same pinned maps.
			if err := l.Update(p.prog); err != nil {
				l.Close()
				return fmt.Errorf("switch adopted link %s to the new program: %w", h.pin, err)
			}
			h.link, h.adopted = l, true
			return nil
		}
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: p.prog, Attach: p.attach, Anchor: link.Head()})
	if err != nil {
		return err
	}
	if h.pin != "" {
		if err := l.Pin(h.pin); err != nil {
			l.Close()
			return fmt.Errorf("pin tcx link at %s: %w", h.pin, err)
		}
	}
	h.link = l
	return nil
}

// adoptLink loads the link pinned at path if it is still the one wanted
// (ok says so). A pin that does not fit, a defunct one included (its
// interface was deleted), is removed, which detaches it.
func adoptLink(path string, ok func(*link.Info) bool) link.Link {
	l, err := link.LoadPinnedLink(path, nil)
	if err != nil {
		return nil
	}
	info, err := l.Info()
	if err == nil && ok(info) {
		return l
	}
	_ = l.Unpin()
	l.Close()
	return nil
}

// legacyFilter is a cls_bpf filter under a clsact qdisc.
type legacyFilter struct {
	ns     *nsContext
	filter *netlink.BpfFilter
	// pinned filters stay when the collector closes (pin_path): like
	// pinned links, they keep counting into the pinned maps.
	pinned bool
	// blocker names a filter that holds priority 1 and that ours cannot
	// run before, "" when ours runs first.
	blocker string
}

func attachLegacyTC(ns *nsContext, prog *ebpf.Program, ifindex int, name string, ingress, pinned bool) (*legacyFilter, error) {
	qdisc := &netlink.GenericQdisc{
		QdiscAttrs: netlink.QdiscAttrs{
			LinkIndex: ifindex,
			Handle:    netlink.MakeHandle(0xffff, 0),
			Parent:    netlink.HANDLE_CLSACT,
		},
		QdiscType: "clsact",
	}
	if err := ns.nl.QdiscAdd(qdisc); err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, needPrivilege("add clsact qdisc", err)
	}
	parent := uint32(netlink.HANDLE_MIN_EGRESS)
	fname := legacyFilterPrefix + "-egress"
	if ingress {
		parent, fname = netlink.HANDLE_MIN_INGRESS, legacyFilterPrefix+"-ingress"
	}
	all, ours, others, err := listFilters(ns, ifindex, parent)
	if err != nil {
		return nil, err
	}
	lf := &legacyFilter{ns: ns, pinned: pinned}
	if pinned && len(ours) == 1 && runsFirst(ours[0], all) {
		// A previous run's filter: give it the new program in place, which
		// the kernel swaps atomically, so no packet is missed or counted twice.
		f := *ours[0]
		f.Fd, f.Name, f.DirectAction = prog.FD(), fname, true
		if err := ns.nl.FilterReplace(&f); err != nil {
			return nil, needPrivilege("replace cls_bpf filter on "+name, err)
		}
		lf.filter = &f
		return lf, nil
	}
	for _, f := range ours {
		// Left by a killed predecessor, or no longer in front.
		_ = ns.nl.FilterDel(f)
	}
	prio, handle, blocker := legacyPlace(others)
	f := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex,
			Parent:    parent,
			Handle:    handle,
			Protocol:  unix.ETH_P_ALL,
			Priority:  prio,
		},
		Fd:           prog.FD(),
		Name:         fname,
		DirectAction: true,
	}
	if err := ns.nl.FilterAdd(f); err != nil {
		return nil, needPrivilege("add cls_bpf filter on "+name, err)
	}
	lf.filter = f
	if blocker != nil {
		lf.blocker = describeFilter(blocker)
	}
	return lf, nil
}

// listFilters returns the filters on one clsact parent in the order the
// kernel runs them, and ours (by name) apart from the others.
func listFilters(ns *nsContext, ifindex int, parent uint32) (all []netlink.Filter, ours []*netlink.BpfFilter, others []netlink.Filter, err error) {
	l, err := ns.nl.LinkByIndex(ifindex)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("look up interface %d: %w", ifindex, err)
	}
	all, err = ns.nl.FilterList(l, parent)
	if err != nil && !isNotExist(err) {
		return nil, nil, nil, fmt.Errorf("list tc filters on %s: %w", l.Attrs().Name, err)
	}
	for _, f := range all {
		if bf, ok := f.(*netlink.BpfFilter); ok && strings.HasPrefix(bf.Name, legacyFilterPrefix) {
			ours = append(ours, bf)
			continue
		}
		others = append(others, f)
	}
	return all, ours, others, nil
}

// runsFirst reports whether f is the first of all, filters in the order
// the kernel dumps them, which is the order it runs them: by priority, and
// within one priority's list from its head.
func runsFirst(f *netlink.BpfFilter, all []netlink.Filter) bool {
	return len(all) > 0 && all[0].Attrs().Priority == f.Priority && all[0].Attrs().Handle == f.Handle
}

// legacyPlace picks a priority and handle that run our filter before every
// other filter on the hook (lower priorities run first). When priority 1
// is taken, our filter can still go first if what holds it is cls_bpf for
// every protocol: filters of one priority share one list, and the kernel
// puts a new filter at the head of that list. Otherwise nothing can run
// before that filter; blocker names it and ours takes the lowest free
// priority.
func legacyPlace(others []netlink.Filter) (prio uint16, handle uint32, blocker netlink.Filter) {
	var at1 []netlink.Filter
	used := map[uint16]bool{}
	for _, f := range others {
		used[f.Attrs().Priority] = true
		if f.Attrs().Priority == 1 {
			at1 = append(at1, f)
		}
	}
	if len(at1) == 0 {
		return 1, 1, nil
	}
	handle = 1
	for _, f := range at1 {
		if f.Type() != "bpf" || f.Attrs().Protocol != unix.ETH_P_ALL {
			blocker = f
		}
		handle = max(handle, f.Attrs().Handle+1)
	}
	if blocker == nil {
		return 1, handle, nil
	}
	prio = 2
	for used[prio] {
		prio++
	}
	return prio, 1, blocker
}

// describeFilter names a tc filter for an operator.
func describeFilter(f netlink.Filter) string {
	a := f.Attrs()
	s := fmt.Sprintf("%s filter priority %d handle %#x protocol %#04x", f.Type(), a.Priority, a.Handle, a.Protocol)
	if bf, ok := f.(*netlink.BpfFilter); ok {
		if bf.Name != "" {
			s += " name " + bf.Name
		}
		if bf.Id != 0 {
			s += fmt.Sprintf(" (%s)", describeProgram(ebpf.ProgramID(bf.Id)))
		}
	}
	return s
}

// front returns what runs before our filter now, "" when ours runs first.
func (f *legacyFilter) front() (string, error) {
	all, ours, _, err := listFilters(f.ns, f.filter.LinkIndex, f.filter.Parent)
	if err != nil {
		return "", err
	}
	if !slices.ContainsFunc(ours, func(o *netlink.BpfFilter) bool {
		return o.Priority == f.filter.Priority && o.Handle == f.filter.Handle
	}) {
		return "", fmt.Errorf("our cls_bpf filter (priority %d handle %#x) is gone", f.filter.Priority, f.filter.Handle)
	}
	if runsFirst(f.filter, all) {
		return "", nil
	}
	return describeFilter(all[0]), nil
}

func (f *legacyFilter) remove() error {
	err := f.ns.nl.FilterDel(f.filter)
	if err != nil && !isNotExist(err) && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("delete cls_bpf filter %s: %w", f.filter.Name, err)
	}
	// The clsact qdisc stays: other tools may have filters under it, and an
	// empty clsact costs nothing.
	return nil
}

// removeStaleFilters deletes our cls_bpf filters on both clsact parents.
func removeStaleFilters(ns *nsContext, ifindex int) {
	for _, parent := range []uint32{netlink.HANDLE_MIN_INGRESS, netlink.HANDLE_MIN_EGRESS} {
		_, ours, _, err := listFilters(ns, ifindex, parent)
		if err != nil {
			continue
		}
		for _, f := range ours {
			_ = ns.nl.FilterDel(f)
		}
	}
}
