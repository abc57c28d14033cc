package core

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/pktstat-bpf/pktstat-bpf/bpf"
)

// Pinned state (config pin_path) lets counting go on while no agent runs:
//
//	<pin_path>/                  0700, flock'ed by the running instance
//	  <mode>-<layout>/           0700, one directory per map layout
//	    flows, flows_overflow, flows_overflow_total (cgroup_flows, sock_owners)
//	    tcx-ingress-<ifname>, tcx-egress-<ifname>, xdp-<ifname>, cgroup-<hook>
//
// The layout is a hash of the mode and of every pinned map's type, sizes and
// BTF key and value layout, so that a build whose maps differ never adopts
// maps it would misread: it removes the other layout's directory (which
// detaches its links) and says so once. Programs are not part of the layout:
// an adopted link is switched to the new program atomically, so every packet
// runs one of the two and lands in the same maps. Legacy cls_bpf filters
// are not pins; they outlive their process on their own and are replaced in
// place.

// pinStore is one capture's directory of pinned state.
type pinStore struct {
	root string   // pin_path
	dir  string   // root/<mode>-<layout>
	lock *os.File // holds an exclusive flock on root while the capture runs
	log  *slog.Logger
}

// openPins checks root (on bpffs, owned by us, private), locks it against a
// second instance, and removes pinned state of any other layout.
func openPins(root string, mode Mode, spec *ebpf.CollectionSpec, maps []string, log *slog.Logger) (*pinStore, error) {
	if err := ensurePrivateDir(root); err != nil {
		return nil, err
	}
	lock, err := os.Open(root)
	if err != nil {
		return nil, fmt.Errorf("pin_path %s: %w", root, err)
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("pin_path %s is in use by another running pktstat-bpf instance: give each instance its own pin_path", root)
		}
		return nil, fmt.Errorf("lock pin_path %s: %w", root, err)
	}
	p := &pinStore{root: root, lock: lock, log: log}
	p.dir = filepath.Join(root, string(mode)+"-"+layoutID(spec, maps))
	if err := checkOurs(root); err != nil {
		p.close()
		return nil, err
	}
	if err := p.check(); err != nil {
		p.close()
		return nil, err
	}
	entries, err := os.ReadDir(root)
	if err != nil {
		p.close()
		return nil, fmt.Errorf("read pin_path %s: %w", root, err)
	}
	for _, e := range entries {
		if e.Name() == filepath.Base(p.dir) {
			continue
		}
		old := filepath.Join(root, e.Name())
		log.Warn("pktstat-bpf: replacing pinned state of an incompatible build or mode (another map layout); its counts are not adopted",
			"pin_path", root, "found", e.Name(), "want", filepath.Base(p.dir))
		if err := os.RemoveAll(old); err != nil {
			p.close()
			return nil, fmt.Errorf("remove incompatible pinned state %s: %w", old, err)
		}
	}
	if err := mkdirPrivate(p.dir); err != nil {
		p.close()
		return nil, err
	}
	return p, nil
}

// path is where the object called name is pinned.
func (p *pinStore) path(name string) string { return filepath.Join(p.dir, name) }

// prune unpins the links of this layout that the current run did not
// attach or adopt (interfaces that are gone or no longer configured), which
// detaches them. Maps are kept.
func (p *pinStore) prune(maps []string, keep func(path string) bool) {
	entries, err := os.ReadDir(p.dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		path := p.path(e.Name())
		if slices.Contains(maps, e.Name()) || e.Name() == clockOffsetPin || keep(path) {
			continue
		}
		if err := os.Remove(path); err != nil {
			p.log.Warn("pktstat-bpf: could not remove a stale pinned link", "path", path, "err", err)
			continue
		}
		p.log.Info("pktstat-bpf: removed a pinned link no longer configured", "path", path)
	}
}

// clockOffsetPin holds the wall-minus-monotonic clock offset of the run
// that created the pinned maps, so that every later run converts the
// kernel's first-seen times to the same series start times.
const clockOffsetPin = "clock_offset"

// clockOffset returns the pinned clock offset, pinning now's if there is none.
func (p *pinStore) clockOffset(now int64) (int64, error) {
	m, err := ebpf.NewMapWithOptions(&ebpf.MapSpec{Name: clockOffsetPin, Type: ebpf.Array, KeySize: 4, ValueSize: 8,
		MaxEntries: 1, Pinning: ebpf.PinByName}, ebpf.MapOptions{PinPath: p.dir})
	if err != nil {
		return 0, fmt.Errorf("pin clock offset in %s: %w", p.dir, err)
	}
	defer m.Close()
	var v int64
	if err := m.Lookup(uint32(0), &v); err != nil {
		return 0, fmt.Errorf("read pinned clock offset: %w", err)
	}
	if v != 0 {
		return v, nil
	}
	if err := m.Put(uint32(0), now); err != nil {
		return 0, fmt.Errorf("write pinned clock offset: %w", err)
	}
	return now, nil
}

