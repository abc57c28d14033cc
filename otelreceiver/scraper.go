package pktstatbpfreceiver

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"os"
	"sync"
	"time"
	"unique"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/receiverhelper"
	"go.uber.org/zap"
	"go.uber.org/zap/exp/zapslog"

	"github.com/pktstat-bpf/pktstat-bpf/core"
	"github.com/pktstat-bpf/pktstat-bpf/core/aggregate"
	"github.com/pktstat-bpf/pktstat-bpf/otelreceiver/internal/metadata"
)

// series is one output data point stream: the aggregator's series whose
// selected attributes are equal, summed. With a metric's attributes left at
// every attribute, it is exactly one aggregator series.
type series struct {
	// attrs are the series' selected attributes, shared with the other
	// metrics' series of the same aggregator series when their selections
	// are equal (by default all are): one copy per flow, not one per
	// metric. Never modified.
	attrs *packedAttrs
	// next is the next series with the same hash in the set's index.
	next *series
	// start is the earliest StartTime of the aggregator series in it at
	// its first scrape, in Unix nanoseconds as pdata writes it: a
	// time.Time would take 24 bytes per series instead of 8.
	start int64
	// pos is the series' place in the set's list, and so of its counts.
	pos int32
	// touched: some aggregator series of this scrape belongs to it.
	touched bool
	// fresh: the series was created in this scrape, so its start may still
	// move to an earlier member's; afterwards it is fixed, because a moved
	// start would read as a counter reset.
	fresh bool
}

// packedAttrs are a series' attributes as a seriesSet keeps them while the
// series lives: the values that differ from flow to flow (addresses and
// ports) inline, and the rest, which many flows share (interface,
// direction, network and transport, process, container, groups), interned.
// 64 bytes per flow instead of a FlowAttributes' 360, which at a full
// table was most of the receiver's own memory. Comparable: equal packed
// attributes are equal attributes, because interned values are equal
// exactly when their handles are.
type packedAttrs struct {
	shared                 unique.Handle[metadata.FlowAttributes]
	src, dst               string
	srcPort, dstPort       int64
	hasSrcPort, hasDstPort bool
}

func pack(a metadata.FlowAttributes) packedAttrs {
	p := packedAttrs{src: a.SourceAddress, dst: a.DestinationAddress, srcPort: a.SourcePort, dstPort: a.DestinationPort,
		hasSrcPort: a.HasSourcePort, hasDstPort: a.HasDestinationPort}
	a.SourceAddress, a.DestinationAddress, a.SourcePort, a.DestinationPort = "", "", 0, 0
	a.HasSourcePort, a.HasDestinationPort = false, false
	p.shared = unique.Make(a)
	return p
}

// unpackTo writes the attributes p packed into a.
func (p *packedAttrs) unpackTo(a *metadata.FlowAttributes) {
	*a = p.shared.Value()
	a.SourceAddress, a.DestinationAddress, a.SourcePort, a.DestinationPort = p.src, p.dst, p.srcPort, p.dstPort
	a.HasSourcePort, a.HasDestinationPort = p.hasSrcPort, p.hasDstPort
}

// seriesSet accumulates one flow metric, or two whose series are the same
// (bytes and packets with equal attribute selections, as by default): one
// series, index entry and slot per flow then serves both. Counts are
// summed from the aggregator's deltas rather than copied from its
// cumulative values, because a metric whose attributes list drops some of
// the dimensions sums several aggregator series, which come and go
// independently.
type seriesSet struct {
	selection metadata.AttributeSelection
	// metrics is how many metrics the set counts, 1 or 2.
	metrics int
	// counts holds, for the series at list[i], from counts[i*2*metrics]
	// on: each metric's cumulative count since start and its count since
	// the previous scrape. A slice without pointers, which the garbage
	// collector does not scan, instead of fields of every series.
	counts []uint64
	// skipZero leaves out cumulative points whose total is still zero: a
	// retransmit count is reported only for series that retransmitted.
	skipZero bool
	// index finds a series by the hash of its attributes (series with the
	// same hash are chained): keyed by the attributes themselves, the map
	// would hold a second copy of every series' strings.
	index map[uint64]*series
	seed  maphash.Seed
	// list is every series, in the order they were created, for flush.
	list []*series
	// bySlot is the series each aggregator series slot went to.
	bySlot slots[series]
	// point holds the attributes of the point flush records: a field, so
	// that handing record a pointer allocates nothing.
	point metadata.FlowAttributes
}

