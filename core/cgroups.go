package core

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// cgroup2Mount finds where cgroup v2 is mounted: /sys/fs/cgroup on unified
// hosts, often /sys/fs/cgroup/unified on hybrid ones.
func cgroup2Mount() (string, error) {
	f, err := os.Open("/proc/mounts")
	if err != nil {
		return "", fmt.Errorf("read /proc/mounts: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 3 && fields[2] == "cgroup2" {
			return fields[1], nil
		}
	}
	return "", fmt.Errorf("cgroup v2 is not mounted (no cgroup2 line in /proc/mounts): mount it (mount -t cgroup2 none /sys/fs/cgroup) or use mode = \"tc\"")
}

// cgroupResolver maps cgroup ids (the inode numbers of cgroup2
// directories) to paths below the mount, rescanning on a miss at most
// once per rescanEvery so that unknown ids cannot make every drain walk
// the tree.
type cgroupResolver struct {
	root string

	mu       sync.Mutex
	paths    map[uint64]string
	lastScan time.Time
}

const rescanEvery = 10 * time.Second

func (r *cgroupResolver) path(id uint64) string {
	if id == 0 {
		return ""
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if p, ok := r.paths[id]; ok {
		return p
	}
	if time.Since(r.lastScan) < rescanEvery {
		return ""
	}
	r.scan()
	return r.paths[id]
}

func (r *cgroupResolver) scan() {
	r.lastScan = time.Now()
	paths := map[uint64]string{}
	_ = filepath.WalkDir(r.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok {
			rel := strings.TrimPrefix(p, r.root)
			if rel == "" {
				rel = "/"
			}
			paths[st.Ino] = rel
		}
		return nil
	})
	r.paths = paths
}
