package core

import (
	"fmt"
	"os"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// maxNameCache bounds the caches below; past it they start over, which
// also forgets pids that were reused by a process in another namespace.
const maxNameCache = 1 << 16

// ifaceNames names interfaces in cgroup mode. A cgroup sees sockets of every
// network namespace, and an ifindex only means something inside its own, so
// names are looked up in the namespace of the socket's owning process.
// Flows without a known owner get no name rather than a wrong one.
type ifaceNames struct {
	pidNS map[uint32]string // pid -> namespace id ("net:[inode]")
	names map[nsIfindex]string
}

type nsIfindex struct {
	ns      string
	ifindex uint32
}

func (r *ifaceNames) name(pid, ifindex uint32) string {
	if pid == 0 || ifindex == 0 {
		return ""
	}
	if len(r.pidNS) > maxNameCache || len(r.names) > maxNameCache || r.pidNS == nil {
		r.pidNS, r.names = map[uint32]string{}, map[nsIfindex]string{}
	}
	nsPath := fmt.Sprintf("/proc/%d/ns/net", pid)
	id, ok := r.pidNS[pid]
	if !ok {
		var err error
		if id, err = os.Readlink(nsPath); err != nil {
			return "" // the process is gone
		}
		r.pidNS[pid] = id
	}
	key := nsIfindex{id, ifindex}
	if name, ok := r.names[key]; ok {
		return name
	}
	name := lookupIfname(nsPath, int(ifindex))
	r.names[key] = name
	return name
}

func lookupIfname(nsPath string, ifindex int) string {
	h, err := netns.GetFromPath(nsPath)
	if err != nil {
		return ""
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		return ""
	}
	defer nh.Close()
	l, err := nh.LinkByIndex(ifindex)
	if err != nil {
		return ""
	}
	return l.Attrs().Name
}
