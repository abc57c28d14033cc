package aggregate

import "strings"

// Dimension is a part of the flow key that can become a tag or attribute.
// Its value is the name used in the dimensions config key and, for Telegraf,
// the tag name.
type Dimension string

// The dimensions, in the order Dimensions returns them.
const (
	DimInterface   Dimension = "interface"
	DimDirection   Dimension = "direction"
	DimIPVersion   Dimension = "ip_version"
	DimProto       Dimension = "proto"
	DimSrcIP       Dimension = "src_ip"
	DimDstIP       Dimension = "dst_ip"
	DimSrcPort     Dimension = "src_port"
	DimDstPort     Dimension = "dst_port"
	DimVLAN        Dimension = "vlan"
	DimFlags       Dimension = "flags"
	DimPID         Dimension = "pid"
	DimComm        Dimension = "comm"
	DimCgroup      Dimension = "cgroup"
	DimContainerID Dimension = "container_id"
	DimPodUID      Dimension = "pod_uid"
	DimAppProto    Dimension = "app_proto"
)

// allDimensions fixes each dimension's bit and the output order.
var allDimensions = []Dimension{
	DimInterface, DimDirection, DimIPVersion, DimProto,
	DimSrcIP, DimDstIP, DimSrcPort, DimDstPort,
	DimVLAN, DimFlags, DimPID, DimComm, DimCgroup, DimContainerID, DimPodUID, DimAppProto,
}

// DefaultDimensions are the tags DESIGN.md promises in both agents; the
// others are opt-in because they multiply series or need cgroup/kprobe mode.
var DefaultDimensions = []Dimension{
	DimInterface, DimDirection, DimIPVersion, DimProto,
	DimSrcIP, DimDstIP, DimSrcPort, DimDstPort,
}

// dimSet is a bit per dimension, indexed like allDimensions.
type dimSet uint32

func dimBit(d Dimension) dimSet {
	for i, x := range allDimensions {
		if x == d {
			return 1 << i
		}
	}
	return 0
}

func (s dimSet) has(d Dimension) bool { return s&dimBit(d) != 0 }

func (s dimSet) list() []Dimension {
	var out []Dimension
	for i, d := range allDimensions {
		if s&(1<<i) != 0 {
			out = append(out, d)
		}
	}
	return out
}

func dimensionNames() string {
	names := make([]string, len(allDimensions))
	for i, d := range allDimensions {
		names[i] = string(d)
	}
	return strings.Join(names, ", ")
}
