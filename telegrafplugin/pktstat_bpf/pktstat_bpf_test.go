package pktstat_bpf

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/config"
	"github.com/influxdata/telegraf/metric"
	"github.com/influxdata/telegraf/plugins/inputs"
	"github.com/influxdata/telegraf/testutil"
	"github.com/stretchr/testify/require"

	"github.com/pktstat-bpf/pktstat-bpf/core"
	"github.com/pktstat-bpf/pktstat-bpf/core/aggregate"
)

// fakeSource replays snapshots in order and records the calls made to it.
type fakeSource struct {
	startErr  error
	snapshots []core.Snapshot
	cfg       core.Config
	started   bool
	closed    int
	reads     int
}

func (f *fakeSource) Start(context.Context) error {
	f.started = f.startErr == nil
	return f.startErr
}

func (f *fakeSource) Read(context.Context) (core.Snapshot, error) {
	if !f.started {
		return core.Snapshot{}, errors.New("read: collector not started")
	}
	if f.reads >= len(f.snapshots) {
		return core.Snapshot{}, fmt.Errorf("read: fake has no snapshot %d", f.reads)
	}
	f.reads++
	return f.snapshots[f.reads-1], nil
}

func (f *fakeSource) Close() error {
	f.closed++
	return nil
}

func withFake(p *PktstatBPF, f *fakeSource) *PktstatBPF {
	p.Log = testutil.Logger{}
	p.newSource = func(cfg core.Config) (flowSource, error) {
		f.cfg = cfg
		return f, nil
	}
	return p
}

func TestInitErrors(t *testing.T) {
	cases := []struct {
		name string
		p    *PktstatBPF
		err  string
	}{
		{
			name: "unknown mode",
			p:    &PktstatBPF{Mode: "pcap"},
			err:  `mode "pcap" is not one of tc, xdp, cgroup, kprobe`,
		},
		{
			name: "unknown xdp_mode",
			p:    &PktstatBPF{Mode: "xdp", XDPMode: "fast"},
			err:  `xdp_mode "fast" is not one of auto, generic, native, offload`,
		},
		{
			name: "xdp_mode without xdp",
			p:    &PktstatBPF{XDPMode: "native"},
			err:  `xdp_mode "native" is set but mode is "tc": set mode = "xdp" or remove xdp_mode`,
		},
		{
			name: "tcp_rtt in xdp mode",
			p:    &PktstatBPF{Mode: "xdp", TCPRTT: true},
			err:  `tcp_rtt = true is set but mode is "xdp": RTT is reported on egress flows of the tc and cgroup modes; set tcp_rtt = false or use mode tc or cgroup`,
		},
		{
			name: "unknown kprobe_attach",
			p:    &PktstatBPF{Mode: "kprobe", KprobeAttach: "uprobe"},
			err:  `kprobe_attach "uprobe" is not one of auto, fentry, kprobe`,
		},
		{
			name: "kprobe_attach without kprobe",
			p:    &PktstatBPF{Mode: "cgroup", KprobeAttach: "fentry"},
			err:  `kprobe_attach "fentry" is set but mode is "cgroup": set mode = "kprobe" or remove kprobe_attach`,
		},
		{
			name: "empty interface",
			p:    &PktstatBPF{Interfaces: []string{"eth0", ""}},
			err:  `interfaces: empty interface name`,
		},
		{
			name: "bad glob",
			p:    &PktstatBPF{Interfaces: []string{"eth["}},
			err:  `interfaces: bad glob "eth[": syntax error in pattern`,
		},
		{
			name: "interface name too long",
			p:    &PktstatBPF{Interfaces: []string{"averyveryverylongname"}},
			err:  `interfaces: "averyveryverylongname" is longer than the kernel's 15-character interface name limit`,
		},
		{
			name: "interfaces in cgroup mode",
			p:    &PktstatBPF{Mode: "cgroup", Interfaces: []string{"eth0"}},
			err:  `interfaces is set but mode "cgroup" counts per socket, not per interface: remove interfaces or use mode tc or xdp`,
		},
		{
			name: "cgroup_path without cgroup",
			p:    &PktstatBPF{Mode: "xdp", CgroupPath: "/sys/fs/cgroup/x"},
			err:  `cgroup_path is set but mode is "xdp": set mode = "cgroup" or remove cgroup_path`,
		},
		{
			name: "max_flows too small",
			p:    &PktstatBPF{MaxFlows: 15},
			err:  `max_flows 15 is out of range [16, 16777216]`,
		},
		{
			name: "max_flows negative",
			p:    &PktstatBPF{MaxFlows: -1},
			err:  `max_flows -1 is out of range [16, 16777216]`,
		},
		{
			name: "max_flows too large",
			p:    &PktstatBPF{MaxFlows: 1<<24 + 1},
			err:  `max_flows 16777217 is out of range [16, 16777216]`,
		},
		{
			name: "idle_timeout negative",
			p:    &PktstatBPF{IdleTimeout: config.Duration(-time.Second)},
			err:  `idle_timeout -1s is negative: set a positive duration or remove it for the default 2m0s`,
		},
		{
			name: "netns relative",
			p:    &PktstatBPF{NetNS: "blue"},
			err:  `netns "blue" is not an absolute path: use /var/run/netns/NAME or /proc/PID/ns/net`,
		},
		{
			name: "unknown dimension",
			p:    &PktstatBPF{Config: aggregate.Config{Dimensions: []aggregate.Dimension{"proto", "mac"}}},
			err: `dimensions: unknown dimension "mac"; valid dimensions are interface, direction, ip_version, proto, src_ip, dst_ip, ` +
				`src_port, dst_port, vlan, flags, pid, comm, cgroup, container_id, pod_uid, app_proto`,
		},
		{
			name: "duplicate dimension",
			p:    &PktstatBPF{Config: aggregate.Config{Dimensions: []aggregate.Dimension{"vlan", "vlan"}}},
			err:  `dimensions: "vlan" is listed twice`,
		},
		{
			name: "pid in tc mode",
			p:    &PktstatBPF{Config: aggregate.Config{Dimensions: []aggregate.Dimension{"proto", "pid"}}},
			err:  `dimensions: "pid" needs mode "cgroup" or "kprobe", but mode is "tc": remove it or change mode`,
		},
		{
			name: "comm and container_id in xdp mode",
			p:    &PktstatBPF{Mode: "xdp", Config: aggregate.Config{Dimensions: []aggregate.Dimension{"comm", "container_id"}}},
			err: `dimensions: "comm" needs mode "cgroup" or "kprobe", but mode is "xdp": remove it or change mode` + "\n" +
				`dimensions: "container_id" needs mode "cgroup" or "kprobe", but mode is "xdp": remove it or change mode`,
		},
		{
			name: "unknown fold_ports",
			p:    &PktstatBPF{Config: aggregate.Config{FoldPorts: "client"}},
			err:  `fold_ports "client" is not one of off, ephemeral, higher`,
		},
		{
			name: "ephemeral_port_min without ephemeral folding",
			p:    &PktstatBPF{Config: aggregate.Config{EphemeralPortMin: 49152}},
			err:  `ephemeral_port_min is set but fold_ports is "off": set fold_ports = "ephemeral" or remove ephemeral_port_min`,
		},
		{
			name: "fold_ports without ports",
			p:    &PktstatBPF{Config: aggregate.Config{FoldPorts: "higher", Dimensions: []aggregate.Dimension{"src_ip", "dst_ip"}}},
			err:  `fold_ports "higher" has no effect because dimensions lists neither src_port nor dst_port: add one or remove fold_ports`,
		},
		{
			name: "cidr group with host bits",
			p:    &PktstatBPF{Config: aggregate.Config{CIDRGroups: []aggregate.CIDRGroup{{Name: "office", CIDR: "10.1.2.3/16"}}}},
			err:  `cidr_groups[0] "office": cidr "10.1.2.3/16" has host bits set: write "10.1.0.0/16"`,
		},
		{
			name: "ungrouped_as_other without groups",
			p:    &PktstatBPF{Config: aggregate.Config{UngroupedAsOther: true}},
			err:  `ungrouped_as_other is set but cidr_groups is empty: add groups or remove ungrouped_as_other`,
		},
		{
			name: "negative top_n and max_series",
			p:    &PktstatBPF{Config: aggregate.Config{TopN: -1, MaxSeries: -2}},
			err:  "top_n -1 is negative: use 0 to keep every series\nmax_series -2 is negative: use 0 for no cap",
		},
		{
			name: "negative series_idle_timeout",
			p:    &PktstatBPF{Config: aggregate.Config{SeriesIdleTimeout: aggregate.Duration(-time.Second)}},
			err:  `series_idle_timeout -1s is negative`,
		},
		// The filter keys' messages come from core, the same as the receiver's.
		{name: "filter host bits", p: &PktstatBPF{Filters: core.Filters{ExcludeCIDRs: []string{"10.1.2.3/8"}}}, err: filterErrHostBits},
		{name: "filter unknown protocol", p: &PktstatBPF{Filters: core.Filters{IncludeProtocols: []string{"tcpp"}}}, err: filterErrProtocol},
		{name: "filter port out of range", p: &PktstatBPF{Filters: core.Filters{IncludePorts: []string{"70000"}}}, err: filterErrPortRange},
		{name: "filter empty range", p: &PktstatBPF{Filters: core.Filters{ExcludePorts: []string{"2000-1000"}}}, err: filterErrEmptyRange},
		{name: "filter leaves nothing", p: &PktstatBPF{Filters: core.Filters{IncludeProtocols: []string{"tcp"}, ExcludeProtocols: []string{"tcp"}}}, err: filterErrNothing},
		{name: "filter in kprobe mode", p: &PktstatBPF{Mode: "kprobe", Filters: core.Filters{IncludeCIDRs: []string{"10.0.0.0/8"}}}, err: filterErrKprobe},
		{
			name: "every error is reported at once",
			p:    &PktstatBPF{Mode: "tc", MaxFlows: 1, NetNS: "x", IdleTimeout: config.Duration(-time.Minute)},
			err: "max_flows 1 is out of range [16, 16777216]\n" +
				"idle_timeout -1m0s is negative: set a positive duration or remove it for the default 2m0s\n" +
				`netns "x" is not an absolute path: use /var/run/netns/NAME or /proc/PID/ns/net`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.p
			p.Log = testutil.Logger{}
			require.EqualError(t, p.Init(), tc.err)
		})
	}
}