// newSeriesSet returns nil for a disabled metric; adding to nil is a no-op.
func newSeriesSet(enabled bool, sel metadata.AttributeSelection) *seriesSet {
	if !enabled {
		return nil
	}
	return &seriesSet{selection: sel, metrics: 1, index: map[uint64]*series{}, seed: maphash.MakeSeed()}
}

// newSeriesSets returns the sets of two metrics that count every
// aggregator series (no skipZero): one set counting both when both are
// enabled with equal selections, second then nil; else one set each.
func newSeriesSets(firstOn bool, firstSel metadata.AttributeSelection, secondOn bool, secondSel metadata.AttributeSelection) (first, second *seriesSet) {
	if firstOn && secondOn && firstSel == secondSel {
		both := newSeriesSet(true, firstSel)
		both.metrics = 2
		return both, nil
	}
	return newSeriesSet(firstOn, firstSel), newSeriesSet(secondOn, secondSel)
}

// lazyAttrs builds an aggregator series' attributes at most once, and only
// when a set does not know the series yet.
type lazyAttrs struct {
	mapper *attributeMapper
	sr     *aggregate.Series
	a      metadata.FlowAttributes
	done   bool
	// sel, key and selected: the last selection made of a, packed, and
	// its copy on the heap, which every new series of that selection
	// shares.
	sel      metadata.AttributeSelection
	haveKey  bool
	key      packedAttrs
	selected *packedAttrs
}

func (l *lazyAttrs) get() metadata.FlowAttributes {
	if !l.done {
		l.a, l.done = l.mapper.attributes(l.sr), true
		// Empty but on the drop aggregator's series.
		l.a.DropReason = l.sr.Labels().DropReason
	}
	return l.a
}

// selectKey returns the selection sel of the attributes, packed.
func (l *lazyAttrs) selectKey(sel metadata.AttributeSelection) packedAttrs {
	if !l.haveKey || l.sel != sel {
		l.sel, l.haveKey, l.selected = sel, true, nil
		l.key = pack(sel.Select(l.get()))
	}
	return l.key
}

// shared returns selectKey(sel) on the heap, the same pointer for every
// set with that selection.
func (l *lazyAttrs) shared(sel metadata.AttributeSelection) *packedAttrs {
	key := l.selectKey(sel)
	if l.selected == nil {
		l.selected = &key
	}
	return l.selected
}

// noSeries marks, in bySlot, an aggregator series whose count has stayed at
// zero in a skipZero set, which then keeps no series for it: most flows
// never retransmit and never see an RST, and a series per flow per flag
// would hold a copy of every flow's attributes for points never reported.
var noSeries = &series{}

// add counts delta[0] for the set's first metric and delta[1] for its
// second, if it has one.
func (ss *seriesSet) add(sr *aggregate.Series, la *lazyAttrs, delta [2]uint64) {
	if ss == nil {
		return
	}
	s := ss.bySlot.get(sr)
	// Only single-metric sets skip zeros.
	zero := delta[0] == 0
	if s == noSeries {
		if zero {
			return
		}
		s = nil
	}
	if s == nil {
		key := la.selectKey(ss.selection)
		h := maphash.Comparable(ss.seed, key)
		if ss.skipZero && zero {
			// Joins a series other members made, but makes none: the
			// total it would report is zero. Created later, at the
			// first count, its start is still before that count.
			if s = ss.find(h, key); s == nil {
				ss.bySlot.set(sr, noSeries)
				return
			}
		} else if s = ss.find(h, key); s == nil {
			s = &series{attrs: la.shared(ss.selection), next: ss.index[h], start: sr.StartTime.UnixNano(),
				pos: int32(len(ss.list)), fresh: true}
			ss.index[h] = s
			ss.list = append(ss.list, s)
			ss.counts = append(ss.counts, make([]uint64, 2*ss.metrics)...)
		}
		ss.bySlot.set(sr, s)
	}
	if start := sr.StartTime.UnixNano(); s.fresh && start < s.start {
		s.start = start
	}
	c := ss.counts[int(s.pos)*2*ss.metrics:]
	for m := range ss.metrics {
		c[2*m] += delta[m]
		c[2*m+1] += delta[m]
	}
	s.touched = true
}

