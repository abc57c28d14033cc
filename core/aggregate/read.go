package aggregate

import (
	"context"

	"github.com/pktstat-bpf/pktstat-bpf/core"
)

// Source is what ReadInto drains: a core.Collector, or an adapter's fake.
type Source interface {
	Read(ctx context.Context) (core.Snapshot, error)
}

// streamSource is a Source that can hand its records over one at a time
// (core.Collector.ReadFunc).
type streamSource interface {
	ReadFunc(ctx context.Context, fn func(*core.Record)) (core.Snapshot, error)
}

// ReadInto drains src for a. When src has ReadFunc, each record goes to
// a.Add as the drain makes it, and the returned Snapshot's Records is nil:
// a full table's records are never in memory at once. Otherwise it calls
// Read and leaves the records in the Snapshot. Either way the caller then
// calls a.Aggregate(snap.Time, snap.Records), which completes the call;
// records is how many the Read made. A ReadFunc that fails part way leaves the
// records it handed over in a's call in progress, and the next End reports
// their deltas, as the kernel state they came from has already moved past
// them.
func ReadInto(ctx context.Context, src Source, a *Aggregator) (snap core.Snapshot, records int, err error) {
	ss, ok := src.(streamSource)
	if !ok {
		snap, err = src.Read(ctx)
		return snap, len(snap.Records), err
	}
	snap, err = ss.ReadFunc(ctx, func(r *core.Record) {
		records++
		a.Add(r)
	})
	return snap, records, err
}
