// Package e2e runs the built distribution, build/otelcol-pktstat, against
// traffic the tests send through throw-away network namespaces.
package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/pmetric"

	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

func TestComponentsListsReceiver(t *testing.T) {
	out, err := exec.Command(collectorPath(t), "components").CombinedOutput()
	require.NoError(t, err, "%s", out)
	// The receivers section lists the module and its stability.
	assert.Regexp(t, `(?m)^    - name: pktstatbpf\n      module: github.com/pktstat-bpf/pktstat-bpf/otelreceiver v0.0.0\n      stability:\n        logs: Undefined\n        metrics: Alpha`, string(out))
	for _, name := range []string{"otlp", "debug", "otlp_grpc", "otlp_http", "file", "prometheus", "batch", "memory_limiter", "delta_to_cumulative"} {
		assert.Regexp(t, `(?m)^    - name: `+name+`$`, string(out))
	}
}

func TestValidateRejectsBadReceiverConfig(t *testing.T) {
	bin := collectorPath(t)
	out, err := exec.Command(bin, "validate", "--config", configPath("bad-receiver.yaml")).CombinedOutput()
	require.Error(t, err, "validate accepted a bad config:\n%s", out)
	assert.Contains(t, string(out), "Error: receivers::pktstatbpf: "+
		"mode \"ebpf\" is not one of tc, xdp, cgroup, kprobe\n"+
		"max_flows 8 is out of range [16, 16777216]\n"+
		"temporality \"gauge\" is not one of cumulative, delta")

	// The shipped configs are valid, so the rejection above is about the values.
	for _, tc := range []struct {
		file string
		env  []string
	}{
		{filepath.Join("..", "..", "testdata", "otelcol.yaml"), nil},
		{configPath("capture.yaml"), []string{"PKTSTAT_IFACE=eth0", "PKTSTAT_OTLP_PORT=4317", "PKTSTAT_INTERVAL=1s", "PKTSTAT_TEMPORALITY=delta"}},
		{configPath("capture-aggregated.yaml"), []string{"PKTSTAT_IFACE=eth0", "PKTSTAT_OTLP_PORT=4317"}},
		{configPath("capture-filtered.yaml"), []string{"PKTSTAT_IFACE=eth0", "PKTSTAT_OTLP_PORT=4317"}},
		{configPath("sink.yaml"), []string{"PKTSTAT_OTLP_PORT=4317", "PKTSTAT_PROM_PORT=9464", "PKTSTAT_OUT_FILE=/tmp/x.json"}},
	} {
		cmd := exec.Command(bin, "validate", "--config", tc.file)
		cmd.Env = append(os.Environ(), tc.env...)
		out, err := cmd.CombinedOutput()
		assert.NoError(t, err, "validate %s: %s", tc.file, out)
	}
}

// flowKey names one flow series by the attributes the test checks.
type flowKey struct {
	iface, direction, netType, transport, src, dst string
	srcPort, dstPort                               int64
}

type flowCounts struct{ packets, bytes int64 }

// readFileExport returns the count of every flow series in the file
// exporter's output (one ExportMetricsServiceRequest in JSON per line): the
// latest value of a cumulative series, the sum of a delta series' points.
// It also returns the resources the points came with.
func readFileExport(t *testing.T, path string, temporality pmetric.AggregationTemporality) (map[flowKey]flowCounts, []pcommon.Map) {
	t.Helper()
	return readFileExportBy(t, path, temporality, func(a pcommon.Map) flowKey {
		str := func(k string) string { v, _ := a.Get(k); return v.AsString() }
		num := func(k string) int64 { v, _ := a.Get(k); return v.Int() }
		return flowKey{
			str("network.interface.name"), str("network.io.direction"), str("network.type"),
			str("network.transport"), str("source.address"), str("destination.address"),
			num("source.port"), num("destination.port"),
		}
	})
}

// readFileExportBy is readFileExport with the series named by label.
func readFileExportBy[K comparable](t *testing.T, path string, temporality pmetric.AggregationTemporality, label func(pcommon.Map) K) (map[K]flowCounts, []pcommon.Map) {
	t.Helper()
	out := map[K]flowCounts{}
	resources := eachFlowPoint(t, path, func(m pmetric.Metric, dp pmetric.NumberDataPoint) {
		require.Equal(t, temporality, m.Sum().AggregationTemporality(), "temporality of %s", m.Name())
		key := label(dp.Attributes())
		c := out[key]
		v := &c.bytes
		if m.Name() == "pktstatbpf.network.flow.packets" {
			v = &c.packets
		}
		if temporality == pmetric.AggregationTemporalityDelta {
			*v += dp.IntValue()
		} else {
			*v = dp.IntValue()
		}
		out[key] = c
	})
	if resources == nil {
		return nil, nil
	}
	return out, resources
}

