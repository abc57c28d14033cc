package metadata

import (
	"fmt"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver"

	"github.com/pktstat-bpf/pktstat-bpf/core"
)

// metricKind is the pdata shape of one metric.
type metricKind int

const (
	// kindSumInt is a monotonic sum: a count of events since a start.
	kindSumInt metricKind = iota
	// kindUpDownInt is a non-monotonic cumulative sum: how many of a thing
	// exist now (flows in the table, attached hooks), which semconv
	// records as an UpDownCounter rather than a gauge because the values
	// of several hosts add up.
	kindUpDownInt
	kindGaugeInt
	kindGaugeDouble
	// kindHistogram is an explicit-bucket histogram with min and max.
	kindHistogram
)

// metricDef is one metric's fixed description, as in metadata.yaml.
type metricDef struct {
	name, description, unit string
	kind                    metricKind
}

// metricBuffer collects one metric's data points between Emits, as
// mdatagen's per-metric structs do.
type metricBuffer struct {
	def         metricDef
	enabled     bool
	temporality pmetric.AggregationTemporality
	data        pmetric.Metric
	capacity    int
}

func newMetricBuffer(def metricDef, enabled bool, temporality pmetric.AggregationTemporality) *metricBuffer {
	m := &metricBuffer{def: def, enabled: enabled, temporality: temporality}
	if enabled {
		m.init()
	}
	return m
}

func (m *metricBuffer) init() {
	m.data = pmetric.NewMetric()
	m.data.SetName(m.def.name)
	m.data.SetDescription(m.def.description)
	m.data.SetUnit(m.def.unit)
	switch m.def.kind {
	case kindSumInt, kindUpDownInt:
		m.data.SetEmptySum()
		m.data.Sum().SetIsMonotonic(m.def.kind == kindSumInt)
		m.data.Sum().SetAggregationTemporality(m.temporality)
		m.data.Sum().DataPoints().EnsureCapacity(m.capacity)
	case kindGaugeInt, kindGaugeDouble:
		m.data.SetEmptyGauge()
		m.data.Gauge().DataPoints().EnsureCapacity(m.capacity)
	case kindHistogram:
		m.data.SetEmptyHistogram()
		m.data.Histogram().SetAggregationTemporality(m.temporality)
		m.data.Histogram().DataPoints().EnsureCapacity(m.capacity)
	}
}

func (m *metricBuffer) len() int {
	if m.def.kind == kindHistogram {
		return m.data.Histogram().DataPoints().Len()
	}
	return m.dataPoints().Len()
}

func (m *metricBuffer) newHistogramDataPoint(start, ts pcommon.Timestamp) (pmetric.HistogramDataPoint, bool) {
	if !m.enabled {
		return pmetric.HistogramDataPoint{}, false
	}
	dp := m.data.Histogram().DataPoints().AppendEmpty()
	dp.SetStartTimestamp(start)
	dp.SetTimestamp(ts)
	return dp, true
}

func (m *metricBuffer) dataPoints() pmetric.NumberDataPointSlice {
	if m.def.kind == kindSumInt || m.def.kind == kindUpDownInt {
		return m.data.Sum().DataPoints()
	}
	return m.data.Gauge().DataPoints()
}

func (m *metricBuffer) newDataPoint(start, ts pcommon.Timestamp) (pmetric.NumberDataPoint, bool) {
	if !m.enabled {
		return pmetric.NumberDataPoint{}, false
	}
	dp := m.dataPoints().AppendEmpty()
	dp.SetStartTimestamp(start)
	dp.SetTimestamp(ts)
	return dp, true
}

// emit moves the buffered points into metrics and starts an empty buffer
// sized like the last one, so steady flow counts allocate once.
func (m *metricBuffer) emit(metrics pmetric.MetricSlice) {
	if !m.enabled || m.len() == 0 {
		return
	}
	m.capacity = max(m.capacity, m.len())
	m.data.MoveTo(metrics.AppendEmpty())
	m.init()
}

