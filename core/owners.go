package core

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/pktstat-bpf/pktstat-bpf/bpf"
)

// seedSocketOwners attributes sockets that existed before start: sock_create
// only sees new ones. For every network namespace that a process in the
// monitored cgroup lives in, it lists TCP and UDP sockets with sock_diag
// (which gives their cookies and inodes), matches the inodes against the
// processes' /proc/PID/fd, and stores cookie -> owner in the kernel map.
func seedSocketOwners(owners *ebpf.Map, cgroupRel string) (int, error) {
	procs := procSocketOwners(cgroupRel)
	var errs []error
	n := 0
	for nsPath, byInode := range procs {
		// Partial results still attribute what they can.
		socks, err := diagSockets(nsPath)
		if err != nil {
			errs = append(errs, err)
		}
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
	}
	return n, errors.Join(errs...)
}

// diagSockets lists the TCP and UDP sockets of the network namespace at
// nsPath. The sock_diag socket must be opened on a thread inside it.
func diagSockets(nsPath string) ([]*netlink.Socket, error) {
	ns := &nsContext{path: nsPath}
	h, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", nsPath, err)
	}
	defer h.Close()
	ns.handle = h
	var socks []*netlink.Socket
	err = ns.do(func() error {
		var errs []error
		for _, fam := range []uint8{unix.AF_INET, unix.AF_INET6} {
			for _, dump := range []struct {
				proto string
				fn    func(uint8) ([]*netlink.Socket, error)
			}{{"tcp", netlink.SocketDiagTCP}, {"udp", netlink.SocketDiagUDP}} {
				s, err := dump.fn(fam)
				if err != nil {
					// Typically the inet_diag, tcp_diag or udp_diag module is missing.
					errs = append(errs, fmt.Errorf("sock_diag %s (family %d) in %s: %w", dump.proto, fam, nsPath, err))
					continue
				}
				socks = append(socks, s...)
			}
		}
		return errors.Join(errs...)
	})
	return socks, err
}

// procSocketOwners maps, per network namespace (a /proc/PID/ns/net path of
// one process in it), socket inodes to the process holding them, for
// processes whose cgroup is cgroupRel or below it.
func procSocketOwners(cgroupRel string) map[string]map[uint64]bpf.CgroupSockOwner {
	out := map[string]map[uint64]bpf.CgroupSockOwner{}
	nsByInode := map[string]string{} // "net:[ino]" -> first /proc/PID/ns/net seen
	pids, _ := filepath.Glob("/proc/[0-9]*")
	for _, dir := range pids {
		pid, err := strconv.Atoi(filepath.Base(dir))
		if err != nil || !inCgroup(dir, cgroupRel) {
			continue
		}
		nsID, err := os.Readlink(dir + "/ns/net")
		if err != nil {
			continue
		}
		nsPath, ok := nsByInode[nsID]
		if !ok {
			nsPath = dir + "/ns/net"
			nsByInode[nsID] = nsPath
			out[nsPath] = map[uint64]bpf.CgroupSockOwner{}
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
				if _, seen := out[nsPath][ino]; !seen {
					out[nsPath][ino] = owner
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