// slots holds what a set made of each aggregator series, by its slot:
// while an aggregator series lives, the set reaches its series without its
// attributes being built and hashed again. An entry is valid only while
// its aggregator series lives: the aggregator marks a reused slot Born.
type slots[T any] []*T

// get returns the entry of sr, nil if there is none.
func (sl slots[T]) get(sr *aggregate.Series) *T {
	if sr.Slot >= 0 && !sr.Born && int(sr.Slot) < len(sl) {
		return sl[sr.Slot]
	}
	return nil
}

// set notes v as the entry of sr.
func (sl *slots[T]) set(sr *aggregate.Series, v *T) {
	if sr.Slot < 0 {
		return
	}
	if n := int(sr.Slot) + 1; n > len(*sl) {
		*sl = append(*sl, make([]*T, n-len(*sl))...)
	}
	(*sl)[sr.Slot] = v
}

// find returns the series of key, whose hash is h, or nil.
func (ss *seriesSet) find(h uint64, key packedAttrs) *series {
	for s := ss.index[h]; s != nil; s = s.next {
		if *s.attrs == key {
			return s
		}
	}
	return nil
}

// remove takes s out of the index. Its hash is computed again rather than
// kept: removal is rare, and the series is 8 bytes smaller.
func (ss *seriesSet) remove(s *series) {
	h := maphash.Comparable(ss.seed, *s.attrs)
	head := ss.index[h]
	if head == s {
		if s.next == nil {
			delete(ss.index, h)
		} else {
			ss.index[h] = s.next
		}
		return
	}
	for p := head; p != nil; p = p.next {
		if p.next == s {
			p.next = s.next
			return
		}
	}
}

// recordFunc records one point of a flow metric.
type recordFunc func(start, ts pcommon.Timestamp, val int64, a *metadata.FlowAttributes)

// flush calls record[m] for every point of the set's metric m in this
// scrape and then forgets the series none of whose aggregator series was
// reported (idle past series_idle_timeout or cut by max_series), so that
// one that returns starts a new series with a new start time instead of
// resuming an old count.
func (ss *seriesSet) flush(delta bool, prevEnd, now time.Time, record ...recordFunc) {
	if ss == nil {
		return
	}
	ts := pcommon.NewTimestampFromTime(now)
	stride := 2 * ss.metrics
	kept := ss.list[:0]
	for i, s := range ss.list {
		if !s.touched {
			ss.remove(s)
			continue
		}
		c := ss.counts[i*stride : (i+1)*stride]
		unpacked := false
		for m := range ss.metrics {
			total, window := c[2*m], c[2*m+1]
			start, val := pcommon.Timestamp(0), uint64(0)
			switch {
			case delta:
				if window == 0 {
					continue
				}
				start, val = pcommon.NewTimestampFromTime(prevEnd), window
			case total > 0 || !ss.skipZero:
				// As pcommon.NewTimestampFromTime writes a time.
				start, val = pcommon.Timestamp(uint64(s.start)), total
			default:
				continue
			}
			if !unpacked {
				s.attrs.unpackTo(&ss.point)
				unpacked = true
			}
			record[m](start, ts, int64(val), &ss.point)
		}
		for m := range ss.metrics {
			c[2*m+1] = 0
		}
		s.touched, s.fresh = false, false
		// The kept series move down in list and counts alike.
		s.pos = int32(len(kept))
		copy(ss.counts[len(kept)*stride:], c)
		kept = append(kept, s)
	}
	clear(ss.list[len(kept):])
	ss.list = kept
	ss.counts = ss.counts[:len(kept)*stride]
}

// tcpFlagNames are the pktstatbpf.tcp.flag values, in the order of
// core.TCPFlagCounts' fields.
var tcpFlagNames = [4]string{metadata.AttributeTCPFlagSyn, metadata.AttributeTCPFlagSynack, metadata.AttributeTCPFlagFin, metadata.AttributeTCPFlagRst}

// rttSeries is one RTT histogram stream: like series, but the values are
// RTT samples, which merge instead of adding. Its attributes are its key
// in the set.
type rttSeries struct {
	start          time.Time
	total, window  core.RTTStats
	touched, fresh bool
}

