package core

import (
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // substring of the error; empty means valid
	}{
		{"zero value is tc on the default route", Config{}, ""},
		{"xdp native", Config{Mode: ModeXDP, XDPMode: XDPNative, Interfaces: []string{"eth0", "ens*"}}, ""},
		{"cgroup with path", Config{Mode: ModeCgroup, CgroupPath: "/sys/fs/cgroup/system.slice"}, ""},
		{"unknown mode", Config{Mode: "pcap"}, `mode "pcap" is not one of tc, xdp, cgroup, kprobe`},
		{"unknown xdp mode", Config{Mode: ModeXDP, XDPMode: "fast"}, `xdp_mode "fast" is not one of auto, generic, native, offload`},
		{"xdp mode without xdp", Config{XDPMode: XDPNative}, `xdp_mode "native" is set but mode is "tc"`},
		{"empty interface", Config{Interfaces: []string{""}}, "interfaces: empty interface name"},
		{"bad glob", Config{Interfaces: []string{"eth["}}, `interfaces: bad glob "eth["`},
		{"name too long", Config{Interfaces: []string{"averyveryverylongname"}}, "longer than the kernel's 15-character"},
		{"interfaces in cgroup mode", Config{Mode: ModeCgroup, Interfaces: []string{"eth0"}}, `mode "cgroup" counts per socket`},
		{"cgroup path in tc mode", Config{CgroupPath: "/sys/fs/cgroup"}, `cgroup_path is set but mode is "tc"`},
		{"max_flows too small", Config{MaxFlows: 8}, "max_flows 8 is out of range [16, 16777216]"},
		{"max_flows too large", Config{MaxFlows: 1 << 25}, "max_flows 33554432 is out of range"},
		{"negative idle timeout", Config{IdleTimeout: -time.Second}, "idle_timeout -1s is negative: set a positive duration or remove it for the default 2m0s"},
		{"relative netns", Config{NetNS: "blue"}, `netns "blue" is not an absolute path: use /var/run/netns/NAME or /proc/PID/ns/net`},
		{"absolute netns", Config{NetNS: "/var/run/netns/blue"}, ""},
		{"two errors at once", Config{Mode: "x", MaxFlows: 1}, "max_flows 1"},
		{"tcp_rtt in tc mode", Config{TCPRTT: true}, ""},
		{"tcp_rtt in cgroup mode", Config{Mode: ModeCgroup, TCPRTT: true}, ""},
		{"tcp_rtt in xdp mode", Config{Mode: ModeXDP, TCPRTT: true}, `tcp_rtt = true is set but mode is "xdp": RTT is reported on egress flows of the tc and cgroup modes; set tcp_rtt = false or use mode tc or cgroup`},
		{"tcp_rtt in kprobe mode", Config{Mode: ModeKprobe, TCPRTT: true}, `tcp_rtt = true is set but mode is "kprobe"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("no error, want %q", tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestConfigDefaults(t *testing.T) {
	// An agent's default table, not the smaller one TestMain sets for the other tests.
	defer func(n int) { defaultMaxFlows = n }(defaultMaxFlows)
	defaultMaxFlows = DefaultMaxFlows
	c, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	got := c.Config()
	if got.Mode != ModeTC || got.XDPMode != XDPAuto || got.MaxFlows != DefaultMaxFlows || got.IdleTimeout != DefaultIdleTimeout || got.Logger == nil {
		t.Errorf("defaults not applied: %+v", got)
	}
	if _, err := New(Config{Mode: "nope"}); err == nil || !strings.HasPrefix(err.Error(), "pktstat-bpf config: ") {
		t.Errorf("New with a bad mode: %v", err)
	}
}

func TestTransportNames(t *testing.T) {
	for _, tc := range []struct {
		k    FlowKey
		want string
	}{
		{FlowKey{EtherType: EtherTypeIPv4, Proto: ProtoTCP}, "tcp"},
		{FlowKey{EtherType: EtherTypeIPv6, Proto: ProtoICMPv6}, "ipv6-icmp"},
		{FlowKey{EtherType: EtherTypeIPv4, Proto: 253}, "253"},
		{FlowKey{EtherType: EtherTypeARP}, "arp"},
		{FlowKey{EtherType: 0x88cc}, "ethertype-0x88cc"},
		{FlowKey{EtherType: 0x0001}, "ethertype-0x0001"},
	} {
		if got := tc.k.Transport(); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.k, got, tc.want)
		}
	}
	k := FlowKey{EtherType: EtherTypeIPv4, Proto: ProtoESP, SrcPort: 0xdead, DstPort: 0xbeef}
	if spi, ok := k.SPI(); !ok || spi != 0xdeadbeef {
		t.Errorf("SPI = %x %v", spi, ok)
	}
	if _, _, ok := k.ICMPTypeCode(); ok || k.HasPorts() {
		t.Errorf("esp flow claims icmp type or ports")
	}
}
