package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// TestInfluxDB runs build/telegraf with outputs.influxdb and
// outputs.influxdb_v2 writing into a real InfluxDB 1.8, then queries
// InfluxDB for the flows. InfluxDB and Telegraf both run inside namespace A,
// so 127.0.0.1 is A's own loopback and nothing listens on the host.
func TestInfluxDB(t *testing.T) {
	nettest.RequireBPF(t)
	telegrafBin := requireBinary(t, "telegraf")
	influxd := influxdPath(t)
	p := nettest.NewPair(t)
	db := startInfluxDB(t, p, influxd)
	db.query(t, "", "CREATE DATABASE pktstat_v1")
	db.query(t, "", "CREATE DATABASE pktstat_v2")

	dir := t.TempDir()
	conf := filepath.Join(dir, "telegraf.conf")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf(`
[agent]
  omit_hostname = true
  interval = "1h"
  flush_interval = "1h"

[[inputs.pktstat_bpf]]
  interfaces = [%[1]q]

[[outputs.influxdb]]
  urls = ["http://%[2]s"]
  database = "pktstat_v1"
  skip_database_creation = true

# InfluxDB 1.8 serves the v2 write API with bucket "database/retention-policy".
[[outputs.influxdb_v2]]
  urls = ["http://%[2]s"]
  token = "unused-by-influxdb-1.8"
  organization = "pktstat"
  bucket = "pktstat_v2/autogen"
`, p.IfA, db.addr)), 0o600))

	proc := startProcess(t, nil, "ip", "netns", "exec", p.NSA, telegrafBin,
		"--config", conf, "--once", "--test-wait", fmt.Sprint(onceWait))
	proc.waitLog(t, "counting started", 60*time.Second)
	flows := []flow{
		{n: 120, payload: 300, srcPort: 42001, dstPort: 52001},
		{n: 9, payload: 1200, srcPort: 42002, dstPort: 52002, v6: true},
	}
	link := sendAll(t, p, flows)
	proc.wait(t, onceWait*time.Second+60*time.Second)
	require.Equal(t, nettest.LinkStats{TxPackets: 129, TxBytes: flows[0].bytes() + flows[1].bytes()}, link)

	for _, database := range []string{"pktstat_v1", "pktstat_v2"} {
		t.Run(database, func(t *testing.T) {
			series := db.query(t, database,
				`SELECT last(packets) AS packets, last(bytes) AS bytes FROM pktstat_bpf WHERE proto = 'udp' GROUP BY *`)
			got := map[string][2]int64{}
			for _, s := range series {
				require.Len(t, s.Values, 1)
				got[fmt.Sprint(s.Tags)] = [2]int64{s.int(t, 0, "packets"), s.int(t, 0, "bytes")}
			}
			want := map[string][2]int64{}
			for _, f := range flows {
				want[fmt.Sprint(f.egressTags(p))] = [2]int64{int64(f.n), int64(f.bytes())}
			}
			require.Equal(t, want, got)

			internal := db.query(t, database, `SELECT last(hooks_attached) AS hooks_attached FROM pktstat_bpf_internal GROUP BY *`)
			require.Len(t, internal, 1)
			require.Equal(t, map[string]string{"mode": "tc"}, internal[0].Tags)
			require.Equal(t, int64(2), internal[0].int(t, 0, "hooks_attached"))
		})
	}
}

// influxDB is an influxd 1.8 serving on 127.0.0.1 inside namespace A.
type influxDB struct {
	addr   string
	client *http.Client
}

func startInfluxDB(t *testing.T, p *nettest.Pair, influxd string) *influxDB {
	t.Helper()
	dir := t.TempDir()
	httpAddr, rpcAddr := freeAddr(t, p), freeAddr(t, p)
	conf := filepath.Join(dir, "influxdb.conf")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf(`
reporting-disabled = true
bind-address = %q
[meta]
  dir = %q
[data]
  dir = %q
  wal-dir = %q
  query-log-enabled = false
[http]
  bind-address = %q
  log-enabled = false
[monitor]
  store-enabled = false
`, rpcAddr, filepath.Join(dir, "meta"), filepath.Join(dir, "data"), filepath.Join(dir, "wal"), httpAddr)), 0o600))
	startProcess(t, func(cmd *exec.Cmd) { cmd.Env = append(cmd.Env, "HOME="+dir) },
		"ip", "netns", "exec", p.NSA, influxd, "run", "-config", conf)

	// Connections are dialled from inside A, where the server listens.
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	db := &influxDB{addr: httpAddr, client: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (conn net.Conn, err error) {
			err = p.DoA(func() (err error) {
				conn, err = dialer.DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		},
	}}}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := db.client.Get("http://" + httpAddr + "/ping")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				return db
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("influxd did not answer /ping within 60s: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// freeAddr returns a 127.0.0.1 address with a port that was free in A.
func freeAddr(t *testing.T, p *nettest.Pair) string {
	t.Helper()
	var addr string
	require.NoError(t, p.DoA(func() error {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		addr = l.Addr().String()
		return l.Close()
	}))
	return addr
}

type influxSeries struct {
	Name    string            `json:"name"`
	Tags    map[string]string `json:"tags"`
	Columns []string          `json:"columns"`
	Values  [][]interface{}   `json:"values"`
}

func (s influxSeries) int(t *testing.T, row int, column string) int64 {
	t.Helper()
	for i, c := range s.Columns {
		if c == column {
			n, ok := s.Values[row][i].(json.Number)
			require.True(t, ok, "column %s is %T", column, s.Values[row][i])
			v, err := n.Int64()
			require.NoError(t, err)
			return v
		}
	}
	t.Fatalf("no column %s in %v", column, s.Columns)
	return 0
}

// query runs an InfluxQL statement and returns the series of its one result.
func (db *influxDB) query(t *testing.T, database, q string) []influxSeries {
	t.Helper()
	form := url.Values{"q": {q}}
	if database != "" {
		form.Set("db", database)
	}
	resp, err := db.client.Post("http://"+db.addr+"/query", "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s: %s", q, body)
	var r struct {
		Results []struct {
			Series []influxSeries `json:"series"`
			Error  string         `json:"error"`
		} `json:"results"`
	}
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.UseNumber()
	require.NoError(t, dec.Decode(&r), "%s", body)
	require.Len(t, r.Results, 1, "%s", body)
	require.Empty(t, r.Results[0].Error, "%s", q)
	return r.Results[0].Series
}
