package core

import (
	"net/netip"
	"time"
)

// Direction is the way a packet crossed the hook.
type Direction uint8

const (
	// Ingress: received by the host (TC ingress, XDP, cgroup ingress, socket receive).
	Ingress Direction = 0
	// Egress: sent by the host.
	Egress Direction = 1
	// DirectionUnknown: only drop records have it, for a packet dropped
	// where the kernel does not say whether it was coming in or going out
	// (a forwarded packet on its way through the device; see drops.go).
	DirectionUnknown Direction = 2
)

// String returns "ingress", "egress" or "unknown", the Telegraf tag values.
func (d Direction) String() string {
	switch d {
	case Egress:
		return "egress"
	case DirectionUnknown:
		return "unknown"
	}
	return "ingress"
}

// OTelString returns "receive", "transmit" or "unknown", the network.io.direction values.
func (d Direction) OTelString() string {
	switch d {
	case Egress:
		return "transmit"
	case DirectionUnknown:
		return "unknown"
	}
	return "receive"
}

// Flags describe how far a packet was parsed.
type Flags uint8

const (
	// FlagFragment: a non-first IP fragment; ports are 0.
	FlagFragment Flags = 1 << 0
	// FlagTruncated: a header was cut short or malformed; fields past it are 0.
	FlagTruncated Flags = 1 << 1
)

// EtherType values that name the network layer of a flow.
const (
	EtherTypeIPv4 = 0x0800
	EtherTypeARP  = 0x0806
	EtherTypeIPv6 = 0x86dd
)

// FlowKey identifies one flow. It is comparable and used as a map key.
type FlowKey struct {
	Ifindex   uint32
	Direction Direction
	// EtherType is the network protocol (0x0800, 0x86dd, 0x0806, ...).
	EtherType uint16
	// VLAN is the outer 802.1Q/802.1ad VLAN id, 0 when untagged.
	VLAN uint16
	// Proto is the IP protocol number (6 tcp, 17 udp, 1 icmp, 58 ipv6-icmp, ...),
	// 0 for non-IP flows.
	Proto   uint8
	SrcAddr netip.Addr
	DstAddr netip.Addr
	// SrcPort and DstPort are transport ports for tcp, udp, udplite and
	// sctp. For other protocols they carry the protocol's own identifiers:
	// icmp and ipv6-icmp type/code, gre flags+version/protocol, esp and ah
	// SPI high/low 16 bits, ospf version/type, arp 0/operation. See the
	// accessor methods.
	SrcPort uint16
	DstPort uint16
	Flags   Flags
	// Cgroup and kprobe modes only.
	CgroupID uint64
	PID      uint32
	Comm     string
}

