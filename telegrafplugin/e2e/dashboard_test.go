package e2e

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
	"github.com/pktstat-bpf/pktstat-bpf/internal/promtest"
)

// dashboardConfig is the dashboard tests' Telegraf, without its output:
// the input on iface, gathering and flushing every second, tagged host.
func dashboardConfig(host, iface string) string {
	return fmt.Sprintf(`
[agent]
  hostname = %q
  interval = "1s"
  flush_interval = "1s"

[[inputs.pktstat_bpf]]
  interfaces = [%q]
`, host, iface)
}

// dashboardFlows are the dashboard tests' flows, from source port first
// on: two from A (IPv4, IPv6), one from B, so that every panel has more
// than one series to tell apart.
func dashboardFlows(first uint16) []nettest.Flow {
	return []nettest.Flow{
		{N: 20, Payload: 300, SrcPort: first, DstPort: first + 10000},
		{N: 10, Payload: 1000, SrcPort: first + 1, DstPort: first + 10001, V6: true},
		{N: 15, Payload: 200, SrcPort: first + 2, DstPort: first + 10002, FromB: true},
	}
}

// influxPanel is what the test reads of a Grafana panel on InfluxQL.
type influxPanel struct {
	Title   string `json:"title"`
	Type    string `json:"type"`
	Targets []struct {
		Query string `json:"query"`
		Alias string `json:"alias"`
	} `json:"targets"`
}

var aliasTag = regexp.MustCompile(`\$tag_([A-Za-z0-9_]+)`)

// TestInfluxDBDashboard: build/telegraf gathers every second into a real
// InfluxDB 1.8 while the test sends known traffic, and every InfluxQL panel
// of dist/grafana/pktstat-bpf-influxdb.json is run against it over a window
// of two $__interval buckets: the first ends before the measured traffic,
// the second holds all of it, so each rate times the interval and each
// total in the range is exactly what was sent.
func TestInfluxDBDashboard(t *testing.T) {
	nettest.RequireBPF(t)
	telegrafBin := requireBinary(t, "telegraf")
	influxd := influxdPath(t)
	p := nettest.NewPair(t)
	db := startInfluxDB(t, p, influxd)
	db.query(t, "", "CREATE DATABASE pktstat")
	const host = "pktstat-e2e"

	runTelegraf(t, p, telegrafBin, dashboardConfig(host, p.IfA)+fmt.Sprintf(`
[[outputs.influxdb]]
  urls = ["http://%s"]
  database = "pktstat"
  skip_database_creation = true
`, db.addr))

	// Two buckets of $__interval: the first ends at b with the warm-up
	// values (gathers every second), the second holds the measured traffic.
	const interval = 10 * time.Second
	var b time.Time
	measured := promtest.WarmThenMeasure(t, p, dashboardFlows(43001), func() map[string]uint64 {
		got := map[string]uint64{}
		for _, s := range db.query(t, "pktstat", `SELECT last("bytes") AS "bytes" FROM "pktstat_bpf" WHERE "proto" = 'udp' GROUP BY "src_port"`) {
			got[s.Tags["src_port"]] = uint64(s.int(t, 0, "bytes"))
		}
		return got
	}, func() {
		b = time.Now().Add(2 * time.Second).Truncate(interval).Add(interval)
		time.Sleep(time.Until(b.Add(200 * time.Millisecond)))
	})
	require.Less(t, time.Now(), b.Add(interval-time.Second), "the measured traffic must land in the second bucket")
	time.Sleep(time.Until(b.Add(interval + 1500*time.Millisecond)))

	from, to := b.Add(-interval), b.Add(interval-time.Millisecond)
	m := func(port uint16) float64 { return measured[port] }
	egress, ingress := m(43001)+m(43002), m(43003)
	// Each panel's series by legend, as the panel shows them: a time
	// series by its value in the second bucket (rates times the interval),
	// a stat by its one value.
	type want struct {
		values map[string]float64
		rate   bool
	}
	wants := map[string]want{
		"Top talkers (bytes/s)": {map[string]float64{
			"192.0.2.1 → 192.0.2.2":     m(43001),
			"2001:db8::1 → 2001:db8::2": m(43002),
			"192.0.2.2 → 192.0.2.1":     m(43003),
		}, true},
		"Traffic by direction (bytes/s)":            {map[string]float64{"egress": egress, "ingress": ingress}, true},
		"Traffic by protocol (bytes/s)":             {map[string]float64{"IPv4 udp": m(43001) + m(43003), "IPv6 udp": m(43002)}, true},
		"Traffic by application protocol (bytes/s)": {map[string]float64{"": egress + ingress}, true},
		"Bytes in the time range by direction":      {map[string]float64{"egress": egress, "ingress": ingress}, false},
		"Overflow (packets/s)":                      {map[string]float64{host: 0}, true},
		"Flow table fill":                           {map[string]float64{host: 3.0 / 131072}, false},
		"Hooks attached and failed":                 {map[string]float64{host + " attached": 2, host + " failed": 0}, false},
	}

	raw, err := os.ReadFile(filepath.Join("..", "dist", "grafana", "pktstat-bpf-influxdb.json"))
	require.NoError(t, err)
	var dash struct {
		Panels []influxPanel `json:"panels"`
	}
	require.NoError(t, json.Unmarshal(raw, &dash))
	require.NotEmpty(t, dash.Panels)
	for _, panel := range dash.Panels {
		t.Run(panel.Title, func(t *testing.T) {
			require.Len(t, panel.Targets, 1)
			q := strings.NewReplacer(
				"$timeFilter", fmt.Sprintf("time >= %dms and time <= %dms", from.UnixMilli(), to.UnixMilli()),
				"$__interval", fmt.Sprintf("%ds", int(interval.Seconds())),
				"$host", regexp.QuoteMeta(host),
			).Replace(panel.Targets[0].Query)
			got := map[string]float64{}
			for _, s := range db.query(t, "pktstat", q) {
				row := len(s.Values) - 1
				if panel.Type == "timeseries" {
					row = -1
					for i, v := range s.Values {
						if ts, _ := time.Parse(time.RFC3339Nano, v[0].(string)); ts.Equal(b) {
							row = i
						}
					}
					require.GreaterOrEqual(t, row, 0, "no point at %s in %v (%s)", b, s.Values, q)
				}
				for col := 1; col < len(s.Columns); col++ {
					legend := aliasTag.ReplaceAllStringFunc(panel.Targets[0].Alias, func(tag string) string {
						return s.Tags[strings.TrimPrefix(tag, "$tag_")]
					})
					legend = strings.TrimSpace(strings.ReplaceAll(legend, "$col", s.Columns[col]))
					v, err := s.Values[row][col].(json.Number).Float64()
					require.NoError(t, err)
					got[legend] = v
				}
			}
			if panel.Title == "Drain time (s)" {
				require.Len(t, got, 1, q)
				assert.Greater(t, got[host], 0.0)
				assert.Less(t, got[host], 1.0, "a drain takes less than the 1s interval")
				return
			}
			w, ok := wants[panel.Title]
			require.True(t, ok, "no expectation for panel %q: add one", panel.Title)
			if w.rate {
				for k := range got {
					got[k] *= interval.Seconds()
				}
			}
			require.Len(t, got, len(w.values), "%s\n%v", q, got)
			for k, v := range w.values {
				assert.InDelta(t, v, got[k], 1e-6*math.Max(1, v), "%s: series %q (%s)", panel.Title, k, q)
			}
		})
	}
}
