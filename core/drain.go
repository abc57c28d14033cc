package core

import (
	"errors"
	"fmt"
	"hash/maphash"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/pktstat-bpf/pktstat-bpf/bpf"
)

// counters is the kernel's value layout (struct flow_counters), one per
// flow in the shared tables and one per CPU in the per-CPU ones; the
// cgroup object's generated type has the same layout.
type counters = bpf.FlowFlowCounters

// batchSize is how many entries one BPF_MAP_LOOKUP_BATCH call returns.
const batchSize = 4096

// flowState is what user space remembers of one kernel entry.
type flowState struct {
	kernelStart uint64 // first_seen_ns of the kernel entry: a new value means a new entry
	packets     uint64 // cumulative, as of the last batch read
	bytes       uint64
	reported    struct { // as of the last emit, for deltas
		packets, bytes uint64
		tcp            TCPFlagCounts // set after the emit: emit takes its delta from it
	}
	tcp      TCPFlagCounts // cumulative, as of the last batch read
	tcpRaw   [4]uint32     // the kernel's wrapping 32-bit sums at that read
	appProto uint8         // enum app_proto, once decided
	// start is the flow's start as Unix nanoseconds, lastSeen the last
	// drain at which the counters grew. Integers, not time.Time (whose
	// *Location is a pointer): a flowState holds no pointer, so a table's
	// slabs of them are not scanned by the garbage collector.
	start    int64
	lastSeen stamp
	gen      uint64 // drain generation that last saw the entry
	// id is unique to this state's life (0 once it is dropped or
	// forgotten), so that a hint naming it can be checked without a lookup.
	id uint64
}

// stamp is one drain's time: its wall clock for records, and its
// monotonic clock (time since procStart) for idle timeouts, which a wall
// clock step must not trigger.
type stamp struct{ wall, mono int64 }

// procStart is the origin of stamp.mono.
var procStart = time.Now()

func stampOf(t time.Time) stamp { return stamp{wall: t.UnixNano(), mono: int64(t.Sub(procStart))} }

// since is how long before now the stamp was taken, by the monotonic clock
// when both were taken from times with a monotonic reading (a drain's now
// always has one).
func (s stamp) since(now stamp) time.Duration { return time.Duration(now.mono - s.mono) }

func (s stamp) time() time.Time { return time.Unix(0, s.wall) }

// table drains one flow map keyed by K: a shared table (one value per
// entry) or a per-CPU one (one per possible CPU, summed).
type table[K comparable] struct {
	m    *ebpf.Map
	ncpu int
	keys []K
	vals []counters
	gen  uint64

	// chunks hold the flows, each a slot of its key and state; a slot
	// never moves, so its index names the flow for its life. The slots
	// hold no pointer (TestFlowStateHoldsNoPointers), so the garbage
	// collector does not scan a full table's; a new flow takes a slot from
	// free, or the next one of the last chunk.
	chunks [][]slot[K]
	n      int32 // slots handed out, free ones included
	free   []int32
	// index finds a key's slot by the key's hash: a map of 12-byte
	// entries instead of one holding every key again. Slots of keys with
	// one hash are chained by slot.next. flows counts the slots in use.
	seed  maphash.Seed
	index map[uint64]int32
	flows int
	// hashOf, when set, replaces the key's hash: tests force collisions.
	hashOf func(*K) uint64
	// dropped lists this drain's slots whose kernel entry was replaced
	// (update); they are freed when the drain ends, as seen may hold them.
	dropped []int32

	// seen lists this drain's kernel entries by slot, in walk order, so the
	// emit pass walks a slice instead of every slot. Reused across drains.
	seen []int32
	// prev is the previous drain's seen: the kernel returns a table's
	// entries in the same order from drain to drain, so the entry at a
	// position is most often the one that was there before, and its slot
	// is found without hashing the key.
	prev   []int32
	nextID uint64
	// reserve, if set, is told how many flows are about to be emitted.
	reserve func(n int)
	// walk, if set, reads the table instead of batch lookups (walk.go).
	walk *walker[K]
}

// slot is one flow of a table: its kernel key and what user space
// remembers of it. A free slot has state.id 0.
type slot[K comparable] struct {
	state flowState
	key   K
	next  int32 // the next slot whose key has the same hash, or -1
}