func TestInitValid(t *testing.T) {
	cases := []struct {
		name string
		p    *PktstatBPF
		want core.Config
	}{
		{
			name: "defaults",
			p:    &PktstatBPF{},
			want: core.Config{},
		},
		{
			name: "xdp",
			p: &PktstatBPF{Mode: "xdp", XDPMode: "generic", Interfaces: []string{"veth*"}, MaxFlows: 16,
				Config: aggregate.Config{Dimensions: []aggregate.Dimension{"interface", "proto", "vlan", "flags", "app_proto"}}},
			want: core.Config{Mode: core.ModeXDP, XDPMode: "generic", Interfaces: []string{"veth*"}, MaxFlows: 16},
		},
		{
			name: "cgroup",
			p: &PktstatBPF{Mode: "cgroup", CgroupPath: "/sys/fs/cgroup/unified/system.slice", IdleTimeout: config.Duration(30 * time.Second),
				NetNS: "/var/run/netns/blue", Config: aggregate.Config{Dimensions: []aggregate.Dimension{"pid", "comm", "cgroup", "container_id", "pod_uid"}}},
			want: core.Config{Mode: core.ModeCgroup, CgroupPath: "/sys/fs/cgroup/unified/system.slice", IdleTimeout: 30 * time.Second,
				NetNS: "/var/run/netns/blue"},
		},
		{
			name: "kprobe passes Init and fails at Start if the kernel cannot",
			p:    &PktstatBPF{Mode: "kprobe", KprobeAttach: "kprobe", Config: aggregate.Config{Dimensions: []aggregate.Dimension{"pid", "comm"}}},
			want: core.Config{Mode: core.ModeKprobe, KprobeAttach: "kprobe"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeSource{}
			p := withFake(tc.p, f)
			require.NoError(t, p.Init())
			require.NoError(t, p.Start(&testutil.Accumulator{}))
			defer p.Stop()
			f.cfg.Logger = nil
			require.Equal(t, tc.want, f.cfg)
		})
	}
}

