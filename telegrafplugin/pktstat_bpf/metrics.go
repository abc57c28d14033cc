package pktstat_bpf

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/influxdata/telegraf"
	"github.com/influxdata/telegraf/metric"

	"github.com/pktstat-bpf/pktstat-bpf/core"
	"github.com/pktstat-bpf/pktstat-bpf/core/aggregate"
)

const (
	measurement         = "pktstat_bpf"
	dropMeasurement     = "pktstat_bpf_drops"
	internalMeasurement = "pktstat_bpf_internal"
)

// converter turns core's snapshots into metrics through one Aggregator, which
// owns the series state (cumulative counters built from deltas, so they
// never go backwards as flows come and go).
type converter struct {
	agg *aggregate.Aggregator
	// drops aggregates the drop records (drops = true) as their own set.
	drops *aggregate.Aggregator
	// Direction's zero value is a real direction and port 0 a real port:
	// whether they are kept must be known, not guessed from the key.
	dir, srcPort, dstPort bool
	// tcpFlags: the mode counts TCP flags (every mode but kprobe), so each
	// TCP series carries the four flag fields from its first point on.
	tcpFlags bool
	// series holds, by series slot, the series' tag values, rendered when
	// the series is born: a gather copies the series' shape, sets the tag
	// values and the counts, instead of rendering the tags and sorting
	// them again for every series at every gather.
	series []seriesTags
	// shapes are the distinct sets of tag keys and fields of the series:
	// a metric with those tags (values empty) and fields (at zero), in
	// the order metric.New sorts them. A full table has a handful
	// (IPv4 and IPv6 share theirs; TCP series add the flag fields).
	shapes     []telegraf.Metric
	shapeIndex map[string]int32
}

// seriesTags is what a flow series keeps between gathers: its shape and
// its tag values in the shape's tag order. About 180 bytes for the default
// dimensions, where a whole template metric (pointers to each tag and
// field, the fields' boxed values) took about 470.
type seriesTags struct {
	shape  int32
	values []string
}

func newConverter(cfg aggregate.Config, drops bool) (*converter, error) {
	agg, err := aggregate.New(cfg)
	if err != nil {
		return nil, err
	}
	c := &converter{agg: agg}
	if drops {
		if c.drops, err = aggregate.New(cfg); err != nil {
			return nil, err
		}
	}
	for _, d := range agg.Dimensions() {
		switch d {
		case aggregate.DimDirection:
			c.dir = true
		case aggregate.DimSrcPort:
			c.srcPort = true
		case aggregate.DimDstPort:
			c.dstPort = true
		}
	}
	return c, nil
}

// add emits one counter metric per series, stamped with the drain's time,
// and returns how many. Every snapshot must pass through here, none
// skipped: the series grow by the records' deltas. A snapshot read by
// aggregate.ReadInto has no Records: they went into c.agg during the
// drain, and Aggregate completes their call.
func (c *converter) add(acc telegraf.Accumulator, snap core.Snapshot) int {
	series := c.agg.Aggregate(snap.Time, snap.Records)
	for i := range series {
		s := series[i]
		m := c.metric(s)
		// The metric's fields are its own: set in place, they cost no
		// allocation but the values'.
		for _, f := range m.FieldList() {
			switch f.Key {
			case "bytes":
				f.Value = s.Bytes
			case "packets":
				f.Value = s.Packets
			case "tcp_syn":
				f.Value = s.TCP.SYN
			case "tcp_synack":
				f.Value = s.TCP.SYNACK
			case "tcp_fin":
				f.Value = s.TCP.FIN
			case "tcp_rst":
				f.Value = s.TCP.RST
			}
		}
		// Retransmissions are counted on egress TCP series (kprobe mode,
		// and tc and cgroup modes where the kernel has the tracepoint); a
		// series carries the field from its first one on, as the receiver does.
		if s.Retransmits > 0 {
			m.AddField("retransmits", s.Retransmits)
		}
		// The flag fields add no series; a series that is not one TCP
		// flow's (proto not kept, overflow, other) has them once a flag
		// was counted in it.
		if !c.flagFields(s) && !s.TCP.IsZero() {
			m.AddField("tcp_syn", s.TCP.SYN)
			m.AddField("tcp_synack", s.TCP.SYNACK)
			m.AddField("tcp_fin", s.TCP.FIN)
			m.AddField("tcp_rst", s.TCP.RST)
		}
		// RTT (tcp_rtt) is per interval: only a series with samples in it
		// has the fields.
		if s.RTT != nil {
			m.AddField("rtt_min_us", uint64(s.RTT.Min/time.Microsecond))
			m.AddField("rtt_mean_us", float64(s.RTT.Sum)/float64(s.RTT.Samples)/float64(time.Microsecond))
			m.AddField("rtt_max_us", uint64(s.RTT.Max/time.Microsecond))
		}
		m.SetTime(snap.Time)
		acc.AddMetric(m)
	}
	n := len(series)
	if c.drops != nil {
		drops := c.drops.Aggregate(snap.Time, snap.Drops)
		for i := range drops {
			s := drops[i]
			tags := c.tags(s)
			if r := s.Labels().DropReason; r != "" {
				tags["reason"] = r
			}
			acc.AddCounter(dropMeasurement, map[string]interface{}{"packets": s.Packets, "bytes": s.Bytes}, tags, snap.Time)
		}
		n += len(drops)
	}
	return n
}