// chunkShift sets the slots per chunk (1,024): one allocation per 1,024 new
// flows, and a table that grows adds chunks instead of copying a slice.
const chunkShift = 10

func newTable[K comparable](m *ebpf.Map) (*table[K], error) {
	ncpu, err := valueLanes(m)
	if err != nil {
		return nil, err
	}
	return &table[K]{
		m:     m,
		ncpu:  ncpu,
		keys:  make([]K, batchSize),
		vals:  make([]counters, batchSize*ncpu),
		seed:  maphash.MakeSeed(),
		index: map[uint64]int32{},
	}, nil
}

// valueLanes is how many values one entry of m has: one per possible CPU
// in a per-CPU map, one in a shared one (the flow and retransmit tables,
// whose counters every CPU adds to atomically; bpf/maps.h, bump_shared).
func valueLanes(m *ebpf.Map) (int, error) {
	switch m.Type() {
	case ebpf.PerCPUHash, ebpf.PerCPUArray, ebpf.LRUCPUHash:
		ncpu, err := ebpf.PossibleCPU()
		if err != nil {
			return 0, fmt.Errorf("count possible CPUs: %w", err)
		}
		return ncpu, nil
	}
	return 1, nil
}

// sum adds one entry's values (one per CPU in a per-CPU map); the entry's
// start is the earliest first_seen_ns recorded (only the creating CPU
// records one).
func sum(vals []counters) (packets, bytes, start uint64) {
	for i := range vals {
		packets += vals[i].Packets
		bytes += vals[i].Bytes
		if fs := vals[i].FirstSeenNs; fs != 0 && (start == 0 || fs < start) {
			start = fs
		}
	}
	return packets, bytes, start
}

// sumTCP adds one entry's TCP flag counters (one set per CPU in a per-CPU
// map) modulo 2^32, as the kernel keeps them.
func sumTCP(vals []counters) (raw [4]uint32) {
	for i := range vals {
		raw[0] += vals[i].TcpSyn
		raw[1] += vals[i].TcpSynack
		raw[2] += vals[i].TcpFin
		raw[3] += vals[i].TcpRst
	}
	return raw
}

// addTCP moves st's flag counters to the kernel's new raw sums. Each 32-bit
// kernel counter wraps, and so does a sum of them modulo 2^32, so the growth
// since the previous read is the difference modulo 2^32: exact while fewer
// than 2^32 flagged packets of one flow arrive between two drains.
func (st *flowState) addTCP(raw [4]uint32) {
	st.tcp.SYN += uint64(raw[0] - st.tcpRaw[0])
	st.tcp.SYNACK += uint64(raw[1] - st.tcpRaw[1])
	st.tcp.FIN += uint64(raw[2] - st.tcpRaw[2])
	st.tcp.RST += uint64(raw[3] - st.tcpRaw[3])
	st.tcpRaw = raw
}

// deltaTCP is the growth of st's flag counters since the last emit; the
// drain updates reported.tcp only after the emit.
func (st *flowState) deltaTCP() TCPFlagCounts {
	return TCPFlagCounts{
		SYN:    st.tcp.SYN - st.reported.tcp.SYN,
		SYNACK: st.tcp.SYNACK - st.reported.tcp.SYNACK,
		FIN:    st.tcp.FIN - st.reported.tcp.FIN,
		RST:    st.tcp.RST - st.reported.tcp.RST,
	}
}

// total updates the state of a last-resort total (a per-CPU array entry
// read into vals) and returns its growth; ok is false while it is empty.
func (st *flowState) total(vals []counters, clock monoClock, now time.Time) (dp, db uint64, ok bool) {
	p, b, ks := sum(vals)
	if p == 0 {
		return 0, 0, false
	}
	if st.start == 0 {
		st.start = clock.toNanos(ks)
	}
	dp, db = p-st.packets, b-st.bytes
	if dp > 0 {
		st.lastSeen = stampOf(now)
	}
	st.packets, st.bytes = p, b
	st.addTCP(sumTCP(vals))
	return dp, db, true
}

// emitFunc receives each flow's state and the growth since the previous
// drain. st is valid only during the call; st.deltaTCP() is the flags' growth.
type emitFunc[K comparable] func(key K, st *flowState, dPackets, dBytes uint64, expired bool)