// TestTelegrafConfig loads configurations through Telegraf's own loader, the
// path build/telegraf takes.
func TestTelegrafConfig(t *testing.T) {
	t.Run("sample.conf", func(t *testing.T) {
		c := config.NewConfig()
		require.NoError(t, c.LoadConfigData([]byte(sampleConfig), ""))
		require.Len(t, c.Inputs, 1)
		require.Equal(t, "pktstat_bpf", c.Inputs[0].Config.Name)
		require.NoError(t, c.Inputs[0].Init())
	})
	t.Run("every key", func(t *testing.T) {
		c := config.NewConfig()
		require.NoError(t, c.LoadConfigData([]byte(`
[[inputs.pktstat_bpf]]
  mode = "xdp"
  interfaces = ["veth0", "eth*"]
  xdp_mode = "native"
  max_flows = 4096
  idle_timeout = "45s"
  netns = "/var/run/netns/blue"
  drops = true
  dimensions = ["interface", "direction", "proto", "src_ip", "dst_ip", "src_port", "dst_port", "vlan"]
  fold_ports = "ephemeral"
  ephemeral_port_min = 49152
  cidr_groups = [{ name = "office", cidr = "10.1.0.0/16" }]
  ungrouped_as_other = true
  top_n = 100
  max_series = 500
  series_idle_timeout = "5m"
  include_cidrs = ["10.0.0.0/8", "2001:db8::/32"]
  exclude_cidrs = ["10.9.0.0/16"]
  include_protocols = ["tcp", "udp", "arp"]
  exclude_protocols = ["other"]
  include_ports = ["53", "30000-32767"]
  exclude_ports = ["32000"]
`), ""))
		require.Len(t, c.Inputs, 1)
		p := c.Inputs[0].Input.(*PktstatBPF)
		require.Equal(t, &PktstatBPF{
			Mode:        "xdp",
			Interfaces:  []string{"veth0", "eth*"},
			XDPMode:     "native",
			MaxFlows:    4096,
			IdleTimeout: config.Duration(45 * time.Second),
			NetNS:       "/var/run/netns/blue",
			Drops:       true,
			Config: aggregate.Config{
				Dimensions:        []aggregate.Dimension{"interface", "direction", "proto", "src_ip", "dst_ip", "src_port", "dst_port", "vlan"},
				FoldPorts:         "ephemeral",
				EphemeralPortMin:  49152,
				CIDRGroups:        []aggregate.CIDRGroup{{Name: "office", CIDR: "10.1.0.0/16"}},
				UngroupedAsOther:  true,
				TopN:              100,
				MaxSeries:         500,
				SeriesIdleTimeout: aggregate.Duration(5 * time.Minute),
			},
			Filters: core.Filters{
				IncludeCIDRs: []string{"10.0.0.0/8", "2001:db8::/32"}, ExcludeCIDRs: []string{"10.9.0.0/16"},
				IncludeProtocols: []string{"tcp", "udp", "arp"}, ExcludeProtocols: []string{"other"},
				IncludePorts: []string{"53", "30000-32767"}, ExcludePorts: []string{"32000"},
			},
			Log: p.Log,
		}, p)
		require.NoError(t, c.Inputs[0].Init())
	})
	t.Run("cidr_groups as tables", func(t *testing.T) {
		c := config.NewConfig()
		require.NoError(t, c.LoadConfigData([]byte(`
[[inputs.pktstat_bpf]]
  [[inputs.pktstat_bpf.cidr_groups]]
    name = "office"
    cidr = "10.1.0.0/16"
  [[inputs.pktstat_bpf.cidr_groups]]
    name = "lab"
    cidr = "10.1.2.0/24"
`), ""))
		p := c.Inputs[0].Input.(*PktstatBPF)
		require.Equal(t, []aggregate.CIDRGroup{{Name: "office", CIDR: "10.1.0.0/16"}, {Name: "lab", CIDR: "10.1.2.0/24"}}, p.CIDRGroups)
		require.NoError(t, c.Inputs[0].Init())
	})
	t.Run("core/aggregate README example", func(t *testing.T) {
		readme, err := os.ReadFile("../../core/aggregate/README.md")
		require.NoError(t, err)
		_, rest, ok := strings.Cut(string(readme), "```toml\n")
		require.True(t, ok)
		example, _, _ := strings.Cut(rest, "```\n")
		c := config.NewConfig()
		require.NoError(t, c.LoadConfigData([]byte(example), ""), example)
		require.NoError(t, c.Inputs[0].Init())
		require.Equal(t, 500, c.Inputs[0].Input.(*PktstatBPF).MaxSeries)
	})
	t.Run("unknown key", func(t *testing.T) {
		c := config.NewConfig()
		err := c.LoadConfigData([]byte("[[inputs.pktstat_bpf]]\n  mode = \"tc\"\n  max_flow = 10\n"), "")
		require.ErrorContains(t, err, `configuration specified the fields ["max_flow"], but they were not used`)
	})
	t.Run("unknown aggregation key", func(t *testing.T) {
		c := config.NewConfig()
		err := c.LoadConfigData([]byte("[[inputs.pktstat_bpf]]\n  top_m = 3\n"), "")
		require.ErrorContains(t, err, `configuration specified the fields ["top_m"], but they were not used`)
	})
	t.Run("bad value reaches Init", func(t *testing.T) {
		c := config.NewConfig()
		require.NoError(t, c.LoadConfigData([]byte("[[inputs.pktstat_bpf]]\n  mode = \"pcap\"\n"), ""))
		require.EqualError(t, c.Inputs[0].Init(), `mode "pcap" is not one of tc, xdp, cgroup, kprobe`)
	})
}

func TestRegistered(t *testing.T) {
	creator, ok := inputs.Inputs["pktstat_bpf"]
	require.True(t, ok)
	_, ok = creator().(telegraf.ServiceInput)
	require.True(t, ok, "pktstat_bpf must be a service input: it attaches at Start and detaches at Stop")
}

func TestStartFailure(t *testing.T) {
	notSupported := fmt.Errorf("start kprobe mode: fentry: %w", core.ErrNotSupported)
	f := &fakeSource{startErr: notSupported}
	p := withFake(&PktstatBPF{Mode: "kprobe"}, f)
	require.NoError(t, p.Init())
	err := p.Start(&testutil.Accumulator{})
	require.ErrorIs(t, err, core.ErrNotSupported)
	require.EqualError(t, err, "start kprobe mode: fentry: "+core.ErrNotSupported.Error())
	require.Equal(t, 1, f.closed, "a failed Start must release what it opened")
	var acc testutil.Accumulator
	require.EqualError(t, p.Gather(&acc), "gather: input not started")
	p.Stop() // must not panic or close twice
	require.Equal(t, 1, f.closed)
}

func TestGatherReadError(t *testing.T) {
	f := &fakeSource{}
	p := withFake(&PktstatBPF{}, f)
	require.NoError(t, p.Init())
	require.NoError(t, p.Start(&testutil.Accumulator{}))
	var acc testutil.Accumulator
	require.EqualError(t, p.Gather(&acc), "drain flow table: read: fake has no snapshot 0")
	require.Empty(t, acc.GetTelegrafMetrics())
	p.Stop()
	require.Equal(t, 1, f.closed)
}

var (
	t0 = time.Date(2026, 11, 25, 20, 0, 0, 0, time.UTC)
	t1 = t0.Add(10 * time.Second)
)

func udp4(iface string, dir core.Direction, src, dst string, sport, dport uint16) core.FlowKey {
	return core.FlowKey{Direction: dir, EtherType: core.EtherTypeIPv4, Proto: core.ProtoUDP,
		SrcAddr: netip.MustParseAddr(src), DstAddr: netip.MustParseAddr(dst), SrcPort: sport, DstPort: dport}
}

// counter is a flow series' metric. A TCP series outside kprobe mode also
// has the four flag fields, zero in these fixtures.
func counter(tags map[string]string, packets, bytes uint64, tm time.Time) telegraf.Metric {
	if tags["proto"] == "tcp" {
		return flagCounter(tags, packets, bytes, core.TCPFlagCounts{}, tm)
	}
	return metric.New("pktstat_bpf", tags, map[string]interface{}{"packets": packets, "bytes": bytes}, tm, telegraf.Counter)
}

