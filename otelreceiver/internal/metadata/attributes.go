package metadata

import (
	"fmt"
	"math/bits"
	"slices"
	"strings"

	"go.opentelemetry.io/collector/pdata/pcommon"
)

// Attribute names, as they appear on data points and in the per-metric
// `attributes` lists of the config.
const (
	AttrNetworkInterfaceName = "network.interface.name"
	AttrNetworkIODirection   = "network.io.direction"
	AttrNetworkType          = "network.type"
	AttrNetworkTransport     = "network.transport"
	AttrSourceAddress        = "source.address"
	AttrSourcePort           = "source.port"
	AttrDestinationAddress   = "destination.address"
	AttrDestinationPort      = "destination.port"
	// A CIDR group's name and range stand in for the address: a group is
	// not an address, so source.address is then absent.
	AttrSourceGroup      = "pktstatbpf.source.group"
	AttrSourceCIDR       = "pktstatbpf.source.cidr"
	AttrDestinationGroup = "pktstatbpf.destination.group"
	AttrDestinationCIDR  = "pktstatbpf.destination.cidr"
	AttrProcessPID       = "process.pid"
	// AttrProcessComm is the kernel's task comm, a thread name of at most
	// 15 bytes that the process can change: not semconv's
	// process.executable.name, which is the base name of /proc/PID/exe.
	AttrProcessComm         = "pktstatbpf.process.comm"
	AttrContainerID         = "container.id"
	AttrK8sPodUID           = "k8s.pod.uid"
	AttrNetworkProtocolName = "network.protocol.name"
	AttrVLANID              = "pktstatbpf.vlan.id"
	AttrFlags               = "pktstatbpf.flags"
	AttrCgroupPath          = "pktstatbpf.cgroup.path"
	AttrICMPType            = "pktstatbpf.icmp.type"
	AttrICMPCode            = "pktstatbpf.icmp.code"
	// AttrOverflow marks the series that count packets of flows that did not
	// fit in the kernel table. It cannot be deselected: dropping it would
	// merge overflow totals into ordinary flows and hide that the table is full.
	AttrOverflow = "pktstatbpf.overflow"
	// AttrFiltered marks the series that count the packets the include and
	// exclude filters left out. It cannot be deselected either: without it
	// they would be summed into flows and the filtering hidden.
	AttrFiltered = "pktstatbpf.filtered"
	// AttrOther marks the series that sums the keys top_n or max_series left
	// out. It cannot be deselected either: without it the remainder would
	// look like a flow without attributes.
	AttrOther = "pktstatbpf.other"
	// AttrDropReason is the kernel's drop reason on the drop metrics. It
	// cannot be deselected: drops of different reasons would be summed.
	AttrDropReason = "pktstatbpf.drop.reason"
	// AttrHookState is the attribute of pktstatbpf.hook.count.
	AttrHookState = "pktstatbpf.hook.state"
	// AttrTCPFlag is the attribute pktstatbpf.network.flow.tcp.flags adds to
	// the flow attributes; it is always recorded.
	AttrTCPFlag = "pktstatbpf.tcp.flag"
)

// Values of AttrTCPFlag.
const (
	AttributeTCPFlagSyn    = "syn"
	AttributeTCPFlagSynack = "synack"
	AttributeTCPFlagFin    = "fin"
	AttributeTCPFlagRst    = "rst"
)

// Values of AttrHookState.
const (
	AttributeHookStateAttached = "attached"
	AttributeHookStateFailed   = "failed"
)

// SelectableFlowAttributes are the attributes a flow metric's `attributes`
// list may name, in the order of the selection bits. An empty list selects
// all of them; which ones a series carries is decided by the receiver's
// dimensions.
var SelectableFlowAttributes = []string{
	AttrNetworkInterfaceName,
	AttrNetworkIODirection,
	AttrNetworkType,
	AttrNetworkTransport,
	AttrSourceAddress,
	AttrSourcePort,
	AttrDestinationAddress,
	AttrDestinationPort,
	AttrProcessPID,
	AttrProcessComm,
	AttrContainerID,
	AttrK8sPodUID,
	AttrNetworkProtocolName,
	AttrVLANID,
	AttrFlags,
	AttrCgroupPath,
	AttrICMPType,
	AttrICMPCode,
	AttrSourceGroup,
	AttrSourceCIDR,
	AttrDestinationGroup,
	AttrDestinationCIDR,
}

