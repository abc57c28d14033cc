package core

import (
	"errors"

	"github.com/cilium/ebpf/link"
)

// hook is one attached program: a BPF link, or a legacy TC filter.
type hook struct {
	target string // interface name or cgroup path
	kind   string // "tcx/ingress", "tc/egress", "xdp/generic", "cgroup_skb/ingress", ...
	link   link.Link
	legacy *legacyFilter
}

func (h *hook) close() error {
	var errs []error
	if h.link != nil {
		errs = append(errs, h.link.Close())
	}
	if h.legacy != nil {
		errs = append(errs, h.legacy.remove())
	}
	return errors.Join(errs...)
}

func closeHooks(hs []*hook) error {
	var errs []error
	for _, h := range hs {
		errs = append(errs, h.close())
	}
	return errors.Join(errs...)
}
