// Package aggregate turns the flow records of each core Read into the series
// an operator asked for (chosen dimensions, folded ports, CIDR groups, top-N
// and a series cap) while keeping totals exact and cumulative counters
// monotonic.
//
// Every packet and byte of an input delta lands in exactly one output series:
// its key's own series, the single "other" series, or, for the kernel's
// overflow records, an overflow series that no cap or top-N ever touches,
// and for the packets the kernel filters left out, a filtered series alike.
// So for every call, the output's DeltaPackets and DeltaBytes sum to the
// input's.
//
// Output counters are built from the records' deltas, not their cumulative
// counts, because a series sums flows that come and go: a flow reports its
// final counts once with Expired set and then vanishes, and a key can move
// between its own series and "other" from one interval to the next. A series
// only ever adds deltas, so neither can make it go backwards. A series that
// has not grown for series_idle_timeout, or that max_series pushes out, is
// no longer reported; if its key grows again it is a new series with a later
// StartTime, never a silent reset.
package aggregate

import (
	"cmp"
	"fmt"
	"hash/maphash"
	"slices"
	"time"

	"github.com/pktstat-bpf/pktstat-bpf/core"
)

// Kind tells a flow series from the two synthetic ones.
type Kind uint8

const (
	// KindFlow is the series of one key.
	KindFlow Kind = iota
	// KindOther sums the keys that top_n or max_series left out; its Key
	// is zero.
	KindOther
	// KindOverflow carries core's overflow records (packets of flows that
	// did not fit in the kernel table); its Key has only Interface and
	// Direction, when those dimensions are kept.
	KindOverflow
	// KindFiltered carries core's filtered records (packets the include and
	// exclude filters left out); like an overflow series its Key has only
	// Interface and Direction, and no cap or top-N touches it.
	KindFiltered
)

// Series is one output time series at one Aggregate call.
type Series struct {
	Key
	// Packets and Bytes are cumulative since StartTime.
	Packets uint64
	Bytes   uint64
	// DeltaPackets and DeltaBytes are the increase in this call; zero for
	// a series kept alive without growth.
	DeltaPackets uint64
	DeltaBytes   uint64
	// Retransmits and DeltaRetransmits sum the records' TCP retransmissions
	// (kprobe mode) the same way: cumulative since StartTime, and the
	// increase in this call.
	Retransmits      uint64
	DeltaRetransmits uint64
	// TCP and DeltaTCP sum the records' TCP flag counters (SYN, SYN+ACK,
	// FIN, RST) the same way.
	TCP      core.TCPFlagCounts
	DeltaTCP core.TCPFlagCounts
	// RTT merges the records' smoothed RTT samples of this call (tcp_rtt):
	// samples and sums add, min of mins, max of maxes; not cumulative. It
	// is nil when the call had none (always without tcp_rtt): most series
	// never have one, and a full table of them would carry 160 bytes each.
	RTT *core.RTTStats
	// StartTime is when counting for this series began: the earliest
	// StartTime of the flows that created it, but never before the
	// previous call, whose deltas a new series does not include.
	StartTime time.Time
	// Slot identifies a flow series while it lives: no two series of one
	// call share it, and it keeps its value from call to call until the
	// series ends, so that an adapter can keep what it builds once per
	// series (tags, attributes) in a slice indexed by it instead of
	// hashing the key again at every call. -1 for the other, overflow and
	// filtered series.
	Slot int32
	// Born is set in the call in which the series started (a new key, or
	// one that returns after its series ended): what an adapter kept for
	// Slot belongs to an earlier series and must be built again.
	Born bool
	// Kind is last, beside Slot and Born, where it takes no padding of its own.
	Kind Kind
}

// Aggregator keeps the per-series state across calls. It is not safe for
// concurrent use; one plugin instance owns one Aggregator.
type Aggregator struct {
	keyer       *keyer
	dims        []Dimension
	keepIface   bool
	keepDir     bool
	topN        int
	maxSeries   int
	idleTimeout time.Duration

	flows    table
	overflow table
	filtered table
	other    entry

	epoch uint64
	prev  time.Time

	// Reused between calls so that a steady stream of flows allocates
	// nothing.
	cand, overCand, filtCand, heap, idle []int32
	out                                  []*Series
	// open is set between a call's first Add and its End; pos is the
	// position of the next record in the call.
	open bool
	pos  int
	// hints holds, by record position, the flow entry the record at that
	// position went to in the previous call. core returns a table's flows
	// in the same order at every drain, so most records find their entry
	// there without hashing their key.
	hints []int32
}