// FlowAttributes are the attribute values of one series. The struct is
// comparable: after Select it is the identity of one output series, so
// series that differ only in deselected attributes are summed into one.
// Empty strings and unset Has* flags mean "absent".
type FlowAttributes struct {
	InterfaceName      string
	Direction          string
	NetworkType        string
	Transport          string
	SourceAddress      string
	DestinationAddress string
	// SourceGroup and SourceCIDR (and the destination's) are set instead of
	// the address when it falls in a CIDR group; with ungrouped_as_other the
	// group is "other" and the CIDR empty.
	SourceGroup, SourceCIDR           string
	DestinationGroup, DestinationCIDR string
	// HasSourcePort and HasDestinationPort say the port is a transport
	// port that was kept (not folded, not dropped).
	HasSourcePort      bool
	SourcePort         int64
	HasDestinationPort bool
	DestinationPort    int64
	// PID is 0 when unknown.
	PID          int64
	Comm         string
	ContainerID  string
	PodUID       string
	ProtocolName string
	// VLANID is 0 when untagged.
	VLANID     int64
	Flags      string
	CgroupPath string
	// HasICMPType and HasICMPCode say ICMPType and ICMPCode are set.
	HasICMPType bool
	ICMPType    int64
	HasICMPCode bool
	ICMPCode    int64
	Overflow    bool
	Filtered    bool
	Other       bool
	// DropReason is set on drop series only.
	DropReason string
}

// Bits of AttributeSelection, in the order of SelectableFlowAttributes.
const (
	bitNetworkInterfaceName uint32 = 1 << iota
	bitNetworkIODirection
	bitNetworkType
	bitNetworkTransport
	bitSourceAddress
	bitSourcePort
	bitDestinationAddress
	bitDestinationPort
	bitProcessPID
	bitProcessComm
	bitContainerID
	bitK8sPodUID
	bitNetworkProtocolName
	bitVLANID
	bitFlags
	bitCgroupPath
	bitICMPType
	bitICMPCode
	bitSourceGroup
	bitSourceCIDR
	bitDestinationGroup
	bitDestinationCIDR
)

// AttributeSelection is the set of attributes one metric records, one bit
// per entry of SelectableFlowAttributes: it is consulted for every attribute
// of every series at every scrape, so a lookup must not hash strings.
type AttributeSelection struct {
	bits uint32
}

// AllAttributes selects every attribute: the series' own (its dimensions)
// decide what is recorded.
func AllAttributes() AttributeSelection {
	return AttributeSelection{bits: 1<<len(SelectableFlowAttributes) - 1}
}

// NewAttributeSelection checks names against the known attributes.
func NewAttributeSelection(names []string) (AttributeSelection, error) {
	var s AttributeSelection
	for _, n := range names {
		i := slices.Index(SelectableFlowAttributes, n)
		if i < 0 {
			return AttributeSelection{}, fmt.Errorf("unknown attribute %q: choose from %s", n,
				strings.Join(SelectableFlowAttributes, ", "))
		}
		s.bits |= 1 << i
	}
	return s, nil
}

// Has reports whether the attribute is selected.
func (s AttributeSelection) Has(name string) bool {
	i := slices.Index(SelectableFlowAttributes, name)
	return i >= 0 && s.bits&(1<<i) != 0
}

func (s AttributeSelection) has(bit uint32) bool { return s.bits&bit != 0 }

// Select returns a with every attribute that s does not record cleared.
func (s AttributeSelection) Select(a FlowAttributes) FlowAttributes {
	out := FlowAttributes{Overflow: a.Overflow, Filtered: a.Filtered, Other: a.Other, DropReason: a.DropReason}
	if s.has(bitNetworkInterfaceName) {
		out.InterfaceName = a.InterfaceName
	}
	if s.has(bitNetworkIODirection) {
		out.Direction = a.Direction
	}
	if s.has(bitNetworkType) {
		out.NetworkType = a.NetworkType
	}
	if s.has(bitNetworkTransport) {
		out.Transport = a.Transport
	}
	if s.has(bitSourceAddress) {
		out.SourceAddress = a.SourceAddress
	}
	if s.has(bitDestinationAddress) {
		out.DestinationAddress = a.DestinationAddress
	}
	if s.has(bitSourcePort) {
		out.HasSourcePort, out.SourcePort = a.HasSourcePort, a.SourcePort
	}
	if s.has(bitDestinationPort) {
		out.HasDestinationPort, out.DestinationPort = a.HasDestinationPort, a.DestinationPort
	}
	if s.has(bitProcessPID) {
		out.PID = a.PID
	}
	if s.has(bitProcessComm) {
		out.Comm = a.Comm
	}
	if s.has(bitSourceGroup) {
		out.SourceGroup = a.SourceGroup
	}
	if s.has(bitSourceCIDR) {
		out.SourceCIDR = a.SourceCIDR
	}
	if s.has(bitDestinationGroup) {
		out.DestinationGroup = a.DestinationGroup
	}
	if s.has(bitDestinationCIDR) {
		out.DestinationCIDR = a.DestinationCIDR
	}
	if s.has(bitContainerID) {
		out.ContainerID = a.ContainerID
	}
	if s.has(bitK8sPodUID) {
		out.PodUID = a.PodUID
	}
	if s.has(bitNetworkProtocolName) {
		out.ProtocolName = a.ProtocolName
	}
	if s.has(bitVLANID) {
		out.VLANID = a.VLANID
	}
	if s.has(bitFlags) {
		out.Flags = a.Flags
	}
	if s.has(bitCgroupPath) {
		out.CgroupPath = a.CgroupPath
	}
	if s.has(bitICMPType) {
		out.HasICMPType, out.ICMPType = a.HasICMPType, a.ICMPType
	}
	if s.has(bitICMPCode) {
		out.HasICMPCode, out.ICMPCode = a.HasICMPCode, a.ICMPCode
	}
	return out
}

