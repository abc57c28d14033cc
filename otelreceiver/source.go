package pktstatbpfreceiver

import (
	"context"

	"github.com/pktstat-bpf/pktstat-bpf/core"
)

// flowSource is what the receiver needs from core; tests inject a fake so
// conversion and lifecycle run without root.
type flowSource interface {
	Start(ctx context.Context) error
	Read(ctx context.Context) (core.Snapshot, error)
	Close() error
}

// newSourceFunc builds the source at receiver Start, after the config has
// been validated.
type newSourceFunc func(core.Config) (flowSource, error)

func newCoreSource(cfg core.Config) (flowSource, error) {
	return core.New(cfg)
}

var _ flowSource = (*core.Collector)(nil)
