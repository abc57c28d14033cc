package pktstatbpfreceiver

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/scraper/scraperhelper"

	"github.com/pktstat-bpf/pktstat-bpf/core"
	"github.com/pktstat-bpf/pktstat-bpf/core/aggregate"
	"github.com/pktstat-bpf/pktstat-bpf/otelreceiver/internal/metadata"
)

// Temporality values of the temporality key.
const (
	TemporalityCumulative = "cumulative"
	TemporalityDelta      = "delta"
)

// defaultMaxPointsPerBatch is the batch processor's default
// send_batch_size: a full table's scrape (262,144 flow data points at the
// default max_flows) leaves as 32 batches.
const defaultMaxPointsPerBatch = 8192

// defaultCollectionInterval is shorter than the scraper helper's 1m because
// flows are short-lived: a minute would hide most of them behind one point.
const defaultCollectionInterval = 10 * time.Second

// Aggregation holds the aggregation keys shared with the Telegraf plugin
// (dimensions, fold_ports, ephemeral_port_min, cidr_groups,
// ungrouped_as_other, top_n, max_series, series_idle_timeout). It is
// aggregate.Config as a defined type: the same fields and mapstructure tags,
// but without aggregate.Config's Validate method, which confmap would
// otherwise call a second time on the embedded field and report under a
// made-up "config" path. Config.Validate reports its errors instead.
type Aggregation aggregate.Config

// Config is the receiver's configuration. Empty capture fields take core's
// defaults, so the zero capture settings count tc ingress and egress on the
// default-route interface.
type Config struct {
	scraperhelper.ControllerConfig `mapstructure:",squash"`
	metadata.MetricsBuilderConfig  `mapstructure:",squash"`
	// Aggregation's keys are top-level: dimensions decide what a series
	// is; a flow metric's attributes list can only drop further.
	Aggregation `mapstructure:",squash"`
	// The in-kernel filters (include_cidrs, exclude_ports, ...), shared with
	// the Telegraf plugin; core validates them.
	core.Filters `mapstructure:",squash"`

	// Mode is the capture hook: tc, xdp, cgroup or kprobe.
	Mode string `mapstructure:"mode"`
	// Interfaces are names or globs; empty means the default-route interface.
	Interfaces []string `mapstructure:"interfaces"`
	// XDPMode is auto, generic, native or offload (xdp mode only).
	XDPMode string `mapstructure:"xdp_mode"`
	// KprobeAttach is auto, fentry or kprobe (kprobe mode only).
	KprobeAttach string `mapstructure:"kprobe_attach"`
	// CgroupPath is the cgroup v2 directory to count (cgroup mode only).
	CgroupPath string `mapstructure:"cgroup_path"`
	// MaxFlows is the kernel flow table size.
	MaxFlows int `mapstructure:"max_flows"`
	// IdleTimeout removes flows without packets for this long.
	IdleTimeout time.Duration `mapstructure:"idle_timeout"`
	// NetNS is a network namespace path whose interfaces are watched.
	NetNS string `mapstructure:"netns"`
	// PinPath is a bpffs directory where the kernel tables and links are
	// pinned across collector restarts; empty detaches everything at shutdown.
	PinPath string `mapstructure:"pin_path"`
	// Drops counts the packets the kernel drops on the watched interfaces,
	// per flow and drop reason (the drop metrics).
	Drops bool `mapstructure:"drops"`
	// Temporality of the flow metrics: cumulative or delta.
	Temporality string `mapstructure:"temporality"`
	// TCPRTT samples TCP sockets' smoothed RTT per flow (tc and cgroup
	// modes) into pktstatbpf.network.flow.tcp.rtt.
	TCPRTT bool `mapstructure:"tcp_rtt"`
	// MaxPointsPerBatch splits a scrape's flow data points into batches of
	// at most this many, each handed to the next consumer as soon as it is
	// built, so that a full table's scrape is never in memory at once; 0
	// sends each scrape as one batch.
	MaxPointsPerBatch int `mapstructure:"max_points_per_batch"`

	// prevent unkeyed literal initialization
	_ struct{}
}

var _ component.Config = (*Config)(nil)

func createDefaultConfig() component.Config {
	cc := scraperhelper.NewDefaultControllerConfig()
	cc.CollectionInterval = defaultCollectionInterval
	return &Config{
		ControllerConfig:     cc,
		MetricsBuilderConfig: metadata.DefaultMetricsBuilderConfig(),
		// ephemeral_port_min stays 0 (32768 once fold_ports is
		// "ephemeral"): aggregate rejects it with folding off.
		// series_idle_timeout stays 0: it then follows idle_timeout, as
		// in Telegraf (aggregate.WithCapture).
		Aggregation: Aggregation{
			Dimensions: slices.Clone(aggregate.DefaultDimensions),
			FoldPorts:  aggregate.FoldOff,
		},
		Mode:        string(core.ModeTC),
		XDPMode:     "",
		MaxFlows:    core.DefaultMaxFlows,
		IdleTimeout: core.DefaultIdleTimeout,
		Temporality: TemporalityCumulative,
		// A full scrape's flow data points take about 550 bytes each in
		// pdata: one batch of a full table is some 145 MB of heap
		// (bench/README.md, "Eighth pass").
		MaxPointsPerBatch: defaultMaxPointsPerBatch,
	}
}

