package pktstat_bpf

import (
	"errors"
	"fmt"

	"github.com/pktstat-bpf/pktstat-bpf/core"
)

// optionalTags says which opt-in tags each flow metric carries, and whether
// TCP egress series carry the retransmits field (kprobe mode counts them).
type optionalTags struct {
	vlan, flags, pid, comm, cgroup bool
	retransmits                    bool
}

// parseOptionalTags checks the optional_tags values against the mode: pid,
// comm and cgroup exist only where the kernel sees the socket's owner.
func parseOptionalTags(names []string, mode core.Mode) (optionalTags, error) {
	var t optionalTags
	var errs []error
	seen := make(map[string]bool, len(names))
	for _, name := range names {
		if seen[name] {
			errs = append(errs, fmt.Errorf("optional_tags: %q is listed twice", name))
			continue
		}
		seen[name] = true
		switch name {
		case "vlan":
			t.vlan = true
		case "flags":
			t.flags = true
		case "pid", "comm", "cgroup":
			if mode != core.ModeCgroup && mode != core.ModeKprobe {
				errs = append(errs, fmt.Errorf("optional_tags: %q needs mode \"cgroup\" or \"kprobe\", but mode is %q: remove it or change mode",
					name, modeName(mode)))
				continue
			}
			t.pid = t.pid || name == "pid"
			t.comm = t.comm || name == "comm"
			t.cgroup = t.cgroup || name == "cgroup"
		default:
			errs = append(errs, fmt.Errorf("optional_tags: unknown tag %q: use any of %q", name, allOptionalTags))
		}
	}
	t.retransmits = mode == core.ModeKprobe
	return t, errors.Join(errs...)
}

var allOptionalTags = []string{"vlan", "flags", "pid", "comm", "cgroup"}
