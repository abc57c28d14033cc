package aggregate

import (
	"errors"
	"fmt"

	"github.com/pktstat-bpf/pktstat-bpf/core"
)

// Validate checks one agent's configuration: the capture keys
// (core.Config.Validate), the aggregation keys (Config.Validate) and the
// rules that join them. Both agents call it and report its error as it is,
// so that the same mistake reads the same in Telegraf and in the collector.
// A rule about a new key goes into whichever of the three its key belongs
// to, never into an agent.
func Validate(capture core.Config, agg Config) error {
	var errs []error
	if err := capture.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := agg.Validate(); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, checkModeDimensions(capture.EffectiveMode(), agg.Dimensions)...)
	return errors.Join(errs...)
}

// WithCapture returns agg with the defaults that follow from the capture
// settings: an unset series_idle_timeout is idle_timeout, so that a series
// of one flow lives as long as the flow does in the kernel table.
func WithCapture(agg Config, capture core.Config) Config {
	if agg.SeriesIdleTimeout == 0 && capture.IdleTimeout > 0 {
		agg.SeriesIdleTimeout = Duration(capture.IdleTimeout)
	}
	return agg
}

// checkModeDimensions rejects dimensions the mode cannot fill: only cgroup
// and kprobe modes see the socket's process and cgroup, so elsewhere those
// attributes would be empty on every series.
func checkModeDimensions(mode core.Mode, dims []Dimension) []error {
	if mode.HasSockets() {
		return nil
	}
	var errs []error
	for _, d := range dims {
		switch d {
		case DimPID, DimComm, DimCgroup, DimContainerID, DimPodUID:
			errs = append(errs, fmt.Errorf("dimensions: %q needs mode \"cgroup\" or \"kprobe\", but mode is %q: remove it or change mode", d, mode))
		}
	}
	return errs
}