// New validates cfg and returns an Aggregator with no series yet.
func New(cfg Config) (*Aggregator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("aggregation config: %w", err)
	}
	cfg = cfg.withDefaults()
	kr := newKeyer(cfg)
	var dims dimSet
	for _, d := range cfg.Dimensions {
		dims |= dimBit(d)
	}
	return &Aggregator{
		keyer:       kr,
		dims:        dims.list(),
		keepIface:   kr.iface,
		keepDir:     kr.dir,
		topN:        cfg.TopN,
		maxSeries:   cfg.MaxSeries,
		idleTimeout: time.Duration(cfg.SeriesIdleTimeout),
		flows:       newTable(),
		overflow:    newTable(),
		filtered:    newTable(),
	}, nil
}

// Dimensions lists the kept dimensions in a fixed order: the tags or
// attributes each flow series carries.
func (a *Aggregator) Dimensions() []Dimension { return slices.Clone(a.dims) }

// Aggregate folds one Read's records into series. Drop records
// (core.Snapshot.Drops) go to an Aggregator of their own, built from the
// same Config: each drop series is the kept flow dimensions plus its
// reason, which is always kept, and top_n and max_series apply to the drop
// series on their own. now is the Read's time
// (core.Snapshot.Time) and must not go backwards between calls; pass every
// snapshot, from the first, or the deltas of the skipped ones are lost. The
// result lists the flow series in a stable order, then the other series,
// then the overflow series, then the filtered series. The slice and the
// series it points to belong to the Aggregator and are changed by the next
// call: consume them before calling again. Records passed to Add since the
// last End belong to the same call (ReadInto's, whose snapshot then has no
// Records of its own).
func (a *Aggregator) Aggregate(now time.Time, records []core.Record) []*Series {
	for i := range records {
		a.Add(&records[i])
	}
	return a.End(now)
}

// Add folds one record into the call in progress, which the first Add
// after New or End begins; End(now) completes it. Add then End is
// Aggregate without the records in a slice: core.Collector.ReadFunc's
// records can go straight in as the drain makes them. Add keeps nothing
// that r points to.
func (a *Aggregator) Add(r *core.Record) {
	if !a.open {
		a.begin()
	}
	i := a.pos
	a.pos++
	if r.DeltaPackets == 0 && r.DeltaBytes == 0 && r.DeltaRetransmits == 0 && r.RTT == nil {
		// An idle flow changes no series; skipping it keeps a large,
		// mostly quiet table cheap. A retransmit-only record (kprobe
		// mode reports retransmits of a flow whose sends expired) is
		// not idle.
		return
	}
	switch {
	case r.Overflow:
		a.overCand = a.overflow.accumulate(a.markerKey(r), r, a.epoch, a.overCand)
		return
	case r.Filtered:
		a.filtCand = a.filtered.accumulate(a.markerKey(r), r, a.epoch, a.filtCand)
		return
	}
	if i >= len(a.hints) {
		a.hints = append(a.hints, make([]int32, i+1-len(a.hints))...)
	}
	a.hints[i], a.cand = a.flows.accumulateHint(a.keyer.key(r), a.hints[i], r, a.epoch, a.cand)
}

func (a *Aggregator) begin() {
	a.open, a.pos = true, 0
	a.epoch++
	clear(a.keyer.identities)
	a.cand, a.overCand, a.filtCand = a.cand[:0], a.overCand[:0], a.filtCand[:0]
}

