package metadata

import (
	"fmt"
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
	AttrProcessPID           = "process.pid"
	AttrProcessExecutable    = "process.executable.name"
	AttrContainerID          = "container.id"
	AttrNetworkProtocolName  = "network.protocol.name"
	AttrVLANID               = "pktstatbpf.vlan.id"
	AttrICMPType             = "pktstatbpf.icmp.type"
	AttrICMPCode             = "pktstatbpf.icmp.code"
	// AttrOverflow marks the series that count packets of flows that did not
	// fit in the kernel table. It cannot be deselected: dropping it would
	// merge overflow totals into ordinary flows and hide that the table is full.
	AttrOverflow = "pktstatbpf.overflow"
)

// DefaultFlowAttributes are recorded on the flow metrics unless the config
// selects others; the remaining selectable attributes are opt-in.
var DefaultFlowAttributes = []string{
	AttrNetworkInterfaceName,
	AttrNetworkIODirection,
	AttrNetworkType,
	AttrNetworkTransport,
	AttrSourceAddress,
	AttrSourcePort,
	AttrDestinationAddress,
	AttrDestinationPort,
}

// OptionalFlowAttributes are off by default because they multiply the
// number of series (pid, vlan, icmp code) or need cgroup mode to be filled.
var OptionalFlowAttributes = []string{
	AttrProcessPID,
	AttrProcessExecutable,
	AttrContainerID,
	AttrNetworkProtocolName,
	AttrVLANID,
	AttrICMPType,
	AttrICMPCode,
}

// FlowAttributes are the attribute values of one flow. The struct is
// comparable: after Select it is the identity of one output series, so flows
// that differ only in deselected attributes are summed into one series.
type FlowAttributes struct {
	InterfaceName      string
	Direction          string
	NetworkType        string
	Transport          string
	SourceAddress      string
	DestinationAddress string
	// HasPorts says SourcePort and DestinationPort are transport ports.
	HasPorts        bool
	SourcePort      int64
	DestinationPort int64
	// PID is 0 when unknown.
	PID            int64
	ExecutableName string
	ContainerID    string
	ProtocolName   string
	// VLANID is 0 when untagged.
	VLANID int64
	// HasICMP says ICMPType and ICMPCode are set.
	HasICMP  bool
	ICMPType int64
	ICMPCode int64
	Overflow bool
}

// Bits of AttributeSelection, in the order of selectableAttributes.
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
	bitProcessExecutable
	bitContainerID
	bitNetworkProtocolName
	bitVLANID
	bitICMPType
	bitICMPCode
)

// selectableAttributes indexes the bits of an AttributeSelection.
var selectableAttributes = slices.Concat(DefaultFlowAttributes, OptionalFlowAttributes)

// AttributeSelection is the set of attributes one metric records, one bit
// per entry of selectableAttributes: it is consulted for every attribute of
// every flow at every scrape, so a lookup must not hash strings.
type AttributeSelection struct {
	bits uint32
}

// NewAttributeSelection checks names against the known attributes.
func NewAttributeSelection(names []string) (AttributeSelection, error) {
	var s AttributeSelection
	for _, n := range names {
		i := slices.Index(selectableAttributes, n)
		if i < 0 {
			return AttributeSelection{}, fmt.Errorf("unknown attribute %q: choose from %s", n,
				strings.Join(selectableAttributes, ", "))
		}
		s.bits |= 1 << i
	}
	return s, nil
}

// Has reports whether the attribute is selected.
func (s AttributeSelection) Has(name string) bool {
	i := slices.Index(selectableAttributes, name)
	return i >= 0 && s.bits&(1<<i) != 0
}

func (s AttributeSelection) has(bit uint32) bool { return s.bits&bit != 0 }

// Select returns a with every attribute that s does not record cleared.
func (s AttributeSelection) Select(a FlowAttributes) FlowAttributes {
	out := FlowAttributes{Overflow: a.Overflow}
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
	if a.HasPorts && (s.has(bitSourcePort) || s.has(bitDestinationPort)) {
		out.HasPorts = true
		if s.has(bitSourcePort) {
			out.SourcePort = a.SourcePort
		}
		if s.has(bitDestinationPort) {
			out.DestinationPort = a.DestinationPort
		}
	}
	if s.has(bitProcessPID) {
		out.PID = a.PID
	}
	if s.has(bitProcessExecutable) {
		out.ExecutableName = a.ExecutableName
	}
	if s.has(bitContainerID) {
		out.ContainerID = a.ContainerID
	}
	if s.has(bitNetworkProtocolName) {
		out.ProtocolName = a.ProtocolName
	}
	if s.has(bitVLANID) {
		out.VLANID = a.VLANID
	}
	if a.HasICMP && (s.has(bitICMPType) || s.has(bitICMPCode)) {
		out.HasICMP = true
		if s.has(bitICMPType) {
			out.ICMPType = a.ICMPType
		}
		if s.has(bitICMPCode) {
			out.ICMPCode = a.ICMPCode
		}
	}
	return out
}

// put writes the selected attributes that have a value into m.
func (s AttributeSelection) put(a FlowAttributes, m pcommon.Map) {
	m.EnsureCapacity(len(DefaultFlowAttributes))
	putStr := func(bit uint32, name, v string) {
		if v != "" && s.has(bit) {
			m.PutStr(name, v)
		}
	}
	putStr(bitNetworkInterfaceName, AttrNetworkInterfaceName, a.InterfaceName)
	putStr(bitNetworkIODirection, AttrNetworkIODirection, a.Direction)
	putStr(bitNetworkType, AttrNetworkType, a.NetworkType)
	putStr(bitNetworkTransport, AttrNetworkTransport, a.Transport)
	putStr(bitSourceAddress, AttrSourceAddress, a.SourceAddress)
	if a.HasPorts && s.has(bitSourcePort) {
		m.PutInt(AttrSourcePort, a.SourcePort)
	}
	putStr(bitDestinationAddress, AttrDestinationAddress, a.DestinationAddress)
	if a.HasPorts && s.has(bitDestinationPort) {
		m.PutInt(AttrDestinationPort, a.DestinationPort)
	}
	if a.PID != 0 && s.has(bitProcessPID) {
		m.PutInt(AttrProcessPID, a.PID)
	}
	putStr(bitProcessExecutable, AttrProcessExecutable, a.ExecutableName)
	putStr(bitContainerID, AttrContainerID, a.ContainerID)
	putStr(bitNetworkProtocolName, AttrNetworkProtocolName, a.ProtocolName)
	if a.VLANID != 0 && s.has(bitVLANID) {
		m.PutInt(AttrVLANID, a.VLANID)
	}
	if a.HasICMP && s.has(bitICMPType) {
		m.PutInt(AttrICMPType, a.ICMPType)
	}
	if a.HasICMP && s.has(bitICMPCode) {
		m.PutInt(AttrICMPCode, a.ICMPCode)
	}
	if a.Overflow {
		m.PutBool(AttrOverflow, true)
	}
}