func flagCounter(tags map[string]string, packets, bytes uint64, f core.TCPFlagCounts, tm time.Time) telegraf.Metric {
	return metric.New("pktstat_bpf", tags, map[string]interface{}{"packets": packets, "bytes": bytes,
		"tcp_syn": f.SYN, "tcp_synack": f.SYNACK, "tcp_fin": f.FIN, "tcp_rst": f.RST}, tm, telegraf.Counter)
}

func internal(mode string, fields map[string]interface{}, tm time.Time) telegraf.Metric {
	return metric.New("pktstat_bpf_internal", map[string]string{"mode": mode}, fields, tm, telegraf.Untyped)
}

// first makes records as a first Read returns them: the whole count is
// new, so the delta equals the cumulative count.
func first(rs ...core.Record) []core.Record {
	for i := range rs {
		rs[i].DeltaPackets, rs[i].DeltaBytes = rs[i].Packets, rs[i].Bytes
	}
	return rs
}

func dims(ds ...aggregate.Dimension) aggregate.Config {
	return aggregate.Config{Dimensions: ds}
}

var defaultDims = aggregate.DefaultDimensions

func TestConversion(t *testing.T) {
	v6 := core.FlowKey{Direction: core.Egress, EtherType: core.EtherTypeIPv6, Proto: core.ProtoTCP,
		SrcAddr: netip.MustParseAddr("2001:db8::1"), DstAddr: netip.MustParseAddr("2001:db8::2"), SrcPort: 51000, DstPort: 443}
	icmp := core.FlowKey{Direction: core.Ingress, EtherType: core.EtherTypeIPv4, Proto: core.ProtoICMP,
		SrcAddr: netip.MustParseAddr("192.0.2.2"), DstAddr: netip.MustParseAddr("192.0.2.1"), SrcPort: 8, DstPort: 0}
	icmp6 := core.FlowKey{Direction: core.Egress, EtherType: core.EtherTypeIPv6, Proto: core.ProtoICMPv6,
		SrcAddr: netip.MustParseAddr("2001:db8::1"), DstAddr: netip.MustParseAddr("2001:db8::2"), SrcPort: 135, DstPort: 0}
	esp := core.FlowKey{Direction: core.Ingress, EtherType: core.EtherTypeIPv4, Proto: core.ProtoESP,
		SrcAddr: netip.MustParseAddr("198.51.100.1"), DstAddr: netip.MustParseAddr("198.51.100.2"), SrcPort: 0x1234, DstPort: 0xabcd}
	gre := core.FlowKey{Direction: core.Ingress, EtherType: core.EtherTypeIPv4, Proto: core.ProtoGRE,
		SrcAddr: netip.MustParseAddr("198.51.100.1"), DstAddr: netip.MustParseAddr("198.51.100.2"), DstPort: 0x0800}
	ospf := core.FlowKey{Direction: core.Ingress, EtherType: core.EtherTypeIPv4, Proto: core.ProtoOSPF,
		SrcAddr: netip.MustParseAddr("198.51.100.1"), DstAddr: netip.MustParseAddr("224.0.0.5"), SrcPort: 2, DstPort: 1}
	arp := core.FlowKey{Direction: core.Ingress, EtherType: core.EtherTypeARP,
		SrcAddr: netip.MustParseAddr("192.0.2.2"), DstAddr: netip.MustParseAddr("192.0.2.1"), DstPort: 1}
	lldp := core.FlowKey{Direction: core.Ingress, EtherType: 0x88cc}
	frag := udp4("", core.Ingress, "192.0.2.2", "192.0.2.1", 0, 0)
	frag.Flags = core.FlagFragment
	vlan := udp4("", core.Ingress, "192.0.2.2", "192.0.2.1", 53, 40000)
	vlan.VLAN = 100
	app := udp4("", core.Egress, "192.0.2.1", "192.0.2.2", 40000, 53)

	snap := core.Snapshot{
		Time: t0,
		Records: first(
			core.Record{FlowKey: app, AppProto: "dns", Interface: "veth0", Packets: 10, Bytes: 1000},
			core.Record{FlowKey: v6, Interface: "veth0", Packets: 3, Bytes: 222},
			core.Record{FlowKey: icmp, Interface: "veth0", Packets: 4, Bytes: 392},
			core.Record{FlowKey: icmp6, Interface: "veth0", Packets: 1, Bytes: 86},
			core.Record{FlowKey: esp, Interface: "eth0", Packets: 2, Bytes: 300},
			core.Record{FlowKey: gre, Interface: "eth0", Packets: 5, Bytes: 700},
			core.Record{FlowKey: ospf, Interface: "eth0", Packets: 1, Bytes: 90},
			core.Record{FlowKey: arp, Interface: "veth0", Packets: 1, Bytes: 42},
			core.Record{FlowKey: lldp, Interface: "veth0", Packets: 1, Bytes: 60},
			core.Record{FlowKey: frag, Interface: "veth0", Packets: 2, Bytes: 3000},
			core.Record{FlowKey: vlan, Interface: "veth0", Packets: 6, Bytes: 600},
			core.Record{FlowKey: core.FlowKey{Direction: core.Ingress}, Interface: "veth0", Overflow: true, Packets: 7, Bytes: 700},
			core.Record{FlowKey: core.FlowKey{Direction: core.Egress}, Overflow: true, Packets: 1, Bytes: 100},
		),
		Health: core.Health{ActiveFlows: 11, Capacity: 1024, KernelMemory: 4 << 20, OverflowPackets: 8, OverflowBytes: 800, ExpiredFlows: 3,
			DrainDuration: 1500 * time.Microsecond,
			Hooks: []core.HookState{
				{Target: "veth0", Hook: "tcx/ingress", Attached: true},
				{Target: "veth0", Hook: "tcx/egress", Attached: true, InFront: "program id 7 name cil_from_netdev type SchedCLS"},
				{Target: "eth0", Hook: "tcx/ingress", Error: "interface is gone"},
			}},
	}

	base := []telegraf.Metric{
		counter(map[string]string{"interface": "veth0", "direction": "egress", "ip_version": "4", "proto": "udp",
			"src_ip": "192.0.2.1", "dst_ip": "192.0.2.2", "src_port": "40000", "dst_port": "53"}, 10, 1000, t0),
		counter(map[string]string{"interface": "veth0", "direction": "egress", "ip_version": "6", "proto": "tcp",
			"src_ip": "2001:db8::1", "dst_ip": "2001:db8::2", "src_port": "51000", "dst_port": "443"}, 3, 222, t0),
		counter(map[string]string{"interface": "veth0", "direction": "ingress", "ip_version": "4", "proto": "icmp",
			"src_ip": "192.0.2.2", "dst_ip": "192.0.2.1", "icmp_type": "8", "icmp_code": "0"}, 4, 392, t0),
		counter(map[string]string{"interface": "veth0", "direction": "egress", "ip_version": "6", "proto": "ipv6-icmp",
			"src_ip": "2001:db8::1", "dst_ip": "2001:db8::2", "icmp_type": "135", "icmp_code": "0"}, 1, 86, t0),
		counter(map[string]string{"interface": "eth0", "direction": "ingress", "ip_version": "4", "proto": "esp",
			"src_ip": "198.51.100.1", "dst_ip": "198.51.100.2", "spi": "0x1234abcd"}, 2, 300, t0),
		counter(map[string]string{"interface": "eth0", "direction": "ingress", "ip_version": "4", "proto": "gre",
			"src_ip": "198.51.100.1", "dst_ip": "198.51.100.2", "gre_proto": "0x0800"}, 5, 700, t0),
		counter(map[string]string{"interface": "eth0", "direction": "ingress", "ip_version": "4", "proto": "ospf",
			"src_ip": "198.51.100.1", "dst_ip": "224.0.0.5", "ospf_type": "1"}, 1, 90, t0),
		counter(map[string]string{"interface": "veth0", "direction": "ingress", "proto": "arp",
			"src_ip": "192.0.2.2", "dst_ip": "192.0.2.1", "arp_op": "1"}, 1, 42, t0),
		counter(map[string]string{"interface": "veth0", "direction": "ingress", "proto": "ethertype-0x88cc"}, 1, 60, t0),
	}
	overflow := []telegraf.Metric{
		counter(map[string]string{"interface": "veth0", "direction": "ingress", "overflow": "true"}, 7, 700, t0),
		counter(map[string]string{"direction": "egress", "overflow": "true"}, 1, 100, t0),
	}
	health := func(series int64) telegraf.Metric {
		return internal("tc", map[string]interface{}{
			"active_flows": int64(11), "capacity": int64(1024), "kernel_memory": uint64(4 << 20), "overflow_packets": uint64(8), "overflow_bytes": uint64(800),
			"expired_flows": uint64(3), "drain_ns": int64(1500000), "convert_ns": int64(0), "hooks_attached": int64(2), "hooks_failed": int64(1),
			"hooks_not_first": int64(1), "records": int64(13), "series": series,
		}, t0)
	}
	udpTags := func(sport, dport string, extra ...string) map[string]string {
		tags := map[string]string{"interface": "veth0", "direction": "ingress", "ip_version": "4", "proto": "udp",
			"src_ip": "192.0.2.2", "dst_ip": "192.0.2.1", "src_port": sport, "dst_port": dport}
		for i := 0; i < len(extra); i += 2 {
			tags[extra[i]] = extra[i+1]
		}
		return tags
	}
	with := func(ms ...[]telegraf.Metric) []telegraf.Metric {
		var out []telegraf.Metric
		for _, m := range ms {
			out = append(out, m...)
		}
		return out
	}

	cases := []struct {
		name string
		agg  aggregate.Config
		want []telegraf.Metric
	}{
		{
			name: "default dimensions",
			want: with(base, []telegraf.Metric{
				counter(udpTags("0", "0"), 2, 3000, t0),
				counter(udpTags("53", "40000"), 6, 600, t0),
			}, overflow, []telegraf.Metric{health(13)}),
		},
		{
			name: "vlan, flags and app_proto",
			agg:  dims(append(slices.Clone(defaultDims), "vlan", "flags", "app_proto")...),
			want: with([]telegraf.Metric{
				counter(map[string]string{"interface": "veth0", "direction": "egress", "ip_version": "4", "proto": "udp",
					"src_ip": "192.0.2.1", "dst_ip": "192.0.2.2", "src_port": "40000", "dst_port": "53", "app_proto": "dns"}, 10, 1000, t0),
			}, base[1:], []telegraf.Metric{
				counter(udpTags("0", "0", "flags", "fragment"), 2, 3000, t0),
				counter(udpTags("53", "40000", "vlan", "100"), 6, 600, t0),
			}, overflow, []telegraf.Metric{health(13)}),
		},
		{
			// Without proto, the port slots of portless protocols mean
			// nothing and are dropped: ICMP, ESP, ... merge per address pair.
			name: "interface and direction only",
			agg:  dims("interface", "direction"),
			want: with([]telegraf.Metric{
				counter(map[string]string{"interface": "veth0", "direction": "egress"}, 14, 1308, t0),
				counter(map[string]string{"interface": "veth0", "direction": "ingress"}, 14, 4094, t0),
				counter(map[string]string{"interface": "eth0", "direction": "ingress"}, 8, 1090, t0),
			}, overflow, []telegraf.Metric{health(5)}),
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeSource{snapshots: []core.Snapshot{snap}}
			p := withFake(&PktstatBPF{Config: tc.agg}, f)
			require.NoError(t, p.Init())
			var acc testutil.Accumulator
			require.NoError(t, p.Start(&acc))
			require.NoError(t, p.Gather(&acc))
			testutil.RequireMetricsEqual(t, tc.want, acc.GetTelegrafMetrics(), testutil.SortMetrics(), testutil.IgnoreFields("convert_ns"))
		})
	}
}

