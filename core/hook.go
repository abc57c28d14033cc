package core

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// hook is one attached program: a BPF link, or a legacy TC filter.
type hook struct {
	target string // interface name or cgroup path
	kind   string // "tcx/ingress", "tc/egress", "xdp/generic", "cgroup_skb/ingress", ...
	link   link.Link
	legacy *legacyFilter
	// pin is the bpffs path the link is pinned at (pin_path), "" if none.
	pin string
	// adopted is set when the link was found pinned by a previous run.
	adopted bool

	// For the chain-position check of TC hooks (chain.go).
	ifindex int
	attach  ebpf.AttachType
	progID  ebpf.ProgramID
	// inFront names what ran before our program at the last check, "" when
	// ours ran first.
	inFront string
}

// close releases the hook. A pinned hook stays in the kernel, still
// counting, unless unpin is set; so does a pinned legacy filter.
func (h *hook) close(unpin bool) error {
	var errs []error
	if h.link != nil {
		if h.pin != "" && unpin {
			if err := h.link.Unpin(); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("unpin %s: %w", h.pin, err))
			}
		}
		errs = append(errs, h.link.Close())
	}
	if h.legacy != nil && (!h.legacy.pinned || unpin) {
		errs = append(errs, h.legacy.remove())
	}
	return errors.Join(errs...)
}

func closeHooks(hs []*hook, unpin bool) error {
	var errs []error
	for _, h := range hs {
		errs = append(errs, h.close(unpin))
	}
	return errors.Join(errs...)
}

// programID returns the kernel's id of prog, which chain queries report.
func programID(prog *ebpf.Program) (ebpf.ProgramID, error) {
	info, err := prog.Info()
	if err != nil {
		return 0, fmt.Errorf("program info of %s: %w", prog, err)
	}
	id, ok := info.ID()
	if !ok {
		return 0, fmt.Errorf("program info of %s: the kernel reports no id", prog)
	}
	return id, nil
}

// describeProgram names a program for an operator: id, name and type.
func describeProgram(id ebpf.ProgramID) string {
	p, err := ebpf.NewProgramFromID(id)
	if err != nil {
		return fmt.Sprintf("program id %d", id)
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil {
		return fmt.Sprintf("program id %d", id)
	}
	name := info.Name
	if name == "" {
		name = "(no name)"
	}
	return fmt.Sprintf("program id %d name %s type %s", id, name, info.Type)
}
