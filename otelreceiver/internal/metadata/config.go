package metadata

import (
	"errors"
	"fmt"
)

// Metric names.
const (
	MetricPktstatbpfNetworkFlowBytes          = "pktstatbpf.network.flow.bytes"
	MetricPktstatbpfNetworkFlowPackets        = "pktstatbpf.network.flow.packets"
	MetricPktstatbpfNetworkFlowTCPRetransmits = "pktstatbpf.network.flow.tcp.retransmits"
	MetricPktstatbpfNetworkFlowTCPFlags       = "pktstatbpf.network.flow.tcp.flags"
	MetricPktstatbpfNetworkFlowDropPackets    = "pktstatbpf.network.flow.drop.packets"
	MetricPktstatbpfNetworkFlowDropBytes      = "pktstatbpf.network.flow.drop.bytes"
	MetricPktstatbpfNetworkFlowTCPRTT         = "pktstatbpf.network.flow.tcp.rtt"
	MetricPktstatbpfFlowCount                 = "pktstatbpf.flow.count"
	MetricPktstatbpfFlowLimit                 = "pktstatbpf.flow.limit"
	MetricPktstatbpfKernelMemoryUsage         = "pktstatbpf.kernel.memory.usage"
	MetricPktstatbpfFlowExpired               = "pktstatbpf.flow.expired"
	MetricPktstatbpfOverflowPackets           = "pktstatbpf.overflow.packets"
	MetricPktstatbpfOverflowBytes             = "pktstatbpf.overflow.bytes"
	MetricPktstatbpfDrainDuration             = "pktstatbpf.drain.duration"
	MetricPktstatbpfHookCount                 = "pktstatbpf.hook.count"
	MetricPktstatbpfHookNotFirst              = "pktstatbpf.hook.not_first"
)

// Resource attribute names.
const (
	ResourceAttrHostName    = "host.name"
	ResourceAttrCaptureMode = "pktstatbpf.capture.mode"
	ResourceAttrK8sNodeName = "k8s.node.name"
)

// MetricConfig turns a metric on or off.
type MetricConfig struct {
	Enabled bool `mapstructure:"enabled"`
}

// FlowMetricConfig is a MetricConfig for the per-flow metrics, which also
// choose their attributes: series that differ only in attributes left out
// are summed into one, so totals are kept.
type FlowMetricConfig struct {
	Enabled bool `mapstructure:"enabled"`
	// Attributes lists the recorded attributes; empty means every attribute
	// the receiver's dimensions produce.
	Attributes []string `mapstructure:"attributes"`
}

// Selection returns the attributes this metric records.
func (c FlowMetricConfig) Selection() (AttributeSelection, error) {
	if len(c.Attributes) == 0 {
		return AllAttributes(), nil
	}
	return NewAttributeSelection(c.Attributes)
}

// MetricsConfig holds one entry per metric.
type MetricsConfig struct {
	PktstatbpfNetworkFlowBytes          FlowMetricConfig `mapstructure:"pktstatbpf.network.flow.bytes"`
	PktstatbpfNetworkFlowPackets        FlowMetricConfig `mapstructure:"pktstatbpf.network.flow.packets"`
	PktstatbpfNetworkFlowTCPRetransmits FlowMetricConfig `mapstructure:"pktstatbpf.network.flow.tcp.retransmits"`
	PktstatbpfNetworkFlowTCPFlags       FlowMetricConfig `mapstructure:"pktstatbpf.network.flow.tcp.flags"`
	PktstatbpfNetworkFlowDropPackets    FlowMetricConfig `mapstructure:"pktstatbpf.network.flow.drop.packets"`
	PktstatbpfNetworkFlowDropBytes      FlowMetricConfig `mapstructure:"pktstatbpf.network.flow.drop.bytes"`
	PktstatbpfNetworkFlowTCPRTT         FlowMetricConfig `mapstructure:"pktstatbpf.network.flow.tcp.rtt"`
	PktstatbpfFlowCount                 MetricConfig     `mapstructure:"pktstatbpf.flow.count"`
	PktstatbpfFlowLimit                 MetricConfig     `mapstructure:"pktstatbpf.flow.limit"`
	PktstatbpfKernelMemoryUsage         MetricConfig     `mapstructure:"pktstatbpf.kernel.memory.usage"`
	PktstatbpfFlowExpired               MetricConfig     `mapstructure:"pktstatbpf.flow.expired"`
	PktstatbpfOverflowPackets           MetricConfig     `mapstructure:"pktstatbpf.overflow.packets"`
	PktstatbpfOverflowBytes             MetricConfig     `mapstructure:"pktstatbpf.overflow.bytes"`
	PktstatbpfDrainDuration             MetricConfig     `mapstructure:"pktstatbpf.drain.duration"`
	PktstatbpfHookCount                 MetricConfig     `mapstructure:"pktstatbpf.hook.count"`
	PktstatbpfHookNotFirst              MetricConfig     `mapstructure:"pktstatbpf.hook.not_first"`
}

