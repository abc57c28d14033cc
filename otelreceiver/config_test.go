package pktstatbpfreceiver

import (
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/confmaptest"

	"github.com/pktstat-bpf/pktstat-bpf/core"
	"github.com/pktstat-bpf/pktstat-bpf/core/aggregate"
	"github.com/pktstat-bpf/pktstat-bpf/otelreceiver/internal/metadata"
)

// loadConfig reads one receiver config from testdata/config.yaml the way the
// collector does: defaults first, then the user's keys on top.
func loadConfig(t *testing.T, id component.ID) *Config {
	t.Helper()
	cm, err := confmaptest.LoadConf(filepath.Join("testdata", "config.yaml"))
	require.NoError(t, err)
	sub, err := cm.Sub(id.String())
	require.NoError(t, err)
	cfg := NewFactory().CreateDefaultConfig().(*Config)
	require.NoError(t, sub.Unmarshal(cfg))
	return cfg
}

func TestLoadConfig(t *testing.T) {
	def := loadConfig(t, component.NewID(metadata.Type))
	require.NoError(t, confmap.Validate(def))
	assert.Equal(t, createDefaultConfig(), def)
	assert.Equal(t, 10*time.Second, def.CollectionInterval)
	assert.Equal(t, "tc", def.Mode)
	assert.Equal(t, "cumulative", def.Temporality)
	assert.Equal(t, 131072, def.MaxFlows)
	assert.Equal(t, 2*time.Minute, def.IdleTimeout)
	assert.Equal(t, aggregate.DefaultDimensions, def.Dimensions)
	assert.Equal(t, "off", def.FoldPorts)
	assert.Zero(t, def.SeriesIdleTimeout, "unset: follows idle_timeout")
	assert.Equal(t, aggregate.Duration(2*time.Minute), def.aggregateConfig().SeriesIdleTimeout)
	assert.Zero(t, def.TopN)
	assert.Zero(t, def.MaxSeries)
	assert.False(t, def.Metrics.PktstatbpfNetworkFlowTCPRetransmits.Enabled)
	assert.False(t, def.Drops, "drops is off by default")
	assert.False(t, def.TCPRTT)
	assert.Equal(t, 8192, def.MaxPointsPerBatch)

	custom := loadConfig(t, component.NewIDWithName(metadata.Type, "custom"))
	require.NoError(t, confmap.Validate(custom))
	want := createDefaultConfig().(*Config)
	want.CollectionInterval = 30 * time.Second
	want.Mode = "xdp"
	want.Interfaces = []string{"veth0", "eth*"}
	want.XDPMode = "generic"
	want.MaxFlows = 4096
	want.IdleTimeout = 30 * time.Second
	want.NetNS = "/var/run/netns/blue"
	want.Drops = true
	want.Temporality = "delta"
	want.MaxPointsPerBatch = 1000
	want.Dimensions = []aggregate.Dimension{"interface", "direction", "proto", "src_ip", "dst_ip", "dst_port", "app_proto"}
	want.FoldPorts = "ephemeral"
	want.EphemeralPortMin = 49152
	want.CIDRGroups = []aggregate.CIDRGroup{{Name: "office", CIDR: "10.1.0.0/16"}, {Name: "lab", CIDR: "2001:db8:1::/48"}}
	want.UngroupedAsOther = true
	want.TopN = 100
	want.MaxSeries = 500
	want.SeriesIdleTimeout = aggregate.Duration(5 * time.Minute)
	want.Filters = core.Filters{
		IncludeCIDRs: []string{"10.0.0.0/8", "2001:db8::/32"}, ExcludeCIDRs: []string{"10.9.0.0/16"},
		IncludeProtocols: []string{"tcp", "udp", "arp"}, ExcludeProtocols: []string{"other"},
		IncludePorts: []string{"53", "30000-32767"}, ExcludePorts: []string{"32000"},
	}
	want.Metrics.PktstatbpfNetworkFlowBytes.Attributes = []string{"network.interface.name", "network.io.direction", "network.protocol.name"}
	want.Metrics.PktstatbpfNetworkFlowPackets.Enabled = false
	want.Metrics.PktstatbpfDrainDuration.Enabled = false
	want.ResourceAttributes.HostName.Enabled = false
	assert.Equal(t, want, custom)
}

