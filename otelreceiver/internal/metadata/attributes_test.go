package metadata

import (
	"testing"
)

// TestSelectionBitsFollowNames guards the bit constants against a reordering
// of SelectableFlowAttributes.
func TestSelectionBitsFollowNames(t *testing.T) {
	bits := map[string]uint32{
		AttrNetworkInterfaceName: bitNetworkInterfaceName, AttrNetworkIODirection: bitNetworkIODirection,
		AttrNetworkType: bitNetworkType, AttrNetworkTransport: bitNetworkTransport,
		AttrSourceAddress: bitSourceAddress, AttrSourcePort: bitSourcePort,
		AttrDestinationAddress: bitDestinationAddress, AttrDestinationPort: bitDestinationPort,
		AttrProcessPID: bitProcessPID, AttrProcessComm: bitProcessComm,
		AttrContainerID: bitContainerID, AttrK8sPodUID: bitK8sPodUID,
		AttrNetworkProtocolName: bitNetworkProtocolName,
		AttrVLANID:              bitVLANID, AttrFlags: bitFlags, AttrCgroupPath: bitCgroupPath,
		AttrICMPType: bitICMPType, AttrICMPCode: bitICMPCode,
		AttrSourceGroup: bitSourceGroup, AttrSourceCIDR: bitSourceCIDR,
		AttrDestinationGroup: bitDestinationGroup, AttrDestinationCIDR: bitDestinationCIDR,
	}
	if len(bits) != len(SelectableFlowAttributes) {
		t.Fatalf("%d bits for %d attributes", len(bits), len(SelectableFlowAttributes))
	}
	for name, bit := range bits {
		s, err := NewAttributeSelection([]string{name})
		if err != nil {
			t.Fatal(err)
		}
		if s.bits != bit || !s.has(bit) || !s.Has(name) {
			t.Errorf("%s: selection bits %b, constant %b", name, s.bits, bit)
		}
		for _, other := range SelectableFlowAttributes {
			if other != name && s.Has(other) {
				t.Errorf("selecting %s also selects %s", name, other)
			}
		}
		if !AllAttributes().Has(name) {
			t.Errorf("AllAttributes lacks %s", name)
		}
	}
	if all, err := NewAttributeSelection(SelectableFlowAttributes); err != nil || all != AllAttributes() {
		t.Errorf("AllAttributes() = %b, every name selects %b (%v)", AllAttributes().bits, all.bits, err)
	}
}
