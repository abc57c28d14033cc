package pktstatbpfreceiver

import (
	"context"
	"fmt"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/receiverhelper"
	"go.opentelemetry.io/collector/scraper"
	"go.opentelemetry.io/collector/scraper/scraperhelper"

	"github.com/pktstat-bpf/pktstat-bpf/otelreceiver/internal/metadata"
)

// NewFactory returns the factory of the pktstatbpf receiver.
func NewFactory() receiver.Factory {
	return newFactory(newCoreSource)
}

func newFactory(newSource newSourceFunc) receiver.Factory {
	return receiver.NewFactory(
		metadata.Type,
		createDefaultConfig,
		receiver.WithMetrics(func(ctx context.Context, set receiver.Settings, cfg component.Config, next consumer.Metrics) (receiver.Metrics, error) {
			return createMetricsReceiver(ctx, set, cfg, next, newSource)
		}, metadata.MetricsStability))
}

func createMetricsReceiver(_ context.Context, set receiver.Settings, cfg component.Config, next consumer.Metrics, newSource newSourceFunc) (receiver.Metrics, error) {
	rCfg, ok := cfg.(*Config)
	if !ok {
		return nil, fmt.Errorf("create pktstatbpf receiver: config is %T, not *Config", cfg)
	}
	s, err := newFlowScraper(rCfg, set, newSource)
	if err != nil {
		return nil, fmt.Errorf("create pktstatbpf receiver: %w", err)
	}
	// The batches before a scrape's last are counted as the controller
	// counts the last: the same receiver, the same (empty) transport.
	s.next = next
	if s.obs, err = receiverhelper.NewObsReport(receiverhelper.ObsReportSettings{ReceiverID: set.ID, ReceiverCreateSettings: set}); err != nil {
		return nil, fmt.Errorf("create pktstatbpf receiver: %w", err)
	}
	sc, err := scraper.NewMetrics(s.scrape, scraper.WithStart(s.start), scraper.WithShutdown(s.shutdown))
	if err != nil {
		return nil, fmt.Errorf("create pktstatbpf scraper: %w", err)
	}
	f := newFinalScrape(rCfg.CollectionInterval)
	f.Metrics, err = scraperhelper.NewMetricsController(&rCfg.ControllerConfig, set, next,
		scraperhelper.AddMetricsScraper(metadata.Type, sc), scraperhelper.WithTickerChannel(f.ticks))
	if err != nil {
		return nil, err
	}
	return f, nil
}
