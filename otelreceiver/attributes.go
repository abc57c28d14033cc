package pktstatbpfreceiver

import (
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
}

func newAttributeMapper(dims []aggregate.Dimension) attributeMapper {
	return attributeMapper{
		direction: slices.Contains(dims, aggregate.DimDirection),
		srcPort:   slices.Contains(dims, aggregate.DimSrcPort),
		dstPort:   slices.Contains(dims, aggregate.DimDstPort),
	}
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
	a := metadata.FlowAttributes{
		InterfaceName: s.Interface,
		Transport:     s.Transport,
		// A CIDR group's name (or "other" with ungrouped_as_other) stands
		// in for the address, as in Telegraf's src_ip and dst_ip tags.
		SourceAddress:      s.SrcIP(),
		DestinationAddress: s.DstIP(),
		PID:                int64(s.PID),
		ExecutableName:     s.Comm,
		ContainerID:        s.ContainerID,
		PodUID:             s.PodUID,
		// Detected by the kernel in the flow's first payload bytes.
		ProtocolName: s.AppProto,
		VLANID:       int64(s.VLAN),
		Flags:        flagsString(s.Flags),
		CgroupPath:   s.Cgroup,
	}
	if m.direction {
		a.Direction = s.Direction.OTelString()
	}
	switch s.IPVersion {
	case 4:
		a.NetworkType = "ipv4"
	case 6:
		a.NetworkType = "ipv6"
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
