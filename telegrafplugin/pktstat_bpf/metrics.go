package pktstat_bpf

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/influxdata/telegraf"

	"github.com/pktstat-bpf/pktstat-bpf/core"
)

const (
	measurement         = "pktstat_bpf"
	internalMeasurement = "pktstat_bpf_internal"
)

type series struct {
	tags                        map[string]string
	packets, bytes, retransmits uint64
	// hasRetransmits: kprobe mode counts TCP retransmissions per egress flow.
	hasRetransmits bool
}

// addFlowMetrics emits one counter metric per series. Records whose tags are
// equal (they differ only in a dimension that is not emitted, such as an
// unselected optional tag) are summed, so no two metrics share a series and
// the sum over all series still equals what crossed the hooks.
func addFlowMetrics(acc telegraf.Accumulator, snap core.Snapshot, opt optionalTags) {
	index := make(map[seriesID]int, len(snap.Records))
	out := make([]series, 0, len(snap.Records))
	for i := range snap.Records {
		r := &snap.Records[i]
		id := newSeriesID(r, opt)
		j, ok := index[id]
		if !ok {
			j = len(out)
			index[id] = j
			out = append(out, series{tags: id.tags(),
				hasRetransmits: opt.retransmits && !r.Overflow && r.Direction == core.Egress && r.IPVersion() != 0 && r.Proto == core.ProtoTCP})
		}
		out[j].packets += r.Packets
		out[j].bytes += r.Bytes
		out[j].retransmits += r.Retransmits
	}
	for _, s := range out {
		fields := map[string]interface{}{
			"bytes":   s.bytes,
			"packets": s.packets,
		}
		if s.hasRetransmits {
			fields["retransmits"] = s.retransmits
		}
		acc.AddCounter(measurement, fields, s.tags, snap.Time)
	}
}

// tagKind says which tags carry a flow's two port-slot values.
type tagKind uint8

const (
	kindNone tagKind = iota
	kindPorts
	kindICMP
	kindSPI
	kindGRE
	kindOSPF
	kindARP
)

// seriesID holds exactly the values that become tags, so that two records
// have the same seriesID if and only if they have the same tags; it is
// cheaper to build and compare than the tag map.
type seriesID struct {
	iface     string
	direction core.Direction
	overflow  bool
	etherType uint16
	proto     uint8
	src, dst  netip.Addr
	kind      tagKind
	a, b      uint32
	vlan      uint16
	flags     core.Flags
	pid       uint32
	comm      string
	cgroup    string
}

// newSeriesID maps a record to the tags named in DESIGN.md. Port tags are
// set only for protocols that have ports; other protocols get the
// identifiers the kernel stored in the port slots under their own names.
func newSeriesID(r *core.Record, opt optionalTags) seriesID {
	id := seriesID{iface: r.Interface, direction: r.Direction}
	if r.Overflow {
		// The overflow series stands for many flows: no flow's address,
		// port or protocol belongs on it.
		id.overflow = true
		return id
	}
	id.etherType, id.proto = r.EtherType, r.Proto
	if r.IPVersion() == 0 {
		id.proto = 0 // Transport ignores it for non-IP flows.
	}
	id.src, id.dst = r.SrcAddr, r.DstAddr
	ip := r.IPVersion() != 0
	switch {
	case r.HasPorts():
		id.kind, id.a, id.b = kindPorts, uint32(r.SrcPort), uint32(r.DstPort)
	case ip && (r.Proto == core.ProtoICMP || r.Proto == core.ProtoICMPv6):
		typ, code, _ := r.ICMPTypeCode()
		id.kind, id.a, id.b = kindICMP, uint32(typ), uint32(code)
	case ip && (r.Proto == core.ProtoESP || r.Proto == core.ProtoAH):
		spi, _ := r.SPI()
		id.kind, id.a = kindSPI, spi
	case ip && r.Proto == core.ProtoGRE:
		// core stores the GRE protocol type (an EtherType) in DstPort.
		id.kind, id.a = kindGRE, uint32(r.DstPort)
	case ip && r.Proto == core.ProtoOSPF:
		// core stores the OSPF packet type in DstPort.
		id.kind, id.a = kindOSPF, uint32(r.DstPort)
	case r.EtherType == core.EtherTypeARP:
		op, _ := r.ARPOp()
		id.kind, id.a = kindARP, uint32(op)
	}
	if opt.vlan {
		id.vlan = r.VLAN
	}
	if opt.flags {
		id.flags = r.Flags
	}
	if opt.pid {
		id.pid = r.PID
	}
	if opt.comm {
		id.comm = r.Comm
	}
	if opt.cgroup {
		switch {
		case r.CgroupPath != "":
			id.cgroup = r.CgroupPath
		case r.CgroupID != 0:
			id.cgroup = strconv.FormatUint(r.CgroupID, 10)
		}
	}
	return id
}

