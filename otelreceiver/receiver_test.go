package pktstatbpfreceiver

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer/consumertest"
	"go.opentelemetry.io/collector/pdata/pmetric"
	"go.opentelemetry.io/collector/receiver/receivertest"
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
	rms := md.ResourceMetrics()
	for i := 0; i < rms.Len(); i++ {
		sms := rms.At(i).ScopeMetrics()
		for j := 0; j < sms.Len(); j++ {
			ms := sms.At(j).Metrics()
			for k := 0; k < ms.Len(); k++ {
				if m := ms.At(k); m.Name() == metadata.MetricPktstatbpfNetworkFlowPackets {
					for l := 0; l < m.Sum().DataPoints().Len(); l++ {
						n += m.Sum().DataPoints().At(l).IntValue()
					}
				}
			}
		}
	}
	return n
}

// TestReceiverLifecycle runs the receiver as the collector does and checks
// that Shutdown sends the last, partial interval before detaching.
func TestReceiverLifecycle(t *testing.T) {
	a := udp4(core.Ingress, 1111, 53)
	f := &fakeSource{snaps: []core.Snapshot{
		{Time: at(10), Records: []core.Record{rec(a, at(3), 0, 0, 3, 300)}},
		{Time: at(12), Records: []core.Record{rec(a, at(3), 3, 300, 2, 200)}},
	}}
	cfg := createDefaultConfig().(*Config)
	// One scrape at Start, then none until Shutdown: the second count can
	// only arrive through the shutdown flush.
	cfg.CollectionInterval = time.Hour
	cfg.InitialDelay = 0
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
