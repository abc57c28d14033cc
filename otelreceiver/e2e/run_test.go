package e2e

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// debugLine is one series of one interval as the debug exporter prints it
// with verbosity normal: name{k=v,...} value.
var debugLine = regexp.MustCompile(`^([a-z.]+)\{(.*)\} (-?[0-9.]+)$`)

// terminalCounts sums the interval lines of metric on stdout per source
// port of the test's UDP flows; the run config's points are deltas, so the
// sum over intervals is the flow's total.
func terminalCounts(t *testing.T, lines []string, metric string) map[int64]int64 {
	t.Helper()
	out := map[int64]int64{}
	for _, l := range lines {
		m := debugLine.FindStringSubmatch(l)
		if m == nil || m[1] != metric {
			continue
		}
		attrs := map[string]string{}
		for _, kv := range strings.Split(m[2], ",") {
			k, v, _ := strings.Cut(kv, "=")
			attrs[k] = v
		}
		if attrs["network.transport"] != "udp" {
			continue
		}
		port, err := strconv.ParseInt(attrs["source.port"], 10, 64)
		require.NoError(t, err, l)
		v, err := strconv.ParseInt(m[3], 10, 64)
		require.NoError(t, err, l)
		out[port] += v
	}
	return out
}

// runConfigArgs runs the collector with the `make run` config, pointed at
// iface instead of the default route, scraping every interval, and with
// the Prometheus endpoint on promPort of the loopback.
func runConfigArgs(iface, interval, promPort string) []string {
	return []string{
		"--config", filepath.Join("..", "..", "testdata", "otelcol.yaml"),
		"--set=receivers::pktstatbpf::interfaces=[" + iface + "]",
		"--set=receivers::pktstatbpf::collection_interval=" + interval,
		"--set=receivers::pktstatbpf::initial_delay=0s",
		"--set=exporters::prometheus::endpoint=127.0.0.1:" + promPort,
	}
}

// TestRunConfig: the config `sudo make run` uses (testdata/otelcol.yaml),
// pointed at a veth instead of the default route and at a free port, prints
// each interval's flows on stdout, one readable line per series, and serves
// the same traffic as cumulative counters on the Prometheus endpoint.
func TestRunConfig(t *testing.T) {
	if testing.Short() {
		t.Skip("attaches BPF programs and runs the collector")
	}
	bin := collectorPath(t)
	p := nettest.NewPair(t)
	const promPort = "19484"
	c := startCollectorArgs(t, "run collector", p.NSA, bin, runConfigArgs(p.IfA, "1s", promPort), nil)
	require.True(t, c.logged(`"interface": "`+p.IfA+`"`), "collector did not log attaching to %s:\n%s", p.IfA, c.logText())

	flows := []struct {
		n, payload       int
		srcPort, dstPort uint16
		v6               bool
	}{{25, 300, 41100, 9200, false}, {8, 1200, 41101, 9201, true}, {40, 64, 41102, 9202, false}}
	wantBytes, wantPackets := map[int64]int64{}, map[int64]int64{}
	for _, f := range flows {
		p.SendUDP(t, f.n, f.payload, f.srcPort, f.dstPort, f.v6)
		wantPackets[int64(f.srcPort)] = int64(f.n)
		wantBytes[int64(f.srcPort)] = int64(f.n) * int64(nettest.UDPFrameLen(f.payload, f.v6))
	}
	var gotBytes, gotPackets map[int64]int64
	deadline := time.Now().Add(30 * time.Second)
	for {
		lines := c.stdoutLines()
		gotBytes = terminalCounts(t, lines, "pktstatbpf.network.flow.bytes")
		gotPackets = terminalCounts(t, lines, "pktstatbpf.network.flow.packets")
		if fmt.Sprint(gotBytes, gotPackets) == fmt.Sprint(wantBytes, wantPackets) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	require.Equal(t, wantBytes, gotBytes, "bytes per flow on stdout:\n%s", strings.Join(c.stdoutLines(), "\n"))
	require.Equal(t, wantPackets, gotPackets, "packets per flow on stdout")

	// One of the lines, whole: what the operator reads.
	want := fmt.Sprintf("pktstatbpf.network.flow.bytes{network.interface.name=%s,network.io.direction=transmit,network.type=ipv4,"+
		"network.transport=udp,source.address=192.0.2.1,source.port=41100,destination.address=192.0.2.2,destination.port=9200} %d",
		p.IfA, wantBytes[41100])
	assert.Contains(t, c.stdoutLines(), want)

	// The Prometheus pipeline batches: its counters may trail stdout by
	// one batch timeout.
	var metrics string
	for {
		metrics = scrapePrometheus(t, p.NSPathA(), "127.0.0.1:"+promPort)
		done := true
		for _, f := range flows {
			labels := map[string]string{"network_interface_name": p.IfA, "network_transport": "udp", "source_port": strconv.Itoa(int(f.srcPort))}
			done = done && slices.Equal(promSamples(metrics, "pktstatbpf_network_flow_bytes_total", labels), []string{strconv.FormatInt(wantBytes[int64(f.srcPort)], 10)})
		}
		if done || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, f := range flows {
		labels := map[string]string{"network_interface_name": p.IfA, "network_transport": "udp", "source_port": strconv.Itoa(int(f.srcPort))}
		assert.Equal(t, wantBytes[int64(f.srcPort)], promValue(t, metrics, "pktstatbpf_network_flow_bytes_total", labels), "bytes of %d", f.srcPort)
		assert.Equal(t, wantPackets[int64(f.srcPort)], promValue(t, metrics, "pktstatbpf_network_flow_packets_total", labels), "packets of %d", f.srcPort)
	}
}
