package pktstatbpfreceiver

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/scraper/scraperhelper"

	"github.com/pktstat-bpf/pktstat-bpf/core"
	"github.com/pktstat-bpf/pktstat-bpf/otelreceiver/internal/metadata"
)

// Temporality values of the temporality key.
const (
	TemporalityCumulative = "cumulative"
	TemporalityDelta      = "delta"
)

// defaultCollectionInterval is shorter than the scraper helper's 1m because
// flows are short-lived: a minute would hide most of them behind one point.
const defaultCollectionInterval = 10 * time.Second

// Config is the receiver's configuration. Empty capture fields take core's
// defaults, so the zero capture settings count tc ingress and egress on the
// default-route interface.
type Config struct {
	scraperhelper.ControllerConfig `mapstructure:",squash"`
	metadata.MetricsBuilderConfig  `mapstructure:",squash"`

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
	// Temporality of the flow metrics: cumulative or delta.
	Temporality string `mapstructure:"temporality"`

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
		Mode:                 string(core.ModeTC),
		XDPMode:              "",
		MaxFlows:             core.DefaultMaxFlows,
		IdleTimeout:          core.DefaultIdleTimeout,
		Temporality:          TemporalityCumulative,
	}
}

// Validate checks the receiver's own keys and the flow metrics' attribute
// lists. The collector validates the embedded scraper controller settings
// separately (confmap.Validate walks every field), so they are not repeated.
func (c *Config) Validate() error {
	var errs []error
	if err := c.coreConfig(nil).Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.NetNS != "" && !filepath.IsAbs(c.NetNS) {
		errs = append(errs, fmt.Errorf("netns %q is not an absolute path: use /var/run/netns/NAME or /proc/PID/ns/net", c.NetNS))
	}
	switch c.Temporality {
	case TemporalityCumulative, TemporalityDelta:
	default:
		errs = append(errs, fmt.Errorf("temporality %q is not one of cumulative, delta", c.Temporality))
	}
	if err := c.CheckAttributes(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
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
		Logger:       logger,
	}
}

// captureMode is the mode in force, for the resource attribute.
func (c *Config) captureMode() string {
	if c.Mode == "" {
		return string(core.ModeTC)
	}
	return c.Mode
}
