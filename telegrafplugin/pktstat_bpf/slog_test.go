package pktstat_bpf

import (
	"testing"

	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"
)

// core's slog records must reach Telegraf's log at the matching level, with
// their attributes, so attach events appear under [inputs.pktstat_bpf].
func TestSlogToTelegraf(t *testing.T) {
	capture := &testutil.CaptureLogger{Name: "inputs.pktstat_bpf"}
	log := newSlogLogger(capture).With("interface", "eth0")
	log.Info("pktstat-bpf: attached", "hooks", []string{"tcx/ingress", "tcx/egress"})
	log.Warn("pktstat-bpf: link event subscription failed", "err", "EAGAIN")
	log.Error("pktstat-bpf: detach", "err", "gone")
	log.Debug("pktstat-bpf: drained", "records", 3)
	require.Equal(t, []testutil.Entry{
		{Level: 'I', Name: "inputs.pktstat_bpf", Text: "pktstat-bpf: attached interface=eth0 hooks=[tcx/ingress tcx/egress]"},
		{Level: 'W', Name: "inputs.pktstat_bpf", Text: "pktstat-bpf: link event subscription failed interface=eth0 err=EAGAIN"},
		{Level: 'E', Name: "inputs.pktstat_bpf", Text: "pktstat-bpf: detach interface=eth0 err=gone"},
		{Level: 'D', Name: "inputs.pktstat_bpf", Text: "pktstat-bpf: drained interface=eth0 records=3"},
	}, capture.Messages())
}
