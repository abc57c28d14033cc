package metadata

import (
	"fmt"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver"
)

// metricKind is the pdata shape of one metric.
type metricKind int

const (
	kindSumInt metricKind = iota
	kindGaugeInt
	kindGaugeDouble
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
	case kindSumInt:
		m.data.SetEmptySum()
		m.data.Sum().SetIsMonotonic(true)
		m.data.Sum().SetAggregationTemporality(m.temporality)
		m.data.Sum().DataPoints().EnsureCapacity(m.capacity)
	case kindGaugeInt, kindGaugeDouble:
		m.data.SetEmptyGauge()
		m.data.Gauge().DataPoints().EnsureCapacity(m.capacity)
	}
}

func (m *metricBuffer) dataPoints() pmetric.NumberDataPointSlice {
	if m.def.kind == kindSumInt {
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
	if !m.enabled || m.dataPoints().Len() == 0 {
		return
	}
	m.capacity = max(m.capacity, m.dataPoints().Len())
	m.data.MoveTo(metrics.AppendEmpty())
	m.init()
}

var (
	defNetworkFlowBytes = metricDef{MetricNetworkFlowBytes,
		"Bytes of the flow seen at the hook: the L2 frame length in tc and xdp modes, the L3 (IP) length in cgroup mode, the transport payload in kprobe mode.",
		"By", kindSumInt}
	defNetworkFlowPackets = metricDef{MetricNetworkFlowPackets,
		"Packets of the flow seen at the hook.",
		"{packet}", kindSumInt}
	defNetworkFlowTCPRetransmits = metricDef{MetricNetworkFlowTCPRetransmits,
		"TCP segments the kernel sent again (tcp_retransmit_skb) for the flow; kprobe mode only, on the transmit side.",
		"{packet}", kindSumInt}
	defFlowsActive = metricDef{MetricPktstatbpfFlowsActive,
		"Flows in the kernel flow table at the last drain.",
		"{flow}", kindGaugeInt}
	defFlowsCapacity = metricDef{MetricPktstatbpfFlowsCapacity,
		"Size of the kernel flow table (max_flows).",
		"{flow}", kindGaugeInt}
	defFlowsExpired = metricDef{MetricPktstatbpfFlowsExpired,
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
	defHooksAttached = metricDef{MetricPktstatbpfHooksAttached,
		"Kernel hooks currently attached (one per interface and direction, or per cgroup and direction).",
		"{hook}", kindGaugeInt}
	defHooksNotFirst = metricDef{MetricPktstatbpfHooksNotFirst,
		"Attached TC hooks on which another program or tc filter runs before ours; packets it drops or redirects are not counted (the log names it).",
		"{hook}", kindGaugeInt}
)

// MetricsBuilder buffers data points and emits them as one pmetric.Metrics.
type MetricsBuilder struct {
	config               MetricsBuilderConfig
	buildInfo            component.BuildInfo
	bytesSelection       AttributeSelection
	packetsSelection     AttributeSelection
	retransmitsSelection AttributeSelection

	networkFlowBytes          *metricBuffer
	networkFlowPackets        *metricBuffer
	networkFlowRetransmits    *metricBuffer
	pktstatbpfFlowsActive     *metricBuffer
	pktstatbpfFlowsCapacity   *metricBuffer
	pktstatbpfFlowsExpired    *metricBuffer
	pktstatbpfOverflowPackets *metricBuffer
	pktstatbpfOverflowBytes   *metricBuffer
	pktstatbpfDrainDuration   *metricBuffer
	pktstatbpfHooksAttached   *metricBuffer
	pktstatbpfHooksNotFirst   *metricBuffer
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
	bytesSel, err := mbc.Metrics.NetworkFlowBytes.Selection()
	if err != nil {
		return nil, fmt.Errorf("metrics::%s::attributes: %w", MetricNetworkFlowBytes, err)
	}
	packetsSel, err := mbc.Metrics.NetworkFlowPackets.Selection()
	if err != nil {
		return nil, fmt.Errorf("metrics::%s::attributes: %w", MetricNetworkFlowPackets, err)
	}
	retransSel, err := mbc.Metrics.NetworkFlowTCPRetransmits.Selection()
	if err != nil {
		return nil, fmt.Errorf("metrics::%s::attributes: %w", MetricNetworkFlowTCPRetransmits, err)
	}
	cum := pmetric.AggregationTemporalityCumulative
	m := mbc.Metrics
	return &MetricsBuilder{
		config:                    mbc,
		buildInfo:                 settings.BuildInfo,
		bytesSelection:            bytesSel,
		packetsSelection:          packetsSel,
		retransmitsSelection:      retransSel,
		networkFlowBytes:          newMetricBuffer(defNetworkFlowBytes, m.NetworkFlowBytes.Enabled, o.flowTemporality),
		networkFlowPackets:        newMetricBuffer(defNetworkFlowPackets, m.NetworkFlowPackets.Enabled, o.flowTemporality),
		networkFlowRetransmits:    newMetricBuffer(defNetworkFlowTCPRetransmits, m.NetworkFlowTCPRetransmits.Enabled, o.flowTemporality),
		pktstatbpfFlowsActive:     newMetricBuffer(defFlowsActive, m.PktstatbpfFlowsActive.Enabled, cum),
		pktstatbpfFlowsCapacity:   newMetricBuffer(defFlowsCapacity, m.PktstatbpfFlowsCapacity.Enabled, cum),
		pktstatbpfFlowsExpired:    newMetricBuffer(defFlowsExpired, m.PktstatbpfFlowsExpired.Enabled, cum),
		pktstatbpfOverflowPackets: newMetricBuffer(defOverflowPackets, m.PktstatbpfOverflowPackets.Enabled, cum),
		pktstatbpfOverflowBytes:   newMetricBuffer(defOverflowBytes, m.PktstatbpfOverflowBytes.Enabled, cum),
		pktstatbpfDrainDuration:   newMetricBuffer(defDrainDuration, m.PktstatbpfDrainDuration.Enabled, cum),
		pktstatbpfHooksAttached:   newMetricBuffer(defHooksAttached, m.PktstatbpfHooksAttached.Enabled, cum),
		pktstatbpfHooksNotFirst:   newMetricBuffer(defHooksNotFirst, m.PktstatbpfHooksNotFirst.Enabled, cum),
	}, nil
}

// NetworkFlowBytesSelection is the attribute selection of network.flow.bytes.
func (mb *MetricsBuilder) NetworkFlowBytesSelection() AttributeSelection { return mb.bytesSelection }

// NetworkFlowPacketsSelection is the attribute selection of network.flow.packets.
func (mb *MetricsBuilder) NetworkFlowPacketsSelection() AttributeSelection {
	return mb.packetsSelection
}

// RecordNetworkFlowBytesDataPoint adds a point for one series; attrs are
// written as far as the metric's selection allows.
func (mb *MetricsBuilder) RecordNetworkFlowBytesDataPoint(start, ts pcommon.Timestamp, val int64, attrs FlowAttributes) {
	if dp, ok := mb.networkFlowBytes.newDataPoint(start, ts); ok {
		dp.SetIntValue(val)
		mb.bytesSelection.put(attrs, dp.Attributes())
	}
}

// RecordNetworkFlowPacketsDataPoint adds a point for one series.
func (mb *MetricsBuilder) RecordNetworkFlowPacketsDataPoint(start, ts pcommon.Timestamp, val int64, attrs FlowAttributes) {
	if dp, ok := mb.networkFlowPackets.newDataPoint(start, ts); ok {
		dp.SetIntValue(val)
		mb.packetsSelection.put(attrs, dp.Attributes())
	}
}

// NetworkFlowTCPRetransmitsSelection is the attribute selection of network.flow.tcp.retransmits.
func (mb *MetricsBuilder) NetworkFlowTCPRetransmitsSelection() AttributeSelection {
	return mb.retransmitsSelection
}

// RecordNetworkFlowTCPRetransmitsDataPoint adds a point for one series.
func (mb *MetricsBuilder) RecordNetworkFlowTCPRetransmitsDataPoint(start, ts pcommon.Timestamp, val int64, attrs FlowAttributes) {
	if dp, ok := mb.networkFlowRetransmits.newDataPoint(start, ts); ok {
		dp.SetIntValue(val)
		mb.retransmitsSelection.put(attrs, dp.Attributes())
	}
}

// RecordPktstatbpfFlowsActiveDataPoint adds a pktstatbpf.flows.active point.
func (mb *MetricsBuilder) RecordPktstatbpfFlowsActiveDataPoint(ts pcommon.Timestamp, val int64) {
	if dp, ok := mb.pktstatbpfFlowsActive.newDataPoint(0, ts); ok {
		dp.SetIntValue(val)
	}
}

// RecordPktstatbpfFlowsCapacityDataPoint adds a pktstatbpf.flows.capacity point.
func (mb *MetricsBuilder) RecordPktstatbpfFlowsCapacityDataPoint(ts pcommon.Timestamp, val int64) {
	if dp, ok := mb.pktstatbpfFlowsCapacity.newDataPoint(0, ts); ok {
		dp.SetIntValue(val)
	}
}

// RecordPktstatbpfFlowsExpiredDataPoint adds a pktstatbpf.flows.expired point.
func (mb *MetricsBuilder) RecordPktstatbpfFlowsExpiredDataPoint(start, ts pcommon.Timestamp, val int64) {
	if dp, ok := mb.pktstatbpfFlowsExpired.newDataPoint(start, ts); ok {
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

// RecordPktstatbpfHooksAttachedDataPoint adds a pktstatbpf.hooks.attached point.
func (mb *MetricsBuilder) RecordPktstatbpfHooksAttachedDataPoint(ts pcommon.Timestamp, val int64) {
	if dp, ok := mb.pktstatbpfHooksAttached.newDataPoint(0, ts); ok {
		dp.SetIntValue(val)
	}
}

// RecordPktstatbpfHooksNotFirstDataPoint adds a pktstatbpf.hooks.not_first point.
func (mb *MetricsBuilder) RecordPktstatbpfHooksNotFirstDataPoint(ts pcommon.Timestamp, val int64) {
	if dp, ok := mb.pktstatbpfHooksNotFirst.newDataPoint(0, ts); ok {
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
		mb.pktstatbpfFlowsActive,
		mb.pktstatbpfFlowsCapacity,
		mb.pktstatbpfFlowsExpired,
		mb.pktstatbpfOverflowPackets,
		mb.pktstatbpfOverflowBytes,
		mb.pktstatbpfDrainDuration,
		mb.pktstatbpfHooksAttached,
		mb.pktstatbpfHooksNotFirst,
	} {
		m.emit(ms)
	}
	if ms.Len() > 0 {
		rm.MoveTo(md.ResourceMetrics().AppendEmpty())
	}
	return md
}
