// Package pktstat_bpf is the Telegraf input that reports the per-flow packet
// and byte counters of pktstat-bpf's kernel programs.
package pktstat_bpf

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/plugins/inputs"

	"github.com/pktstat-bpf/pktstat-bpf/core"
	"github.com/pktstat-bpf/pktstat-bpf/core/aggregate"
)

//go:embed sample.conf
var sampleConfig string

// stopDrainTimeout bounds the final drain in Stop so that a stuck kernel
// read cannot hang Telegraf's shutdown.
const stopDrainTimeout = 5 * time.Second

// flowSource is what the plugin needs from core; tests inject a fake.
type flowSource interface {
	Start(ctx context.Context) error
	Read(ctx context.Context) (core.Snapshot, error)
	Close() error
}

// PktstatBPF is the pktstat_bpf input.
type PktstatBPF struct {
	Mode         string          `toml:"mode"`
	Interfaces   []string        `toml:"interfaces"`
	XDPMode      string          `toml:"xdp_mode"`
	KprobeAttach string          `toml:"kprobe_attach"`
	CgroupPath   string          `toml:"cgroup_path"`
	MaxFlows     int             `toml:"max_flows"`
	IdleTimeout  config.Duration `toml:"idle_timeout"`
	NetNS        string          `toml:"netns"`
	PinPath      string          `toml:"pin_path"`
	Drops        bool            `toml:"drops"`
	TCPRTT       bool            `toml:"tcp_rtt"`
	// The series keys: dimensions, fold_ports, cidr_groups, top_n, ... The
	// collector receiver takes the same keys.
	aggregate.Config
	// The in-kernel filters: include_cidrs, exclude_ports, ... The
	// collector receiver takes the same keys, and core validates them.
	core.Filters
	Log telegraf.Logger `toml:"-"`

	newSource func(core.Config) (flowSource, error)
	cfg       core.Config
	aggCfg    aggregate.Config

	// mu serialises Gather and the final drain in Stop: core's Read may be
	// called from one goroutine at a time.
	mu         sync.Mutex
	src        flowSource
	conv       *converter
	acc        telegraf.Accumulator
	cancel     context.CancelFunc
	ctx        context.Context
	hookErrors map[string]string
}

var _ telegraf.ServiceInput = (*PktstatBPF)(nil)

func (*PktstatBPF) SampleConfig() string {
	return sampleConfig
}

// Init validates the configuration with aggregate.Validate, the same
// validation the collector receiver runs; it touches neither the kernel nor
// the file system.
func (p *PktstatBPF) Init() error {
	cfg := core.Config{
		Mode:         core.Mode(p.Mode),
		Interfaces:   p.Interfaces,
		XDPMode:      p.XDPMode,
		KprobeAttach: p.KprobeAttach,
		CgroupPath:   p.CgroupPath,
		MaxFlows:     p.MaxFlows,
		IdleTimeout:  time.Duration(p.IdleTimeout),
		NetNS:        p.NetNS,
		PinPath:      p.PinPath,
		Filters:      p.Filters,
		Drops:        p.Drops,
		TCPRTT:       p.TCPRTT,
	}
	if err := aggregate.Validate(cfg, p.Config); err != nil {
		return err
	}
	if p.Log != nil {
		cfg.Logger = newSlogLogger(p.Log)
	}
	p.cfg = cfg
	p.aggCfg = aggregate.WithCapture(p.Config, cfg)
	if p.newSource == nil {
		p.newSource = newCoreSource
	}
	return nil
}

