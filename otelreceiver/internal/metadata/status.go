// Package metadata holds the receiver's type, stability, metric definitions
// and metrics builder. mdatagen cannot run at this collector release here, so
// the code is hand-written in the shape mdatagen generates; metadata.yaml one
// level up documents the same metrics and must be kept in step with it.
package metadata

import "go.opentelemetry.io/collector/component"

var (
	// Type is the component type used in collector configs.
	Type = component.MustNewType("pktstatbpf")
	// ScopeName is the instrumentation scope of every metric the receiver emits.
	ScopeName = "github.com/pktstat-bpf/pktstat-bpf/otelreceiver"
)

// MetricsStability is the stability of the metrics signal.
const MetricsStability = component.StabilityLevelAlpha
