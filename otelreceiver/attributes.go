package pktstatbpfreceiver

import (
	"net/netip"
	"slices"
	"strings"

	"github.com/pktstat-bpf/pktstat-bpf/core"
	"github.com/pktstat-bpf/pktstat-bpf/core/aggregate"
	"github.com/pktstat-bpf/pktstat-bpf/otelreceiver/internal/metadata"
)

// attributeMapper turns the aggregator's series into attribute values. It
// knows the kept dimensions because a zero key part is ambiguous: direction
// 0 is ingress and port 0 is a port.
type attributeMapper struct {
	direction, srcPort, dstPort bool
	// groupCIDR maps a CIDR group's name to its range; names are unique
	// (aggregate's validation).
	groupCIDR map[string]string
}

func newAttributeMapper(dims []aggregate.Dimension, groups []aggregate.CIDRGroup) attributeMapper {
	m := attributeMapper{
		direction: slices.Contains(dims, aggregate.DimDirection),
		srcPort:   slices.Contains(dims, aggregate.DimSrcPort),
		dstPort:   slices.Contains(dims, aggregate.DimDstPort),
		groupCIDR: make(map[string]string, len(groups)),
	}
	for _, g := range groups {
		m.groupCIDR[g.Name] = g.CIDR
	}
	return m
}

// attributes maps a series onto the attributes its key fills; the metrics'
// selections decide which are recorded.
func (m attributeMapper) attributes(s *aggregate.Series) metadata.FlowAttributes {
	switch s.Kind {
	case aggregate.KindOther:
		// The keys left out by top_n or max_series: no key part is
		// common to them.
		return metadata.FlowAttributes{Other: true}
	case aggregate.KindOverflow:
		// An overflow series stands for many flows: only where and which
		// way they crossed is known, so nothing else is claimed.
		a := metadata.FlowAttributes{InterfaceName: s.Interface, Overflow: true}
		if m.direction {
			a.Direction = s.Direction.OTelString()
		}
		return a
	case aggregate.KindFiltered:
		// The packets the filters left out: like overflow, many flows.
		a := metadata.FlowAttributes{InterfaceName: s.Interface, Filtered: true}
		if m.direction {
			a.Direction = s.Direction.OTelString()
		}
		return a
	}
	l := s.Labels()
	a := metadata.FlowAttributes{
		InterfaceName: s.Interface,
		PID:           int64(s.PID),
		Comm:          l.Comm,
		ContainerID:   l.ContainerID,
		PodUID:        l.PodUID,
		// Detected by the kernel in the flow's first payload bytes.
		ProtocolName: l.AppProto,
		VLANID:       int64(s.VLAN),
		Flags:        flagsString(s.Flags),
		CgroupPath:   l.Cgroup,
	}
	if m.direction {
		a.Direction = s.Direction.OTelString()
	}
	// A CIDR group (or "other" with ungrouped_as_other) replaces the
	// address, as Telegraf's src_group and dst_group tags do.
	a.SourceAddress, a.SourceGroup, a.SourceCIDR = m.address(s.SrcAddr, l.SrcGroup)
	a.DestinationAddress, a.DestinationGroup, a.DestinationCIDR = m.address(s.DstAddr, l.DstGroup)
	switch {
	case core.IsNonIP(s.Transport):
		// A non-IP flow has no transport: its EtherType name (arp,
		// ethertype-0xNNNN) is the network layer, which aggregate keeps
		// in the proto dimension.
		a.NetworkType = s.Transport
	default:
		a.Transport = s.Transport
		switch s.IPVersion {
		case 4:
			a.NetworkType = "ipv4"
		case 6:
			a.NetworkType = "ipv6"
		}
	}
	switch {
	case s.HasPorts:
		// A folded port has no value to report: it is left out.
		a.HasSourcePort = m.srcPort && !s.SrcPortFolded
		a.HasDestinationPort = m.dstPort && !s.DstPortFolded
		if a.HasSourcePort {
			a.SourcePort = int64(s.SrcPort)
		}
		if a.HasDestinationPort {
			a.DestinationPort = int64(s.DstPort)
		}
	case s.Transport == "icmp" || s.Transport == "ipv6-icmp":
		// aggregate keeps ICMP's type and code in the port fields, and
		// only when proto is kept, so Transport names the protocol.
		if m.srcPort {
			a.HasICMPType, a.ICMPType = true, int64(s.SrcPort)
		}
		if m.dstPort {
			a.HasICMPCode, a.ICMPCode = true, int64(s.DstPort)
		}
	}
	return a
}

// address returns the address attribute or, for a grouped address, the
// group's name and range.
func (m attributeMapper) address(addr netip.Addr, group string) (address, name, cidr string) {
	if group != "" {
		return "", group, m.groupCIDR[group]
	}
	if addr.IsValid() {
		return addr.String(), "", ""
	}
	return "", "", ""
}

// flagsString writes the parse flags as a comma-separated list, empty when
// the packets were parsed in full.
func flagsString(f core.Flags) string {
	if f == 0 {
		return ""
	}
	var names []string
	if f&core.FlagFragment != 0 {
		names = append(names, "fragment")
	}
	if f&core.FlagTruncated != 0 {
		names = append(names, "truncated")
	}
	return strings.Join(names, ",")
}