// Record is one flow's counters at a Read.
type Record struct {
	FlowKey
	// Interface is the name of Ifindex when the flow was seen.
	Interface string
	// CgroupPath is the path of CgroupID below the cgroup2 mount, when known.
	CgroupPath string
	// AppProto is the application protocol recognised in the flow's first
	// payload bytes (http, http2, tls, dtls, quic, ssh, rdp, postgresql,
	// mqtt, wireguard, memcached, dns), or empty.
	AppProto string

	// Packets and Bytes are cumulative since StartTime.
	Packets uint64
	Bytes   uint64
	// DeltaPackets and DeltaBytes are the increase since the previous Read.
	DeltaPackets uint64
	DeltaBytes   uint64
	// Retransmits counts the flow's TCP retransmissions (skbs the kernel
	// sent again), cumulative like Packets, on egress records: in kprobe
	// mode, and in tc and cgroup modes on kernels with the
	// tcp_retransmit_skb tracepoint in BTF. DeltaRetransmits is the
	// increase since the previous Read.
	Retransmits      uint64
	DeltaRetransmits uint64
	// TCP counts the flow's packets with SYN, SYN+ACK, FIN and RST set,
	// cumulative like Packets; tc, xdp and cgroup modes, TCP flows and
	// overflow records (not filtered ones). DeltaTCP is the increase since
	// the previous Read.
	TCP      TCPFlagCounts
	DeltaTCP TCPFlagCounts

	// StartTime is when the kernel first saw the flow (the series start).
	StartTime time.Time
	// LastSeen is the time of the last Read at which the counters grew.
	LastSeen time.Time

	// Overflow marks the record that counts packets of flows that did not
	// fit in the kernel table, per interface and direction. The last-resort
	// total, for when even the overflow table was full, has an all-zero
	// key; so does kprobe mode's ingress overflow for sockets bound to no
	// device, and consumers that sum by key merge the two, which keeps
	// totals right.
	Overflow bool
	// Filtered marks the record that counts the packets the filters
	// (include_cidrs, exclude_ports, ...) left out, per interface and
	// direction. Like an overflow record it stands for many flows: only
	// Ifindex, Direction and Interface are set.
	Filtered bool
	// Expired marks a flow's final report: it was idle for the idle timeout
	// and was removed from the kernel table. If it returns it starts a new
	// series with a new StartTime.
	Expired bool
	// DropReason is set on drop records (Snapshot.Drops) only: the kernel's
	// skb_drop_reason name, lower case without SKB_DROP_REASON_
	// ("netfilter_drop", "no_socket", ...). Packets and Bytes then count
	// packets the kernel dropped, Bytes as L3 lengths.
	DropReason string
	// RTT holds the TCP socket's smoothed RTT samples of the interval since
	// the previous Read (not cumulative), on egress records, with tcp_rtt in
	// tc and cgroup modes; nil when there were none (a value would add 160
	// bytes to every record of a full table).
	RTT *RTTStats
}

// RTTStats summarises smoothed RTT samples: one per TCP segment the
// socket received, each the socket's srtt at that moment.
type RTTStats struct {
	Samples  uint64
	Sum      time.Duration
	Min, Max time.Duration
	// Buckets counts the samples per RTTBucketBounds bucket: Buckets[i]
	// those in (RTTBucketBounds[i-1], RTTBucketBounds[i]], the last those
	// above every bound (OpenTelemetry's explicit-bucket layout).
	Buckets [RTTBuckets]uint64
}

// RTTBuckets is the number of RTT histogram buckets, one more than bounds.
const RTTBuckets = 16

// RTTBucketBounds are the RTT histogram's bucket upper bounds, from
// loopback (50 µs) to intercontinental and congested paths (2.5 s); the
// kernel program counts samples into them at microsecond resolution.
var RTTBucketBounds = [RTTBuckets - 1]time.Duration{
	50 * time.Microsecond, 100 * time.Microsecond, 250 * time.Microsecond, 500 * time.Microsecond,
	time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond, 10 * time.Millisecond,
	25 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond, 250 * time.Millisecond,
	500 * time.Millisecond, time.Second, 2500 * time.Millisecond,
}

// Mean is Sum / Samples, 0 without samples.
func (s RTTStats) Mean() time.Duration {
	if s.Samples == 0 {
		return 0
	}
	return s.Sum / time.Duration(s.Samples)
}

// Merge adds o's samples to s: samples and sums add, min and max combine.
func (s *RTTStats) Merge(o RTTStats) {
	if o.Samples == 0 {
		return
	}
	if s.Samples == 0 || o.Min < s.Min {
		s.Min = o.Min
	}
	if o.Max > s.Max {
		s.Max = o.Max
	}
	s.Samples += o.Samples
	s.Sum += o.Sum
	for i := range s.Buckets {
		s.Buckets[i] += o.Buckets[i]
	}
}

// TCPFlagCounts counts TCP packets by the flags they carry. SYN counts a SYN
// without ACK (a connection attempt), SYNACK a SYN with ACK (its answer);
// FIN and RST count packets with that flag whatever else is set.
type TCPFlagCounts struct {
	SYN, SYNACK, FIN, RST uint64
}

// Add returns the sum of c and o.
func (c TCPFlagCounts) Add(o TCPFlagCounts) TCPFlagCounts {
	return TCPFlagCounts{c.SYN + o.SYN, c.SYNACK + o.SYNACK, c.FIN + o.FIN, c.RST + o.RST}
}

