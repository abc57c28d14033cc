package core

import (
	"fmt"
	"log/slog"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/pktstat-bpf/pktstat-bpf/bpf"
)

// walker reads a shared flow table for the drain without
// BPF_MAP_LOOKUP_BATCH: it runs bpf/walk.c's program once with
// BPF_PROG_TEST_RUN, which visits every entry under RCU with
// bpf_for_each_map_elem (no bucket locks) and writes its key and counters
// to an array that user space has mmapped, and reads them there in place.
// At 131,072 flows that read costs 0.34-0.47x of the batch lookups on this
// bench's host (bench/README.md, "Sixth pass"). It needs kernel 5.13; on
// older kernels newWalker fails and the table keeps its batch lookups.
//
// The walk visits each entry exactly once because nothing deletes or
// replaces entries of a flow table while it runs: the programs only insert
// with BPF_NOEXIST, and the drain deletes idle entries after its walk.
type walker[K comparable] struct {
	prog *ebpf.Program
	out  *ebpf.Map
	mem  []byte
	recs []walkRec[K]
	// frame is the smallest packet BPF_PROG_TEST_RUN accepts for a tc
	// program, which the walk programs ignore.
	frame []byte
}

// walkRec is one entry as the walk programs write it (struct flow_rec,
// struct cgroup_flow_rec).
// Val is an array of one so that the drain reads it as the one value of a
// shared table's entry.
type walkRec[K comparable] struct {
	Key K
	Val [1]counters
}

// walkNames names one walk program, the flow table it walks (replaced by
// the live table at load: walk_cgroup_flows walks kprobe mode's table too,
// whose key and counters are the same) and the array it writes to.
type walkNames struct{ prog, table, out string }

var (
	walkFlows       = walkNames{bpf.WalkProgWalkFlows, bpf.WalkMapFlows, bpf.WalkMapFlowsWalked}
	walkCgroupFlows = walkNames{bpf.WalkProgWalkCgroupFlows, bpf.WalkMapCgroupFlows, bpf.WalkMapCgroupFlowsWalked}
)

// batchOnly keeps every table on batch lookups; tests set it to run the
// same traffic through both readers.
var batchOnly bool

// useWalker gives t, a flow table, a walker when the kernel can run one.
func useWalker[K comparable](t *table[K], names walkNames, log *slog.Logger) {
	if t.ncpu != 1 || batchOnly {
		return
	}
	w, err := newWalker[K](t.m, names)
	if err != nil {
		log.Info("pktstat-bpf: the drain reads the flow table by batch lookups, which cost about twice as much at a full table (the walk needs kernel 5.13)",
			"table", t.m.String(), "reason", err.Error())
		return
	}
	t.walk = w
}

// newWalker loads the walk program of names for table, a shared flow
// table, and maps its output array. An error means the kernel cannot walk
// (before 5.13: no bpf_for_each_map_elem) and the caller keeps reading by
// batch lookups.
func newWalker[K comparable](table *ebpf.Map, names walkNames) (*walker[K], error) {
	spec, err := bpf.LoadWalk()
	if err != nil {
		return nil, fmt.Errorf("load walk object spec: %w", err)
	}
	// Only the one program and its two maps.
	for name := range spec.Programs {
		if name != names.prog {
			delete(spec.Programs, name)
		}
	}
	for name := range spec.Maps {
		if name != names.table && name != names.out {
			delete(spec.Maps, name)
		}
	}
	tableSpec, outSpec := spec.Maps[names.table], spec.Maps[names.out]
	var rec walkRec[K]
	if uintptr(outSpec.ValueSize) != unsafe.Sizeof(rec) || uintptr(tableSpec.KeySize) != unsafe.Offsetof(rec.Val) {
		return nil, fmt.Errorf("walk record of %s is %d bytes with a %d-byte key, Go's is %d with %d: regenerate bpf/",
			names.out, outSpec.ValueSize, tableSpec.KeySize, unsafe.Sizeof(rec), unsafe.Offsetof(rec.Val))
	}
	// The replacement has to match the spec: the size is max_flows, and
	// the flags are whatever the flow object gave the table.
	tableSpec.MaxEntries, tableSpec.Flags = table.MaxEntries(), table.Flags()
	outSpec.MaxEntries = table.MaxEntries()
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{
		MapReplacements: map[string]*ebpf.Map{names.table: table},
	})
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", names.prog, err)
	}
	// The collection's table is a duplicate of table's descriptor; the
	// program holds the table itself.
	_ = coll.Maps[names.table].Close()
	w := &walker[K]{prog: coll.Programs[names.prog], out: coll.Maps[names.out], frame: make([]byte, 14)}
	n := int(outSpec.MaxEntries)
	w.mem, err = unix.Mmap(w.out.FD(), 0, n*int(outSpec.ValueSize), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		w.close()
		return nil, fmt.Errorf("mmap %s: %w", names.out, err)
	}
	w.recs = unsafe.Slice((*walkRec[K])(unsafe.Pointer(&w.mem[0])), n)
	return w, nil
}

// walk runs the program and returns the entries it wrote, valid until the
// next walk.
func (w *walker[K]) walk() ([]walkRec[K], error) {
	n, err := w.prog.Run(&ebpf.RunOptions{Data: w.frame})
	if err != nil {
		return nil, fmt.Errorf("run %s: %w", w.prog.String(), err)
	}
	if int(n) > len(w.recs) {
		return nil, fmt.Errorf("%s wrote %d entries into %d slots", w.prog.String(), n, len(w.recs))
	}
	return w.recs[:n], nil
}

func (w *walker[K]) close() {
	if w == nil {
		return
	}
	if w.mem != nil {
		_ = unix.Munmap(w.mem)
		w.mem, w.recs = nil, nil
	}
	if w.prog != nil {
		_ = w.prog.Close()
	}
	if w.out != nil {
		_ = w.out.Close()
	}
}