// drain reads every entry and updates the state, then emits each flow:
// flows idle for longer than idle are removed from the kernel table and
// emitted a last time, marked expired. It returns the number of entries
// left in the kernel table.
func (t *table[K]) drain(now time.Time, clock monoClock, idle time.Duration, emit emitFunc[K]) (int, error) {
	at := stampOf(now) // once per drain, not per flow
	t.gen++
	t.prev, t.seen = t.seen, t.prev[:0]
	if cap(t.seen) < len(t.prev) {
		// Once, at the second drain of a full table, instead of growing by
		// appends that copy it over and over.
		t.seen = make([]int32, 0, len(t.prev)+len(t.prev)/8)
	}
	pos := 0
	if t.walk != nil {
		recs, err := t.walk.walk()
		if err != nil {
			return 0, fmt.Errorf("drain %s: %w", t.m.String(), err)
		}
		for i := range recs {
			t.visit(&recs[i].Key, recs[i].Val[:], &pos, at, clock)
		}
	} else {
		var cursor ebpf.MapBatchCursor
		for {
			n, err := t.m.BatchLookup(&cursor, t.keys, t.vals, nil)
			for i := 0; i < n; i++ {
				t.visit(&t.keys[i], t.vals[i*t.ncpu:(i+1)*t.ncpu], &pos, at, clock)
			}
			if errors.Is(err, ebpf.ErrKeyNotExist) {
				break
			}
			if err != nil {
				return 0, fmt.Errorf("drain %s: %w", t.m.String(), err)
			}
		}
	}
	if t.reserve != nil {
		t.reserve(len(t.seen))
	}
	active, expired := 0, 0
	perCPU := t.vals[:t.ncpu]
	for _, i := range t.seen {
		sl := t.at(i)
		key, st := &sl.key, &sl.state
		dp, db := st.packets-st.reported.packets, st.bytes-st.reported.bytes
		if st.id == 0 {
			// Its kernel entry was replaced by a new one of the same key
			// during this drain (update): this is the old entry's final
			// report. The slot is freed with t.dropped.
			emit(*key, st, dp, db, true)
			expired++
			continue
		}
		if st.lastSeen.since(at) < idle {
			active++
			st.reported.packets, st.reported.bytes = st.packets, st.bytes
			emit(*key, st, dp, db, false)
			st.reported.tcp = st.tcp
			continue
		}
		if err := t.m.LookupAndDelete(key, perCPU); err == nil {
			// Packets that arrived since the batch read are not lost.
			p, b, _ := sum(perCPU)
			dp, db = p-st.reported.packets, b-st.reported.bytes
			st.packets, st.bytes = p, b
			st.addTCP(sumTCP(perCPU))
		} else if !errors.Is(err, ebpf.ErrKeyNotExist) {
			// Kernels before 5.14 cannot look up and delete hash
			// entries at once; the window between is one idle flow's.
			if !errors.Is(err, ebpf.ErrNotSupported) && !errors.Is(err, unix.EINVAL) {
				return active, fmt.Errorf("expire flow in %s: %w", t.m.String(), err)
			}
			_ = t.m.Delete(key)
		}
		emit(*key, st, dp, db, true)
		t.forget(i)
		expired++
	}
	for _, i := range t.dropped {
		t.release(i)
	}
	t.dropped = t.dropped[:0]
	if len(t.seen)-expired != t.flows {
		// Some entries left the kernel table without us (only a full
		// scan finds them; they are rare): report what we had.
		for i := range t.n {
			if sl := t.at(i); sl.state.id != 0 && sl.state.gen != t.gen {
				st := &sl.state
				emit(sl.key, st, st.packets-st.reported.packets, st.bytes-st.reported.bytes, true)
				t.forget(i)
			}
		}
	}
	return active, nil
}

// visit records one kernel entry read by the drain, the pos-th of this
// drain, and notes it in seen.
func (t *table[K]) visit(key *K, vals []counters, pos *int, now stamp, clock monoClock) {
	p, b, ks := sum(vals)
	hint := int32(-1)
	if *pos < len(t.prev) {
		// A slot in use holding this key is the key's: keys are unique
		// among the slots in use.
		if i := t.prev[*pos]; i < t.n {
			if sl := t.at(i); sl.state.id != 0 && sl.key == *key {
				hint = i
			}
		}
	}
	*pos++
	i := t.update(key, hint, p, b, ks, now, clock)
	st := &t.at(i).state
	st.addTCP(sumTCP(vals))
	if st.appProto <= appNone {
		st.appProto = mergeAppProto(vals)
	}
	if st.gen != t.gen {
		// A key is returned once per drain; the check only keeps a repeat
		// (table changing under the cursor) from being emitted twice.
		st.gen = t.gen
		t.seen = append(t.seen, i)
	}
}

