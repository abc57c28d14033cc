package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// TestPrometheusClient: the fields are telegraf.Counter, so
// outputs.prometheus_client exposes them as Prometheus counters, with the
// exact counts.
func TestPrometheusClient(t *testing.T) {
	nettest.RequireBPF(t)
	telegrafBin := requireBinary(t, "telegraf")
	p := nettest.NewPair(t)
	addr := freeAddr(t, p)
	conf := filepath.Join(t.TempDir(), "telegraf.conf")
	require.NoError(t, os.WriteFile(conf, []byte(fmt.Sprintf(`
[agent]
  omit_hostname = true
  interval = "1s"
  flush_interval = "1s"

[[inputs.pktstat_bpf]]
  interfaces = [%q]

[[outputs.prometheus_client]]
  listen = %q
  collectors_exclude = ["gocollector", "process"]
`, p.IfA, addr)), 0o600))
	proc := startProcess(t, nil, "ip", "netns", "exec", p.NSA, telegrafBin, "--config", conf)
	proc.waitLog(t, "counting started", 60*time.Second)
	f := flow{n: 50, payload: 400, srcPort: 48001, dstPort: 58001}
	f.send(t, p)

	// Dial from inside A, where Telegraf listens.
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (conn net.Conn, err error) {
			err = p.DoA(func() (err error) {
				conn, err = (&net.Dialer{}).DialContext(ctx, network, addr)
				return err
			})
			return conn, err
		},
	}}
	labels := fmt.Sprintf(`direction="egress",dst_ip="%s",dst_port="%d",interface="%s",ip_version="4",proto="udp",src_ip="%s",src_port="%d"`,
		p.B4, f.dstPort, p.IfA, p.A4, f.srcPort)
	want := []string{
		"# TYPE pktstat_bpf_packets counter",
		"# TYPE pktstat_bpf_bytes counter",
		fmt.Sprintf("pktstat_bpf_packets{%s} %d", labels, f.n),
		fmt.Sprintf("pktstat_bpf_bytes{%s} %d", labels, f.bytes()),
	}
	var body string
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := client.Get("http://" + addr + "/metrics")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = string(b)
			if hasLines(body, want) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics never showed %q; last body:\n%s\ntelegraf log:\n%s", want, grepLines(body, "pktstat_bpf_"), proc.log())
		}
		time.Sleep(250 * time.Millisecond)
	}
	proc.stop(t)
}

func hasLines(body string, want []string) bool {
	lines := strings.Split(body, "\n")
	for _, w := range want {
		found := false
		for _, l := range lines {
			if l == w {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func grepLines(body, prefix string) string {
	re := regexp.MustCompile(`(?m)^(# TYPE )?` + regexp.QuoteMeta(prefix) + `.*$`)
	return strings.Join(re.FindAllString(body, -1), "\n")
}