var (
	defPktstatbpfNetworkFlowBytes = metricDef{MetricPktstatbpfNetworkFlowBytes,
		"Bytes of the flow seen at the hook: the L2 frame length in tc and xdp modes, the L3 (IP) length in cgroup mode, the transport payload in kprobe mode.",
		"By", kindSumInt}
	defPktstatbpfNetworkFlowPackets = metricDef{MetricPktstatbpfNetworkFlowPackets,
		"Packets of the flow seen at the hook.",
		"{packet}", kindSumInt}
	defPktstatbpfNetworkFlowTCPRetransmits = metricDef{MetricPktstatbpfNetworkFlowTCPRetransmits,
		"TCP segments the kernel sent again (tcp_retransmit_skb) for the flow, on the transmit side; kprobe mode, and tc and cgroup modes where the kernel has tp_btf/tcp_retransmit_skb.",
		"{segment}", kindSumInt}
	defPktstatbpfNetworkFlowTCPFlags = metricDef{MetricPktstatbpfNetworkFlowTCPFlags,
		"TCP packets of the flow with SYN (without ACK), SYN+ACK, FIN or RST set, by pktstatbpf.tcp.flag; tc, xdp and cgroup modes.",
		"{packet}", kindSumInt}
	defPktstatbpfNetworkFlowDropPackets = metricDef{MetricPktstatbpfNetworkFlowDropPackets,
		"Packets of the flow the kernel dropped (kfree_skb with a drop reason), by pktstatbpf.drop.reason; only with drops = true.",
		"{packet}", kindSumInt}
	defPktstatbpfNetworkFlowDropBytes = metricDef{MetricPktstatbpfNetworkFlowDropBytes,
		"Bytes of the packets of the flow the kernel dropped, as L3 (IP) lengths; only with drops = true.",
		"By", kindSumInt}
	defPktstatbpfNetworkFlowTCPRTT = metricDef{MetricPktstatbpfNetworkFlowTCPRTT,
		"Smoothed round-trip time of the flow's TCP socket, sampled at every segment it receives (tcp_rtt = true; tc and cgroup modes, on the transmit side).",
		"s", kindHistogram}
	defFlowCount = metricDef{MetricPktstatbpfFlowCount,
		"Flows in the kernel flow table at the last drain.",
		"{flow}", kindUpDownInt}
	defFlowLimit = metricDef{MetricPktstatbpfFlowLimit,
		"Size of the kernel flow table (max_flows).",
		"{flow}", kindUpDownInt}
	defKernelMemoryUsage = metricDef{MetricPktstatbpfKernelMemoryUsage,
		"Kernel memory the receiver's BPF maps hold, charged to the collector's memory cgroup besides its own RSS.",
		"By", kindUpDownInt}
	defFlowExpired = metricDef{MetricPktstatbpfFlowExpired,
		"Flows removed from the kernel table after idle_timeout without packets, since the receiver started.",
		"{flow}", kindSumInt}
	defOverflowPackets = metricDef{MetricPktstatbpfOverflowPackets,
		"Packets of flows that did not fit in the kernel table, since the receiver started; they are also in the flow metrics' series marked pktstatbpf.overflow.",
		"{packet}", kindSumInt}
	defOverflowBytes = metricDef{MetricPktstatbpfOverflowBytes,
		"Bytes of flows that did not fit in the kernel table, since the receiver started.",
		"By", kindSumInt}
	defDrainDuration = metricDef{MetricPktstatbpfDrainDuration,
		"Time the last drain of the kernel tables took.",
		"s", kindGaugeDouble}
	defHookCount = metricDef{MetricPktstatbpfHookCount,
		"Kernel hooks the receiver manages (one per interface and direction, or per cgroup and direction), by pktstatbpf.hook.state: attached, or failed to attach.",
		"{hook}", kindUpDownInt}
	defHookNotFirst = metricDef{MetricPktstatbpfHookNotFirst,
		"Attached TC hooks on which another program or tc filter runs before ours; packets it drops, redirects or passes without TCX_NEXT are not counted (the collector log names it).",
		"{hook}", kindUpDownInt}
)