// A filtered record becomes its own series tagged filtered = "true" with
// only interface and direction, apart from the flows and the overflow
// series, whatever top_n and max_series say.
func TestFilteredSeries(t *testing.T) {
	snap := core.Snapshot{Time: t0, Records: first(
		core.Record{FlowKey: udp4("", core.Egress, "192.0.2.1", "192.0.2.2", 40000, 53), Interface: "veth0", Packets: 10, Bytes: 1000},
		core.Record{FlowKey: udp4("", core.Egress, "192.0.2.1", "192.0.2.2", 40001, 54), Interface: "veth0", Packets: 1, Bytes: 100},
		core.Record{FlowKey: core.FlowKey{Direction: core.Egress}, Interface: "veth0", Filtered: true, Packets: 20, Bytes: 2400},
		core.Record{FlowKey: core.FlowKey{Direction: core.Ingress}, Interface: "veth0", Filtered: true, Packets: 3, Bytes: 300},
		core.Record{FlowKey: core.FlowKey{Direction: core.Egress}, Interface: "veth0", Overflow: true, Packets: 2, Bytes: 200},
	)}
	f := &fakeSource{snapshots: []core.Snapshot{snap}}
	p := withFake(&PktstatBPF{Config: aggregate.Config{TopN: 1, MaxSeries: 2}}, f)
	require.NoError(t, p.Init())
	var acc testutil.Accumulator
	require.NoError(t, p.Start(&acc))
	require.NoError(t, p.Gather(&acc))
	var got []telegraf.Metric
	for _, m := range acc.GetTelegrafMetrics() {
		if m.Name() == measurement {
			got = append(got, m)
		}
	}
	testutil.RequireMetricsEqual(t, []telegraf.Metric{
		counter(map[string]string{"interface": "veth0", "direction": "egress", "ip_version": "4", "proto": "udp",
			"src_ip": "192.0.2.1", "dst_ip": "192.0.2.2", "src_port": "40000", "dst_port": "53"}, 10, 1000, t0),
		counter(map[string]string{"other": "true"}, 1, 100, t0),
		counter(map[string]string{"interface": "veth0", "direction": "egress", "overflow": "true"}, 2, 200, t0),
		counter(map[string]string{"interface": "veth0", "direction": "egress", "filtered": "true"}, 20, 2400, t0),
		counter(map[string]string{"interface": "veth0", "direction": "ingress", "filtered": "true"}, 3, 300, t0),
	}, got, testutil.SortMetrics())
}

