package pktstat_bpf

import (
	"errors"
	"fmt"

	"github.com/pktstat-bpf/pktstat-bpf/core"
	"github.com/pktstat-bpf/pktstat-bpf/core/aggregate"
)

// checkModeDimensions rejects dimensions the mode cannot fill: only cgroup
// and kprobe modes see the socket's process and cgroup, so elsewhere those
// tags would be empty on every series.
func checkModeDimensions(dims []aggregate.Dimension, mode core.Mode) error {
	if mode == core.ModeCgroup || mode == core.ModeKprobe {
		return nil
	}
	var errs []error
	for _, d := range dims {
		switch d {
		case aggregate.DimPID, aggregate.DimComm, aggregate.DimCgroup, aggregate.DimContainerID, aggregate.DimPodUID:
			errs = append(errs, fmt.Errorf("dimensions: %q needs mode \"cgroup\" or \"kprobe\", but mode is %q: remove it or change mode",
				d, modeName(mode)))
		}
	}
	return errors.Join(errs...)
}