// rttSet accumulates pktstatbpf.network.flow.tcp.rtt as seriesSet does a
// counter; a series has a point only once it has samples (cumulative) or
// when it had some in the interval (delta).
type rttSet struct {
	selection metadata.AttributeSelection
	// series is keyed by the packed attributes, 64 bytes per flow instead
	// of a FlowAttributes' 360.
	series map[packedAttrs]*rttSeries
	// bySlot is the series each aggregator series slot went to: without
	// it every flow's attributes would be built and packed at every scrape.
	bySlot slots[rttSeries]
	// point holds the attributes of the point flush records.
	point metadata.FlowAttributes
}

// newRTTSet returns nil for a disabled metric; adding to nil is a no-op.
func newRTTSet(enabled bool, sel metadata.AttributeSelection) *rttSet {
	if !enabled {
		return nil
	}
	return &rttSet{selection: sel, series: map[packedAttrs]*rttSeries{}}
}

func (rs *rttSet) add(sr *aggregate.Series, la *lazyAttrs, rtt core.RTTStats) {
	if rs == nil {
		return
	}
	s := rs.bySlot.get(sr)
	if s == nil {
		key := la.selectKey(rs.selection)
		if s = rs.series[key]; s == nil {
			s = &rttSeries{start: sr.StartTime, fresh: true}
			rs.series[key] = s
		}
		rs.bySlot.set(sr, s)
	}
	if s.fresh && sr.StartTime.Before(s.start) {
		s.start = sr.StartTime
	}
	s.total.Merge(rtt)
	s.window.Merge(rtt)
	s.touched = true
}

var rttBounds = metadata.RTTBoundsSeconds()

// histogramFunc records one point of the RTT histogram.
type histogramFunc func(start, ts pcommon.Timestamp, h metadata.Histogram, a *metadata.FlowAttributes)

func (rs *rttSet) flush(delta bool, prevEnd, now time.Time, record histogramFunc) {
	if rs == nil {
		return
	}
	ts := pcommon.NewTimestampFromTime(now)
	point := func(start time.Time, r core.RTTStats, a *metadata.FlowAttributes) {
		record(pcommon.NewTimestampFromTime(start), ts, metadata.Histogram{
			Count: r.Samples, Sum: r.Sum.Seconds(), Min: r.Min.Seconds(), Max: r.Max.Seconds(),
			Bounds: rttBounds, Counts: r.Buckets[:],
		}, a)
	}
	for key, s := range rs.series {
		switch {
		case !s.touched:
			delete(rs.series, key)
			continue
		case delta:
			if s.window.Samples > 0 {
				key.unpackTo(&rs.point)
				point(prevEnd, s.window, &rs.point)
			}
		case s.total.Samples > 0:
			key.unpackTo(&rs.point)
			point(s.start, s.total, &rs.point)
		}
		s.window, s.touched, s.fresh = core.RTTStats{}, false, false
	}
}

// flowScraper drains the source on each scrape and converts the snapshot.
type flowScraper struct {
	cfg       *Config
	settings  receiver.Settings
	newSource newSourceFunc
	now       func() time.Time
	hostName  string
	// nodeName is K8S_NODE_NAME, which a DaemonSet sets from the downward API.
	nodeName string
	// splitIdentities is set when the dimensions keep a workload identity.
	splitIdentities bool

	mu          sync.Mutex
	src         flowSource
	agg         *aggregate.Aggregator
	mapper      attributeMapper
	mb          *metadata.MetricsBuilder
	bytes       *seriesSet
	packets     *seriesSet
	retransmits *seriesSet
	// tcpFlags has one set per pktstatbpf.tcp.flag value, in tcpFlagNames' order.
	tcpFlags [4]*seriesSet
	// dropAgg aggregates the drop records (drops = true) as their own set.
	dropAgg     *aggregate.Aggregator
	dropPackets *seriesSet
	dropBytes   *seriesSet
	rtt         *rttSet
	startTime   time.Time
	prevEnd     time.Time

	// next and obs take a scrape's batches but its last (the scraper
	// controller sends that one, with the health metrics): set by
	// createMetricsReceiver; without them a scrape is one batch.
	next consumer.Metrics
	obs  *receiverhelper.ObsReport
}

// batcher counts the flow points recorded since the last batch and, at
// max of them, has send hand what the metrics builder holds on.
type batcher struct {
	max, points int
	send        func()
}

func (b *batcher) recorded() {
	b.points++
	if b.points >= b.max {
		b.points = 0
		b.send()
	}
}

