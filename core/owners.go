package core

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/pktstat-bpf/pktstat-bpf/bpf"
)

// seedSocketOwners attributes sockets that existed before start: sock_create
// only sees new ones. It matches the inodes of sock_diag's TCP and UDP
// sockets (which carry their cookies) against /proc/*/fd of the processes
// in the monitored cgroup, and stores cookie -> owner in the kernel map. It
// sees the sockets of the collector's own network namespace.
func seedSocketOwners(owners *ebpf.Map, cgroupRel string) (int, error) {
	byInode := procSocketOwners(cgroupRel)
	if len(byInode) == 0 {
		return 0, nil
	}
	var socks []*netlink.Socket
	for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
		if s, err := netlink.SocketDiagTCP(fam); err == nil {
			socks = append(socks, s...)
		}
		if s, err := netlink.SocketDiagUDP(fam); err == nil {
			socks = append(socks, s...)
		}
	}
	n := 0
	for _, s := range socks {
		owner, ok := byInode[uint64(s.INode)]
		if !ok {
			continue
		}
		cookie := uint64(s.ID.Cookie[0]) | uint64(s.ID.Cookie[1])<<32
		if err := owners.Update(&cookie, &owner, ebpf.UpdateNoExist); err == nil {
			n++
		}
	}
	return n, nil
}

// procSocketOwners maps socket inodes to the process holding them, for
// processes whose cgroup is cgroupRel or below it.
func procSocketOwners(cgroupRel string) map[uint64]bpf.CgroupSockOwner {
	out := map[uint64]bpf.CgroupSockOwner{}
	pids, _ := filepath.Glob("/proc/[0-9]*")
	for _, dir := range pids {
		pid, err := strconv.Atoi(filepath.Base(dir))
		if err != nil || !inCgroup(dir, cgroupRel) {
			continue
		}
		comm, err := os.ReadFile(dir + "/comm")
		if err != nil {
			continue
		}
		var owner bpf.CgroupSockOwner
		owner.Pid = uint32(pid)
		for i, c := range bytes.TrimSpace(comm) {
			if i == len(owner.Comm)-1 {
				break
			}
			owner.Comm[i] = int8(c)
		}
		fds, _ := os.ReadDir(dir + "/fd")
		for _, fd := range fds {
			target, err := os.Readlink(dir + "/fd/" + fd.Name())
			if err != nil || !strings.HasPrefix(target, "socket:[") {
				continue
			}
			ino, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(target, "socket:["), "]"), 10, 64)
			if err == nil {
				if _, seen := out[ino]; !seen {
					out[ino] = owner
				}
			}
		}
	}
	return out
}

// inCgroup reports whether the process at /proc/PID is in cgroupRel (a path
// below the cgroup2 mount) or a descendant of it.
func inCgroup(procDir, cgroupRel string) bool {
	if cgroupRel == "/" || cgroupRel == "" {
		return true
	}
	f, err := os.Open(procDir + "/cgroup")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if p, ok := strings.CutPrefix(sc.Text(), "0::"); ok {
			return p == cgroupRel || strings.HasPrefix(p, cgroupRel+"/")
		}
	}
	return false
}

func commString(c [16]int8) string {
	b := make([]byte, 0, 16)
	for _, v := range c {
		if v == 0 {
			break
		}
		b = append(b, byte(v))
	}
	return string(b)
}