// update records one kernel entry's sums and returns its slot. hint, if
// not -1, is key's slot.
func (t *table[K]) update(key *K, hint int32, p, b, ks uint64, now stamp, clock monoClock) int32 {
	i := hint
	if i < 0 {
		i = t.lookup(key)
	}
	if i >= 0 && t.at(i).state.kernelStart != ks {
		// The entry was removed and created again: a new series. The old
		// slot is dropped, and freed only after the drain: it may already
		// be in t.seen.
		t.unlink(i)
		t.at(i).state.id = 0
		t.dropped = append(t.dropped, i)
		i = -1
	}
	if i < 0 {
		i = t.add(key)
		t.nextID++
		t.at(i).state = flowState{kernelStart: ks, start: clock.toNanos(ks), lastSeen: now, id: t.nextID}
	}
	st := &t.at(i).state
	if p != st.packets {
		st.lastSeen = now
	}
	st.packets, st.bytes = p, b
	return i
}

func (t *table[K]) at(i int32) *slot[K] { return &t.chunks[i>>chunkShift][i&(1<<chunkShift-1)] }

func (t *table[K]) hash(key *K) uint64 {
	if t.hashOf != nil {
		return t.hashOf(key)
	}
	return maphash.Comparable(t.seed, *key)
}

// lookup returns key's slot, or -1.
func (t *table[K]) lookup(key *K) int32 {
	i, ok := t.index[t.hash(key)]
	if !ok {
		return -1
	}
	for ; i >= 0; i = t.at(i).next {
		if t.at(i).key == *key {
			return i
		}
	}
	return -1
}

// add returns a new slot for key, which has none, linked into the index;
// the caller sets its state.
func (t *table[K]) add(key *K) int32 {
	var i int32
	if n := len(t.free); n > 0 {
		i = t.free[n-1]
		t.free = t.free[:n-1]
	} else {
		if int(t.n>>chunkShift) == len(t.chunks) {
			t.chunks = append(t.chunks, make([]slot[K], 1<<chunkShift))
		}
		i = t.n
		t.n++
	}
	h := t.hash(key)
	next, ok := t.index[h]
	if !ok {
		next = -1
	}
	sl := t.at(i)
	sl.key, sl.next = *key, next
	t.index[h] = i
	t.flows++
	return i
}

// unlink takes slot i, in use, out of the index.
func (t *table[K]) unlink(i int32) {
	sl := t.at(i)
	h := t.hash(&sl.key)
	if head := t.index[h]; head == i {
		if sl.next < 0 {
			delete(t.index, h)
		} else {
			t.index[h] = sl.next
		}
	} else {
		p := head
		for t.at(p).next != i {
			p = t.at(p).next
		}
		t.at(p).next = sl.next
	}
	sl.next = -1
	t.flows--
}

// release returns an unlinked slot to the free list.
func (t *table[K]) release(i int32) {
	*t.at(i) = slot[K]{next: -1}
	t.free = append(t.free, i)
}

// forget removes a flow whose final report has been emitted.
func (t *table[K]) forget(i int32) {
	t.unlink(i)
	t.release(i)
}

// monoClock converts bpf_ktime_get_ns (CLOCK_MONOTONIC) to wall time.
type monoClock struct {
	wall   time.Time
	offset int64 // wall clock minus monotonic clock, in ns
}

// readClock reads the wall clock for a drain. offset, when not zero, is the
// wall-minus-monotonic offset to convert kernel times with: a collector
// keeps one for its lifetime, and with pin_path across restarts, so that a
// series' start time is the same at every drain and in every process.
func readClock(offset int64) monoClock {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	wall := time.Now()
	if offset == 0 {
		offset = wall.UnixNano() - ts.Nano()
	}
	return monoClock{wall: wall, offset: offset}
}

// toNanos converts a kernel time to Unix nanoseconds (the drain's own
// time for 0, a time the kernel did not record).
func (c monoClock) toNanos(ns uint64) int64 {
	if ns == 0 {
		return c.wall.UnixNano()
	}
	return c.offset + int64(ns)
}
