package pktstat_bpf

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
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
			err:  `netns "blue" is not an absolute path: use for example /var/run/netns/NAME or /proc/PID/ns/net`,
		},
		{
			name: "unknown optional tag",
			p:    &PktstatBPF{OptionalTags: []string{"mac"}},
			err:  `optional_tags: unknown tag "mac": use any of ["vlan" "flags" "pid" "comm" "cgroup"]`,
		},
		{
			name: "duplicate optional tag",
			p:    &PktstatBPF{OptionalTags: []string{"vlan", "vlan"}},
			err:  `optional_tags: "vlan" is listed twice`,
		},
		{
			name: "pid in tc mode",
			p:    &PktstatBPF{OptionalTags: []string{"pid"}},
			err:  `optional_tags: "pid" needs mode "cgroup" or "kprobe", but mode is "tc": remove it or change mode`,
		},
		{
			name: "comm in xdp mode",
			p:    &PktstatBPF{Mode: "xdp", OptionalTags: []string{"comm"}},
			err:  `optional_tags: "comm" needs mode "cgroup" or "kprobe", but mode is "xdp": remove it or change mode`,
		},
		{
			name: "cgroup tag in tc mode",
			p:    &PktstatBPF{Mode: "tc", OptionalTags: []string{"cgroup"}},
			err:  `optional_tags: "cgroup" needs mode "cgroup" or "kprobe", but mode is "tc": remove it or change mode`,
		},
		{
			name: "every error is reported at once",
			p:    &PktstatBPF{Mode: "tc", MaxFlows: 1, NetNS: "x", IdleTimeout: config.Duration(-time.Minute)},
			err: "idle_timeout -1m0s is negative: set a positive duration or remove it for the default 2m0s\n" +
				`netns "x" is not an absolute path: use for example /var/run/netns/NAME or /proc/PID/ns/net` + "\n" +
				`max_flows 1 is out of range [16, 16777216]`,
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
			p:    &PktstatBPF{Mode: "xdp", XDPMode: "generic", Interfaces: []string{"veth*"}, MaxFlows: 16, OptionalTags: []string{"vlan", "flags"}},
			want: core.Config{Mode: core.ModeXDP, XDPMode: "generic", Interfaces: []string{"veth*"}, MaxFlows: 16},
		},
		{
			name: "cgroup",
			p: &PktstatBPF{Mode: "cgroup", CgroupPath: "/sys/fs/cgroup/unified/system.slice", IdleTimeout: config.Duration(30 * time.Second),
				NetNS: "/var/run/netns/blue", OptionalTags: []string{"pid", "comm", "cgroup"}},
			want: core.Config{Mode: core.ModeCgroup, CgroupPath: "/sys/fs/cgroup/unified/system.slice", IdleTimeout: 30 * time.Second,
				NetNS: "/var/run/netns/blue"},
		},
		{
			name: "kprobe passes Init and fails at Start if the kernel cannot",
			p:    &PktstatBPF{Mode: "kprobe", KprobeAttach: "kprobe", OptionalTags: []string{"pid", "comm"}},
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
  optional_tags = ["vlan"]
`), ""))
		require.Len(t, c.Inputs, 1)
		p := c.Inputs[0].Input.(*PktstatBPF)
		require.Equal(t, &PktstatBPF{
			Mode:         "xdp",
			Interfaces:   []string{"veth0", "eth*"},
			XDPMode:      "native",
			MaxFlows:     4096,
			IdleTimeout:  config.Duration(45 * time.Second),
			NetNS:        "/var/run/netns/blue",
			OptionalTags: []string{"vlan"},
			Log:          p.Log,
		}, p)
	})
	t.Run("unknown key", func(t *testing.T) {
		c := config.NewConfig()
		err := c.LoadConfigData([]byte("[[inputs.pktstat_bpf]]\n  mode = \"tc\"\n  max_flow = 10\n"), "")
		require.ErrorContains(t, err, `configuration specified the fields ["max_flow"], but they were not used`)
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

func counter(tags map[string]string, packets, bytes uint64, tm time.Time) telegraf.Metric {
	return metric.New("pktstat_bpf", tags, map[string]interface{}{"packets": packets, "bytes": bytes}, tm, telegraf.Counter)
}

func internal(mode string, fields map[string]interface{}, tm time.Time) telegraf.Metric {
	return metric.New("pktstat_bpf_internal", map[string]string{"mode": mode}, fields, tm, telegraf.Untyped)
}

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

	snap := core.Snapshot{
		Time: t0,
		Records: []core.Record{
			{FlowKey: udp4("", core.Egress, "192.0.2.1", "192.0.2.2", 40000, 53), Interface: "veth0", Packets: 10, Bytes: 1000},
			{FlowKey: v6, Interface: "veth0", Packets: 3, Bytes: 222},
			{FlowKey: icmp, Interface: "veth0", Packets: 4, Bytes: 392},
			{FlowKey: icmp6, Interface: "veth0", Packets: 1, Bytes: 86},
			{FlowKey: esp, Interface: "eth0", Packets: 2, Bytes: 300},
			{FlowKey: gre, Interface: "eth0", Packets: 5, Bytes: 700},
			{FlowKey: ospf, Interface: "eth0", Packets: 1, Bytes: 90},
			{FlowKey: arp, Interface: "veth0", Packets: 1, Bytes: 42},
			{FlowKey: lldp, Interface: "veth0", Packets: 1, Bytes: 60},
			{FlowKey: frag, Interface: "veth0", Packets: 2, Bytes: 3000},
			{FlowKey: vlan, Interface: "veth0", Packets: 6, Bytes: 600},
			{FlowKey: core.FlowKey{Direction: core.Ingress}, Interface: "veth0", Overflow: true, Packets: 7, Bytes: 700},
			{FlowKey: core.FlowKey{Direction: core.Egress}, Overflow: true, Packets: 1, Bytes: 100},
		},
		Health: core.Health{ActiveFlows: 11, Capacity: 1024, OverflowPackets: 8, OverflowBytes: 800, ExpiredFlows: 3,
			DrainDuration: 1500 * time.Microsecond,
			Hooks: []core.HookState{
				{Target: "veth0", Hook: "tcx/ingress", Attached: true},
				{Target: "veth0", Hook: "tcx/egress", Attached: true},
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
	health := internal("tc", map[string]interface{}{
		"active_flows": int64(11), "capacity": int64(1024), "overflow_packets": uint64(8), "overflow_bytes": uint64(800),
		"expired_flows": uint64(3), "drain_ns": int64(1500000), "hooks_attached": int64(2), "hooks_failed": int64(1),
		"records": int64(13),
	}, t0)
	udpTags := func(sport, dport string, extra ...string) map[string]string {
		tags := map[string]string{"interface": "veth0", "direction": "ingress", "ip_version": "4", "proto": "udp",
			"src_ip": "192.0.2.2", "dst_ip": "192.0.2.1", "src_port": sport, "dst_port": dport}
		for i := 0; i < len(extra); i += 2 {
			tags[extra[i]] = extra[i+1]
		}
		return tags
	}

	cases := []struct {
		name     string
		optional []string
		want     []telegraf.Metric
	}{
		{
			name: "default tags",
			want: append(append(append(base[:len(base):len(base)],
				counter(udpTags("0", "0"), 2, 3000, t0),
				counter(udpTags("53", "40000"), 6, 600, t0)),
				overflow...), health),
		},
		{
			name:     "vlan and flags",
			optional: []string{"vlan", "flags"},
			want: append(append(append(base[:len(base):len(base)],
				counter(udpTags("0", "0", "flags", "fragment"), 2, 3000, t0),
				counter(udpTags("53", "40000", "vlan", "100"), 6, 600, t0)),
				overflow...), health),
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeSource{snapshots: []core.Snapshot{snap}}
			p := withFake(&PktstatBPF{OptionalTags: tc.optional}, f)
			require.NoError(t, p.Init())
			var acc testutil.Accumulator
			require.NoError(t, p.Start(&acc))
			require.NoError(t, p.Gather(&acc))
			testutil.RequireMetricsEqual(t, tc.want, acc.GetTelegrafMetrics())
		})
	}
}

// TestSummedSeries checks conservation when records differ only in a
// dimension that is not emitted: they become one series whose counters are
// the sum.
func TestSummedSeries(t *testing.T) {
	a := core.FlowKey{Direction: core.Egress, EtherType: core.EtherTypeIPv4, Proto: core.ProtoTCP,
		SrcAddr: netip.MustParseAddr("10.0.0.1"), DstAddr: netip.MustParseAddr("10.0.0.2"), SrcPort: 5000, DstPort: 80,
		CgroupID: 11, PID: 100, Comm: "curl"}
	b := a
	b.PID, b.Comm, b.CgroupID = 200, "wget", 12
	snap := core.Snapshot{Time: t0, Records: []core.Record{
		{FlowKey: a, CgroupPath: "/a.slice", Packets: 3, Bytes: 300},
		{FlowKey: b, CgroupPath: "/b.slice", Packets: 4, Bytes: 500},
	}}
	tags := map[string]string{"direction": "egress", "ip_version": "4", "proto": "tcp",
		"src_ip": "10.0.0.1", "dst_ip": "10.0.0.2", "src_port": "5000", "dst_port": "80"}
	with := func(extra map[string]string) map[string]string {
		out := map[string]string{}
		for k, v := range tags {
			out[k] = v
		}
		for k, v := range extra {
			out[k] = v
		}
		return out
	}

	cases := []struct {
		name     string
		optional []string
		want     []telegraf.Metric
	}{
		{name: "no process tags", want: []telegraf.Metric{counter(tags, 7, 800, t0)}},
		{name: "pid", optional: []string{"pid"}, want: []telegraf.Metric{
			counter(with(map[string]string{"pid": "100"}), 3, 300, t0),
			counter(with(map[string]string{"pid": "200"}), 4, 500, t0),
		}},
		{name: "comm and cgroup", optional: []string{"comm", "cgroup"}, want: []telegraf.Metric{
			counter(with(map[string]string{"comm": "curl", "cgroup": "/a.slice"}), 3, 300, t0),
			counter(with(map[string]string{"comm": "wget", "cgroup": "/b.slice"}), 4, 500, t0),
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeSource{snapshots: []core.Snapshot{snap}}
			p := withFake(&PktstatBPF{Mode: "cgroup", OptionalTags: tc.optional}, f)
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

// TestLifecycle follows a flow through two intervals, its expiry and the
// final drain in Stop, which is what `telegraf --once` reports.
func TestLifecycle(t *testing.T) {
	k := udp4("veth0", core.Egress, "192.0.2.1", "192.0.2.2", 40000, 53)
	tags := map[string]string{"interface": "veth0", "direction": "egress", "ip_version": "4", "proto": "udp",
		"src_ip": "192.0.2.1", "dst_ip": "192.0.2.2", "src_port": "40000", "dst_port": "53"}
	t2 := t1.Add(10 * time.Second)
	f := &fakeSource{snapshots: []core.Snapshot{
		{Time: t0, Records: []core.Record{{FlowKey: k, Interface: "veth0", Packets: 1, Bytes: 100, DeltaPackets: 1, DeltaBytes: 100}}},
		{Time: t1, Records: []core.Record{{FlowKey: k, Interface: "veth0", Packets: 5, Bytes: 500, DeltaPackets: 4, DeltaBytes: 400}}},
		{Time: t2, Records: []core.Record{{FlowKey: k, Interface: "veth0", Packets: 5, Bytes: 500, Expired: true}}},
	}}
	p := withFake(&PktstatBPF{Interfaces: []string{"veth0"}}, f)
	require.NoError(t, p.Init())
	var startAcc, gatherAcc testutil.Accumulator
	require.NoError(t, p.Start(&startAcc))
	require.NoError(t, p.Gather(&gatherAcc))
	require.NoError(t, p.Gather(&gatherAcc))
	require.Empty(t, startAcc.GetTelegrafMetrics())
	p.Stop()
	require.Equal(t, 1, f.closed)
	require.Equal(t, 3, f.reads)

	flowsOnly := func(ms []telegraf.Metric) []telegraf.Metric {
		var out []telegraf.Metric
		for _, m := range ms {
			if m.Name() == "pktstat_bpf" {
				out = append(out, m)
			}
		}
		return out
	}
	testutil.RequireMetricsEqual(t, []telegraf.Metric{counter(tags, 1, 100, t0), counter(tags, 5, 500, t1)},
		flowsOnly(gatherAcc.GetTelegrafMetrics()))
	// The final drain goes to the accumulator given to Start.
	testutil.RequireMetricsEqual(t, []telegraf.Metric{counter(tags, 5, 500, t2)}, flowsOnly(startAcc.GetTelegrafMetrics()))

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

// TestKprobeRetransmits: kprobe mode adds the retransmits counter to TCP
// egress series, summed like packets and bytes; other series and modes
// keep exactly bytes and packets.
func TestKprobeRetransmits(t *testing.T) {
	tcp := core.FlowKey{Direction: core.Egress, EtherType: core.EtherTypeIPv4, Proto: core.ProtoTCP,
		SrcAddr: netip.MustParseAddr("10.0.0.1"), DstAddr: netip.MustParseAddr("10.0.0.2"), SrcPort: 5000, DstPort: 80, PID: 7, Comm: "curl"}
	tcp2 := tcp
	tcp2.PID = 8
	in := tcp
	in.Direction = core.Ingress
	in.SrcAddr, in.DstAddr, in.SrcPort, in.DstPort = tcp.DstAddr, tcp.SrcAddr, tcp.DstPort, tcp.SrcPort
	udp := udp4("", core.Egress, "10.0.0.1", "10.0.0.3", 6000, 53)
	snap := core.Snapshot{Time: t0, Records: []core.Record{
		{FlowKey: tcp, Packets: 10, Bytes: 10000, Retransmits: 2},
		{FlowKey: tcp2, Packets: 1, Bytes: 100, Retransmits: 1},
		{FlowKey: in, Packets: 4, Bytes: 4000},
		{FlowKey: udp, Packets: 3, Bytes: 90},
		{FlowKey: core.FlowKey{Direction: core.Egress}, Overflow: true, Packets: 5, Bytes: 500},
	}}
	tags := func(k core.FlowKey, proto, sport, dport string) map[string]string {
		return map[string]string{"direction": k.Direction.String(), "ip_version": "4", "proto": proto,
			"src_ip": k.SrcAddr.String(), "dst_ip": k.DstAddr.String(), "src_port": sport, "dst_port": dport}
	}
	retrans := func(tags map[string]string, packets, bytes, retransmits uint64) telegraf.Metric {
		return metric.New("pktstat_bpf", tags, map[string]interface{}{"packets": packets, "bytes": bytes, "retransmits": retransmits},
			t0, telegraf.Counter)
	}
	for _, mode := range []string{"kprobe", "cgroup"} {
		t.Run(mode, func(t *testing.T) {
			f := &fakeSource{snapshots: []core.Snapshot{snap}}
			p := withFake(&PktstatBPF{Mode: mode}, f)
			require.NoError(t, p.Init())
			var acc testutil.Accumulator
			require.NoError(t, p.Start(&acc))
			require.NoError(t, p.Gather(&acc))
			egress := counter(tags(tcp, "tcp", "5000", "80"), 11, 10100, t0)
			if mode == "kprobe" {
				egress = retrans(tags(tcp, "tcp", "5000", "80"), 11, 10100, 3)
			}
			want := []telegraf.Metric{
				egress,
				counter(tags(in, "tcp", "80", "5000"), 4, 4000, t0),
				counter(tags(udp, "udp", "6000", "53"), 3, 90, t0),
				counter(map[string]string{"direction": "egress", "overflow": "true"}, 5, 500, t0),
			}
			var flows []telegraf.Metric
			for _, m := range acc.GetTelegrafMetrics() {
				if m.Name() == "pktstat_bpf" {
					flows = append(flows, m)
				}
			}
			testutil.RequireMetricsEqual(t, want, flows)
		})
	}
}