// number wraps f so that each point it records counts toward b's batch;
// without b it is f.
func (b *batcher) number(f recordFunc) recordFunc {
	if b == nil {
		return f
	}
	return func(start, ts pcommon.Timestamp, val int64, a *metadata.FlowAttributes) {
		f(start, ts, val, a)
		b.recorded()
	}
}

// histogram is number for the RTT histogram's points.
func (b *batcher) histogram(f histogramFunc) histogramFunc {
	if b == nil {
		return f
	}
	return func(start, ts pcommon.Timestamp, h metadata.Histogram, a *metadata.FlowAttributes) {
		f(start, ts, h, a)
		b.recorded()
	}
}

func newFlowScraper(cfg *Config, set receiver.Settings, newSource newSourceFunc) (*flowScraper, error) {
	temporality := pmetric.AggregationTemporalityCumulative
	if cfg.Temporality == TemporalityDelta {
		temporality = pmetric.AggregationTemporalityDelta
	}
	mb, err := metadata.NewMetricsBuilder(cfg.MetricsBuilderConfig, set, metadata.WithFlowTemporality(temporality))
	if err != nil {
		return nil, err
	}
	// New validates again; the collector has validated already, but tests
	// and other embedders may not have.
	if _, err := aggregate.New(cfg.aggregateConfig()); err != nil {
		return nil, err
	}
	host, err := os.Hostname()
	if err != nil {
		set.Logger.Warn("host.name left empty: reading the host name failed", zap.Error(err))
	}
	m := cfg.Metrics
	s := &flowScraper{
		cfg:             cfg,
		settings:        set,
		newSource:       newSource,
		now:             time.Now,
		hostName:        host,
		nodeName:        os.Getenv("K8S_NODE_NAME"),
		splitIdentities: hasIdentity(cfg.dimensions()),
		mapper:          newAttributeMapper(cfg.dimensions(), cfg.CIDRGroups),
		mb:              mb,
		retransmits:     newSeriesSet(m.PktstatbpfNetworkFlowTCPRetransmits.Enabled, mb.PktstatbpfNetworkFlowTCPRetransmitsSelection()),
		// Without tcp_rtt no series has samples: no set, and no attributes
		// built for it.
		rtt: newRTTSet(m.PktstatbpfNetworkFlowTCPRTT.Enabled && cfg.TCPRTT, mb.PktstatbpfNetworkFlowTCPRTTSelection()),
	}
	s.bytes, s.packets = newSeriesSets(m.PktstatbpfNetworkFlowBytes.Enabled, mb.PktstatbpfNetworkFlowBytesSelection(),
		m.PktstatbpfNetworkFlowPackets.Enabled, mb.PktstatbpfNetworkFlowPacketsSelection())
	if s.retransmits != nil {
		s.retransmits.skipZero = true
	}
	// kprobe mode counts no flags: no flag series at all rather than zeros.
	flags := m.PktstatbpfNetworkFlowTCPFlags.Enabled && cfg.captureMode() != string(core.ModeKprobe)
	for i := range s.tcpFlags {
		if s.tcpFlags[i] = newSeriesSet(flags, mb.PktstatbpfNetworkFlowTCPFlagsSelection()); s.tcpFlags[i] != nil {
			// A series gets a point for a flag once it has counted one.
			s.tcpFlags[i].skipZero = true
		}
	}
	if cfg.Drops {
		s.dropPackets, s.dropBytes = newSeriesSets(m.PktstatbpfNetworkFlowDropPackets.Enabled, mb.PktstatbpfNetworkFlowDropPacketsSelection(),
			m.PktstatbpfNetworkFlowDropBytes.Enabled, mb.PktstatbpfNetworkFlowDropBytesSelection())
	}
	return s, nil
}