// End completes the call that Add began (an empty one if none did) at now,
// the Read's time (core.Snapshot.Time), and returns its series as
// Aggregate does.
func (a *Aggregator) End(now time.Time) []*Series {
	if !a.open {
		a.begin()
	}
	a.open = false
	// The keys that had a delta in this call were active now.
	at := now.UnixNano()
	for _, i := range a.cand {
		a.flows.at(i).lastActive = at
	}
	for _, i := range a.overCand {
		a.overflow.at(i).lastActive = at
	}
	for _, i := range a.filtCand {
		a.filtered.at(i).lastActive = at
	}
	a.choose()
	o := &a.other.s
	o.DeltaPackets, o.DeltaBytes, o.DeltaRetransmits, o.DeltaTCP, a.other.minStart = 0, 0, 0, core.TCPFlagCounts{}, time.Time{}
	a.other.resetRTT()
	for _, i := range a.cand {
		e := a.flows.at(i)
		if e.chosen == a.epoch {
			a.grow(e, now)
			continue
		}
		o.DeltaPackets += e.s.DeltaPackets
		o.DeltaBytes += e.s.DeltaBytes
		o.DeltaRetransmits += e.s.DeltaRetransmits
		o.DeltaTCP = o.DeltaTCP.Add(e.s.DeltaTCP)
		if e.rtt != nil {
			a.other.mergeRTT(*e.rtt)
		}
		a.other.minStart = minTime(a.other.minStart, e.minStart)
	}
	if o.DeltaPackets != 0 || o.DeltaBytes != 0 || o.DeltaRetransmits != 0 || a.other.rtt != nil && a.other.rtt.Samples != 0 {
		a.grow(&a.other, now)
	}
	for _, i := range a.overCand {
		a.grow(a.overflow.at(i), now)
	}
	for _, i := range a.filtCand {
		a.grow(a.filtered.at(i), now)
	}

	a.retire(now)
	a.prev = now
	return a.emit()
}

// markerKey is the key of an overflow or filtered series: they stand for
// many flows, so only where and which way the packets crossed is kept.
func (a *Aggregator) markerKey(r *core.Record) Key {
	k := Key{labels: a.keyer.intern(Labels{DropReason: r.DropReason})}
	if a.keepIface {
		k.Interface = r.Interface
	}
	if a.keepDir {
		k.Direction = r.Direction
	}
	return k
}

// choose marks the candidates that get their own series in this call.
func (a *Aggregator) choose() {
	n := len(a.cand)
	limit := n
	if a.topN > 0 && a.topN < limit {
		limit = a.topN
	}
	if a.maxSeries > 0 {
		other := 0
		if limit < n {
			other = 1
		}
		// The other series takes one of the max_series slots as soon as
		// anything is left out.
		if limit+other > a.maxSeries {
			limit = a.maxSeries - 1
		}
	}
	if limit >= n {
		for _, i := range a.cand {
			a.flows.at(i).chosen = a.epoch
		}
		return
	}
	// A bounded min-heap whose root is the weakest of the kept keys: one
	// comparison for most candidates, and O(n log limit) at worst.
	h := a.heap[:0]
	worse := func(x, y int32) bool { return a.ranksBefore(y, x) }
	for _, c := range a.cand {
		if len(h) < limit {
			h = append(h, c)
			siftUp(h, len(h)-1, worse)
			continue
		}
		if limit > 0 && a.ranksBefore(c, h[0]) {
			h[0] = c
			siftDown(h, 0, worse)
		}
	}
	for _, i := range h {
		a.flows.at(i).chosen = a.epoch
	}
	a.heap = h
}

// ranksBefore orders candidates by bytes, then packets, then prefers a key
// that already has a series (less churn), then the key itself so that ties
// are decided the same way every time.
func (a *Aggregator) ranksBefore(x, y int32) bool {
	ex, ey := a.flows.at(x), a.flows.at(y)
	if ex.s.DeltaBytes != ey.s.DeltaBytes {
		return ex.s.DeltaBytes > ey.s.DeltaBytes
	}
	if ex.s.DeltaPackets != ey.s.DeltaPackets {
		return ex.s.DeltaPackets > ey.s.DeltaPackets
	}
	if ex.live != ey.live {
		return ex.live
	}
	return compareKeys(&ex.s.Key, &ey.s.Key) < 0
}

func siftUp(h []int32, i int, less func(x, y int32) bool) {
	for i > 0 {
		p := (i - 1) / 2
		if !less(h[i], h[p]) {
			return
		}
		h[i], h[p] = h[p], h[i]
		i = p
	}
}

func siftDown(h []int32, i int, less func(x, y int32) bool) {
	for {
		l := 2*i + 1
		if l >= len(h) {
			return
		}
		m := l
		if r := l + 1; r < len(h) && less(h[r], h[l]) {
			m = r
		}
		if !less(h[m], h[i]) {
			return
		}
		h[i], h[m] = h[m], h[i]
		i = m
	}
}