// eachFlowPoint calls fn for every point of the flow byte and packet
// metrics in the file exporter's output, in file order, and returns the
// resources they came with (nil when there is no file yet).
func eachFlowPoint(t *testing.T, path string, fn func(pmetric.Metric, pmetric.NumberDataPoint)) []pcommon.Map {
	t.Helper()
	return eachMetric(t, path, func(m pmetric.Metric) {
		if m.Name() != "pktstatbpf.network.flow.packets" && m.Name() != "pktstatbpf.network.flow.bytes" {
			return
		}
		for l := 0; l < m.Sum().DataPoints().Len(); l++ {
			fn(m, m.Sum().DataPoints().At(l))
		}
	})
}

// eachMetric calls fn for every metric in the file exporter's output and
// returns the resources they came with (nil when there is no file yet).
func eachMetric(t *testing.T, path string, fn func(pmetric.Metric)) []pcommon.Map {
	t.Helper()
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return nil
	}
	require.NoError(t, err)
	resources := []pcommon.Map{}
	var um pmetric.JSONUnmarshaler
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 16<<20), 16<<20)
	for sc.Scan() {
		md, err := um.UnmarshalMetrics(sc.Bytes())
		if err != nil {
			// The exporter may be mid-write on the last line.
			continue
		}
		for i := 0; i < md.ResourceMetrics().Len(); i++ {
			rm := md.ResourceMetrics().At(i)
			resources = append(resources, rm.Resource().Attributes())
			sms := rm.ScopeMetrics()
			for j := 0; j < sms.Len(); j++ {
				ms := sms.At(j).Metrics()
				for k := 0; k < ms.Len(); k++ {
					fn(ms.At(k))
				}
			}
		}
	}
	return resources
}

// flowOnlyBatches counts the requests in the file exporter's output that
// hold flow points but not pktstatbpf.flow.count.
func flowOnlyBatches(t *testing.T, path string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	n := 0
	var um pmetric.JSONUnmarshaler
	for _, line := range bytes.Split(data, []byte("\n")) {
		md, err := um.UnmarshalMetrics(line)
		if err != nil {
			continue
		}
		flow, own := false, false
		for i := 0; i < md.ResourceMetrics().Len(); i++ {
			sms := md.ResourceMetrics().At(i).ScopeMetrics()
			for j := 0; j < sms.Len(); j++ {
				ms := sms.At(j).Metrics()
				for k := 0; k < ms.Len(); k++ {
					switch ms.At(k).Name() {
					case "pktstatbpf.network.flow.packets", "pktstatbpf.network.flow.bytes":
						flow = true
					case "pktstatbpf.flow.count":
						own = true
					}
				}
			}
		}
		if flow && !own {
			n++
		}
	}
	return n
}

