package metadata

import (
	"slices"
	"testing"
)

// TestSelectionBitsFollowNames guards the bit constants against a reordering
// of DefaultFlowAttributes or OptionalFlowAttributes.
func TestSelectionBitsFollowNames(t *testing.T) {
	bits := map[string]uint32{
		AttrNetworkInterfaceName: bitNetworkInterfaceName, AttrNetworkIODirection: bitNetworkIODirection,
		AttrNetworkType: bitNetworkType, AttrNetworkTransport: bitNetworkTransport,
		AttrSourceAddress: bitSourceAddress, AttrSourcePort: bitSourcePort,
		AttrDestinationAddress: bitDestinationAddress, AttrDestinationPort: bitDestinationPort,
		AttrProcessPID: bitProcessPID, AttrProcessExecutable: bitProcessExecutable,
		AttrContainerID: bitContainerID, AttrNetworkProtocolName: bitNetworkProtocolName,
		AttrVLANID: bitVLANID, AttrICMPType: bitICMPType, AttrICMPCode: bitICMPCode,
	}
	if len(bits) != len(selectableAttributes) {
		t.Fatalf("%d bits for %d attributes", len(bits), len(selectableAttributes))
	}
	for name, bit := range bits {
		s, err := NewAttributeSelection([]string{name})
		if err != nil {
			t.Fatal(err)
		}
		if s.bits != bit || !s.has(bit) || !s.Has(name) {
			t.Errorf("%s: selection bits %b, constant %b", name, s.bits, bit)
		}
		for _, other := range selectableAttributes {
			if other != name && s.Has(other) {
				t.Errorf("selecting %s also selects %s", name, other)
			}
		}
	}
	if !slices.Equal(selectableAttributes[:len(DefaultFlowAttributes)], DefaultFlowAttributes) {
		t.Error("default attributes must come first")
	}
}
