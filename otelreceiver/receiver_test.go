package pktstatbpfreceiver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver/receivertest"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.uber.org/goleak"

	"github.com/pktstat-bpf/pktstat-bpf/core"
	"github.com/pktstat-bpf/pktstat-bpf/otelreceiver/internal/metadata"
)

func TestMain(m *testing.M) {
	// The cgroup-mode test re-executes this binary as a sender placed in a
	// test cgroup; that child does its job and exits before any test runs.
	if os.Getenv(senderEnv) != "" {
		os.Exit(udpSender())
	}
	goleak.VerifyTestMain(m)
}

func TestFactory(t *testing.T) {
	f := NewFactory()
	assert.Equal(t, "pktstatbpf", f.Type().String())
	assert.Equal(t, metadata.MetricsStability, f.MetricsStability())
	require.NoError(t, componenttest.CheckConfigStruct(f.CreateDefaultConfig()))
}

// packetsOf sums pktstatbpf.network.flow.packets over md.
func packetsOf(md pmetric.Metrics) int64 {
	var n int64
	eachMetric(md, func(m pmetric.Metric) {
		if m.Name() == metadata.MetricPktstatbpfNetworkFlowPackets {
			for l := 0; l < m.Sum().DataPoints().Len(); l++ {
				n += m.Sum().DataPoints().At(l).IntValue()
			}
		}
	})
	return n
}

// startAndFlushOnly returns a source of one flow, 3 packets at the first
// drain and 2 more at the second, and a config that scrapes once at Start
// and then not until Shutdown: the second count can only arrive through the
// shutdown flush.
func startAndFlushOnly() (*fakeSource, *Config) {
	a := udp4(core.Ingress, 1111, 53)
	f := &fakeSource{snaps: []core.Snapshot{
		{Time: at(10), Records: []core.Record{rec(a, at(3), 0, 0, 3, 300)}},
		{Time: at(12), Records: []core.Record{rec(a, at(3), 3, 300, 2, 200)}},
	}}
	cfg := createDefaultConfig().(*Config)
	cfg.CollectionInterval = time.Hour
	cfg.InitialDelay = 0
	return f, cfg
}

// TestReceiverLifecycle runs the receiver as the collector does and checks
// that Shutdown sends the last, partial interval before detaching.
func TestReceiverLifecycle(t *testing.T) {
	f, cfg := startAndFlushOnly()
	cfg.Interfaces = []string{"veth0"}
	cfg.NetNS = "/var/run/netns/test"
	sink := new(consumertest.MetricsSink)
	rcv, err := newFactory(f.newSource).CreateMetrics(context.Background(), receivertest.NewNopSettings(metadata.Type), cfg, sink)
	require.NoError(t, err)

	require.NoError(t, rcv.Start(context.Background(), componenttest.NewNopHost()))
	require.Eventually(t, func() bool { return len(sink.AllMetrics()) == 1 }, 5*time.Second, 5*time.Millisecond)
	assert.Equal(t, int64(3), packetsOf(sink.AllMetrics()[0]))

	require.NoError(t, rcv.Shutdown(context.Background()))
	got := sink.AllMetrics()
	require.Len(t, got, 2)
	assert.Equal(t, int64(5), packetsOf(got[1]), "cumulative count after the shutdown flush")

	starts, reads, closes, readAfterClose := f.counts()
	assert.Equal(t, 1, starts)
	assert.Equal(t, 2, reads)
	assert.Equal(t, 1, closes)
	assert.False(t, readAfterClose)
	assert.Equal(t, core.Config{
		Mode: core.ModeTC, Interfaces: []string{"veth0"}, MaxFlows: core.DefaultMaxFlows,
		IdleTimeout: core.DefaultIdleTimeout, NetNS: "/var/run/netns/test", Logger: f.gotConfig.Logger,
	}, f.gotConfig)
	assert.NotNil(t, f.gotConfig.Logger)
}

// TestShutdownFlushIsAccounted: the shutdown flush goes through the scraper
// controller, so the collector's own receiver and scraper counters include
// its points, and a refused flush is counted as refused.
func TestShutdownFlushIsAccounted(t *testing.T) {
	for _, refuse := range []bool{false, true} {
		t.Run(fmt.Sprintf("refused=%t", refuse), func(t *testing.T) {
			f, cfg := startAndFlushOnly()
			tel := componenttest.NewTelemetry()
			t.Cleanup(func() { require.NoError(t, tel.Shutdown(context.Background())) })
			set := receivertest.NewNopSettings(metadata.Type)
			set.TelemetrySettings = tel.NewTelemetrySettings()
			sink := &refusingSink{}
			rcv, err := newFactory(f.newSource).CreateMetrics(context.Background(), set, cfg, sink)
			require.NoError(t, err)
			require.NoError(t, rcv.Start(context.Background(), componenttest.NewNopHost()))
			require.Eventually(t, func() bool { return sink.calls() == 1 }, 5*time.Second, 5*time.Millisecond)
			first := sink.points()
			sink.setRefuse(refuse)
			require.NoError(t, rcv.Shutdown(context.Background()))
			require.Equal(t, 2, sink.calls(), "the flush reached the consumer")
			flushed := sink.points() - first
			require.Positive(t, flushed)

			accepted, refused := first+flushed, 0
			if refuse {
				accepted, refused = first, flushed
			}
			assert.Equal(t, int64(accepted), metricSum(t, tel, "otelcol_receiver_accepted_metric_points"))
			assert.Equal(t, int64(refused), metricSum(t, tel, "otelcol_receiver_refused_metric_points"))
			// The scraper counts metrics, not points: one scrape at start
			// and the flush, each with the same metrics.
			assert.Equal(t, 2*metricsPerScrape(sink), metricSum(t, tel, "otelcol_scraper_scraped_metric_points"))
		})
	}
}