// MetricsBuilder buffers data points and emits them as one pmetric.Metrics.
type MetricsBuilder struct {
	config               MetricsBuilderConfig
	buildInfo            component.BuildInfo
	bytesSelection       AttributeSelection
	packetsSelection     AttributeSelection
	retransmitsSelection AttributeSelection
	tcpFlagsSelection    AttributeSelection
	dropPacketsSelection AttributeSelection
	dropBytesSelection   AttributeSelection
	rttSelection         AttributeSelection

	networkFlowBytes          *metricBuffer
	networkFlowPackets        *metricBuffer
	networkFlowRetransmits    *metricBuffer
	networkFlowTCPFlags       *metricBuffer
	networkFlowDropPackets    *metricBuffer
	networkFlowDropBytes      *metricBuffer
	networkFlowRTT            *metricBuffer
	pktstatbpfFlowCount       *metricBuffer
	pktstatbpfFlowLimit       *metricBuffer
	pktstatbpfKernelMemory    *metricBuffer
	pktstatbpfFlowExpired     *metricBuffer
	pktstatbpfOverflowPackets *metricBuffer
	pktstatbpfOverflowBytes   *metricBuffer
	pktstatbpfDrainDuration   *metricBuffer
	pktstatbpfHookCount       *metricBuffer
	pktstatbpfHookNotFirst    *metricBuffer
}

// MetricBuilderOption changes a MetricsBuilder at construction.
type MetricBuilderOption func(*builderOptions)

type builderOptions struct {
	flowTemporality pmetric.AggregationTemporality
}

// WithFlowTemporality sets the temporality of the flow metrics; the
// default is cumulative. The receiver's self-metrics stay cumulative.
func WithFlowTemporality(t pmetric.AggregationTemporality) MetricBuilderOption {
	return func(o *builderOptions) { o.flowTemporality = t }
}