func newCoreSource(cfg core.Config) (flowSource, error) {
	c, err := core.New(cfg)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Start loads and attaches the kernel programs once; Gather only drains.
func (p *PktstatBPF) Start(acc telegraf.Accumulator) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	// A fresh aggregator per start: series restart with the kernel tables.
	conv, err := newConverter(p.aggCfg, p.cfg.Drops)
	if err != nil {
		return err
	}
	conv.tcpFlags = p.cfg.Mode != core.ModeKprobe
	src, err := p.newSource(p.cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := src.Start(ctx); err != nil {
		cancel()
		src.Close()
		return err
	}
	p.src, p.conv, p.acc, p.ctx, p.cancel = src, conv, acc, ctx, cancel
	p.hookErrors = make(map[string]string)
	p.Log.Infof("counting started: mode %s, %s", modeName(p.cfg.Mode), p.targetDescription())
	return nil
}

// Gather drains the kernel tables and emits one metric per series.
func (p *PktstatBPF) Gather(acc telegraf.Accumulator) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.src == nil {
		return errors.New("gather: input not started")
	}
	return p.drain(p.ctx, acc)
}

// Stop drains one last time, so the counts of the last partial interval
// reach the outputs (this is also what `telegraf --once` reports for
// traffic seen after start), then detaches everything.
func (p *PktstatBPF) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.src == nil {
		return
	}
	ctx, cancel := context.WithTimeout(p.ctx, stopDrainTimeout)
	if err := p.drain(ctx, p.acc); err != nil {
		p.Log.Errorf("final drain: %v", err)
	}
	cancel()
	p.cancel()
	if err := p.src.Close(); err != nil {
		p.Log.Errorf("detach: %v", err)
	}
	p.src = nil
	if p.cfg.PinPath != "" {
		p.Log.Infof("programs and counters stay pinned in %s and keep counting until the next start adopts them", p.cfg.PinPath)
	}
}

func (p *PktstatBPF) drain(ctx context.Context, acc telegraf.Accumulator) error {
	// The flow records go into the aggregator as the drain makes them.
	snap, records, err := aggregate.ReadInto(ctx, p.src, p.conv.agg)
	if err != nil {
		return fmt.Errorf("drain flow table: %w", err)
	}
	p.reportHookErrors(snap.Health.Hooks)
	start := time.Now()
	series := p.conv.add(acc, snap)
	addInternalMetric(acc, snap, records, series, modeName(p.cfg.Mode), time.Since(start))
	return nil
}

// RemovePinned validates the configuration, then removes for good the
// state that pin_path keeps in the kernel (the shim's -unpin flag).
func (p *PktstatBPF) RemovePinned() error {
	if err := p.Init(); err != nil {
		return err
	}
	if p.cfg.PinPath == "" {
		return errors.New("pin_path is not set in the config: there is no pinned state to remove")
	}
	return core.RemovePinned(p.cfg)
}

// reportHookErrors logs each hook that failed to attach once per distinct
// error, rather than on every interval.
func (p *PktstatBPF) reportHookErrors(hooks []core.HookState) {
	for _, h := range hooks {
		key := h.Target + " " + h.Hook
		if h.Attached {
			delete(p.hookErrors, key)
			continue
		}
		if p.hookErrors[key] != h.Error {
			p.hookErrors[key] = h.Error
			p.Log.Warnf("%s on %s is not attached: %s", h.Hook, h.Target, h.Error)
		}
	}
}

func (p *PktstatBPF) targetDescription() string {
	var s string
	switch p.cfg.Mode {
	case core.ModeCgroup:
		s = "cgroup " + orDefault(p.cfg.CgroupPath, "root of the cgroup2 mount")
	case core.ModeKprobe:
		s = "all sockets"
	default:
		if len(p.cfg.Interfaces) == 0 {
			s = "interface of the default route"
		} else {
			s = "interfaces " + strings.Join(p.cfg.Interfaces, ", ")
		}
	}
	if p.cfg.NetNS != "" {
		s += " in netns " + p.cfg.NetNS
	}
	return s
}

func modeName(m core.Mode) string {
	if m == "" {
		return string(core.ModeTC)
	}
	return string(m)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

func init() {
	inputs.Add("pktstat_bpf", func() telegraf.Input {
		return &PktstatBPF{}
	})
}
