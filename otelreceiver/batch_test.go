package pktstatbpfreceiver

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver/receivertest"

	"github.com/pktstat-bpf/pktstat-bpf/core"
	"github.com/pktstat-bpf/pktstat-bpf/otelreceiver/internal/metadata"
)

// batchPoints lists md's flow data points as "metric port=N value", one
// entry per point, and counts the other (the receiver's own) metrics.
func batchPoints(md pmetric.Metrics) (flow map[string]int, own int) {
	flow = map[string]int{}
	eachMetric(md, func(m pmetric.Metric) {
		if m.Name() != metadata.MetricPktstatbpfNetworkFlowBytes && m.Name() != metadata.MetricPktstatbpfNetworkFlowPackets {
			own++
			return
		}
		for l := 0; l < m.Sum().DataPoints().Len(); l++ {
			dp := m.Sum().DataPoints().At(l)
			port, _ := dp.Attributes().Get(metadata.AttrSourcePort)
			flow[fmt.Sprintf("%s port=%d %d", m.Name(), port.Int(), dp.IntValue())]++
		}
	})
	return flow, own
}

// TestScrapeInBatches: with max_points_per_batch, one scrape of 25 flows
// (50 flow points) reaches the consumer as batches of at most 8 points,
// the last with the receiver's own metrics; together they hold exactly the
// points of the same scrape sent as one batch, and the collector's receiver
// telemetry counts every batch's points as accepted, or refused when the
// consumer refuses them, without losing the batches after a refused one.
func TestScrapeInBatches(t *testing.T) {
	const flows, max = 25, 8
	snap := core.Snapshot{Time: at(10)}
	for i := range flows {
		snap.Records = append(snap.Records, rec(udp4(core.Ingress, uint16(2000+i), 53), at(3), 0, 0, uint64(1+i), uint64(100*(1+i))))
	}
	run := func(t *testing.T, perBatch int, refuse bool) (*refusingSink, *componenttest.Telemetry) {
		f := &fakeSource{snaps: []core.Snapshot{snap}}
		cfg := createDefaultConfig().(*Config)
		cfg.CollectionInterval, cfg.InitialDelay = time.Hour, 0
		cfg.MaxPointsPerBatch = perBatch
		tel := componenttest.NewTelemetry()
		t.Cleanup(func() { require.NoError(t, tel.Shutdown(context.Background())) })
		set := receivertest.NewNopSettings(metadata.Type)
		set.TelemetrySettings = tel.NewTelemetrySettings()
		sink := &refusingSink{refuse: refuse}
		rcv, err := newFactory(f.newSource).CreateMetrics(context.Background(), set, cfg, sink)
		require.NoError(t, err)
		require.NoError(t, rcv.Start(context.Background(), componenttest.NewNopHost()))
		// The first scrape is done when its last batch, the one with the
		// receiver's own metrics, has arrived.
		require.Eventually(t, func() bool {
			sink.mu.Lock()
			defer sink.mu.Unlock()
			for _, md := range sink.got {
				if _, own := batchPoints(md); own > 0 {
					return true
				}
			}
			return false
		}, 5*time.Second, 5*time.Millisecond)
		// Shutdown's flush scrapes an empty snapshot: no flow point, one
		// more batch of the receiver's own.
		require.NoError(t, rcv.Shutdown(context.Background()))
		return sink, tel
	}

	whole, _ := run(t, 0, false)
	require.Len(t, whole.got, 2, "one batch per scrape with max_points_per_batch 0")
	want, _ := batchPoints(whole.got[0])
	require.Len(t, want, 2*flows)

	for _, refuse := range []bool{false, true} {
		t.Run(fmt.Sprintf("refused=%t", refuse), func(t *testing.T) {
			sink, tel := run(t, max, refuse)
			// 50 points: six batches of 8, then the last 2 with the own
			// metrics, then the shutdown flush.
			require.Len(t, sink.got, 8)
			got := map[string]int{}
			for i, md := range sink.got[:7] {
				points, own := batchPoints(md)
				n := 0
				for p, c := range points {
					got[p] += c
					n += c
				}
				if i < 6 {
					assert.Equal(t, max, n, "batch %d", i)
					assert.Zero(t, own, "batch %d carries only flow points", i)
				} else {
					assert.Equal(t, 2*flows-6*max, n, "the last batch")
					assert.Positive(t, own, "the last batch carries the receiver's own metrics")
				}
				assert.Equal(t, md.ResourceMetrics().At(0).Resource().Attributes().AsRaw(),
					whole.got[0].ResourceMetrics().At(0).Resource().Attributes().AsRaw(), "batch %d's resource", i)
			}
			assert.Equal(t, want, got, "the batches hold the one batch's points, each once")

			total := int64(sink.points())
			accepted, refused := total, int64(0)
			if refuse {
				accepted, refused = 0, total
			}
			assert.Equal(t, accepted, metricSum(t, tel, "otelcol_receiver_accepted_metric_points"))
			assert.Equal(t, refused, metricSum(t, tel, "otelcol_receiver_refused_metric_points"))
		})
	}
}
