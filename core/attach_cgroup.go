package core

import (
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// attachCgroup attaches prog to the cgroup directory, or, with pin_path,
// adopts the link a previous run pinned for the same cgroup and hook and
// switches it to prog atomically.
func (c *Collector) attachCgroup(h *hook, cgPath string, attach ebpf.AttachType, prog *ebpf.Program) (link.Link, error) {
	if c.pins != nil {
		h.pin = c.pins.path("cgroup-" + strings.ReplaceAll(h.kind, "/", "-"))
		var st unix.Stat_t
		if err := unix.Stat(cgPath, &st); err == nil {
			if l := adoptLink(h.pin, func(info *link.Info) bool {
				cg := info.Cgroup()
				// A cgroup's id is its directory's inode number on cgroup2.
				return cg != nil && cg.CgroupId == st.Ino && ebpf.AttachType(cg.AttachType) == attach
			}); l != nil {
				if err := l.Update(prog); err != nil {
					l.Close()
					return nil, fmt.Errorf("switch adopted link %s to the new program: %w", h.pin, err)
				}
				h.adopted = true
				return l, nil
			}
		}
	}
	l, err := link.AttachCgroup(link.CgroupOptions{Path: cgPath, Attach: attach, Program: prog})
	if err != nil {
		return nil, err
	}
	if h.pin != "" {
		if err := l.Pin(h.pin); err != nil {
			l.Close()
			return nil, fmt.Errorf("pin %s link at %s: %w", h.kind, h.pin, err)
		}
	}
	return l, nil
}