// NewMetricsBuilder returns a builder for mbc, which must have passed Validate.
func NewMetricsBuilder(mbc MetricsBuilderConfig, settings receiver.Settings, options ...MetricBuilderOption) (*MetricsBuilder, error) {
	o := builderOptions{flowTemporality: pmetric.AggregationTemporalityCumulative}
	for _, opt := range options {
		opt(&o)
	}
	bytesSel, err := mbc.Metrics.PktstatbpfNetworkFlowBytes.Selection()
	if err != nil {
		return nil, fmt.Errorf("metrics::%s::attributes: %w", MetricPktstatbpfNetworkFlowBytes, err)
	}
	packetsSel, err := mbc.Metrics.PktstatbpfNetworkFlowPackets.Selection()
	if err != nil {
		return nil, fmt.Errorf("metrics::%s::attributes: %w", MetricPktstatbpfNetworkFlowPackets, err)
	}
	retransSel, err := mbc.Metrics.PktstatbpfNetworkFlowTCPRetransmits.Selection()
	if err != nil {
		return nil, fmt.Errorf("metrics::%s::attributes: %w", MetricPktstatbpfNetworkFlowTCPRetransmits, err)
	}
	flagsSel, err := mbc.Metrics.PktstatbpfNetworkFlowTCPFlags.Selection()
	if err != nil {
		return nil, fmt.Errorf("metrics::%s::attributes: %w", MetricPktstatbpfNetworkFlowTCPFlags, err)
	}
	dropPacketsSel, err := mbc.Metrics.PktstatbpfNetworkFlowDropPackets.Selection()
	if err != nil {
		return nil, fmt.Errorf("metrics::%s::attributes: %w", MetricPktstatbpfNetworkFlowDropPackets, err)
	}
	dropBytesSel, err := mbc.Metrics.PktstatbpfNetworkFlowDropBytes.Selection()
	if err != nil {
		return nil, fmt.Errorf("metrics::%s::attributes: %w", MetricPktstatbpfNetworkFlowDropBytes, err)
	}
	rttSel, err := mbc.Metrics.PktstatbpfNetworkFlowTCPRTT.Selection()
	if err != nil {
		return nil, fmt.Errorf("metrics::%s::attributes: %w", MetricPktstatbpfNetworkFlowTCPRTT, err)
	}
	cum := pmetric.AggregationTemporalityCumulative
	m := mbc.Metrics
	return &MetricsBuilder{
		config:                    mbc,
		buildInfo:                 settings.BuildInfo,
		bytesSelection:            bytesSel,
		packetsSelection:          packetsSel,
		retransmitsSelection:      retransSel,
		tcpFlagsSelection:         flagsSel,
		dropPacketsSelection:      dropPacketsSel,
		dropBytesSelection:        dropBytesSel,
		networkFlowBytes:          newMetricBuffer(defPktstatbpfNetworkFlowBytes, m.PktstatbpfNetworkFlowBytes.Enabled, o.flowTemporality),
		networkFlowPackets:        newMetricBuffer(defPktstatbpfNetworkFlowPackets, m.PktstatbpfNetworkFlowPackets.Enabled, o.flowTemporality),
		networkFlowRetransmits:    newMetricBuffer(defPktstatbpfNetworkFlowTCPRetransmits, m.PktstatbpfNetworkFlowTCPRetransmits.Enabled, o.flowTemporality),
		networkFlowTCPFlags:       newMetricBuffer(defPktstatbpfNetworkFlowTCPFlags, m.PktstatbpfNetworkFlowTCPFlags.Enabled, o.flowTemporality),
		networkFlowDropPackets:    newMetricBuffer(defPktstatbpfNetworkFlowDropPackets, m.PktstatbpfNetworkFlowDropPackets.Enabled, o.flowTemporality),
		networkFlowDropBytes:      newMetricBuffer(defPktstatbpfNetworkFlowDropBytes, m.PktstatbpfNetworkFlowDropBytes.Enabled, o.flowTemporality),
		rttSelection:              rttSel,
		networkFlowRTT:            newMetricBuffer(defPktstatbpfNetworkFlowTCPRTT, m.PktstatbpfNetworkFlowTCPRTT.Enabled, o.flowTemporality),
		pktstatbpfFlowCount:       newMetricBuffer(defFlowCount, m.PktstatbpfFlowCount.Enabled, cum),
		pktstatbpfFlowLimit:       newMetricBuffer(defFlowLimit, m.PktstatbpfFlowLimit.Enabled, cum),
		pktstatbpfKernelMemory:    newMetricBuffer(defKernelMemoryUsage, m.PktstatbpfKernelMemoryUsage.Enabled, cum),
		pktstatbpfFlowExpired:     newMetricBuffer(defFlowExpired, m.PktstatbpfFlowExpired.Enabled, cum),
		pktstatbpfOverflowPackets: newMetricBuffer(defOverflowPackets, m.PktstatbpfOverflowPackets.Enabled, cum),
		pktstatbpfOverflowBytes:   newMetricBuffer(defOverflowBytes, m.PktstatbpfOverflowBytes.Enabled, cum),
		pktstatbpfDrainDuration:   newMetricBuffer(defDrainDuration, m.PktstatbpfDrainDuration.Enabled, cum),
		pktstatbpfHookCount:       newMetricBuffer(defHookCount, m.PktstatbpfHookCount.Enabled, cum),
		pktstatbpfHookNotFirst:    newMetricBuffer(defHookNotFirst, m.PktstatbpfHookNotFirst.Enabled, cum),
	}, nil
}

// PktstatbpfNetworkFlowBytesSelection is the attribute selection of pktstatbpf.network.flow.bytes.
func (mb *MetricsBuilder) PktstatbpfNetworkFlowBytesSelection() AttributeSelection {
	return mb.bytesSelection
}

// PktstatbpfNetworkFlowPacketsSelection is the attribute selection of pktstatbpf.network.flow.packets.
func (mb *MetricsBuilder) PktstatbpfNetworkFlowPacketsSelection() AttributeSelection {
	return mb.packetsSelection
}