// TestFoldGroupOther checks the aggregation keys end to end through the
// plugin: folded ports lose their tag, addresses become group names, and
// top_n sends the rest to the other series, with totals unchanged.
func TestFoldGroupOther(t *testing.T) {
	k := func(src string, sport uint16, dst string, dport uint16) core.FlowKey {
		return core.FlowKey{Direction: core.Egress, EtherType: core.EtherTypeIPv4, Proto: core.ProtoTCP,
			SrcAddr: netip.MustParseAddr(src), DstAddr: netip.MustParseAddr(dst), SrcPort: sport, DstPort: dport}
	}
	snap := core.Snapshot{Time: t0, Records: first(
		core.Record{FlowKey: k("10.1.0.5", 50001, "203.0.113.9", 443), Interface: "eth0", Packets: 10, Bytes: 10000},
		core.Record{FlowKey: k("10.1.0.6", 50002, "203.0.113.9", 443), Interface: "eth0", Packets: 5, Bytes: 5000},
		core.Record{FlowKey: k("10.2.0.7", 50003, "198.51.100.1", 22), Interface: "eth0", Packets: 2, Bytes: 200},
		core.Record{FlowKey: k("10.2.0.8", 50004, "198.51.100.2", 25), Interface: "eth0", Packets: 1, Bytes: 100},
	)}
	tags := func(src, dst, dport string) map[string]string {
		return map[string]string{"interface": "eth0", "direction": "egress", "ip_version": "4", "proto": "tcp",
			"src_group": src, "dst_group": dst, "dst_port": dport}
	}
	f := &fakeSource{snapshots: []core.Snapshot{snap}}
	p := withFake(&PktstatBPF{Config: aggregate.Config{
		FoldPorts:        "ephemeral",
		CIDRGroups:       []aggregate.CIDRGroup{{Name: "office", CIDR: "10.1.0.0/16"}},
		UngroupedAsOther: true,
		TopN:             2,
	}}, f)
	require.NoError(t, p.Init())
	var acc testutil.Accumulator
	require.NoError(t, p.Start(&acc))
	require.NoError(t, p.Gather(&acc))
	var flows []telegraf.Metric
	for _, m := range acc.GetTelegrafMetrics() {
		if m.Name() == "pktstat_bpf" {
			flows = append(flows, m)
		}
	}
	testutil.RequireMetricsEqual(t, []telegraf.Metric{
		counter(tags("office", "other", "443"), 15, 15000, t0),
		counter(tags("other", "other", "22"), 2, 200, t0),
		counter(map[string]string{"other": "true"}, 1, 100, t0),
	}, flows, testutil.SortMetrics())
}

// TestSummedSeries checks conservation when records differ only in a
// dimension that is not kept: they become one series whose counters are
// the sum.
func TestSummedSeries(t *testing.T) {
	a := core.FlowKey{Direction: core.Egress, EtherType: core.EtherTypeIPv4, Proto: core.ProtoTCP,
		SrcAddr: netip.MustParseAddr("10.0.0.1"), DstAddr: netip.MustParseAddr("10.0.0.2"), SrcPort: 5000, DstPort: 80,
		CgroupID: 11, PID: 100, Comm: "curl"}
	b := a
	b.PID, b.Comm, b.CgroupID = 200, "wget", 12
	snap := core.Snapshot{Time: t0, Records: first(
		core.Record{FlowKey: a, CgroupPath: "/a.slice", Packets: 3, Bytes: 300},
		core.Record{FlowKey: b, CgroupPath: "/b.slice", Packets: 4, Bytes: 500},
	)}
	tags := map[string]string{"direction": "egress", "ip_version": "4", "proto": "tcp",
		"src_ip": "10.0.0.1", "dst_ip": "10.0.0.2", "src_port": "5000", "dst_port": "80"}
	with := func(extra map[string]string) map[string]string {
		out := maps.Clone(tags)
		maps.Copy(out, extra)
		return out
	}

	cases := []struct {
		name  string
		extra []aggregate.Dimension
		want  []telegraf.Metric
	}{
		{name: "no process tags", want: []telegraf.Metric{counter(tags, 7, 800, t0)}},
		{name: "pid", extra: []aggregate.Dimension{"pid"}, want: []telegraf.Metric{
			counter(with(map[string]string{"pid": "100"}), 3, 300, t0),
			counter(with(map[string]string{"pid": "200"}), 4, 500, t0),
		}},
		{name: "comm and cgroup", extra: []aggregate.Dimension{"comm", "cgroup"}, want: []telegraf.Metric{
			counter(with(map[string]string{"comm": "curl", "cgroup": "/a.slice"}), 3, 300, t0),
			counter(with(map[string]string{"comm": "wget", "cgroup": "/b.slice"}), 4, 500, t0),
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeSource{snapshots: []core.Snapshot{snap}}
			p := withFake(&PktstatBPF{Mode: "cgroup", Config: dims(append(slices.Clone(defaultDims), tc.extra...)...)}, f)
			require.NoError(t, p.Init())
			var acc testutil.Accumulator
			require.NoError(t, p.Start(&acc))
			require.NoError(t, p.Gather(&acc))
			var flows []telegraf.Metric
			for _, m := range acc.GetTelegrafMetrics() {
				if m.Name() == "pktstat_bpf" {
					flows = append(flows, m)
				}
			}
			testutil.RequireMetricsEqual(t, tc.want, flows, testutil.SortMetrics())
		})
	}
}

