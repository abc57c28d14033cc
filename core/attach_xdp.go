package core

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// attachXDP attaches the XDP program in the configured mode. auto lets the
// kernel choose native when the driver has it, generic otherwise.
func attachXDP(ns *nsContext, prog *ebpf.Program, ifindex int, name, mode string) ([]*hook, error) {
	var flags link.XDPAttachFlags
	switch mode {
	case XDPGeneric:
		flags = link.XDPGenericMode
	case XDPNative:
		flags = link.XDPDriverMode
	case XDPOffload:
		flags = link.XDPOffloadMode
	}
	var l link.Link
	err := ns.do(func() (err error) {
		l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: flags})
		return err
	})
	switch {
	case err == nil:
		return []*hook{{target: name, kind: "xdp/" + mode, link: l}}, nil
	case errors.Is(err, ebpf.ErrNotSupported):
		return nil, fmt.Errorf("attach xdp to %s: %w: XDP links need Linux 5.9; use mode = \"tc\"", name, err)
	case mode == XDPNative && (errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL)):
		return nil, fmt.Errorf("attach xdp/native to %s: the driver has no native XDP (%w): use xdp_mode = \"auto\" or \"generic\"", name, err)
	case mode == XDPOffload:
		return nil, fmt.Errorf("attach xdp/offload to %s: %w: offload needs a SmartNIC driver that can also offload per-CPU hash maps; use xdp_mode = \"native\" or \"auto\"", name, err)
	case errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EEXIST):
		return nil, fmt.Errorf("attach xdp to %s: another XDP program is attached in a way that cannot be shared (%w): use mode = \"tc\"", name, err)
	}
	return nil, needPrivilege("attach xdp to "+name, err)
}
