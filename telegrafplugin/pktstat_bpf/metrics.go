package pktstat_bpf

import (
	"fmt"
	"maps"
	"slices"
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
	tags           map[string]string
	packets, bytes uint64
}

// addFlowMetrics emits one counter metric per series. Records whose tags are
// equal (they differ only in a dimension that is not emitted, such as an
// unselected optional tag) are summed, so no two metrics share a series and
// the sum over all series still equals what crossed the hooks.
func addFlowMetrics(acc telegraf.Accumulator, snap core.Snapshot, opt optionalTags) {
	index := make(map[string]int, len(snap.Records))
	var out []series
	for i := range snap.Records {
		r := &snap.Records[i]
		tags := flowTags(r, opt)
		key := seriesKey(tags)
		if j, ok := index[key]; ok {
			out[j].packets += r.Packets
			out[j].bytes += r.Bytes
			continue
		}
		index[key] = len(out)
		out = append(out, series{tags: tags, packets: r.Packets, bytes: r.Bytes})
	}
	for _, s := range out {
		acc.AddCounter(measurement, map[string]interface{}{
			"bytes":   s.bytes,
			"packets": s.packets,
		}, s.tags, snap.Time)
	}
}

// flowTags maps a record to the tags named in DESIGN.md. Port tags are set
// only for protocols that have ports; other protocols get the identifiers
// the kernel stored in the port slots under their own names.
func flowTags(r *core.Record, opt optionalTags) map[string]string {
	tags := map[string]string{"direction": r.Direction.String()}
	if r.Interface != "" {
		tags["interface"] = r.Interface
	}
	if r.Overflow {
		// The overflow series stands for many flows: no flow's address,
		// port or protocol belongs on it.
		tags["overflow"] = "true"
		return tags
	}
	if v := r.IPVersion(); v != 0 {
		tags["ip_version"] = strconv.Itoa(v)
	}
	tags["proto"] = r.Transport()
	if r.SrcAddr.IsValid() {
		tags["src_ip"] = r.SrcAddr.String()
	}
	if r.DstAddr.IsValid() {
		tags["dst_ip"] = r.DstAddr.String()
	}
	switch {
	case r.HasPorts():
		tags["src_port"] = strconv.Itoa(int(r.SrcPort))
		tags["dst_port"] = strconv.Itoa(int(r.DstPort))
	case r.IPVersion() != 0 && (r.Proto == core.ProtoICMP || r.Proto == core.ProtoICMPv6):
		typ, code, _ := r.ICMPTypeCode()
		tags["icmp_type"] = strconv.Itoa(int(typ))
		tags["icmp_code"] = strconv.Itoa(int(code))
	case r.IPVersion() != 0 && (r.Proto == core.ProtoESP || r.Proto == core.ProtoAH):
		spi, _ := r.SPI()
		tags["spi"] = fmt.Sprintf("0x%08x", spi)
	case r.IPVersion() != 0 && r.Proto == core.ProtoGRE:
		// core stores the GRE protocol type (an EtherType) in DstPort.
		tags["gre_proto"] = fmt.Sprintf("0x%04x", r.DstPort)
	case r.IPVersion() != 0 && r.Proto == core.ProtoOSPF:
		// core stores the OSPF packet type in DstPort.
		tags["ospf_type"] = strconv.Itoa(int(r.DstPort))
	case r.EtherType == core.EtherTypeARP:
		op, _ := r.ARPOp()
		tags["arp_op"] = strconv.Itoa(int(op))
	}
	if opt.vlan && r.VLAN != 0 {
		tags["vlan"] = strconv.Itoa(int(r.VLAN))
	}
	if opt.flags && r.Flags != 0 {
		tags["flags"] = flagsString(r.Flags)
	}
	if opt.pid && r.PID != 0 {
		tags["pid"] = strconv.FormatUint(uint64(r.PID), 10)
	}
	if opt.comm && r.Comm != "" {
		tags["comm"] = r.Comm
	}
	if opt.cgroup {
		switch {
		case r.CgroupPath != "":
			tags["cgroup"] = r.CgroupPath
		case r.CgroupID != 0:
			tags["cgroup"] = strconv.FormatUint(r.CgroupID, 10)
		}
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

// seriesKey is a canonical form of a tag set; '\x00' cannot occur in tags.
func seriesKey(tags map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		b.WriteString(k)
		b.WriteByte(0)
		b.WriteString(tags[k])
		b.WriteByte(0)
	}
	return b.String()
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