// metric returns a new metric of the series: its tags, and its fields at
// zero.
func (c *converter) metric(s *aggregate.Series) telegraf.Metric {
	if s.Slot < 0 {
		// The other, overflow and filtered series: a few, built each time.
		return c.newTemplate(s)
	}
	if n := int(s.Slot) + 1; n > len(c.series) {
		c.series = append(c.series, make([]seriesTags, n-len(c.series))...)
	}
	st := &c.series[s.Slot]
	if s.Born || st.values == nil {
		*st = c.newSeriesTags(s)
	}
	m := c.shapes[st.shape].Copy()
	// The copy's tags are its own, as its fields are.
	for i, t := range m.TagList() {
		t.Value = st.values[i]
	}
	return m
}

// newSeriesTags renders a new series' tags and finds, or adds, its shape.
func (c *converter) newSeriesTags(s *aggregate.Series) seriesTags {
	m := c.newTemplate(s)
	tags := m.TagList()
	var key strings.Builder
	for _, t := range tags {
		key.WriteString(t.Key)
		key.WriteByte(0)
	}
	if c.flagFields(s) {
		key.WriteString("flags")
	}
	shape, ok := c.shapeIndex[key.String()]
	if !ok {
		proto := m.Copy()
		for _, t := range proto.TagList() {
			t.Value = ""
		}
		if c.shapeIndex == nil {
			c.shapeIndex = map[string]int32{}
		}
		shape = int32(len(c.shapes))
		c.shapes = append(c.shapes, proto)
		c.shapeIndex[key.String()] = shape
	}
	values := make([]string, len(tags))
	for i, t := range tags {
		values[i] = t.Value
	}
	return seriesTags{shape: shape, values: values}
}

func (c *converter) newTemplate(s *aggregate.Series) telegraf.Metric {
	fields := map[string]interface{}{"bytes": uint64(0), "packets": uint64(0)}
	if c.flagFields(s) {
		fields["tcp_syn"], fields["tcp_synack"], fields["tcp_fin"], fields["tcp_rst"] = uint64(0), uint64(0), uint64(0), uint64(0)
	}
	return metric.New(measurement, c.tags(s), fields, time.Time{}, telegraf.Counter)
}

// flagFields reports whether every point of the series carries the TCP
// flag fields: a TCP flow's series in a mode that counts them.
func (c *converter) flagFields(s *aggregate.Series) bool {
	return c.tcpFlags && s.Key.Transport == "tcp"
}

