package pktstatbpfreceiver

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/receiver"
)

// finalScrape drives the scraper controller's ticks itself, so that
// Shutdown can ask it for one last scrape: the counts of the last, partial
// interval then take the controller's own path (scraper and receiver
// telemetry, the next consumer) instead of a side door that the collector's
// accepted/refused counts would not see.
type finalScrape struct {
	receiver.Metrics // the scraper controller, ticked through ticks

	interval time.Duration
	ticks    chan time.Time

	mu      sync.Mutex
	started bool
	stop    chan struct{}
	wg      sync.WaitGroup
}

func newFinalScrape(interval time.Duration) *finalScrape {
	return &finalScrape{interval: interval, ticks: make(chan time.Time)}
}

// Start starts the controller, which scrapes at once, then the ticks.
func (f *finalScrape) Start(ctx context.Context, host component.Host) error {
	if err := f.Metrics.Start(ctx, host); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.started = true
	f.stop = make(chan struct{})
	f.wg.Go(func() {
		t := time.NewTicker(f.interval)
		defer t.Stop()
		for {
			select {
			case now := <-t.C:
				select {
				case f.ticks <- now:
				case <-f.stop:
					return
				}
			case <-f.stop:
				return
			}
		}
	})
	return nil
}

// Shutdown stops the ticks, hands the controller one more, and shuts it
// down: the controller waits for the scrape it took, and its consumer call,
// before it shuts the scraper down, which detaches.
func (f *finalScrape) Shutdown(ctx context.Context) error {
	f.mu.Lock()
	started := f.started
	f.started = false
	f.mu.Unlock()
	if started {
		close(f.stop)
		f.wg.Wait()
		select {
		case f.ticks <- time.Now():
		case <-ctx.Done():
		}
	}
	return f.Metrics.Shutdown(ctx)
}