// RecordPktstatbpfNetworkFlowBytesDataPoint adds a point for one series; attrs are
// written as far as the metric's selection allows.
func (mb *MetricsBuilder) RecordPktstatbpfNetworkFlowBytesDataPoint(start, ts pcommon.Timestamp, val int64, attrs *FlowAttributes) {
	if dp, ok := mb.networkFlowBytes.newDataPoint(start, ts); ok {
		dp.SetIntValue(val)
		mb.bytesSelection.put(attrs, dp.Attributes(), 0)
	}
}

// RecordPktstatbpfNetworkFlowPacketsDataPoint adds a point for one series.
func (mb *MetricsBuilder) RecordPktstatbpfNetworkFlowPacketsDataPoint(start, ts pcommon.Timestamp, val int64, attrs *FlowAttributes) {
	if dp, ok := mb.networkFlowPackets.newDataPoint(start, ts); ok {
		dp.SetIntValue(val)
		mb.packetsSelection.put(attrs, dp.Attributes(), 0)
	}
}

// PktstatbpfNetworkFlowTCPRetransmitsSelection is the attribute selection of pktstatbpf.network.flow.tcp.retransmits.
func (mb *MetricsBuilder) PktstatbpfNetworkFlowTCPRetransmitsSelection() AttributeSelection {
	return mb.retransmitsSelection
}

// RecordPktstatbpfNetworkFlowTCPRetransmitsDataPoint adds a point for one series.
func (mb *MetricsBuilder) RecordPktstatbpfNetworkFlowTCPRetransmitsDataPoint(start, ts pcommon.Timestamp, val int64, attrs *FlowAttributes) {
	if dp, ok := mb.networkFlowRetransmits.newDataPoint(start, ts); ok {
		dp.SetIntValue(val)
		mb.retransmitsSelection.put(attrs, dp.Attributes(), 0)
	}
}

// PktstatbpfNetworkFlowTCPFlagsSelection is the attribute selection of pktstatbpf.network.flow.tcp.flags.
func (mb *MetricsBuilder) PktstatbpfNetworkFlowTCPFlagsSelection() AttributeSelection {
	return mb.tcpFlagsSelection
}

// RecordPktstatbpfNetworkFlowTCPFlagsDataPoint adds a point for one series
// and one flag (AttributeTCPFlagSyn, ...).
func (mb *MetricsBuilder) RecordPktstatbpfNetworkFlowTCPFlagsDataPoint(start, ts pcommon.Timestamp, val int64, attrs *FlowAttributes, flag string) {
	if dp, ok := mb.networkFlowTCPFlags.newDataPoint(start, ts); ok {
		dp.SetIntValue(val)
		mb.tcpFlagsSelection.put(attrs, dp.Attributes(), 1)
		dp.Attributes().PutStr(AttrTCPFlag, flag)
	}
}

// PktstatbpfNetworkFlowDropPacketsSelection is the attribute selection of pktstatbpf.network.flow.drop.packets.
func (mb *MetricsBuilder) PktstatbpfNetworkFlowDropPacketsSelection() AttributeSelection {
	return mb.dropPacketsSelection
}

// PktstatbpfNetworkFlowDropBytesSelection is the attribute selection of pktstatbpf.network.flow.drop.bytes.
func (mb *MetricsBuilder) PktstatbpfNetworkFlowDropBytesSelection() AttributeSelection {
	return mb.dropBytesSelection
}

// RecordPktstatbpfNetworkFlowDropPacketsDataPoint adds a point for one drop series.
func (mb *MetricsBuilder) RecordPktstatbpfNetworkFlowDropPacketsDataPoint(start, ts pcommon.Timestamp, val int64, attrs *FlowAttributes) {
	if dp, ok := mb.networkFlowDropPackets.newDataPoint(start, ts); ok {
		dp.SetIntValue(val)
		mb.dropPacketsSelection.put(attrs, dp.Attributes(), 0)
	}
}

