// Package benchmem measures the heap a benchmark's state keeps alive, for
// the live bytes per flow that `make bench` prints next to the timings.
package benchmem

import (
	"runtime"
	"testing"
)

// Live returns the heap in use after a full collection.
func Live() int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}

// ReportPerFlow reports as live-B/flow the heap kept alive since before
// (a Live reading taken before the state was built) divided by flows. The
// caller keeps its state reachable until after the call
// (runtime.KeepAlive), or the collection frees it first.
func ReportPerFlow(b *testing.B, before int64, flows int) {
	b.Helper()
	b.StopTimer()
	b.ReportMetric(float64(Live()-before)/float64(flows), "live-B/flow")
}
