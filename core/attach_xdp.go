package core

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// attachXDP attaches the XDP program in the configured mode. auto lets the
// kernel choose native when the driver has it, generic otherwise. With
// pins, the link a previous run pinned for this interface is adopted.
func attachXDP(ns *nsContext, prog *ebpf.Program, ifindex int, name, mode string, pins *pinStore) ([]*hook, error) {
	var flags link.XDPAttachFlags
	switch mode {
	case XDPGeneric:
		flags = link.XDPGenericMode
	case XDPNative:
		flags = link.XDPDriverMode
	case XDPOffload:
		flags = link.XDPOffloadMode
	}
	h := &hook{target: name, kind: "xdp/" + mode}
	if pins != nil {
		h.pin = pins.path("xdp-" + name)
		if l := adoptLink(h.pin, func(info *link.Info) bool {
			x := info.XDP()
			return x != nil && int(x.Ifindex) == ifindex && (mode == XDPAuto || xdpAttachMode(ns, ifindex) == mode)
		}); l != nil {
			if err := l.Update(prog); err != nil {
				l.Close()
				return nil, fmt.Errorf("switch adopted xdp link %s to the new program: %w", h.pin, err)
			}
			h.link, h.adopted = l, true
			return []*hook{h}, nil
		}
	}
	var l link.Link
	err := ns.do(func() (err error) {
		l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: flags})
		return err
	})
	switch {
	case err == nil:
		if h.pin != "" {
			if err := l.Pin(h.pin); err != nil {
				l.Close()
				return nil, fmt.Errorf("pin xdp link at %s: %w", h.pin, err)
			}
		}
		h.link = l
		return []*hook{h}, nil
	case errors.Is(err, ebpf.ErrNotSupported):
		return nil, fmt.Errorf("attach xdp to %s: %w: XDP links need Linux 5.9; use mode = \"tc\"", name, err)
	case mode == XDPNative && (errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL)):
		return nil, fmt.Errorf("attach xdp/native to %s: the driver has no native XDP (%w): use xdp_mode = \"auto\" or \"generic\"", name, err)
	case mode == XDPOffload:
		return nil, fmt.Errorf("attach xdp/offload to %s: %w: offload needs a SmartNIC driver that can offload the program and its maps (per-CPU ones included); use xdp_mode = \"native\" or \"auto\"", name, err)
	case errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EEXIST):
		return nil, fmt.Errorf("attach xdp to %s: %s already holds the interface's XDP hook, which takes one program (%w): "+
			"use mode = \"tc\", whose TCX hooks run several programs and ours first", name, xdpHolder(ns, ifindex), err)
	}
	return nil, needPrivilege("attach xdp to "+name, err)
}

// xdpHolder names the XDP program attached to ifindex.
func xdpHolder(ns *nsContext, ifindex int) string {
	l, err := ns.nl.LinkByIndex(ifindex)
	if err != nil || l.Attrs().Xdp == nil || l.Attrs().Xdp.ProgId == 0 {
		return "another program"
	}
	return describeProgram(ebpf.ProgramID(l.Attrs().Xdp.ProgId))
}

// xdpAttachMode is the mode ("generic", "native", "offload") the XDP
// program on ifindex runs in, "" if unknown.
func xdpAttachMode(ns *nsContext, ifindex int) string {
	l, err := ns.nl.LinkByIndex(ifindex)
	if err != nil || l.Attrs().Xdp == nil {
		return ""
	}
	switch l.Attrs().Xdp.AttachMode {
	case 1: // XDP_ATTACHED_DRV
		return XDPNative
	case 2: // XDP_ATTACHED_SKB
		return XDPGeneric
	case 3: // XDP_ATTACHED_HW
		return XDPOffload
	}
	return ""
}