// RecordPktstatbpfNetworkFlowDropBytesDataPoint adds a point for one drop series.
func (mb *MetricsBuilder) RecordPktstatbpfNetworkFlowDropBytesDataPoint(start, ts pcommon.Timestamp, val int64, attrs *FlowAttributes) {
	if dp, ok := mb.networkFlowDropBytes.newDataPoint(start, ts); ok {
		dp.SetIntValue(val)
		mb.dropBytesSelection.put(attrs, dp.Attributes(), 0)
	}
}

// PktstatbpfNetworkFlowTCPRTTSelection is the attribute selection of pktstatbpf.network.flow.tcp.rtt.
func (mb *MetricsBuilder) PktstatbpfNetworkFlowTCPRTTSelection() AttributeSelection {
	return mb.rttSelection
}

// RTTBoundsSeconds returns core.RTTBucketBounds in seconds: the explicit
// bucket bounds of pktstatbpf.network.flow.tcp.rtt.
func RTTBoundsSeconds() []float64 {
	b := make([]float64, len(core.RTTBucketBounds))
	for i, d := range core.RTTBucketBounds {
		b[i] = d.Seconds()
	}
	return b
}

// Histogram is one explicit-bucket histogram point's values, in the
// metric's unit: len(Counts) == len(Bounds)+1.
type Histogram struct {
	Count         uint64
	Sum, Min, Max float64
	Bounds        []float64
	Counts        []uint64
}

// RecordPktstatbpfNetworkFlowTCPRTTDataPoint adds a point for one series.
func (mb *MetricsBuilder) RecordPktstatbpfNetworkFlowTCPRTTDataPoint(start, ts pcommon.Timestamp, h Histogram, attrs *FlowAttributes) {
	if dp, ok := mb.networkFlowRTT.newHistogramDataPoint(start, ts); ok {
		dp.SetCount(h.Count)
		dp.SetSum(h.Sum)
		dp.SetMin(h.Min)
		dp.SetMax(h.Max)
		dp.ExplicitBounds().FromRaw(h.Bounds)
		dp.BucketCounts().FromRaw(h.Counts)
		mb.rttSelection.put(attrs, dp.Attributes(), 0)
	}
}

// RecordPktstatbpfFlowCountDataPoint adds a pktstatbpf.flow.count point.
func (mb *MetricsBuilder) RecordPktstatbpfFlowCountDataPoint(start, ts pcommon.Timestamp, val int64) {
	if dp, ok := mb.pktstatbpfFlowCount.newDataPoint(start, ts); ok {
		dp.SetIntValue(val)
	}
}

// RecordPktstatbpfKernelMemoryUsageDataPoint adds a pktstatbpf.kernel.memory.usage point, in bytes.
func (mb *MetricsBuilder) RecordPktstatbpfKernelMemoryUsageDataPoint(start, ts pcommon.Timestamp, val int64) {
	if dp, ok := mb.pktstatbpfKernelMemory.newDataPoint(start, ts); ok {
		dp.SetIntValue(val)
	}
}

// RecordPktstatbpfFlowLimitDataPoint adds a pktstatbpf.flow.limit point.
func (mb *MetricsBuilder) RecordPktstatbpfFlowLimitDataPoint(start, ts pcommon.Timestamp, val int64) {
	if dp, ok := mb.pktstatbpfFlowLimit.newDataPoint(start, ts); ok {
		dp.SetIntValue(val)
	}
}

// RecordPktstatbpfFlowExpiredDataPoint adds a pktstatbpf.flow.expired point.
func (mb *MetricsBuilder) RecordPktstatbpfFlowExpiredDataPoint(start, ts pcommon.Timestamp, val int64) {
	if dp, ok := mb.pktstatbpfFlowExpired.newDataPoint(start, ts); ok {
		dp.SetIntValue(val)
	}
}