// grow adds this call's delta to a series, starting it if it is not live.
func (a *Aggregator) grow(e *entry, now time.Time) {
	if !e.live {
		e.live = true
		e.born = a.epoch
		e.s.StartTime = a.seriesStart(e.minStart, e.s.StartTime, now)
		e.s.Packets, e.s.Bytes, e.s.Retransmits, e.s.TCP = 0, 0, 0, core.TCPFlagCounts{}
	}
	e.s.Packets += e.s.DeltaPackets
	e.s.Bytes += e.s.DeltaBytes
	e.s.Retransmits += e.s.DeltaRetransmits
	e.s.TCP = e.s.TCP.Add(e.s.DeltaTCP)
	e.lastGrowth = now.UnixNano()
	e.grew = a.epoch
}

// seriesStart picks the StartTime of a new series. A series restarted for a
// key that had one before must get a later start, because consumers of
// cumulative data tell a reset from a regression by the start time alone.
func (a *Aggregator) seriesStart(minStart, previous, now time.Time) time.Time {
	s := minStart
	if !a.prev.IsZero() && (s.IsZero() || s.Before(a.prev)) {
		s = a.prev
	}
	if s.IsZero() || s.After(now) {
		// A kernel timestamp converted to wall time can land just after
		// the Read's own time; a series must not start in the future.
		s = now
	}
	if !previous.IsZero() && !s.After(previous) {
		s = previous.Add(time.Nanosecond)
	}
	return s
}

// retire ends series idle for longer than series_idle_timeout, makes
// max_series hold for the idle ones that remain, and forgets keys that have
// been neither reported nor active for that long.
func (a *Aggregator) retire(now time.Time) {
	reported := 0
	idle := a.idle[:0]
	for i := range a.flows.len() {
		e := a.flows.at(i)
		if e.free {
			continue
		}
		switch {
		case e.live && e.grew == a.epoch:
			reported++
		case e.live && idleFor(now, e.lastGrowth) > a.idleTimeout:
			e.live = false
		case e.live:
			idle = append(idle, i)
		}
		if !e.live && idleFor(now, e.lastActive) > a.idleTimeout {
			a.flows.release(i)
		}
	}
	const otherIdx = -1
	switch {
	case a.other.live && a.other.grew == a.epoch:
		reported++
	case a.other.live && idleFor(now, a.other.lastGrowth) > a.idleTimeout:
		a.other.live = false
	case a.other.live:
		idle = append(idle, otherIdx)
	}
	a.idle = idle

	if a.maxSeries > 0 && reported+len(idle) > a.maxSeries {
		// Series with growth already fill at most max_series; idle ones
		// get what is left, most recently grown first.
		get := func(i int32) *entry {
			if i == otherIdx {
				return &a.other
			}
			return a.flows.at(i)
		}
		slices.SortFunc(idle, func(x, y int32) int {
			if c := cmp.Compare(get(y).lastGrowth, get(x).lastGrowth); c != 0 {
				return c
			}
			return cmp.Compare(x, y)
		})
		for _, i := range idle[max(a.maxSeries-reported, 0):] {
			get(i).live = false
		}
	}

	a.retireMarkers(&a.overflow, now)
	a.retireMarkers(&a.filtered, now)
}

// retireMarkers ends the overflow or filtered series idle for longer than
// series_idle_timeout; max_series does not count them.
func (a *Aggregator) retireMarkers(t *table, now time.Time) {
	for i := range t.len() {
		e := t.at(i)
		if e.free {
			continue
		}
		if e.live && e.grew != a.epoch && idleFor(now, e.lastGrowth) > a.idleTimeout {
			e.live = false
		}
		if !e.live {
			t.release(int32(i))
		}
	}
}

func (a *Aggregator) emit() []*Series {
	out := a.out[:0]
	for i := range a.flows.len() {
		if e := a.flows.at(i); !e.free && e.live {
			out = append(out, a.series(KindFlow, e, i))
		}
	}
	if a.other.live {
		out = append(out, a.series(KindOther, &a.other, -1))
	}
	for _, m := range []struct {
		kind Kind
		t    *table
	}{{KindOverflow, &a.overflow}, {KindFiltered, &a.filtered}} {
		for i := range m.t.len() {
			if e := m.t.at(i); !e.free && e.live {
				out = append(out, a.series(m.kind, e, -1))
			}
		}
	}
	a.out = out
	return out
}