// Validate checks the keys shared with Telegraf through aggregate.Validate,
// the one validation both agents run, then the receiver's own keys and the
// flow metrics' attribute lists. The collector validates the embedded
// scraper controller settings separately (confmap.Validate walks every
// field), so they are not repeated.
func (c *Config) Validate() error {
	var errs []error
	if err := aggregate.Validate(c.coreConfig(nil), c.aggregateConfig()); err != nil {
		errs = append(errs, err)
	}
	switch c.Temporality {
	case TemporalityCumulative, TemporalityDelta:
	default:
		errs = append(errs, fmt.Errorf("temporality %q is not one of cumulative, delta", c.Temporality))
	}
	if c.MaxPointsPerBatch < 0 {
		errs = append(errs, fmt.Errorf("max_points_per_batch %d is negative: use 0 to send each scrape as one batch, or a positive number of data points (default %d)",
			c.MaxPointsPerBatch, defaultMaxPointsPerBatch))
	}
	if err := c.CheckAttributes(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.checkAttributeDimensions()...)
	return errors.Join(errs...)
}

func (c *Config) aggregateConfig() aggregate.Config {
	return aggregate.WithCapture(aggregate.Config(c.Aggregation), c.coreConfig(nil))
}

// dimensions are the dimensions in force: the configured ones or, when the
// list is empty, aggregate's defaults.
func (c *Config) dimensions() []aggregate.Dimension {
	if len(c.Dimensions) == 0 {
		return aggregate.DefaultDimensions
	}
	return c.Dimensions
}

// attributeDimensions names the dimensions each attribute is filled from.
// The ICMP type and code travel in the port fields, which aggregate keeps
// for ICMP only together with proto.
var attributeDimensions = map[string][]aggregate.Dimension{
	metadata.AttrNetworkInterfaceName: {aggregate.DimInterface},
	metadata.AttrNetworkIODirection:   {aggregate.DimDirection},
	metadata.AttrNetworkType:          {aggregate.DimIPVersion},
	metadata.AttrNetworkTransport:     {aggregate.DimProto},
	metadata.AttrSourceAddress:        {aggregate.DimSrcIP},
	metadata.AttrSourcePort:           {aggregate.DimSrcPort},
	metadata.AttrDestinationAddress:   {aggregate.DimDstIP},
	metadata.AttrDestinationPort:      {aggregate.DimDstPort},
	metadata.AttrSourceGroup:          {aggregate.DimSrcIP},
	metadata.AttrSourceCIDR:           {aggregate.DimSrcIP},
	metadata.AttrDestinationGroup:     {aggregate.DimDstIP},
	metadata.AttrDestinationCIDR:      {aggregate.DimDstIP},
	metadata.AttrProcessPID:           {aggregate.DimPID},
	metadata.AttrProcessComm:          {aggregate.DimComm},
	metadata.AttrContainerID:          {aggregate.DimContainerID},
	metadata.AttrK8sPodUID:            {aggregate.DimPodUID},
	metadata.AttrNetworkProtocolName:  {aggregate.DimAppProto},
	metadata.AttrVLANID:               {aggregate.DimVLAN},
	metadata.AttrFlags:                {aggregate.DimFlags},
	metadata.AttrCgroupPath:           {aggregate.DimCgroup},
	metadata.AttrICMPType:             {aggregate.DimProto, aggregate.DimSrcPort},
	metadata.AttrICMPCode:             {aggregate.DimProto, aggregate.DimDstPort},
}

// checkAttributeDimensions rejects a metric attribute whose dimension is not
// kept: the aggregator has already summed its values away, so the attribute
// could never appear.
func (c *Config) checkAttributeDimensions() []error {
	var errs []error
	dims := c.dimensions()
	for _, m := range c.FlowMetrics() {
		for _, a := range m.Config.Attributes {
			var missing []string
			for _, d := range attributeDimensions[a] {
				if !slices.Contains(dims, d) {
					missing = append(missing, fmt.Sprintf("%q", d))
				}
			}
			if len(missing) > 0 {
				errs = append(errs, fmt.Errorf("metrics::%s::attributes: %q needs %s in dimensions: add it there or remove the attribute",
					m.Name, a, strings.Join(missing, " and ")))
			}
		}
	}
	return errs
}

// coreConfig maps the receiver config onto core's.
func (c *Config) coreConfig(logger *slog.Logger) core.Config {
	return core.Config{
		Mode:         core.Mode(c.Mode),
		Interfaces:   c.Interfaces,
		XDPMode:      c.XDPMode,
		KprobeAttach: c.KprobeAttach,
		CgroupPath:   c.CgroupPath,
		MaxFlows:     c.MaxFlows,
		IdleTimeout:  c.IdleTimeout,
		NetNS:        c.NetNS,
		PinPath:      c.PinPath,
		Filters:      c.Filters,
		Drops:        c.Drops,
		Logger:       logger,
		TCPRTT:       c.TCPRTT,
	}
}

// captureMode is the mode in force, for the resource attribute.
func (c *Config) captureMode() string {
	if c.Mode == "" {
		return string(core.ModeTC)
	}
	return c.Mode
}