func (p *pinStore) close() {
	if p.lock != nil {
		p.lock.Close() // releases the flock
		p.lock = nil
	}
}

// layoutDirRe is the name of a layout directory: the only entries pktstat-bpf
// puts in pin_path itself.
var layoutDirRe = regexp.MustCompile(`^(tc|xdp|cgroup|kprobe)-[0-9a-f]{16}$`)

// checkOurs refuses a pin_path that holds anything pktstat-bpf did not put
// there: the state of an incompatible build is removed, and removing another
// tool's pins (pin_path = "/sys/fs/bpf" would list Cilium's) detaches its
// programs.
func checkOurs(root string) error {
	entries, err := os.ReadDir(root)
	if err != nil {
		return fmt.Errorf("read pin_path %s: %w", root, err)
	}
	var foreign []string
	for _, e := range entries {
		if !e.IsDir() || !layoutDirRe.MatchString(e.Name()) {
			foreign = append(foreign, e.Name())
		}
	}
	if len(foreign) > 0 {
		return fmt.Errorf("pin_path %s holds objects pktstat-bpf did not create (%s): give pktstat-bpf a directory of its own, "+
			"such as %s", root, strings.Join(foreign, ", "), filepath.Join(root, "pktstat-bpf"))
	}
	return nil
}

// check refuses pinned state that another user could have written or can
// read: flow data lists every peer of the host.
func (p *pinStore) check() error {
	return filepath.WalkDir(p.root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("pin_path %s: %w", path, err)
		}
		if path == p.root {
			return nil
		}
		fi, err := os.Lstat(path)
		if err != nil {
			return fmt.Errorf("pin_path %s: %w", path, err)
		}
		return checkPrivate(path, fi)
	})
}

// ensurePrivateDir creates root (and missing parents) mode 0700 on bpffs,
// or checks that the existing one is a private directory of ours there.
func ensurePrivateDir(root string) error {
	existing := root
	for {
		if _, err := os.Lstat(existing); err == nil {
			break
		}
		parent := filepath.Dir(existing)
		if parent == existing {
			break
		}
		existing = parent
	}
	var st unix.Statfs_t
	if err := unix.Statfs(existing, &st); err != nil {
		return fmt.Errorf("pin_path %s: statfs %s: %w", root, existing, err)
	}
	if uint32(st.Type) != unix.BPF_FS_MAGIC {
		return fmt.Errorf("pin_path %s is not on a bpffs mount (%s is on file system type %#x): mount one with "+
			"`mount -t bpf bpf /sys/fs/bpf` (in Kubernetes, mount the host's /sys/fs/bpf) or choose a directory under an existing bpffs mount",
			root, existing, st.Type)
	}
	if existing == root {
		fi, err := os.Lstat(root)
		if err != nil {
			return fmt.Errorf("pin_path %s: %w", root, err)
		}
		return checkPrivate(root, fi)
	}
	rel, _ := filepath.Rel(existing, root)
	cur := existing
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		cur = filepath.Join(cur, part)
		if err := mkdirPrivate(cur); err != nil {
			return err
		}
	}
	return nil
}

func mkdirPrivate(dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create pin_path directory %s: %w", dir, err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("pin_path %s: %w", dir, err)
	}
	if fi.IsDir() && fi.Mode().Perm() != 0o700 {
		// The umask may have narrowed it already; it must never be wider.
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("chmod pin_path directory %s: %w", dir, err)
		}
		fi, _ = os.Lstat(dir)
	}
	return checkPrivate(dir, fi)
}

// checkPrivate accepts a directory or pin owned by the effective user with
// no group or other permissions.
func checkPrivate(path string, fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("pin_path %s: no owner information", path)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return fmt.Errorf("pin_path %s is a symbolic link: refusing to follow it; point pin_path at the real directory", path)
	}
	uid := uint32(os.Geteuid())
	if st.Uid != uid || fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("pin_path %s is owned by uid %d with mode %#o: pinned flow data must be private to the agent's user "+
			"(uid %d, directories 0700, pins 0600); refusing to adopt it: fix the owner and mode, or remove it and let the agent create it",
			path, st.Uid, fi.Mode().Perm(), uid)
	}
	return nil
}