// TestLifecycle follows a flow through two intervals, its expiry, its
// series' idle timeout and the final drain in Stop, which is what
// `telegraf --once` reports. The series never goes backwards.
func TestLifecycle(t *testing.T) {
	k := udp4("veth0", core.Egress, "192.0.2.1", "192.0.2.2", 40000, 53)
	tags := map[string]string{"interface": "veth0", "direction": "egress", "ip_version": "4", "proto": "udp",
		"src_ip": "192.0.2.1", "dst_ip": "192.0.2.2", "src_port": "40000", "dst_port": "53"}
	t2 := t1.Add(10 * time.Second)
	t3 := t2.Add(time.Minute)
	f := &fakeSource{snapshots: []core.Snapshot{
		{Time: t0, Records: []core.Record{{FlowKey: k, Interface: "veth0", Packets: 1, Bytes: 100, DeltaPackets: 1, DeltaBytes: 100}}},
		{Time: t1, Records: []core.Record{{FlowKey: k, Interface: "veth0", Packets: 5, Bytes: 500, DeltaPackets: 4, DeltaBytes: 400}}},
		{Time: t2, Records: []core.Record{{FlowKey: k, Interface: "veth0", Packets: 5, Bytes: 500, Expired: true}}},
		{Time: t3},
	}}
	// idle_timeout also sets the series' idle timeout.
	p := withFake(&PktstatBPF{Interfaces: []string{"veth0"}, IdleTimeout: config.Duration(30 * time.Second)}, f)
	require.NoError(t, p.Init())
	var startAcc, gatherAcc testutil.Accumulator
	require.NoError(t, p.Start(&startAcc))
	require.NoError(t, p.Gather(&gatherAcc))
	require.NoError(t, p.Gather(&gatherAcc))
	require.NoError(t, p.Gather(&gatherAcc))
	require.Empty(t, startAcc.GetTelegrafMetrics())
	p.Stop()
	require.Equal(t, 1, f.closed)
	require.Equal(t, 4, f.reads)

	flowsOnly := func(ms []telegraf.Metric) []telegraf.Metric {
		var out []telegraf.Metric
		for _, m := range ms {
			if m.Name() == "pktstat_bpf" {
				out = append(out, m)
			}
		}
		return out
	}
	testutil.RequireMetricsEqual(t, []telegraf.Metric{counter(tags, 1, 100, t0), counter(tags, 5, 500, t1), counter(tags, 5, 500, t2)},
		flowsOnly(gatherAcc.GetTelegrafMetrics()))
	// The final drain goes to the accumulator given to Start; the series
	// went idle for longer than 30s, so it is no longer reported.
	require.Empty(t, flowsOnly(startAcc.GetTelegrafMetrics()))
	require.Len(t, startAcc.GetTelegrafMetrics(), 1, "the internal metric of the final drain")

	p.Stop()
	require.Equal(t, 1, f.closed, "Stop twice must not close twice")
}

// TestReadmeSample keeps the README's configuration section equal to sample.conf.
func TestReadmeSample(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	require.NoError(t, err)
	_, rest, ok := strings.Cut(string(readme), "```toml @sample.conf\n")
	require.True(t, ok, "README.md has no ```toml @sample.conf block")
	block, _, ok := strings.Cut(rest, "```\n")
	require.True(t, ok)
	require.Equal(t, sampleConfig, block)
}

// TestKprobeRetransmits: the retransmits counter appears on series that
// retransmitted (kprobe mode, TCP egress), summed like packets and bytes.
func TestKprobeRetransmits(t *testing.T) {
	tcp := core.FlowKey{Direction: core.Egress, EtherType: core.EtherTypeIPv4, Proto: core.ProtoTCP,
		SrcAddr: netip.MustParseAddr("10.0.0.1"), DstAddr: netip.MustParseAddr("10.0.0.2"), SrcPort: 5000, DstPort: 80, PID: 7}
	tcp2 := tcp
	tcp2.PID = 8
	in := tcp
	in.Direction = core.Ingress
	in.SrcAddr, in.DstAddr, in.SrcPort, in.DstPort = tcp.DstAddr, tcp.SrcAddr, tcp.DstPort, tcp.SrcPort
	snap := core.Snapshot{Time: t0, Records: first(
		core.Record{FlowKey: tcp, Packets: 10, Bytes: 10000, Retransmits: 2, DeltaRetransmits: 2},
		core.Record{FlowKey: tcp2, Packets: 1, Bytes: 100, Retransmits: 1, DeltaRetransmits: 1},
		core.Record{FlowKey: in, Packets: 4, Bytes: 4000},
	)}
	tags := func(k core.FlowKey, sport, dport string) map[string]string {
		return map[string]string{"direction": k.Direction.String(), "ip_version": "4", "proto": "tcp",
			"src_ip": k.SrcAddr.String(), "dst_ip": k.DstAddr.String(), "src_port": sport, "dst_port": dport}
	}
	f := &fakeSource{snapshots: []core.Snapshot{snap}}
	p := withFake(&PktstatBPF{Mode: "kprobe"}, f)
	require.NoError(t, p.Init())
	var acc testutil.Accumulator
	require.NoError(t, p.Start(&acc))
	require.NoError(t, p.Gather(&acc))
	var flows []telegraf.Metric
	for _, m := range acc.GetTelegrafMetrics() {
		if m.Name() == "pktstat_bpf" {
			flows = append(flows, m)
		}
	}
	testutil.RequireMetricsEqual(t, []telegraf.Metric{
		metric.New("pktstat_bpf", tags(tcp, "5000", "80"),
			map[string]interface{}{"packets": uint64(11), "bytes": uint64(10100), "retransmits": uint64(3)}, t0, telegraf.Counter),
		// kprobe mode counts no TCP flags: no flag fields.
		metric.New("pktstat_bpf", tags(in, "80", "5000"), map[string]interface{}{"packets": uint64(4), "bytes": uint64(4000)}, t0, telegraf.Counter),
	}, flows, testutil.SortMetrics())
}

// TestTCPFlagFields: each TCP series carries tcp_syn, tcp_synack, tcp_fin
// and tcp_rst, summed over its flows and cumulative across gathers; a
// series that mixes protocols (proto not a dimension) carries them once a
// flag was counted in it, and a UDP series never does.
func TestTCPFlagFields(t *testing.T) {
	flow := func(sport uint16, dir core.Direction, src, dst string) core.FlowKey {
		return core.FlowKey{Direction: dir, EtherType: core.EtherTypeIPv4, Proto: core.ProtoTCP,
			SrcAddr: netip.MustParseAddr(src), DstAddr: netip.MustParseAddr(dst), SrcPort: sport, DstPort: 443}
	}
	a, b := flow(40000, core.Egress, "10.0.0.1", "10.0.0.2"), flow(40001, core.Egress, "10.0.0.1", "10.0.0.2")
	u := udp4("", core.Egress, "10.0.0.1", "10.0.0.2", 5000, 53)
	rec := func(k core.FlowKey, packets uint64, f, df core.TCPFlagCounts) core.Record {
		return core.Record{FlowKey: k, Packets: packets, Bytes: 100 * packets, DeltaPackets: packets, DeltaBytes: 100 * packets, TCP: f, DeltaTCP: df}
	}
	syn := core.TCPFlagCounts{SYN: 1}
	closed := core.TCPFlagCounts{SYN: 1, FIN: 1}
	t1 := t0.Add(10 * time.Second)
	snaps := []core.Snapshot{
		{Time: t0, Records: []core.Record{rec(a, 3, syn, syn), rec(b, 2, core.TCPFlagCounts{SYN: 1, RST: 1}, core.TCPFlagCounts{SYN: 1, RST: 1}), rec(u, 4, core.TCPFlagCounts{}, core.TCPFlagCounts{})}},
		{Time: t1, Records: []core.Record{rec(a, 2, closed, core.TCPFlagCounts{FIN: 1})}},
	}
	for _, tc := range []struct {
		name string
		agg  aggregate.Config
		want []telegraf.Metric
	}{
		{"per flow", aggregate.Config{Dimensions: []aggregate.Dimension{"src_port", "proto"}}, []telegraf.Metric{
			flagCounter(map[string]string{"proto": "tcp", "src_port": "40000"}, 3, 300, syn, t0),
			flagCounter(map[string]string{"proto": "tcp", "src_port": "40001"}, 2, 200, core.TCPFlagCounts{SYN: 1, RST: 1}, t0),
			counter(map[string]string{"proto": "udp", "src_port": "5000"}, 4, 400, t0),
			flagCounter(map[string]string{"proto": "tcp", "src_port": "40000"}, 5, 500, closed, t1),
			flagCounter(map[string]string{"proto": "tcp", "src_port": "40001"}, 2, 200, core.TCPFlagCounts{SYN: 1, RST: 1}, t1),
			counter(map[string]string{"proto": "udp", "src_port": "5000"}, 4, 400, t1),
		}},
		{"protocols mixed", aggregate.Config{Dimensions: []aggregate.Dimension{"direction"}}, []telegraf.Metric{
			flagCounter(map[string]string{"direction": "egress"}, 9, 900, core.TCPFlagCounts{SYN: 2, RST: 1}, t0),
			flagCounter(map[string]string{"direction": "egress"}, 11, 1100, core.TCPFlagCounts{SYN: 2, FIN: 1, RST: 1}, t1),
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeSource{snapshots: snaps}
			p := withFake(&PktstatBPF{Config: tc.agg}, f)
			require.NoError(t, p.Init())
			var acc testutil.Accumulator
			require.NoError(t, p.Start(&acc))
			require.NoError(t, p.Gather(&acc))
			require.NoError(t, p.Gather(&acc))
			var flows []telegraf.Metric
			for _, m := range acc.GetTelegrafMetrics() {
				if m.Name() == "pktstat_bpf" {
					flows = append(flows, m)
				}
			}
			testutil.RequireMetricsEqual(t, tc.want, flows, testutil.SortMetrics())
		})
	}
}