func (id seriesID) tags() map[string]string {
	tags := make(map[string]string, 12)
	tags["direction"] = id.direction.String()
	if id.iface != "" {
		tags["interface"] = id.iface
	}
	if id.overflow {
		tags["overflow"] = "true"
		return tags
	}
	k := core.FlowKey{EtherType: id.etherType, Proto: id.proto}
	if v := k.IPVersion(); v != 0 {
		tags["ip_version"] = strconv.Itoa(v)
	}
	tags["proto"] = k.Transport()
	if id.src.IsValid() {
		tags["src_ip"] = id.src.String()
	}
	if id.dst.IsValid() {
		tags["dst_ip"] = id.dst.String()
	}
	switch id.kind {
	case kindPorts:
		tags["src_port"] = strconv.FormatUint(uint64(id.a), 10)
		tags["dst_port"] = strconv.FormatUint(uint64(id.b), 10)
	case kindICMP:
		tags["icmp_type"] = strconv.FormatUint(uint64(id.a), 10)
		tags["icmp_code"] = strconv.FormatUint(uint64(id.b), 10)
	case kindSPI:
		tags["spi"] = fmt.Sprintf("0x%08x", id.a)
	case kindGRE:
		tags["gre_proto"] = fmt.Sprintf("0x%04x", id.a)
	case kindOSPF:
		tags["ospf_type"] = strconv.FormatUint(uint64(id.a), 10)
	case kindARP:
		tags["arp_op"] = strconv.FormatUint(uint64(id.a), 10)
	}
	if id.vlan != 0 {
		tags["vlan"] = strconv.Itoa(int(id.vlan))
	}
	if id.flags != 0 {
		tags["flags"] = flagsString(id.flags)
	}
	if id.pid != 0 {
		tags["pid"] = strconv.FormatUint(uint64(id.pid), 10)
	}
	if id.comm != "" {
		tags["comm"] = id.comm
	}
	if id.cgroup != "" {
		tags["cgroup"] = id.cgroup
	}
	return tags
}

func flagsString(f core.Flags) string {
	var names []string
	if f&core.FlagFragment != 0 {
		names = append(names, "fragment")
	}
	if f&core.FlagTruncated != 0 {
		names = append(names, "truncated")
	}
	if rest := f &^ (core.FlagFragment | core.FlagTruncated); rest != 0 {
		names = append(names, fmt.Sprintf("0x%02x", uint8(rest)))
	}
	return strings.Join(names, ",")
}

// addInternalMetric reports core's health: table fill, overflow, expiry,
// drain cost and attachments.
func addInternalMetric(acc telegraf.Accumulator, snap core.Snapshot, mode string) {
	h := snap.Health
	attached := 0
	for _, hook := range h.Hooks {
		if hook.Attached {
			attached++
		}
	}
	acc.AddFields(internalMeasurement, map[string]interface{}{
		"active_flows":     int64(h.ActiveFlows),
		"capacity":         int64(h.Capacity),
		"overflow_packets": h.OverflowPackets,
		"overflow_bytes":   h.OverflowBytes,
		"expired_flows":    h.ExpiredFlows,
		"drain_ns":         h.DrainDuration.Nanoseconds(),
		"hooks_attached":   int64(attached),
		"hooks_failed":     int64(len(h.Hooks) - attached),
		"records":          int64(len(snap.Records)),
	}, map[string]string{"mode": mode}, snap.Time)
}