// start attaches the kernel programs.
func (s *flowScraper) start(ctx context.Context, _ component.Host) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	// A fresh aggregator: its series are built from the deltas of this
	// source's snapshots, every one of them from the first.
	agg, err := aggregate.New(s.cfg.aggregateConfig())
	if err != nil {
		return err
	}
	// core logs through log/slog; hand it the collector's zap core so attach
	// and detach events land in the collector's log with its fields.
	logger := slog.New(zapslog.NewHandler(s.settings.Logger.Core()))
	src, err := s.newSource(s.cfg.coreConfig(logger))
	if err != nil {
		return fmt.Errorf("create flow source: %w", err)
	}
	if err := src.Start(ctx); err != nil {
		return errors.Join(fmt.Errorf("start flow capture (mode %s): %w", s.cfg.captureMode(), err), src.Close())
	}
	s.src = src
	s.agg = agg
	if s.cfg.Drops {
		if s.dropAgg, err = aggregate.New(s.cfg.aggregateConfig()); err != nil {
			return errors.Join(err, src.Close())
		}
	}
	s.startTime = s.now()
	s.prevEnd = s.startTime
	return nil
}

// scrape drains the source and converts what it returned.
func (s *flowScraper) scrape(ctx context.Context) (pmetric.Metrics, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.src == nil {
		return pmetric.NewMetrics(), errors.New("scrape flows: receiver not started")
	}
	// The flow records go into the aggregator as the drain makes them.
	snap, _, err := aggregate.ReadInto(ctx, s.src, s.agg)
	if err != nil {
		return pmetric.NewMetrics(), fmt.Errorf("read flows: %w", err)
	}
	return s.convertBatched(snap, s.cfg.MaxPointsPerBatch, s.sender(ctx)), nil
}

// sender hands one batch to the next consumer as the scraper controller
// hands the scrape's last: counted in the collector's receiver accepted or
// refused points by its consumer's answer, which a refusal does not make a
// failed scrape. nil when the receiver has no consumer of its own (tests
// that call the scraper directly), which makes the scrape one batch.
func (s *flowScraper) sender(ctx context.Context) func(pmetric.Metrics) {
	if s.next == nil || s.obs == nil {
		return nil
	}
	return func(md pmetric.Metrics) {
		n := md.DataPointCount()
		opCtx := s.obs.StartMetricsOp(ctx)
		err := s.next.ConsumeMetrics(opCtx, md)
		s.obs.EndMetricsOp(opCtx, "", n, err)
	}
}

// convert turns one snapshot into metrics, one batch, and advances the
// series state.
func (s *flowScraper) convert(snap core.Snapshot) pmetric.Metrics {
	return s.convertBatched(snap, 0, nil)
}

