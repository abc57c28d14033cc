// Package pktstatbpfreceiver is the OpenTelemetry Collector receiver that
// turns pktstat-bpf's per-flow kernel counters into pktstatbpf.network.flow.* metrics.
package pktstatbpfreceiver // import "github.com/pktstat-bpf/pktstat-bpf/otelreceiver"
