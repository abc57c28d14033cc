package aggregate

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		// want lists the error lines in order; nil means valid.
		want []string
	}{
		{"zero value", Config{}, nil},
		{"every control", Config{
			Dimensions:        []Dimension{DimInterface, DimSrcIP, DimDstIP, DimDstPort, DimContainerID, DimPodUID},
			FoldPorts:         FoldEphemeral,
			EphemeralPortMin:  49152,
			CIDRGroups:        []CIDRGroup{{"office", "10.1.0.0/16"}, {"lab", "10.1.2.0/24"}, {"v6", "2001:db8::/32"}},
			UngroupedAsOther:  true,
			TopN:              100,
			MaxSeries:         1000,
			SeriesIdleTimeout: Duration(5 * time.Minute),
		}, nil},
		{"fold higher with only dst_port", Config{Dimensions: []Dimension{DimDstPort}, FoldPorts: FoldHigher}, nil},
		{"explicit off", Config{FoldPorts: FoldOff}, nil},
		{"unknown dimension", Config{Dimensions: []Dimension{"interface", "src_addr"}}, []string{
			`dimensions: unknown dimension "src_addr"; valid dimensions are interface, direction, ip_version, proto, src_ip, dst_ip, src_port, dst_port, vlan, flags, pid, comm, cgroup, container_id, pod_uid, app_proto`,
		}},
		{"upper-case dimension", Config{Dimensions: []Dimension{"Interface"}}, []string{
			`dimensions: unknown dimension "Interface"; valid dimensions are interface, direction, ip_version, proto, src_ip, dst_ip, src_port, dst_port, vlan, flags, pid, comm, cgroup, container_id, pod_uid, app_proto`,
		}},
		{"duplicate dimension", Config{Dimensions: []Dimension{"src_ip", "dst_ip", "src_ip"}}, []string{
			`dimensions: "src_ip" is listed twice`,
		}},
		{"bad fold mode", Config{FoldPorts: "client"}, []string{
			`fold_ports "client" is not one of off, ephemeral, higher`,
		}},
		{"ephemeral_port_min without ephemeral", Config{FoldPorts: FoldHigher, EphemeralPortMin: 1024}, []string{
			`ephemeral_port_min is set but fold_ports is "higher": set fold_ports = "ephemeral" or remove ephemeral_port_min`,
		}},
		{"ephemeral_port_min out of range", Config{FoldPorts: FoldEphemeral, EphemeralPortMin: 65536}, []string{
			`ephemeral_port_min 65536 is out of range [1, 65535]`,
		}},
		{"negative ephemeral_port_min", Config{FoldPorts: FoldEphemeral, EphemeralPortMin: -1}, []string{
			`ephemeral_port_min -1 is out of range [1, 65535]`,
		}},
		{"folding without ports", Config{Dimensions: []Dimension{DimSrcIP, DimDstIP}, FoldPorts: FoldEphemeral}, []string{
			`fold_ports "ephemeral" has no effect because dimensions lists neither src_port nor dst_port: add one or remove fold_ports`,
		}},
		{"invalid cidr", Config{CIDRGroups: []CIDRGroup{{"office", "10.1.0.0/33"}}}, []string{
			`cidr_groups[0] "office": cidr "10.1.0.0/33" is invalid: netip.ParsePrefix("10.1.0.0/33"): prefix length out of range`,
		}},
		{"not a cidr", Config{CIDRGroups: []CIDRGroup{{"office", "office-net"}}}, []string{
			`cidr_groups[0] "office": cidr "office-net" is invalid: netip.ParsePrefix("office-net"): no '/'`,
		}},
		{"address without length", Config{CIDRGroups: []CIDRGroup{{"gw", "10.1.0.1"}, {"gw6", "2001:db8::1"}}}, []string{
			`cidr_groups[0] "gw": cidr "10.1.0.1" has no prefix length: write "10.1.0.1/32" for a single address`,
			`cidr_groups[1] "gw6": cidr "2001:db8::1" has no prefix length: write "2001:db8::1/128" for a single address`,
		}},
		{"host bits", Config{CIDRGroups: []CIDRGroup{{"office", "10.1.2.3/16"}}}, []string{
			`cidr_groups[0] "office": cidr "10.1.2.3/16" has host bits set: write "10.1.0.0/16"`,
		}},
		{"v4-mapped range", Config{CIDRGroups: []CIDRGroup{{"office", "::ffff:10.1.0.0/112"}}}, []string{
			`cidr_groups[0] "office": cidr "::ffff:10.1.0.0/112" is an IPv4-mapped IPv6 range, which never matches: write "10.1.0.0/16"`,
		}},
		{"empty cidr and name", Config{CIDRGroups: []CIDRGroup{{"", ""}}}, []string{
			`cidr_groups[0]: name is empty`,
			`cidr_groups[0] "": cidr is empty`,
		}},
		{"duplicate name", Config{CIDRGroups: []CIDRGroup{{"office", "10.1.0.0/16"}, {"lab", "10.2.0.0/16"}, {"office", "10.3.0.0/16"}}}, []string{
			`cidr_groups[2]: name "office" is already used by cidr_groups[0]`,
		}},
		{"duplicate cidr", Config{CIDRGroups: []CIDRGroup{{"office", "10.1.0.0/16"}, {"lab", "10.1.0.0/16"}}}, []string{
			`cidr_groups[1] "lab": cidr "10.1.0.0/16" is already group "office" (cidr_groups[0])`,
		}},
		{"reserved name", Config{CIDRGroups: []CIDRGroup{{"other", "10.1.0.0/16"}}}, []string{
			`cidr_groups[0]: name "other" is reserved for addresses outside every group`,
		}},
		{"name is an address", Config{CIDRGroups: []CIDRGroup{{"10.1.0.0", "10.1.0.0/16"}}}, []string{
			`cidr_groups[0]: name "10.1.0.0" is an IP address and would be mistaken for an ungrouped address`,
		}},
		{"ungrouped_as_other without groups", Config{UngroupedAsOther: true}, []string{
			`ungrouped_as_other is set but cidr_groups is empty: add groups or remove ungrouped_as_other`,
		}},
		{"groups without addresses", Config{Dimensions: []Dimension{DimInterface, DimDstPort}, CIDRGroups: []CIDRGroup{{"office", "10.1.0.0/16"}}}, []string{
			`cidr_groups has no effect because dimensions lists neither src_ip nor dst_ip: add one or remove cidr_groups`,
		}},
		{"negative limits", Config{TopN: -1, MaxSeries: -5, SeriesIdleTimeout: Duration(-time.Second)}, []string{
			`top_n -1 is negative: use 0 to keep every series`,
			`max_series -5 is negative: use 0 for no cap`,
			`series_idle_timeout -1s is negative`,
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.cfg.Validate()
			if c.want == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want %q", c.want)
			}
			if got := strings.Split(err.Error(), "\n"); !slices.Equal(got, c.want) {
				t.Errorf("Validate() errors\n got %q\nwant %q", got, c.want)
			}
		})
	}
}

func TestNewWrapsValidationError(t *testing.T) {
	_, err := New(Config{TopN: -1})
	const want = "aggregation config: top_n -1 is negative: use 0 to keep every series"
	if err == nil || err.Error() != want {
		t.Fatalf("New() error = %v, want %q", err, want)
	}
}

func TestDefaults(t *testing.T) {
	got := Config{}.withDefaults()
	if !slices.Equal(got.Dimensions, DefaultDimensions) {
		t.Errorf("dimensions = %v, want %v", got.Dimensions, DefaultDimensions)
	}
	if got.FoldPorts != FoldOff || got.EphemeralPortMin != 32768 || time.Duration(got.SeriesIdleTimeout) != 2*time.Minute {
		t.Errorf("defaults = %+v", got)
	}
	if got.TopN != 0 || got.MaxSeries != 0 || got.UngroupedAsOther {
		t.Errorf("limits must default to off: %+v", got)
	}
}

func TestDurationMarshalText(t *testing.T) {
	d := Duration(90 * time.Second)
	b, err := d.MarshalText()
	if err != nil || string(b) != "1m30s" {
		t.Fatalf("MarshalText = %q, %v", b, err)
	}
}