// TestReceiverTicks checks that scrapes follow collection_interval.
func TestReceiverTicks(t *testing.T) {
	f := &fakeSource{}
	cfg := createDefaultConfig().(*Config)
	cfg.CollectionInterval = 10 * time.Millisecond
	cfg.InitialDelay = 0
	sink := new(consumertest.MetricsSink)
	rcv, err := newFactory(f.newSource).CreateMetrics(context.Background(), receivertest.NewNopSettings(metadata.Type), cfg, sink)
	require.NoError(t, err)
	require.NoError(t, rcv.Start(context.Background(), componenttest.NewNopHost()))
	require.Eventually(t, func() bool { _, reads, _, _ := f.counts(); return reads >= 5 }, 5*time.Second, 5*time.Millisecond)
	require.NoError(t, rcv.Shutdown(context.Background()))
	_, _, closes, readAfterClose := f.counts()
	assert.Equal(t, 1, closes)
	assert.False(t, readAfterClose)
}

func TestReceiverStartFailure(t *testing.T) {
	f := &fakeSource{startErr: fmt.Errorf("start: %w", core.ErrNotSupported)}
	cfg := createDefaultConfig().(*Config)
	sink := new(consumertest.MetricsSink)
	rcv, err := newFactory(f.newSource).CreateMetrics(context.Background(), receivertest.NewNopSettings(metadata.Type), cfg, sink)
	require.NoError(t, err)
	err = rcv.Start(context.Background(), componenttest.NewNopHost())
	require.EqualError(t, err, "start flow capture (mode tc): start: "+core.ErrNotSupported.Error())
	require.ErrorIs(t, err, core.ErrNotSupported)
	// The collector shuts down every component after a failed start.
	require.NoError(t, rcv.Shutdown(context.Background()))
	_, reads, closes, _ := f.counts()
	assert.Equal(t, 0, reads)
	assert.Equal(t, 1, closes, "a source whose Start failed is closed once, by Start")
	assert.Empty(t, sink.AllMetrics())
}

func TestReceiverShutdownWithoutStart(t *testing.T) {
	f := &fakeSource{}
	rcv, err := newFactory(f.newSource).CreateMetrics(context.Background(), receivertest.NewNopSettings(metadata.Type), createDefaultConfig(), consumertest.NewNop())
	require.NoError(t, err)
	require.NoError(t, rcv.Shutdown(context.Background()))
	starts, _, closes, _ := f.counts()
	assert.Zero(t, starts)
	assert.Zero(t, closes)
}

// refusingSink keeps what it is given and, once told to, refuses it.
type refusingSink struct {
	mu      sync.Mutex
	refuse  bool
	got     []pmetric.Metrics
	counted int
}

func (s *refusingSink) Capabilities() consumer.Capabilities { return consumer.Capabilities{} }

func (s *refusingSink) ConsumeMetrics(_ context.Context, md pmetric.Metrics) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, md)
	s.counted += md.DataPointCount()
	if s.refuse {
		return errors.New("queue full")
	}
	return nil
}

func (s *refusingSink) setRefuse(r bool) { s.mu.Lock(); s.refuse = r; s.mu.Unlock() }
func (s *refusingSink) calls() int       { s.mu.Lock(); defer s.mu.Unlock(); return len(s.got) }
func (s *refusingSink) points() int      { s.mu.Lock(); defer s.mu.Unlock(); return s.counted }

func metricsPerScrape(s *refusingSink) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return int64(s.got[0].MetricCount())
}

// metricSum adds up an int counter of the collector's own telemetry.
func metricSum(t *testing.T, tel *componenttest.Telemetry, name string) int64 {
	t.Helper()
	m, err := tel.GetMetric(name)
	require.NoError(t, err, name)
	sum, ok := m.Data.(metricdata.Sum[int64])
	require.True(t, ok, "%s is %T", name, m.Data)
	var n int64
	for _, dp := range sum.DataPoints {
		n += dp.Value
	}
	return n
}

// startInProcess starts the receiver with cfg in this process, feeding a
// sink. shutdown stops it, which flushes the last interval; it runs at the
// end of t if the test did not call it, and a failed shutdown fails t.
func startInProcess(t *testing.T, cfg *Config) (sink *consumertest.MetricsSink, shutdown func()) {
	t.Helper()
	sink = new(consumertest.MetricsSink)
	rcv, err := NewFactory().CreateMetrics(context.Background(), receivertest.NewNopSettings(metadata.Type), cfg, sink)
	require.NoError(t, err)
	require.NoError(t, rcv.Start(context.Background(), componenttest.NewNopHost()))
	var once sync.Once
	shutdown = func() {
		once.Do(func() { require.NoError(t, rcv.Shutdown(context.Background())) })
	}
	t.Cleanup(shutdown)
	return sink, shutdown
}