func TestConfigValidateErrors(t *testing.T) {
	cases := []struct {
		name string
		want string
	}{
		{"bad_mode", `mode "ebpf" is not one of tc, xdp, cgroup, kprobe`},
		{"bad_xdp_mode", `xdp_mode "turbo" is not one of auto, generic, native, offload`},
		{"bad_kprobe_attach", `kprobe_attach "uprobe" is not one of auto, fentry, kprobe`},
		{"kprobe_attach_without_kprobe", `kprobe_attach "fentry" is set but mode is "tc": set mode = "kprobe" or remove kprobe_attach`},
		{"xdp_mode_without_xdp", `xdp_mode "native" is set but mode is "tc": set mode = "xdp" or remove xdp_mode`},
		{"empty_interface", `interfaces: empty interface name`},
		{"bad_glob", `interfaces: bad glob "eth[": syntax error in pattern`},
		{"long_interface", `interfaces: "averyveryverylongname" is longer than the kernel's 15-character interface name limit`},
		{"interfaces_in_cgroup", `interfaces is set but mode "cgroup" counts per socket, not per interface: remove interfaces or use mode tc or xdp`},
		{"cgroup_path_without_cgroup", `cgroup_path is set but mode is "tc": set mode = "cgroup" or remove cgroup_path`},
		{"max_flows_too_small", `max_flows 8 is out of range [16, 16777216]`},
		{"max_flows_too_large", `max_flows 100000000 is out of range [16, 16777216]`},
		{"negative_idle_timeout", `idle_timeout -5s is negative: set a positive duration or remove it for the default 2m0s`},
		{"relative_netns", `netns "blue" is not an absolute path: use /var/run/netns/NAME or /proc/PID/ns/net`},
		{"bad_temporality", `temporality "gauge" is not one of cumulative, delta`},
		{"negative_max_points_per_batch", `max_points_per_batch -1 is negative: use 0 to send each scrape as one batch, or a positive number of data points (default 8192)`},
		{"bad_collection_interval", `"collection_interval": requires positive value`},
		{"unknown_attribute", `metrics::pktstatbpf.network.flow.bytes::attributes: unknown attribute "src_ip": choose from ` +
			`network.interface.name, network.io.direction, network.type, network.transport, source.address, source.port, ` +
			`destination.address, destination.port, process.pid, pktstatbpf.process.comm, container.id, k8s.pod.uid, ` +
			`network.protocol.name, pktstatbpf.vlan.id, pktstatbpf.flags, pktstatbpf.cgroup.path, pktstatbpf.icmp.type, pktstatbpf.icmp.code, ` +
			`pktstatbpf.source.group, pktstatbpf.source.cidr, pktstatbpf.destination.group, pktstatbpf.destination.cidr`},
		{"repeated_attribute", `metrics::pktstatbpf.network.flow.packets::attributes: "source.port" is listed twice`},
		// The aggregation keys' own messages, unchanged.
		{"unknown_dimension", `dimensions: unknown dimension "src_addr"; valid dimensions are interface, direction, ip_version, ` +
			`proto, src_ip, dst_ip, src_port, dst_port, vlan, flags, pid, comm, cgroup, container_id, pod_uid, app_proto`},
		{"bad_fold_ports", `fold_ports "lower" is not one of off, ephemeral, higher`},
		{"ephemeral_port_min_without_folding", `ephemeral_port_min is set but fold_ports is "off": set fold_ports = "ephemeral" or remove ephemeral_port_min`},
		{"fold_without_ports", `fold_ports "higher" has no effect because dimensions lists neither src_port nor dst_port: add one or remove fold_ports`},
		{"cidr_host_bits", `cidr_groups[0] "office": cidr "10.1.2.3/16" has host bits set: write "10.1.0.0/16"`},
		{"cidr_group_named_other", `cidr_groups[0]: name "other" is reserved for addresses outside every group`},
		{"ungrouped_without_groups", `ungrouped_as_other is set but cidr_groups is empty: add groups or remove ungrouped_as_other`},
		{"negative_top_n", `top_n -1 is negative: use 0 to keep every series`},
		{"negative_max_series", `max_series -5 is negative: use 0 for no cap`},
		{"attribute_without_dimension", `metrics::pktstatbpf.network.flow.bytes::attributes: "process.pid" needs "pid" in dimensions: add it there or remove the attribute` + "\n" +
			`metrics::pktstatbpf.network.flow.tcp.retransmits::attributes: "pktstatbpf.icmp.type" needs "proto" in dimensions: add it there or remove the attribute`},
		// The filter keys' messages come from core, the same as the Telegraf plugin's.
		{"filter_host_bits", filterErrHostBits},
		{"filter_unknown_protocol", filterErrProtocol},
		{"filter_port_out_of_range", filterErrPortRange},
		{"filter_empty_range", filterErrEmptyRange},
		{"filter_leaves_nothing", filterErrNothing},
		{"filter_in_kprobe_mode", filterErrKprobe},
		{"tcp_rtt_in_xdp", `tcp_rtt = true is set but mode is "xdp": RTT is reported on egress flows of the tc and cgroup modes; set tcp_rtt = false or use mode tc or cgroup`},
		{"two_errors", "mode \"ebpf\" is not one of tc, xdp, cgroup, kprobe\ntemporality \"gauge\" is not one of cumulative, delta"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := loadConfig(t, component.NewIDWithName(metadata.Type, tc.name))
			err := confmap.Validate(cfg)
			require.Error(t, err)
			// xconfmap prefixes the path of a nested config; the receiver's
			// own text must follow unchanged.
			assert.Regexp(t, `(^|: )`+regexp.QuoteMeta(tc.want)+`$`, err.Error())
		})
	}
}