// The filter messages, word for word as the receiver's tests expect them
// (otelreceiver/config_test.go).
const (
	filterErrHostBits   = `exclude_cidrs "10.1.2.3/8" has host bits set: write "10.0.0.0/8"`
	filterErrProtocol   = `include_protocols "tcpp" is not a protocol: use a lower-case IANA keyword as in the proto tag (tcp, udp, icmp, ipv6-icmp, gre, esp, sctp, ...), an IP protocol number 0-255, arp, or other (any other non-IP protocol)`
	filterErrPortRange  = `include_ports "70000" is out of range: 70000 is not in [0, 65535]`
	filterErrEmptyRange = `exclude_ports "2000-1000" is an empty range: write the lower port first, like "1000-2000"`
	filterErrNothing    = `include_protocols ["tcp"] and exclude_protocols ["tcp"] leave nothing: every included protocol is also excluded`
	filterErrKprobe     = `include_cidrs is set but mode is "kprobe": filters run in the tc, xdp and cgroup programs; remove the filter keys or use one of those modes`
)

// A series' tags are rendered once and kept by its slot with its shape
// (tag keys and fields); when the series ends and a series of another
// shape takes its slot, the new series gets its own tags and fields, and
// series that share a shape keep their own values.
func TestSeriesTagsFollowSlots(t *testing.T) {
	conv, err := newConverter(aggregate.Config{SeriesIdleTimeout: aggregate.Duration(10 * time.Second)}, false)
	require.NoError(t, err)
	conv.tcpFlags = true
	tcpA := core.FlowKey{Ifindex: 2, Direction: core.Egress, EtherType: core.EtherTypeIPv4, Proto: core.ProtoTCP,
		SrcAddr: netip.MustParseAddr("10.0.0.1"), DstAddr: netip.MustParseAddr("10.0.0.2"), SrcPort: 5000, DstPort: 80}
	tcpB := tcpA
	tcpB.SrcAddr, tcpB.SrcPort = netip.MustParseAddr("10.0.0.3"), 6000
	icmp := core.FlowKey{Ifindex: 2, Direction: core.Ingress, EtherType: core.EtherTypeIPv6, Proto: core.ProtoICMPv6,
		SrcAddr: netip.MustParseAddr("2001:db8::2"), DstAddr: netip.MustParseAddr("2001:db8::1"), SrcPort: 128, DstPort: 0}
	rec := func(k core.FlowKey, packets, bytes uint64) core.Record {
		return core.Record{FlowKey: k, Interface: "eth0", Packets: packets, Bytes: bytes, DeltaPackets: packets, DeltaBytes: bytes}
	}
	tcpTags := func(src, sport string) map[string]string {
		return map[string]string{"interface": "eth0", "direction": "egress", "ip_version": "4", "proto": "tcp",
			"src_ip": src, "dst_ip": "10.0.0.2", "src_port": sport, "dst_port": "80"}
	}
	icmpTags := map[string]string{"interface": "eth0", "direction": "ingress", "ip_version": "6", "proto": "ipv6-icmp",
		"src_ip": "2001:db8::2", "dst_ip": "2001:db8::1", "icmp_type": "128", "icmp_code": "0"}
	gather := func(at time.Time, rs ...core.Record) []telegraf.Metric {
		t.Helper()
		var acc testutil.Accumulator
		conv.add(&acc, core.Snapshot{Time: at, Records: rs})
		return acc.GetTelegrafMetrics()
	}
	slotOf := func(k core.FlowKey) int32 {
		for i := range conv.series {
			if conv.series[i].values != nil && slices.Contains(conv.series[i].values, k.SrcAddr.String()) {
				return int32(i)
			}
		}
		return -1
	}

	testutil.RequireMetricsEqual(t, []telegraf.Metric{
		counter(tcpTags("10.0.0.1", "5000"), 3, 300, t0),
		counter(tcpTags("10.0.0.3", "6000"), 4, 400, t0),
	}, gather(t0, rec(tcpA, 3, 300), rec(tcpB, 4, 400)), testutil.SortMetrics())
	slotA := slotOf(tcpA)
	require.GreaterOrEqual(t, slotA, int32(0))
	require.Len(t, conv.shapes, 1, "two TCP series of the same tags share one shape")

	// A goes idle past the series idle timeout (and its entry past it
	// again), B keeps growing; then the ICMP series is born into A's slot.
	for i := 1; i <= 3; i++ {
		b := rec(tcpB, 1, 100)
		b.Packets, b.Bytes = 4+uint64(i), 400+100*uint64(i)
		gather(t0.Add(time.Duration(i)*15*time.Second), b)
	}
	at := t0.Add(60 * time.Second)
	b := rec(tcpB, 1, 100)
	b.Packets, b.Bytes = 8, 800
	got := gather(at, b, rec(icmp, 2, 208))
	testutil.RequireMetricsEqual(t, []telegraf.Metric{
		counter(tcpTags("10.0.0.3", "6000"), 8, 800, at),
		counter(icmpTags, 2, 208, at),
	}, got, testutil.SortMetrics())
	require.Equal(t, slotA, slotOf(icmp), "the ICMP series did not reuse the ended series' slot; the test does not test reuse")
	require.Len(t, conv.shapes, 2, "the ICMP series has a shape of its own")
}
