package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/influxdata/telegraf/config"
	"github.com/stretchr/testify/require"

	"github.com/pktstat-bpf/pktstat-bpf/core/aggregate"
	"github.com/pktstat-bpf/pktstat-bpf/telegrafplugin/pktstat_bpf"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pktstat_bpf.conf")
	require.NoError(t, os.WriteFile(path, []byte(body), 0o600))
	return path
}

func TestLoadInput(t *testing.T) {
	t.Setenv("PKTSTAT_TEST_IFACE", "veth0")
	path := writeConfig(t, `
[[inputs.pktstat_bpf]]
  mode = "xdp"
  interfaces = ["${PKTSTAT_TEST_IFACE}"]
  xdp_mode = "generic"
  max_flows = 1024
  idle_timeout = "30s"
  netns = "/var/run/netns/blue"
  dimensions = ["interface", "direction", "src_ip", "dst_ip", "dst_port", "vlan"]
  fold_ports = "higher"
  cidr_groups = [{ name = "office", cidr = "10.1.0.0/16" }]
  top_n = 10
  max_series = 50
  series_idle_timeout = "90s"
`)
	got, err := loadInput(path)
	require.NoError(t, err)
	require.Equal(t, &pktstat_bpf.PktstatBPF{
		Mode:        "xdp",
		Interfaces:  []string{"veth0"},
		XDPMode:     "generic",
		MaxFlows:    1024,
		IdleTimeout: config.Duration(30 * time.Second),
		NetNS:       "/var/run/netns/blue",
		Config: aggregate.Config{
			Dimensions:        []aggregate.Dimension{"interface", "direction", "src_ip", "dst_ip", "dst_port", "vlan"},
			FoldPorts:         "higher",
			CIDRGroups:        []aggregate.CIDRGroup{{Name: "office", CIDR: "10.1.0.0/16"}},
			TopN:              10,
			MaxSeries:         50,
			SeriesIdleTimeout: aggregate.Duration(90 * time.Second),
		},
	}, got)
	require.NoError(t, got.Init())
}

func TestLoadInputErrors(t *testing.T) {
	cases := []struct {
		name string
		body string
		err  string
	}{
		{
			name: "unknown key",
			body: "[[inputs.pktstat_bpf]]\n  mode = \"tc\"\n  max_flow = 10\n",
			err:  "unknown keys inputs.pktstat_bpf.max_flow: fix the spelling or remove them (see the plugin's sample.conf)",
		},
		{
			name: "unknown aggregation key",
			body: "[[inputs.pktstat_bpf]]\n  top_m = 3\n  [[inputs.pktstat_bpf.cidr_groups]]\n    name = \"lab\"\n    prefix = \"10.0.0.0/8\"\n",
			err:  "unknown keys inputs.pktstat_bpf.cidr_groups.prefix, inputs.pktstat_bpf.top_m: fix the spelling or remove them (see the plugin's sample.conf)",
		},
		{
			name: "unknown keys everywhere",
			body: "interval = \"10s\"\n[[inputs.pktstat_bpf]]\n  interface = [\"eth0\"]\n  [inputs.pktstat_bpf.tags]\n    a = \"b\"\n",
			err:  "unknown keys inputs.pktstat_bpf.interface, inputs.pktstat_bpf.tags, inputs.pktstat_bpf.tags.a, interval: fix the spelling or remove them (see the plugin's sample.conf)",
		},
		{
			name: "other input",
			body: "[[inputs.cpu]]\n",
			err:  `unknown input "cpu": this binary runs only [[inputs.pktstat_bpf]]`,
		},
		{
			name: "two tables",
			body: "[[inputs.pktstat_bpf]]\n[[inputs.pktstat_bpf]]\n",
			err:  "2 [[inputs.pktstat_bpf]] tables: run one process per table",
		},
		{
			name: "no table",
			body: "# nothing\n",
			err:  "no [[inputs.pktstat_bpf]] table",
		},
		{
			name: "wrong type",
			body: "[[inputs.pktstat_bpf]]\n  max_flows = \"many\"\n",
			err:  "toml: line 2 (last key \"inputs.pktstat_bpf.max_flows\"): incompatible types: TOML value has type string; destination has type integer",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.body)
			_, err := loadInput(path)
			require.EqualError(t, err, "config "+path+": "+tc.err)
		})
	}
}

// TestBadValueRejectedByInit checks that values reach the plugin's Init
// through the shim, which calls Init in AddInput.
func TestBadValueRejectedByInit(t *testing.T) {
	path := writeConfig(t, "[[inputs.pktstat_bpf]]\n  mode = \"tc\"\n  max_flows = 8\n")
	in, err := loadInput(path)
	require.NoError(t, err)
	require.EqualError(t, in.Init(), "max_flows 8 is out of range [16, 16777216]")
}

func TestMissingFile(t *testing.T) {
	_, err := loadInput(filepath.Join(t.TempDir(), "absent.conf"))
	require.ErrorContains(t, err, "read config: open ")
}

// TestExampleConfig loads the shim config the README tells users to install.
func TestExampleConfig(t *testing.T) {
	in, err := loadInput(filepath.Join("..", "..", "..", "testdata", "telegraf", "pktstat_bpf.conf"))
	require.NoError(t, err)
	require.Equal(t, "tc", in.Mode)
	require.NoError(t, in.Init())
}