// tags renders a series' key as the tags named in DESIGN.md. Port tags are
// set only for protocols that have ports (and not when fold_ports removed
// the value); other protocols get the identifiers the kernel keeps in the
// port slots under their own names.
func (c *converter) tags(s *aggregate.Series) map[string]string {
	k := &s.Key
	tags := make(map[string]string, 10)
	if k.Interface != "" {
		tags["interface"] = k.Interface
	}
	if c.dir {
		tags["direction"] = k.Direction.String()
	}
	switch s.Kind {
	case aggregate.KindOverflow:
		// The overflow series stands for many flows: no flow's address,
		// port or protocol belongs on it.
		tags["overflow"] = "true"
		return tags
	case aggregate.KindFiltered:
		// The packets the filters left out, many flows' worth, like overflow.
		tags["filtered"] = "true"
		return tags
	case aggregate.KindOther:
		// The keys that top_n or max_series left out in this interval.
		return map[string]string{"other": "true"}
	}
	if k.IPVersion != 0 {
		tags["ip_version"] = strconv.Itoa(int(k.IPVersion))
	}
	if k.Transport != "" {
		tags["proto"] = k.Transport
	}
	l := k.Labels()
	addrTag(tags, "src", l.SrcGroup, k.SrcAddr)
	addrTag(tags, "dst", l.DstGroup, k.DstAddr)
	c.portTags(k, tags)
	if k.VLAN != 0 {
		tags["vlan"] = strconv.Itoa(int(k.VLAN))
	}
	if k.Flags != 0 {
		tags["flags"] = flagsString(k.Flags)
	}
	if k.PID != 0 {
		tags["pid"] = strconv.FormatUint(uint64(k.PID), 10)
	}
	if l.Comm != "" {
		tags["comm"] = l.Comm
	}
	switch {
	case l.Cgroup != "":
		tags["cgroup"] = l.Cgroup
	case k.CgroupID != 0:
		tags["cgroup"] = strconv.FormatUint(k.CgroupID, 10)
	}
	if l.ContainerID != "" {
		tags["container_id"] = l.ContainerID
	}
	if l.PodUID != "" {
		tags["pod_uid"] = l.PodUID
	}
	if l.AppProto != "" {
		tags["app_proto"] = l.AppProto
	}
	return tags
}

// addrTag sets <side>_group for an address reported as its CIDR group (or
// "other"), else <side>_ip: a group name in src_ip would read as an address
// to every query that filters or joins on addresses.
func addrTag(tags map[string]string, side, group string, a netip.Addr) {
	switch {
	case group != "":
		tags[side+"_group"] = group
	case a.IsValid():
		tags[side+"_ip"] = a.String()
	}
}

// portTags fills the tags of the two port slots. For protocols without
// ports, aggregate keeps the slots only when proto is kept too; the tag
// names then say what the values are.
func (c *converter) portTags(k *aggregate.Key, tags map[string]string) {
	src, dst := c.srcPort, c.dstPort
	if k.HasPorts {
		if src && !k.SrcPortFolded {
			tags["src_port"] = strconv.Itoa(int(k.SrcPort))
		}
		if dst && !k.DstPortFolded {
			tags["dst_port"] = strconv.Itoa(int(k.DstPort))
		}
		return
	}
	switch k.Transport {
	case "icmp", "ipv6-icmp":
		// core keeps the type in SrcPort and the code in DstPort.
		if src {
			tags["icmp_type"] = strconv.Itoa(int(uint8(k.SrcPort)))
		}
		if dst {
			tags["icmp_code"] = strconv.Itoa(int(uint8(k.DstPort)))
		}
	case "esp", "ah":
		// The SPI's high and low 16 bits; half an SPI identifies nothing.
		if src && dst {
			tags["spi"] = fmt.Sprintf("0x%08x", uint32(k.SrcPort)<<16|uint32(k.DstPort))
		}
	case "gre":
		// DstPort is the encapsulated EtherType.
		if dst {
			tags["gre_proto"] = fmt.Sprintf("0x%04x", k.DstPort)
		}
	case "ospf":
		// DstPort is the OSPF packet type.
		if dst {
			tags["ospf_type"] = strconv.Itoa(int(k.DstPort))
		}
	case "arp":
		// DstPort is the operation (1 request, 2 reply).
		if dst {
			tags["arp_op"] = strconv.Itoa(int(k.DstPort))
		}
	}
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
func addInternalMetric(acc telegraf.Accumulator, snap core.Snapshot, records, series int, mode string, convert time.Duration) {
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
		"kernel_memory":    h.KernelMemory,
		"overflow_packets": h.OverflowPackets,
		"overflow_bytes":   h.OverflowBytes,
		"expired_flows":    h.ExpiredFlows,
		"drain_ns":         h.DrainDuration.Nanoseconds(),
		"convert_ns":       convert.Nanoseconds(),
		"hooks_attached":   int64(attached),
		"hooks_failed":     int64(len(h.Hooks) - attached),
		"hooks_not_first":  int64(h.HooksNotFirst()),
		"records":          int64(records),
		"series":           int64(series),
	}, map[string]string{"mode": mode}, snap.Time)
}