// series completes the entry's Series for this call and returns it.
func (a *Aggregator) series(kind Kind, e *entry, slot int32) *Series {
	s := &e.s
	s.Kind, s.Slot, s.Born = kind, slot, e.born == a.epoch
	if e.grew == a.epoch {
		// The deltas were added to s itself as the records came in.
		s.RTT = nil
		if e.rtt != nil && e.rtt.Samples > 0 {
			s.RTT = e.rtt
		}
	} else {
		// Kept alive without growth, or its delta went to the other
		// series: nothing of this call is its own.
		s.DeltaPackets, s.DeltaBytes, s.DeltaRetransmits, s.DeltaTCP = 0, 0, 0, core.TCPFlagCounts{}
		s.RTT = nil
	}
	return s
}

// entry is one key's state, live (reported) or not. It holds the Series it
// reports, so that a call's result points at the entries instead of
// copying every key (120 bytes) into a slice of its own.
type entry struct {
	// s.Key is the entry's key; s's cumulative counts and StartTime are
	// the series' own while it lives. s's delta fields sum this call's
	// records as touch adds them (they are the call's scratch, like the
	// fields below), and emit clears them for an entry that did not grow,
	// whose delta went to other; emit sets s's RTT.
	s    Series
	free bool
	live bool
	// hash is key's hash in its table; next is the next entry with the
	// same hash, or -1.
	hash uint64
	next int32

	// lastGrowth is the last call in which the series grew, lastActive the
	// last in which the key had a delta, whether it went to its own series
	// or to other (the entry is kept that long so a key flapping around the
	// top-N edge does not churn the map): both as the Unix nanoseconds of
	// the call's time, 8 bytes each instead of a time.Time's 24.
	lastGrowth int64
	lastActive int64

	// This call's scratch, valid when touched == the Aggregator's epoch.
	touched uint64
	chosen  uint64
	grew    uint64
	born    uint64 // the call that made the series live
	// minStart is the earliest StartTime of this call's records.
	minStart time.Time
	// rtt gathers this call's RTT samples; made at the entry's first
	// sample and reset, not freed, by touch.
	rtt *core.RTTStats
}

func (e *entry) resetRTT() {
	if e.rtt != nil {
		*e.rtt = core.RTTStats{}
	}
}

func (e *entry) mergeRTT(o core.RTTStats) {
	if o.Samples == 0 {
		return
	}
	if e.rtt == nil {
		e.rtt = new(core.RTTStats)
	}
	e.rtt.Merge(o)
}

// chunkShift sets the entries per chunk of a table (1,024).
const chunkShift = 10

// table indexes entries by a hash of their key rather than by the key: a
// 120-byte Key stored again in a map of a full kernel table's worth of
// series costs tens of megabytes and a cache miss per record, while the
// entry holding the key is touched anyway. Keys with the same hash are
// chained through entry.next. Freed slots are reused so that entries never
// move and indices stay valid for the whole call.
type table struct {
	// hash is a field so that tests can force collisions.
	hash  func(Key) uint64
	index map[uint64]int32
	// chunks hold the entries, 1<<chunkShift each: a table that grows to a
	// full kernel table's worth of series (about 50 MB of entries) adds
	// chunks instead of copying one slice into a larger one, which would
	// briefly need both and leave up to a quarter of the last one unused.
	chunks [][]entry
	n      int32 // entries in use or free
	free   []int32
}

func newTable() table {
	seed := maphash.MakeSeed()
	return table{
		hash:  func(k Key) uint64 { return maphash.Comparable(seed, k) },
		index: map[uint64]int32{},
	}
}

// len is the number of entries, free ones included: indices run below it.
func (t *table) len() int32 { return t.n }

func (t *table) at(i int32) *entry { return &t.chunks[i>>chunkShift][i&(1<<chunkShift-1)] }

// add returns a free entry, reused or new.
func (t *table) add() int32 {
	if n := len(t.free); n > 0 {
		i := t.free[n-1]
		t.free = t.free[:n-1]
		return i
	}
	if int(t.n>>chunkShift) == len(t.chunks) {
		t.chunks = append(t.chunks, make([]entry, 1<<chunkShift))
	}
	t.n++
	return t.n - 1
}

// accumulate adds r's delta to k's entry and returns cand with the entry's
// index appended the first time k is touched in this call.
func (t *table) accumulate(k Key, r *core.Record, epoch uint64, cand []int32) []int32 {
	_, cand = t.accumulateHint(k, -1, r, epoch, cand)
	return cand
}