// put writes the selected attributes that have a value into m, after
// sizing m for them and extra more that the caller adds: a point's
// attribute slice is then allocated once, at its final length, whatever
// the dimensions. a is a pointer because it is large and read only.
func (s AttributeSelection) put(a *FlowAttributes, m pcommon.Map, extra int) {
	// Which to write, found first so that m is sized before it is filled.
	var put uint32
	has := func(bit uint32, ok bool) {
		if ok && s.has(bit) {
			put |= bit
		}
	}
	has(bitNetworkInterfaceName, a.InterfaceName != "")
	has(bitNetworkIODirection, a.Direction != "")
	has(bitNetworkType, a.NetworkType != "")
	has(bitNetworkTransport, a.Transport != "")
	has(bitSourceAddress, a.SourceAddress != "")
	has(bitSourceGroup, a.SourceGroup != "")
	has(bitSourceCIDR, a.SourceCIDR != "")
	has(bitSourcePort, a.HasSourcePort)
	has(bitDestinationAddress, a.DestinationAddress != "")
	has(bitDestinationGroup, a.DestinationGroup != "")
	has(bitDestinationCIDR, a.DestinationCIDR != "")
	has(bitDestinationPort, a.HasDestinationPort)
	has(bitProcessPID, a.PID != 0)
	has(bitProcessComm, a.Comm != "")
	has(bitContainerID, a.ContainerID != "")
	has(bitK8sPodUID, a.PodUID != "")
	has(bitNetworkProtocolName, a.ProtocolName != "")
	has(bitVLANID, a.VLANID != 0)
	has(bitFlags, a.Flags != "")
	has(bitCgroupPath, a.CgroupPath != "")
	has(bitICMPType, a.HasICMPType)
	has(bitICMPCode, a.HasICMPCode)
	n := bits.OnesCount32(put) + extra
	for _, f := range [...]bool{a.Overflow, a.Filtered, a.Other, a.DropReason != ""} {
		if f {
			n++
		}
	}
	m.EnsureCapacity(n)
	putStr := func(bit uint32, name, v string) {
		if put&bit != 0 {
			m.PutStr(name, v)
		}
	}
	putInt := func(bit uint32, name string, v int64) {
		if put&bit != 0 {
			m.PutInt(name, v)
		}
	}
	putStr(bitNetworkInterfaceName, AttrNetworkInterfaceName, a.InterfaceName)
	putStr(bitNetworkIODirection, AttrNetworkIODirection, a.Direction)
	putStr(bitNetworkType, AttrNetworkType, a.NetworkType)
	putStr(bitNetworkTransport, AttrNetworkTransport, a.Transport)
	putStr(bitSourceAddress, AttrSourceAddress, a.SourceAddress)
	putStr(bitSourceGroup, AttrSourceGroup, a.SourceGroup)
	putStr(bitSourceCIDR, AttrSourceCIDR, a.SourceCIDR)
	putInt(bitSourcePort, AttrSourcePort, a.SourcePort)
	putStr(bitDestinationAddress, AttrDestinationAddress, a.DestinationAddress)
	putStr(bitDestinationGroup, AttrDestinationGroup, a.DestinationGroup)
	putStr(bitDestinationCIDR, AttrDestinationCIDR, a.DestinationCIDR)
	putInt(bitDestinationPort, AttrDestinationPort, a.DestinationPort)
	putInt(bitProcessPID, AttrProcessPID, a.PID)
	putStr(bitProcessComm, AttrProcessComm, a.Comm)
	putStr(bitContainerID, AttrContainerID, a.ContainerID)
	putStr(bitK8sPodUID, AttrK8sPodUID, a.PodUID)
	putStr(bitNetworkProtocolName, AttrNetworkProtocolName, a.ProtocolName)
	putInt(bitVLANID, AttrVLANID, a.VLANID)
	putStr(bitFlags, AttrFlags, a.Flags)
	putStr(bitCgroupPath, AttrCgroupPath, a.CgroupPath)
	putInt(bitICMPType, AttrICMPType, a.ICMPType)
	putInt(bitICMPCode, AttrICMPCode, a.ICMPCode)
	if a.Overflow {
		m.PutBool(AttrOverflow, true)
	}
	if a.Filtered {
		m.PutBool(AttrFiltered, true)
	}
	if a.Other {
		m.PutBool(AttrOther, true)
	}
	if a.DropReason != "" {
		m.PutStr(AttrDropReason, a.DropReason)
	}
}
