package core

import (
	"strconv"
	"strings"
)

// IP protocol numbers that the kernel programs decode.
const (
	ProtoICMP    = 1
	ProtoIGMP    = 2
	ProtoTCP     = 6
	ProtoUDP     = 17
	ProtoGRE     = 47
	ProtoESP     = 50
	ProtoAH      = 51
	ProtoICMPv6  = 58
	ProtoOSPF    = 89
	ProtoSCTP    = 132
	ProtoUDPLite = 136
)

var protoNames = map[uint8]string{
	0:            "hopopt",
	ProtoICMP:    "icmp",
	ProtoIGMP:    "igmp",
	4:            "ipv4",
	ProtoTCP:     "tcp",
	ProtoUDP:     "udp",
	41:           "ipv6",
	43:           "ipv6-route",
	44:           "ipv6-frag",
	ProtoGRE:     "gre",
	ProtoESP:     "esp",
	ProtoAH:      "ah",
	ProtoICMPv6:  "ipv6-icmp",
	59:           "ipv6-nonxt",
	60:           "ipv6-opts",
	ProtoOSPF:    "ospf",
	103:          "pim",
	112:          "vrrp",
	ProtoSCTP:    "sctp",
	ProtoUDPLite: "udplite",
	143:          "ethernet",
}

// ProtoName is the lower-case IANA keyword for an IP protocol number, or the
// number in decimal when it has none here.
func ProtoName(p uint8) string {
	if n, ok := protoNames[p]; ok {
		return n
	}
	return strconv.Itoa(int(p))
}

// Transport names the protocol of a flow for the proto tag: the IANA keyword
// of the IP protocol for IP flows, "arp" for ARP, and "ethertype-0xNNNN" for
// any other network protocol.
func (k FlowKey) Transport() string {
	switch {
	case k.IPVersion() != 0:
		return ProtoName(k.Proto)
	case k.EtherType == EtherTypeARP:
		return "arp"
	}
	return "ethertype-0x" + strconv.FormatUint(uint64(k.EtherType)|0x10000, 16)[1:]
}

// IsNonIP reports whether a Transport value names a network protocol other
// than IP ("arp", "ethertype-0xNNNN") rather than an IP protocol, so that
// an adapter can tell a non-IP flow from an IP flow whose ip_version
// dimension was dropped.
func IsNonIP(transport string) bool {
	return transport == "arp" || strings.HasPrefix(transport, "ethertype-0x")
}