// scrapePrometheus reads the sink's Prometheus endpoint, which listens on
// the loopback of namespace nsPath: the connection is opened from inside it.
func scrapePrometheus(t *testing.T, nsPath, addr string) string {
	t.Helper()
	client := nettest.HTTPClient(nsPath)
	resp, err := client.Get("http://" + addr + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(body)
}

var promLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\} (\S+)`)
var promLabel = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

// promValue returns the value of the sample of metric whose labels include
// every label in want, failing t unless there is exactly one.
func promValue(t *testing.T, text, metric string, want map[string]string) int64 {
	t.Helper()
	found := promSamples(text, metric, want)
	require.Len(t, found, 1, "samples of %s with %v in:\n%s", metric, want, text)
	v, err := strconv.ParseFloat(found[0], 64)
	require.NoError(t, err)
	return int64(v)
}

// promSamples returns the values of the samples of metric whose labels
// include every label in want.
func promSamples(text, metric string, want map[string]string) []string {
	var found []string
	for _, line := range strings.Split(text, "\n") {
		m := promLine.FindStringSubmatch(line)
		if m == nil || m[1] != metric {
			continue
		}
		labels := map[string]string{}
		for _, l := range promLabel.FindAllStringSubmatch(m[2], -1) {
			labels[l[1]] = l[2]
		}
		match := true
		for k, v := range want {
			if labels[k] != v {
				match = false
			}
		}
		if match {
			found = append(found, m[3])
		}
	}
	return found
}

// TestDistributionEndToEnd: build/otelcol-pktstat counts traffic on a veth in
// namespace A and exports over OTLP/gRPC to a second build/otelcol-pktstat,
// which writes a JSON file and serves Prometheus. Both must show the exact
// packets and bytes the test sent, with the right attributes.
func TestDistributionEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("attaches BPF programs and runs two collectors")
	}
	collectorPath(t)
	cases := []struct {
		name        string
		temporality pmetric.AggregationTemporality
		interval    string
		// stopFirst stops the capture collector before reading: with an
		// interval far longer than the test, the counts can only arrive
		// through the receiver's shutdown flush.
		stopFirst bool
		// leastPrivilege runs the capture collector as nobody with only the
		// capabilities the README grants.
		leastPrivilege bool
	}{
		{"cumulative", pmetric.AggregationTemporalityCumulative, "500ms", false, false},
		{"delta_flushed_on_shutdown", pmetric.AggregationTemporalityDelta, "1h", true, false},
		{"least_privilege", pmetric.AggregationTemporalityCumulative, "500ms", false, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bin, config := collectorPath(t), configPath("capture.yaml")
			var wrap []string
			if tc.leastPrivilege {
				wrap = dropToCapabilities(t)
				copies := worldReadableCopy(t, bin, config)
				bin, config = copies[0], copies[1]
			}
			runEndToEnd(t, tc.temporality, tc.interval, tc.stopFirst, bin, config, wrap)
		})
	}
}

// leastCaps are the capabilities README.md grants instead of root: load BPF
// programs and maps, let the verifier accept their pointer arithmetic,
// attach to TC/XDP.
const leastCaps = "+bpf,+net_admin,+perfmon"

// dropToCapabilities returns a command prefix that runs the rest as nobody
// with exactly leastCaps, as systemd's AmbientCapabilities= does.
func dropToCapabilities(t *testing.T) []string {
	t.Helper()
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Fatalf("setpriv (util-linux) is needed to drop root: %v", err)
	}
	return []string{"setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
		"--inh-caps=-all," + leastCaps, "--ambient-caps=-all," + leastCaps, "--bounding-set=-all," + leastCaps}
}

// runEndToEnd runs the capture collector (bin with captureConfig, behind
// the wrap command prefix) and the sink collector, sends traffic and checks
// what the sink wrote and serves.
func runEndToEnd(t *testing.T, temporality pmetric.AggregationTemporality, interval string, stopFirst bool, bin, captureConfig string, wrap []string) {
	p := nettest.NewPair(t)
	// Namespace A is the test's own: nothing else listens on its loopback.
	const otlpPort, promPort = "14317", "19464"
	outFile, capture := startPipeline(t, p, bin, captureConfig, wrap, otlpPort, promPort,
		"PKTSTAT_INTERVAL="+interval, "PKTSTAT_TEMPORALITY="+strings.ToLower(temporality.String()))

	const n4, len4, n6, len6, nIn, lenIn = 30, 200, 12, 1000, 9, 64
	p.SendUDP(t, n4, len4, 41000, 9100, false)
	p.SendUDP(t, n6, len6, 41001, 9101, true)
	p.SendUDPFromB(t, nIn, lenIn, 41002, 9102, false)
	if stopFirst {
		capture.stop(t)
	}

	want := map[flowKey]flowCounts{
		{p.IfA, "transmit", "ipv4", "udp", "192.0.2.1", "192.0.2.2", 41000, 9100}:     {n4, n4 * int64(nettest.UDPFrameLen(len4, false))},
		{p.IfA, "transmit", "ipv6", "udp", "2001:db8::1", "2001:db8::2", 41001, 9101}: {n6, n6 * int64(nettest.UDPFrameLen(len6, true))},
		{p.IfA, "receive", "ipv4", "udp", "192.0.2.2", "192.0.2.1", 41002, 9102}:      {nIn, nIn * int64(nettest.UDPFrameLen(lenIn, false))},
	}
	// The kernel's own MLD reports (random timing, up to about 2 s after
	// link up) are the only other traffic that may cross the veth.
	mld := flowKey{p.IfA, "transmit", "ipv6", "ipv6-icmp", "::", "ff02::16", 0, 0}
	var got map[flowKey]flowCounts
	var resources []pcommon.Map
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, resources = readFileExport(t, outFile, temporality)
		delete(got, mld)
		if fmt.Sprint(got) == fmt.Sprint(want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	require.Equal(t, want, got, "flows in the file exporter's output")
	require.NotEmpty(t, resources)
	// capture.yaml's max_points_per_batch: 3 sends the six flow points of a
	// scrape in batches, which the sink's file exporter writes one request
	// a line: some lines hold flow points without the receiver's own
	// metrics, which only a scrape's last batch carries.
	assert.Positive(t, flowOnlyBatches(t, outFile), "requests with flow points only, in %s", outFile)
	host, err := os.Hostname()
	require.NoError(t, err)
	for _, r := range resources {
		assert.Equal(t, map[string]any{"host.name": host, "pktstatbpf.capture.mode": "tc"}, r.AsRaw())
	}

	metrics := scrapePrometheus(t, p.NSPathA(), "127.0.0.1:"+promPort)
	for k, c := range want {
		labels := map[string]string{
			"network_interface_name": k.iface, "network_io_direction": k.direction,
			"network_type": k.netType, "network_transport": k.transport,
			"source_address": k.src, "destination_address": k.dst,
			"source_port": strconv.FormatInt(k.srcPort, 10), "destination_port": strconv.FormatInt(k.dstPort, 10),
			"host_name": host, "pktstatbpf_capture_mode": "tc",
		}
		assert.Equal(t, c.packets, promValue(t, metrics, "pktstatbpf_network_flow_packets_total", labels), "packets of %v", k)
		assert.Equal(t, c.bytes, promValue(t, metrics, "pktstatbpf_network_flow_bytes_total", labels), "bytes of %v", k)
	}
}

// TestDistributionAggregates: the distribution with dimensions, ephemeral
// port folding and two CIDR groups (testdata/otel/capture-aggregated.yaml)
// reports eight UDP flows as four series, through OTLP into the second
// collector's file, with the exact packets and bytes sent and no other
// attributes than the kept dimensions.
func TestDistributionAggregates(t *testing.T) {
	if testing.Short() {
		t.Skip("attaches BPF programs and runs two collectors")
	}
	p := nettest.NewPair(t)
	const otlpPort, promPort = "14327", "19474"
	outFile, _ := startPipeline(t, p, collectorPath(t), configPath("capture-aggregated.yaml"), nil, otlpPort, promPort)

	// Five clients on ephemeral ports to one service: one series.
	for c := range 5 {
		p.SendUDP(t, 10, 100, uint16(40000+c), 9000, false)
	}
	p.SendUDP(t, 7, 100, 40010, 9001, false)
	p.SendUDP(t, 4, 100, 41000, 9000, true)
	p.SendUDPFromB(t, 6, 50, 42000, 9002, false)

	// An address in a group is reported as the group's name and CIDR,
	// never as source.address or destination.address.
	groups := map[string]string{"peer": "192.0.2.2/32", "lab6": "2001:db8::/64"}
	side := func(a map[string]any, dir, v string) {
		if cidr, ok := groups[v]; ok {
			a["pktstatbpf."+dir+".group"], a["pktstatbpf."+dir+".cidr"] = v, cidr
		} else {
			a[dir+".address"] = v
		}
	}
	series := func(dir, netType, src, dst string, dport int) string {
		a := map[string]any{
			"network.io.direction": dir, "network.type": netType, "network.transport": "udp", "destination.port": int64(dport),
		}
		side(a, "source", src)
		side(a, "destination", dst)
		return fmt.Sprint(a)
	}
	frame4, frame6, frameIn := int64(nettest.UDPFrameLen(100, false)), int64(nettest.UDPFrameLen(100, true)), int64(nettest.UDPFrameLen(50, false))
	want := map[string]flowCounts{
		series("transmit", "ipv4", "192.0.2.1", "peer", 9000): {50, 50 * frame4},
		series("transmit", "ipv4", "192.0.2.1", "peer", 9001): {7, 7 * frame4},
		series("transmit", "ipv6", "lab6", "lab6", 9000):      {4, 4 * frame6},
		series("receive", "ipv4", "peer", "192.0.2.1", 9002):  {6, 6 * frameIn},
	}
	// The kernel's own MLD reports (to ff02::16) are the only other
	// traffic that may cross the veth.
	label := func(a pcommon.Map) string {
		if dst, _ := a.Get("destination.address"); dst.Str() == "ff02::16" {
			return "mld"
		}
		return fmt.Sprint(a.AsRaw())
	}
	var got map[string]flowCounts
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, _ = readFileExportBy(t, outFile, pmetric.AggregationTemporalityCumulative, label)
		delete(got, "mld")
		if fmt.Sprint(got) == fmt.Sprint(want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	require.Equal(t, want, got, "series in the file exporter's output")
}