// layoutID hashes what makes pinned maps readable by this build.
func layoutID(spec *ebpf.CollectionSpec, maps []string) string {
	h := sha256.New()
	names := slices.Clone(maps)
	sort.Strings(names)
	for _, name := range names {
		m := spec.Maps[name]
		fmt.Fprintf(h, "%s %s %d %d %d %d key{%s} value{%s}\n", name, m.Type, m.KeySize, m.ValueSize, m.MaxEntries, m.Flags,
			describeLayout(m.Key), describeLayout(m.Value))
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// describeLayout renders a BTF type's memory layout: member names, offsets and sizes.
func describeLayout(t btf.Type) string {
	if t == nil {
		return ""
	}
	var b strings.Builder
	var walk func(t btf.Type, depth int)
	walk = func(t btf.Type, depth int) {
		t = btf.UnderlyingType(t)
		size, _ := btf.Sizeof(t)
		fmt.Fprintf(&b, "%T:%d", t, size)
		if depth > 4 {
			return
		}
		switch v := t.(type) {
		case *btf.Struct:
			for _, m := range v.Members {
				fmt.Fprintf(&b, " %s@%d(", m.Name, m.Offset)
				walk(m.Type, depth+1)
				b.WriteString(")")
			}
		case *btf.Union:
			for _, m := range v.Members {
				fmt.Fprintf(&b, " %s@%d(", m.Name, m.Offset)
				walk(m.Type, depth+1)
				b.WriteString(")")
			}
		case *btf.Array:
			fmt.Fprintf(&b, "[%d](", v.Nelems)
			walk(v.Type, depth+1)
			b.WriteString(")")
		}
	}
	walk(t, 0)
	return b.String()
}

// configMaps are maps the agent fills from its configuration at each start
// (the filters); they are never pinned, so a changed configuration always
// takes effect, and a restart with other filters adopts the counts.
var configMaps = map[string]bool{bpf.FlowMapFilterCidrs: true, bpf.FlowMapFilterProtos: true, bpf.FlowMapFilterPorts: true}

// pinnedMaps are the maps of spec that pin_path keeps: every map that holds
// counts or socket owners, none of the configuration or internal ones.
func pinnedMaps(spec *ebpf.CollectionSpec) []string {
	var out []string
	for name := range spec.Maps {
		if strings.HasPrefix(name, ".") || configMaps[name] {
			continue
		}
		out = append(out, name)
	}
	return out
}

// pinMaps marks the named maps of spec to be pinned in, or adopted from,
// the store's directory.
func pinMaps(spec *ebpf.CollectionSpec, maps []string) {
	for _, name := range maps {
		spec.Maps[name].Pinning = ebpf.PinByName
	}
}

// RemovePinned removes for good what pin_path keeps in the kernel for cfg:
// every pinned map and link under cfg.PinPath (which detaches the links)
// and, in tc mode, the cls_bpf filters of kernels without TCX on the
// configured interfaces. It refuses while an instance runs with that
// pin_path. A pin_path that does not exist is nothing to remove.
func RemovePinned(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return fmt.Errorf("pktstat-bpf config: %w", err)
	}
	cfg = cfg.withDefaults()
	if cfg.PinPath == "" {
		return errors.New("remove pinned state: pin_path is not set")
	}
	if _, err := os.Lstat(cfg.PinPath); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := ensurePrivateDir(cfg.PinPath); err != nil {
		return err
	}
	if err := checkOurs(cfg.PinPath); err != nil {
		return err
	}
	lock, err := os.Open(cfg.PinPath)
	if err != nil {
		return fmt.Errorf("pin_path %s: %w", cfg.PinPath, err)
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fmt.Errorf("pin_path %s is in use by a running pktstat-bpf instance: stop it first", cfg.PinPath)
	}
	var errs []error
	if cfg.Mode == ModeTC {
		errs = append(errs, removeLegacyFilters(cfg))
	}
	if err := os.RemoveAll(cfg.PinPath); err != nil {
		errs = append(errs, fmt.Errorf("remove pin_path %s: %w", cfg.PinPath, err))
	}
	return errors.Join(errs...)
}

// removeLegacyFilters deletes our cls_bpf filters on the interfaces cfg
// names (they are not pins: they hold the pinned maps on their own).
func removeLegacyFilters(cfg Config) error {
	ns, err := openNS(cfg.NetNS)
	if err != nil {
		return err
	}
	defer ns.close()
	patterns := cfg.Interfaces
	if len(patterns) == 0 {
		name, err := defaultRouteInterface(ns)
		if err != nil {
			return err
		}
		patterns = []string{name}
	}
	s := &ifaceSet{patterns: patterns}
	links, err := ns.nl.LinkList()
	if err != nil {
		return fmt.Errorf("list interfaces in %s: %w", ns.name(), err)
	}
	for _, l := range links {
		if !s.matches(l.Attrs().Name) {
			continue
		}
		removeStaleFilters(ns, l.Attrs().Index)
	}
	return nil
}