// IsZero reports whether no flag was counted.
func (c TCPFlagCounts) IsZero() bool { return c == TCPFlagCounts{} }

// IPVersion is 4, 6 or 0 for non-IP flows.
func (k FlowKey) IPVersion() int {
	switch k.EtherType {
	case EtherTypeIPv4:
		return 4
	case EtherTypeIPv6:
		return 6
	}
	return 0
}

// HasPorts reports whether SrcPort and DstPort are transport ports.
func (k FlowKey) HasPorts() bool {
	if k.IPVersion() == 0 {
		return false
	}
	switch k.Proto {
	case ProtoTCP, ProtoUDP, ProtoUDPLite, ProtoSCTP:
		return true
	}
	return false
}

// ICMPTypeCode returns the ICMP or ICMPv6 type and code.
func (k FlowKey) ICMPTypeCode() (typ, code uint8, ok bool) {
	if k.Proto != ProtoICMP && k.Proto != ProtoICMPv6 || k.IPVersion() == 0 {
		return 0, 0, false
	}
	return uint8(k.SrcPort), uint8(k.DstPort), true
}

// SPI returns the IPsec security parameter index of an esp or ah flow.
func (k FlowKey) SPI() (uint32, bool) {
	if k.Proto != ProtoESP && k.Proto != ProtoAH || k.IPVersion() == 0 {
		return 0, false
	}
	return uint32(k.SrcPort)<<16 | uint32(k.DstPort), true
}

// ARPOp returns the ARP operation (1 request, 2 reply).
func (k FlowKey) ARPOp() (uint16, bool) {
	if k.EtherType != EtherTypeARP {
		return 0, false
	}
	return k.DstPort, true
}

// Health is core's report on itself.
type Health struct {
	// ActiveFlows is the number of flows in the kernel table.
	ActiveFlows int
	// Capacity is the kernel table size (max_flows).
	Capacity int
	// KernelMemory is the bytes of kernel memory the capture's BPF maps
	// hold (the kernel's memlock accounting, summed at Start). It is
	// charged to the memory cgroup of the process that loaded them: a
	// container's memory limit holds it besides the agent's own RSS. The
	// flow tables keep one value per flow, so it does not grow with the
	// number of CPUs; the small per-CPU tables (overflow, filtered totals,
	// drops) do.
	KernelMemory uint64
	// OverflowPackets and OverflowBytes are cumulative counts of packets
	// that did not fit in the flow table (they are also in the Overflow records).
	OverflowPackets uint64
	OverflowBytes   uint64
	// ExpiredFlows counts flows removed for idleness since Start.
	ExpiredFlows uint64
	// DrainDuration is how long the last Read took; for ReadFunc, the
	// callback's work on each record included.
	DrainDuration time.Duration
	// Hooks lists every attachment, one per interface and hook.
	Hooks []HookState
}

// HookState is one attachment point.
type HookState struct {
	// Target is an interface name or a cgroup path.
	Target string
	// Hook is for example "tcx/ingress", "tc/egress" (legacy), "xdp/generic", "cgroup_skb/egress".
	Hook     string
	Attached bool
	// InFront names the program or tc filter that runs before ours on this
	// hook (id, name and type), "" when ours runs first. Packets it drops,
	// redirects or ends the chain on are not counted.
	InFront string
	// Error is why it is not attached, if it is not.
	Error string
}

// HooksNotFirst counts the attached hooks on which another program runs
// before ours.
func (h Health) HooksNotFirst() int {
	n := 0
	for _, hk := range h.Hooks {
		if hk.Attached && hk.InFront != "" {
			n++
		}
	}
	return n
}

// Snapshot is the result of one Read.
type Snapshot struct {
	Time    time.Time
	Records []Record
	Health  Health
	// Drops are the drop records (drops = true), a set of their own: a
	// dropped packet may also be in Records, as the hook saw it before the
	// kernel dropped it.
	Drops []Record
}
