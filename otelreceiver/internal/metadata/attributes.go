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

// AttributeSelection is the set of attributes one metric records.
type AttributeSelection struct {
	names map[string]bool
}

// NewAttributeSelection checks names against the known attributes.
func NewAttributeSelection(names []string) (AttributeSelection, error) {
	s := AttributeSelection{names: make(map[string]bool, len(names))}
	for _, n := range names {
		if !slices.Contains(DefaultFlowAttributes, n) && !slices.Contains(OptionalFlowAttributes, n) {
			return AttributeSelection{}, fmt.Errorf("unknown attribute %q: choose from %s", n,
				strings.Join(slices.Concat(DefaultFlowAttributes, OptionalFlowAttributes), ", "))
		}
		s.names[n] = true
	}
	return s, nil
}

// Has reports whether the attribute is selected.
func (s AttributeSelection) Has(name string) bool { return s.names[name] }

// Select returns a with every attribute that s does not record cleared.
func (s AttributeSelection) Select(a FlowAttributes) FlowAttributes {
	out := FlowAttributes{Overflow: a.Overflow}
	if s.Has(AttrNetworkInterfaceName) {
		out.InterfaceName = a.InterfaceName
	}
	if s.Has(AttrNetworkIODirection) {
		out.Direction = a.Direction
	}
	if s.Has(AttrNetworkType) {
		out.NetworkType = a.NetworkType
	}
	if s.Has(AttrNetworkTransport) {
		out.Transport = a.Transport
	}
	if s.Has(AttrSourceAddress) {
		out.SourceAddress = a.SourceAddress
	}
	if s.Has(AttrDestinationAddress) {
		out.DestinationAddress = a.DestinationAddress
	}
	if a.HasPorts && (s.Has(AttrSourcePort) || s.Has(AttrDestinationPort)) {
		out.HasPorts = true
		if s.Has(AttrSourcePort) {
			out.SourcePort = a.SourcePort
		}
		if s.Has(AttrDestinationPort) {
			out.DestinationPort = a.DestinationPort
		}
	}
	if s.Has(AttrProcessPID) {
		out.PID = a.PID
	}
	if s.Has(AttrProcessExecutable) {
		out.ExecutableName = a.ExecutableName
	}
	if s.Has(AttrContainerID) {
		out.ContainerID = a.ContainerID
	}
	if s.Has(AttrNetworkProtocolName) {
		out.ProtocolName = a.ProtocolName
	}
	if s.Has(AttrVLANID) {
		out.VLANID = a.VLANID
	}
	if a.HasICMP && (s.Has(AttrICMPType) || s.Has(AttrICMPCode)) {
		out.HasICMP = true
		if s.Has(AttrICMPType) {
			out.ICMPType = a.ICMPType
		}
		if s.Has(AttrICMPCode) {
			out.ICMPCode = a.ICMPCode
		}
	}
	return out
}

// put writes the selected attributes that have a value into m.
func (s AttributeSelection) put(a FlowAttributes, m pcommon.Map) {
	putStr := func(name, v string) {
		if v != "" && s.Has(name) {
			m.PutStr(name, v)
		}
	}
	putStr(AttrNetworkInterfaceName, a.InterfaceName)
	putStr(AttrNetworkIODirection, a.Direction)
	putStr(AttrNetworkType, a.NetworkType)
	putStr(AttrNetworkTransport, a.Transport)
	putStr(AttrSourceAddress, a.SourceAddress)
	if a.HasPorts && s.Has(AttrSourcePort) {
		m.PutInt(AttrSourcePort, a.SourcePort)
	}
	putStr(AttrDestinationAddress, a.DestinationAddress)
	if a.HasPorts && s.Has(AttrDestinationPort) {
		m.PutInt(AttrDestinationPort, a.DestinationPort)
	}
	if a.PID != 0 && s.Has(AttrProcessPID) {
		m.PutInt(AttrProcessPID, a.PID)
	}
	putStr(AttrProcessExecutable, a.ExecutableName)
	putStr(AttrContainerID, a.ContainerID)
	putStr(AttrNetworkProtocolName, a.ProtocolName)
	if a.VLANID != 0 && s.Has(AttrVLANID) {
		m.PutInt(AttrVLANID, a.VLANID)
	}
	if a.HasICMP && s.Has(AttrICMPType) {
		m.PutInt(AttrICMPType, a.ICMPType)
	}
	if a.HasICMP && s.Has(AttrICMPCode) {
		m.PutInt(AttrICMPCode, a.ICMPCode)
	}
	if a.Overflow {
		m.PutBool(AttrOverflow, true)
	}
}