// convertBatched is convert that, with perBatch > 0 and send set, hands every
// perBatch flow data points recorded to send as a batch of their own, as soon
// as they are built, so that the scrape is never in memory at once; it
// returns the rest, with the receiver's own metrics.
func (s *flowScraper) convertBatched(snap core.Snapshot, perBatch int, send func(pmetric.Metrics)) pmetric.Metrics {
	rb := metadata.NewResourceBuilder(s.cfg.ResourceAttributes)
	rb.SetHostName(s.hostName)
	rb.SetCaptureMode(s.cfg.captureMode())
	if s.nodeName != "" {
		rb.SetK8sNodeName(s.nodeName)
	}
	res := rb.Emit()
	emit := func() pmetric.Metrics {
		md := s.mb.Emit(metadata.WithResource(res))
		if s.splitIdentities {
			md = splitByIdentity(md)
		}
		return md
	}
	var b *batcher
	if perBatch > 0 && send != nil {
		b = &batcher{max: perBatch, send: func() { send(emit()) }}
	}

	now := snap.Time
	if now.IsZero() {
		now = s.now()
	}
	// Every snapshot goes through the aggregator, so its series conserve
	// the kernel's totals; its result is changed by the next call, so it is
	// consumed here. A snapshot read by ReadInto has no Records: they went
	// in during the drain, and this completes their call.
	out := s.agg.Aggregate(now, snap.Records)
	for i := range out {
		sr := out[i]
		la := lazyAttrs{mapper: &s.mapper, sr: sr}
		// bytes counts packets too when it is the only set of both.
		s.bytes.add(sr, &la, [2]uint64{sr.DeltaBytes, sr.DeltaPackets})
		s.packets.add(sr, &la, [2]uint64{sr.DeltaPackets})
		s.retransmits.add(sr, &la, [2]uint64{sr.DeltaRetransmits})
		if s.tcpFlags[0] != nil {
			d := sr.DeltaTCP
			for i, v := range [4]uint64{d.SYN, d.SYNACK, d.FIN, d.RST} {
				s.tcpFlags[i].add(sr, &la, [2]uint64{v})
			}
		}
		if s.rtt != nil {
			var rtt core.RTTStats
			if sr.RTT != nil {
				rtt = *sr.RTT
			}
			s.rtt.add(sr, &la, rtt)
		}
	}
	delta := s.cfg.Temporality == TemporalityDelta
	bytesPoint, packetsPoint := b.number(s.mb.RecordPktstatbpfNetworkFlowBytesDataPoint), b.number(s.mb.RecordPktstatbpfNetworkFlowPacketsDataPoint)
	s.bytes.flush(delta, s.prevEnd, now, bytesPoint, packetsPoint)
	s.packets.flush(delta, s.prevEnd, now, packetsPoint)
	s.retransmits.flush(delta, s.prevEnd, now, b.number(s.mb.RecordPktstatbpfNetworkFlowTCPRetransmitsDataPoint))
	for i, flag := range tcpFlagNames {
		s.tcpFlags[i].flush(delta, s.prevEnd, now, b.number(func(start, ts pcommon.Timestamp, val int64, a *metadata.FlowAttributes) {
			s.mb.RecordPktstatbpfNetworkFlowTCPFlagsDataPoint(start, ts, val, a, flag)
		}))
	}
	if s.dropAgg != nil {
		drops := s.dropAgg.Aggregate(now, snap.Drops)
		for i := range drops {
			sr := drops[i]
			la := lazyAttrs{mapper: &s.mapper, sr: sr}
			// dropPackets counts bytes too when it is the only set of both.
			s.dropPackets.add(sr, &la, [2]uint64{sr.DeltaPackets, sr.DeltaBytes})
			s.dropBytes.add(sr, &la, [2]uint64{sr.DeltaBytes})
		}
		dropPackets, dropBytes := b.number(s.mb.RecordPktstatbpfNetworkFlowDropPacketsDataPoint), b.number(s.mb.RecordPktstatbpfNetworkFlowDropBytesDataPoint)
		s.dropPackets.flush(delta, s.prevEnd, now, dropPackets, dropBytes)
		s.dropBytes.flush(delta, s.prevEnd, now, dropBytes)
	}
	s.rtt.flush(delta, s.prevEnd, now, b.histogram(s.mb.RecordPktstatbpfNetworkFlowTCPRTTDataPoint))

	ts := pcommon.NewTimestampFromTime(now)
	start := pcommon.NewTimestampFromTime(s.startTime)
	h := snap.Health
	s.mb.RecordPktstatbpfFlowCountDataPoint(start, ts, int64(h.ActiveFlows))
	s.mb.RecordPktstatbpfFlowLimitDataPoint(start, ts, int64(h.Capacity))
	s.mb.RecordPktstatbpfKernelMemoryUsageDataPoint(start, ts, int64(h.KernelMemory))
	s.mb.RecordPktstatbpfFlowExpiredDataPoint(start, ts, int64(h.ExpiredFlows))
	s.mb.RecordPktstatbpfOverflowPacketsDataPoint(start, ts, int64(h.OverflowPackets))
	s.mb.RecordPktstatbpfOverflowBytesDataPoint(start, ts, int64(h.OverflowBytes))
	s.mb.RecordPktstatbpfDrainDurationDataPoint(ts, h.DrainDuration.Seconds())
	attached := 0
	for _, hook := range h.Hooks {
		if hook.Attached {
			attached++
		}
	}
	// Both states every time, so that "failed > 0" can be alerted on
	// without an absent series standing in for zero.
	s.mb.RecordPktstatbpfHookCountDataPoint(start, ts, int64(attached), metadata.AttributeHookStateAttached)
	s.mb.RecordPktstatbpfHookCountDataPoint(start, ts, int64(len(h.Hooks)-attached), metadata.AttributeHookStateFailed)
	s.mb.RecordPktstatbpfHookNotFirstDataPoint(start, ts, int64(h.HooksNotFirst()))
	s.prevEnd = now
	return emit()
}

// shutdown detaches. The last, partial interval has been scraped already:
// finalScrape hands the controller one more tick before shutting it down,
// and the controller waits for that scrape and its consumer call first.
func (s *flowScraper) shutdown(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.src == nil {
		// Start failed or never ran: there is nothing to close.
		return nil
	}
	err := s.src.Close()
	s.src = nil
	if err != nil {
		return fmt.Errorf("stop flow capture: %w", err)
	}
	return nil
}