// TestConfigErrorsAreReportedOnce: the aggregation keys' errors come from
// Config.Validate only, without a path, however confmap walks the struct.
func TestConfigErrorsAreReportedOnce(t *testing.T) {
	cfg := loadConfig(t, component.NewIDWithName(metadata.Type, "negative_top_n"))
	assert.EqualError(t, confmap.Validate(cfg), "top_n -1 is negative: use 0 to keep every series")
}

func TestConfigBadSeriesIdleTimeout(t *testing.T) {
	cm := confmap.NewFromStringMap(map[string]any{"series_idle_timeout": "5 minutes"})
	err := cm.Unmarshal(createDefaultConfig())
	require.Error(t, err)
	assert.Contains(t, err.Error(), `'series_idle_timeout' duration "5 minutes": write it like "90s", "2m" or "1d", or as a number of seconds`)
}

func TestConfigRejectsUnknownKey(t *testing.T) {
	cm := confmap.NewFromStringMap(map[string]any{"mode": "tc", "interface": "eth0"})
	cfg := createDefaultConfig()
	err := cm.Unmarshal(cfg)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "invalid keys: interface")
}

// The filter messages, word for word as the Telegraf plugin's tests expect
// them (telegrafplugin/pktstat_bpf/pktstat_bpf_test.go).
const (
	filterErrHostBits   = `exclude_cidrs "10.1.2.3/8" has host bits set: write "10.0.0.0/8"`
	filterErrProtocol   = `include_protocols "tcpp" is not a protocol: use a lower-case IANA keyword as in the proto tag (tcp, udp, icmp, ipv6-icmp, gre, esp, sctp, ...), an IP protocol number 0-255, arp, or other (any other non-IP protocol)`
	filterErrPortRange  = `include_ports "70000" is out of range: 70000 is not in [0, 65535]`
	filterErrEmptyRange = `exclude_ports "2000-1000" is an empty range: write the lower port first, like "1000-2000"`
	filterErrNothing    = `include_protocols ["tcp"] and exclude_protocols ["tcp"] leave nothing: every included protocol is also excluded`
	filterErrKprobe     = `include_cidrs is set but mode is "kprobe": filters run in the tc, xdp and cgroup programs; remove the filter keys or use one of those modes`
)
