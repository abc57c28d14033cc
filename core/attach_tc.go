package core

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// legacyFilterPrefix names our cls_bpf filters so that a later run can find
// and remove the ones a killed predecessor left behind (they outlive it).
const legacyFilterPrefix = "pktstat-bpf"

// attachTC attaches ingress and egress, with TCX where the kernel has it
// (6.6+) and a clsact qdisc with direct-action cls_bpf filters otherwise.
func attachTC(ns *nsContext, ingress, egress *ebpf.Program, ifindex int, name string, legacyOnly bool) ([]*hook, error) {
	var hooks []*hook
	for _, dir := range []struct {
		prog   *ebpf.Program
		attach ebpf.AttachType
		suffix string
	}{
		{ingress, ebpf.AttachTCXIngress, "ingress"},
		{egress, ebpf.AttachTCXEgress, "egress"},
	} {
		var l link.Link
		err := fmt.Errorf("legacy tc forced: %w", ebpf.ErrNotSupported)
		if !legacyOnly {
			err = ns.do(func() (err error) {
				l, err = link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: dir.prog, Attach: dir.attach})
				return err
			})
		}
		if err == nil {
			hooks = append(hooks, &hook{target: name, kind: "tcx/" + dir.suffix, link: l})
			continue
		}
		if !errors.Is(err, ebpf.ErrNotSupported) {
			_ = closeHooks(hooks)
			return nil, needPrivilege(fmt.Sprintf("attach tcx/%s to %s", dir.suffix, name), err)
		}
		f, lerr := attachLegacyTC(ns, dir.prog, ifindex, name, dir.suffix == "ingress")
		if lerr != nil {
			_ = closeHooks(hooks)
			return nil, fmt.Errorf("attach tc/%s to %s (no TCX on this kernel, legacy clsact fallback): %w", dir.suffix, name, lerr)
		}
		hooks = append(hooks, &hook{target: name, kind: "tc/" + dir.suffix, legacy: f})
	}
	return hooks, nil
}

// legacyFilter is a cls_bpf filter under a clsact qdisc.
type legacyFilter struct {
	ns     *nsContext
	filter *netlink.BpfFilter
}

func attachLegacyTC(ns *nsContext, prog *ebpf.Program, ifindex int, name string, ingress bool) (*legacyFilter, error) {
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
	removeStaleFilters(ns, ifindex, parent)
	f := &netlink.BpfFilter{
		FilterAttrs: netlink.FilterAttrs{
			LinkIndex: ifindex,
			Parent:    parent,
			Handle:    1,
			Protocol:  unix.ETH_P_ALL,
			// Priority 1 runs first; the program always passes the
			// packet on (TC_ACT_UNSPEC), so later filters still see it.
			Priority: 1,
		},
		Fd:           prog.FD(),
		Name:         fname,
		DirectAction: true,
	}
	if err := ns.nl.FilterAdd(f); err != nil {
		return nil, needPrivilege("add cls_bpf filter on "+name, err)
	}
	return &legacyFilter{ns: ns, filter: f}, nil
}

// removeStaleFilters deletes filters a previous, killed instance left.
func removeStaleFilters(ns *nsContext, ifindex int, parent uint32) {
	l, err := ns.nl.LinkByIndex(ifindex)
	if err != nil {
		return
	}
	filters, err := ns.nl.FilterList(l, parent)
	if err != nil {
		return
	}
	for _, f := range filters {
		if bf, ok := f.(*netlink.BpfFilter); ok && strings.HasPrefix(bf.Name, legacyFilterPrefix) {
			_ = ns.nl.FilterDel(bf)
		}
	}
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