// RecordPktstatbpfOverflowPacketsDataPoint adds a pktstatbpf.overflow.packets point.
func (mb *MetricsBuilder) RecordPktstatbpfOverflowPacketsDataPoint(start, ts pcommon.Timestamp, val int64) {
	if dp, ok := mb.pktstatbpfOverflowPackets.newDataPoint(start, ts); ok {
		dp.SetIntValue(val)
	}
}

// RecordPktstatbpfOverflowBytesDataPoint adds a pktstatbpf.overflow.bytes point.
func (mb *MetricsBuilder) RecordPktstatbpfOverflowBytesDataPoint(start, ts pcommon.Timestamp, val int64) {
	if dp, ok := mb.pktstatbpfOverflowBytes.newDataPoint(start, ts); ok {
		dp.SetIntValue(val)
	}
}

// RecordPktstatbpfDrainDurationDataPoint adds a pktstatbpf.drain.duration point, in seconds.
func (mb *MetricsBuilder) RecordPktstatbpfDrainDurationDataPoint(ts pcommon.Timestamp, seconds float64) {
	if dp, ok := mb.pktstatbpfDrainDuration.newDataPoint(0, ts); ok {
		dp.SetDoubleValue(seconds)
	}
}

// RecordPktstatbpfHookCountDataPoint adds a pktstatbpf.hook.count point for
// the hooks in one state (AttributeHookStateAttached or
// AttributeHookStateFailed).
func (mb *MetricsBuilder) RecordPktstatbpfHookCountDataPoint(start, ts pcommon.Timestamp, val int64, state string) {
	if dp, ok := mb.pktstatbpfHookCount.newDataPoint(start, ts); ok {
		dp.SetIntValue(val)
		dp.Attributes().PutStr(AttrHookState, state)
	}
}

// RecordPktstatbpfHookNotFirstDataPoint adds a pktstatbpf.hook.not_first point.
func (mb *MetricsBuilder) RecordPktstatbpfHookNotFirstDataPoint(start, ts pcommon.Timestamp, val int64) {
	if dp, ok := mb.pktstatbpfHookNotFirst.newDataPoint(start, ts); ok {
		dp.SetIntValue(val)
	}
}

// ResourceMetricsOption changes the ResourceMetrics that Emit builds.
type ResourceMetricsOption func(pmetric.ResourceMetrics)

// WithResource sets the resource of the emitted metrics.
func WithResource(res pcommon.Resource) ResourceMetricsOption {
	return func(rm pmetric.ResourceMetrics) { res.CopyTo(rm.Resource()) }
}

// Emit returns every buffered point as one ResourceMetrics and empties the
// buffers. It returns empty Metrics when nothing was recorded.
func (mb *MetricsBuilder) Emit(options ...ResourceMetricsOption) pmetric.Metrics {
	md := pmetric.NewMetrics()
	rm := pmetric.NewResourceMetrics()
	for _, opt := range options {
		opt(rm)
	}
	sm := rm.ScopeMetrics().AppendEmpty()
	sm.Scope().SetName(ScopeName)
	sm.Scope().SetVersion(mb.buildInfo.Version)
	ms := sm.Metrics()
	for _, m := range []*metricBuffer{
		mb.networkFlowBytes,
		mb.networkFlowPackets,
		mb.networkFlowRetransmits,
		mb.networkFlowTCPFlags,
		mb.networkFlowDropPackets,
		mb.networkFlowDropBytes,
		mb.networkFlowRTT,
		mb.pktstatbpfFlowCount,
		mb.pktstatbpfFlowLimit,
		mb.pktstatbpfKernelMemory,
		mb.pktstatbpfFlowExpired,
		mb.pktstatbpfOverflowPackets,
		mb.pktstatbpfOverflowBytes,
		mb.pktstatbpfDrainDuration,
		mb.pktstatbpfHookCount,
		mb.pktstatbpfHookNotFirst,
	} {
		m.emit(ms)
	}
	if ms.Len() > 0 {
		rm.MoveTo(md.ResourceMetrics().AppendEmpty())
	}
	return md
}
