package pktstatbpfreceiver

import (
	"github.com/pktstat-bpf/pktstat-bpf/core"
	"github.com/pktstat-bpf/pktstat-bpf/core/container"
	"github.com/pktstat-bpf/pktstat-bpf/otelreceiver/internal/metadata"
)

// flowAttributes maps a record onto every attribute it can fill; the
// metrics' selections decide which are recorded.
func flowAttributes(r *core.Record) metadata.FlowAttributes {
	a := metadata.FlowAttributes{
		InterfaceName: r.Interface,
		Direction:     r.Direction.OTelString(),
	}
	if r.Overflow {
		// An overflow record stands for many flows: only where and which
		// way they crossed is known, so nothing else is claimed.
		a.Overflow = true
		return a
	}
	switch r.IPVersion() {
	case 4:
		a.NetworkType = "ipv4"
	case 6:
		a.NetworkType = "ipv6"
	}
	a.Transport = r.Transport()
	if r.SrcAddr.IsValid() {
		a.SourceAddress = r.SrcAddr.String()
	}
	if r.DstAddr.IsValid() {
		a.DestinationAddress = r.DstAddr.String()
	}
	if r.HasPorts() {
		a.HasPorts = true
		a.SourcePort = int64(r.SrcPort)
		a.DestinationPort = int64(r.DstPort)
		a.ProtocolName = wellKnownProtocol(r.Proto, r.SrcPort, r.DstPort)
	}
	if typ, code, ok := r.ICMPTypeCode(); ok {
		a.HasICMP = true
		a.ICMPType = int64(typ)
		a.ICMPCode = int64(code)
	}
	a.PID = int64(r.PID)
	a.ExecutableName = r.Comm
	a.ContainerID = container.Parse(r.CgroupPath).ContainerID
	a.VLANID = int64(r.VLAN)
	return a
}

// wellKnownProtocols names the application protocol of a server port. The
// kernel programs do not look into payloads, so network.protocol.name is an
// inference from the port, not a detection.
var wellKnownProtocols = map[uint8]map[uint16]string{
	core.ProtoTCP: {
		21: "ftp", 22: "ssh", 23: "telnet", 25: "smtp", 53: "dns", 80: "http", 110: "pop3",
		143: "imap", 179: "bgp", 389: "ldap", 443: "https", 445: "smb", 465: "smtps",
		587: "smtp", 636: "ldaps", 853: "dns", 993: "imaps", 995: "pop3s", 1883: "mqtt",
		2379: "etcd", 3306: "mysql", 5432: "postgresql", 5672: "amqp", 6379: "redis",
		8080: "http", 9092: "kafka", 27017: "mongodb",
	},
	core.ProtoUDP: {
		53: "dns", 67: "dhcp", 68: "dhcp", 123: "ntp", 161: "snmp", 443: "quic", 514: "syslog",
		547: "dhcpv6", 853: "dns", 4789: "vxlan", 5353: "mdns", 6081: "geneve",
	},
}

func wellKnownProtocol(proto uint8, src, dst uint16) string {
	ports := wellKnownProtocols[proto]
	// The server side usually has the lower port; try it first so a client's
	// ephemeral port that happens to be listed does not win.
	lo, hi := min(src, dst), max(src, dst)
	if name, ok := ports[lo]; ok {
		return name
	}
	return ports[hi]
}