// accumulateHint is accumulate that first tries the entry at hint, where
// k was found before; keys are unique in a table, so a live entry holding
// k is k's entry. It returns k's entry, the hint for next time.
func (t *table) accumulateHint(k Key, hint int32, r *core.Record, epoch uint64, cand []int32) (int32, []int32) {
	if hint >= 0 && hint < t.n {
		if e := t.at(hint); !e.free && e.s.Key == k {
			return hint, t.touch(e, hint, r, epoch, cand)
		}
	}
	h := t.hash(k)
	head, ok := t.index[h]
	i := head
	for ok && t.at(i).s.Key != k {
		i = t.at(i).next
		ok = i >= 0
	}
	if !ok {
		next := int32(-1)
		if _, chained := t.index[h]; chained {
			next = head
		}
		i = t.add()
		*t.at(i) = entry{s: Series{Key: k}, hash: h, next: next}
		t.index[h] = i
	}
	return i, t.touch(t.at(i), i, r, epoch, cand)
}

// touch adds r's delta to entry e, at index i.
func (t *table) touch(e *entry, i int32, r *core.Record, epoch uint64, cand []int32) []int32 {
	if e.touched != epoch {
		e.touched = epoch
		e.s.DeltaPackets, e.s.DeltaBytes, e.s.DeltaRetransmits, e.s.DeltaTCP = 0, 0, 0, core.TCPFlagCounts{}
		e.resetRTT()
		e.minStart = r.StartTime
		cand = append(cand, i)
	}
	e.s.DeltaPackets += r.DeltaPackets
	e.s.DeltaBytes += r.DeltaBytes
	e.s.DeltaRetransmits += r.DeltaRetransmits
	e.s.DeltaTCP = e.s.DeltaTCP.Add(r.DeltaTCP)
	if r.RTT != nil {
		e.mergeRTT(*r.RTT)
	}
	e.minStart = minTime(e.minStart, r.StartTime)
	return cand
}

func (t *table) release(i int32) {
	e := t.at(i)
	if head := t.index[e.hash]; head == i {
		if e.next < 0 {
			delete(t.index, e.hash)
		} else {
			t.index[e.hash] = e.next
		}
	} else {
		p := head
		for t.at(p).next != i {
			p = t.at(p).next
		}
		t.at(p).next = e.next
	}
	*e = entry{free: true}
	t.free = append(t.free, i)
}

// idleFor is how long before now the call at Unix nanoseconds at was.
func idleFor(now time.Time, at int64) time.Duration { return time.Duration(now.UnixNano() - at) }

// minTime ignores zero times, which stand for "unknown".
func minTime(a, b time.Time) time.Time {
	if a.IsZero() || !b.IsZero() && b.Before(a) {
		return b
	}
	return a
}

// compareKeys is a total order on keys, used only to break ranking ties.
func compareKeys(x, y *Key) int {
	lx, ly := x.Labels(), y.Labels()
	return cmp.Or(
		cmp.Compare(x.Interface, y.Interface),
		cmp.Compare(x.Direction, y.Direction),
		cmp.Compare(x.IPVersion, y.IPVersion),
		cmp.Compare(x.Transport, y.Transport),
		x.SrcAddr.Compare(y.SrcAddr),
		cmp.Compare(lx.SrcGroup, ly.SrcGroup),
		x.DstAddr.Compare(y.DstAddr),
		cmp.Compare(lx.DstGroup, ly.DstGroup),
		compareBool(x.HasPorts, y.HasPorts),
		cmp.Compare(x.SrcPort, y.SrcPort),
		cmp.Compare(x.DstPort, y.DstPort),
		compareBool(x.SrcPortFolded, y.SrcPortFolded),
		compareBool(x.DstPortFolded, y.DstPortFolded),
		cmp.Compare(x.VLAN, y.VLAN),
		cmp.Compare(x.Flags, y.Flags),
		cmp.Compare(x.PID, y.PID),
		cmp.Compare(lx.Comm, ly.Comm),
		cmp.Compare(lx.Cgroup, ly.Cgroup),
		cmp.Compare(x.CgroupID, y.CgroupID),
		cmp.Compare(lx.AppProto, ly.AppProto),
		cmp.Compare(lx.ContainerID, ly.ContainerID),
		cmp.Compare(lx.PodUID, ly.PodUID),
		cmp.Compare(lx.DropReason, ly.DropReason),
	)
}

func compareBool(x, y bool) int {
	switch {
	case x == y:
		return 0
	case !x:
		return -1
	}
	return 1
}