// DefaultMetricsConfig enables every metric but pktstatbpf.network.flow.tcp.retransmits,
// off as it was when only kprobe mode filled it; the flow metrics record
// every attribute of the configured dimensions. The drop metrics are on but
// filled only with drops = true, which loads their kernel program;
// pktstatbpf.network.flow.tcp.rtt has points only with tcp_rtt = true.
func DefaultMetricsConfig() MetricsConfig {
	return MetricsConfig{
		PktstatbpfNetworkFlowBytes:          FlowMetricConfig{Enabled: true},
		PktstatbpfNetworkFlowPackets:        FlowMetricConfig{Enabled: true},
		PktstatbpfNetworkFlowTCPRetransmits: FlowMetricConfig{Enabled: false},
		PktstatbpfNetworkFlowTCPFlags:       FlowMetricConfig{Enabled: true},
		PktstatbpfNetworkFlowDropPackets:    FlowMetricConfig{Enabled: true},
		PktstatbpfNetworkFlowDropBytes:      FlowMetricConfig{Enabled: true},
		PktstatbpfNetworkFlowTCPRTT:         FlowMetricConfig{Enabled: true},
		PktstatbpfFlowCount:                 MetricConfig{Enabled: true},
		PktstatbpfFlowLimit:                 MetricConfig{Enabled: true},
		PktstatbpfKernelMemoryUsage:         MetricConfig{Enabled: true},
		PktstatbpfFlowExpired:               MetricConfig{Enabled: true},
		PktstatbpfOverflowPackets:           MetricConfig{Enabled: true},
		PktstatbpfOverflowBytes:             MetricConfig{Enabled: true},
		PktstatbpfDrainDuration:             MetricConfig{Enabled: true},
		PktstatbpfHookCount:                 MetricConfig{Enabled: true},
		PktstatbpfHookNotFirst:              MetricConfig{Enabled: true},
	}
}

// ResourceAttributeConfig turns a resource attribute on or off.
type ResourceAttributeConfig struct {
	Enabled bool `mapstructure:"enabled"`
}

// ResourceAttributesConfig holds one entry per resource attribute.
type ResourceAttributesConfig struct {
	HostName    ResourceAttributeConfig `mapstructure:"host.name"`
	CaptureMode ResourceAttributeConfig `mapstructure:"pktstatbpf.capture.mode"`
	K8sNodeName ResourceAttributeConfig `mapstructure:"k8s.node.name"`
}

// DefaultResourceAttributesConfig enables every resource attribute.
func DefaultResourceAttributesConfig() ResourceAttributesConfig {
	return ResourceAttributesConfig{
		HostName:    ResourceAttributeConfig{Enabled: true},
		CaptureMode: ResourceAttributeConfig{Enabled: true},
		K8sNodeName: ResourceAttributeConfig{Enabled: true},
	}
}

// MetricsBuilderConfig is the `metrics` and `resource_attributes` part of the
// receiver config.
type MetricsBuilderConfig struct {
	Metrics            MetricsConfig            `mapstructure:"metrics"`
	ResourceAttributes ResourceAttributesConfig `mapstructure:"resource_attributes"`
}

// DefaultMetricsBuilderConfig returns the defaults of every metric and
// resource attribute.
func DefaultMetricsBuilderConfig() MetricsBuilderConfig {
	return MetricsBuilderConfig{
		Metrics:            DefaultMetricsConfig(),
		ResourceAttributes: DefaultResourceAttributesConfig(),
	}
}

// FlowMetric names one flow metric's config.
type FlowMetric struct {
	Name   string
	Config FlowMetricConfig
}

// FlowMetrics lists the flow metrics' configs, in a fixed order.
func (c MetricsBuilderConfig) FlowMetrics() []FlowMetric {
	return []FlowMetric{
		{MetricPktstatbpfNetworkFlowBytes, c.Metrics.PktstatbpfNetworkFlowBytes},
		{MetricPktstatbpfNetworkFlowPackets, c.Metrics.PktstatbpfNetworkFlowPackets},
		{MetricPktstatbpfNetworkFlowTCPRetransmits, c.Metrics.PktstatbpfNetworkFlowTCPRetransmits},
		{MetricPktstatbpfNetworkFlowTCPFlags, c.Metrics.PktstatbpfNetworkFlowTCPFlags},
		{MetricPktstatbpfNetworkFlowDropPackets, c.Metrics.PktstatbpfNetworkFlowDropPackets},
		{MetricPktstatbpfNetworkFlowDropBytes, c.Metrics.PktstatbpfNetworkFlowDropBytes},
		{MetricPktstatbpfNetworkFlowTCPRTT, c.Metrics.PktstatbpfNetworkFlowTCPRTT},
	}
}

// CheckAttributes rejects unknown or repeated attribute names in the flow metrics'
// attribute lists.
func (c MetricsBuilderConfig) CheckAttributes() error {
	var errs []error
	for _, m := range c.FlowMetrics() {
		if _, err := m.Config.Selection(); err != nil {
			errs = append(errs, fmt.Errorf("metrics::%s::attributes: %w", m.Name, err))
		}
		seen := map[string]bool{}
		for _, a := range m.Config.Attributes {
			if seen[a] {
				errs = append(errs, fmt.Errorf("metrics::%s::attributes: %q is listed twice", m.Name, a))
			}
			seen[a] = true
		}
	}
	return errors.Join(errs...)
}
