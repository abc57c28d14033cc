package core

import (
	"encoding/binary"
	"slices"

	"github.com/gopacket/gopacket"
	"github.com/gopacket/gopacket/layers"

	"github.com/pktstat-bpf/pktstat-bpf/bpf"
)

// The reference side of the differential parse fuzzing: the key gopacket's
// decoders give a frame, built from their decoded fields, never from the
// kernel parser's code. Where the two legitimately differ the reference
// applies one of the named exceptions below and records it, so a difference
// is either one of these or a failure.
const (
	// gopacket turns a value below 0x600 into EtherTypeLLC plus a length;
	// the key keeps the raw field, so that such frames are not all "0".
	excLLCLength = "802.3 length in place of an EtherType: the key keeps the raw value"
	// The parser follows an 802.1ad outer and an 802.1Q inner tag; gopacket follows any number.
	excVLANDepth = "more than two VLAN tags: keyed by the third tag's EtherType, nothing past it"
	// gopacket validates every IPv4 option TLV; the parser skips options by IHL.
	// The reference decodes a copy whose options are NOPs.
	excIPv4Options = "ipv4 options gopacket rejects: skipped by IHL"
	// IHL below 5, total length below the header, or options past the frame.
	// gopacket then decodes no field; the reference decodes the fixed 20 bytes
	// alone and expects them, truncated, no ports.
	excIPv4Header = "ipv4 header gopacket rejects: keyed by its fixed 20 bytes, truncated"
	// gopacket decodes any version nibble as the EtherType says.
	excIPVersion = "ip version nibble disagrees with the EtherType: truncated, no addresses"
	// gopacket accepts a zero IPv6 payload length only with a hop-by-hop
	// jumbo option and then bounds the packet by it; the kernel also builds
	// BIG TCP GSO packets with a zero length and no option, so the parser
	// takes zero as "to the end of the frame" in every case.
	excIPv6ZeroLength = "ipv6 payload length 0: unbounded, jumbo option not required"
	// gopacket validates hop-by-hop and destination option TLVs; the parser
	// skips extension headers by their length, as gopacket's own
	// IPv6ExtensionSkipper does, which the reference uses for the chain.
	excIPv6ExtOptions = "ipv6 extension header options gopacket rejects: skipped by length"
	// MAX_IPV6_EXT_HDRS in bpf/parse.h.
	excIPv6ExtDepth = "more than 6 ipv6 extension headers: truncated, keyed by the 7th header's type"
	// gopacket does not decode past any fragment header or IPv4 fragment
	// (LayerTypeFragment); the parser keys the transport header a first
	// fragment carries, and the reference decodes it from the fragment's payload.
	excFirstFragment = "first fragment: keyed by the transport header it carries"
	// gopacket needs a whole fixed header (tcp 20, udp 8, icmp 8, ...); the
	// parser needs only the identifier bytes. The reference decodes a
	// zero-padded copy: the identifiers are always real bytes.
	excShortTransport = "transport header shorter than gopacket's minimum: keyed by its identifier bytes"
	// tcp data offset or options, gre optional fields, ah length, ospf body: the
	// parser reads the identifiers only and does not judge the rest.
	excTransportRest = "transport header gopacket rejects after its identifiers: keyed by them"
	// gopacket decodes OSPF versions 2 and 3 only.
	excOSPFVersion = "ospf version gopacket does not know: keyed by its first two bytes"
	// AH is a transport to the parser (its SPI is the key); gopacket follows it.
	excAHTerminal = "ah keyed by its spi, not followed to the header inside"
	// The parser reads ARP addresses for IPv4 over Ethernet only.
	excARPOther = "arp other than ipv4 over ethernet: keyed by the operation only"
	// A frame shorter than the IP length is what TC sees of a non-linear
	// skb's head, not a short header: the parser cannot flag it.
	excIPBeyondFrame = "ip length beyond the frame: not truncated"
)

const maxIPv6ExtHdrs = 6 // MAX_IPV6_EXT_HDRS in bpf/parse.h

// parseRef is the reference verdict on one frame.
type parseRef struct {
	key bpf.FlowFlowKey // Ifindex and Direction are left 0
	// ipEnd is where the IP packet ends by its own length field when that is
	// before the frame's end (Ethernet padding follows), else 0. Nothing
	// past it may change the key.
	ipEnd      int
	exceptions []string
}

func (r *parseRef) except(name string) { r.exceptions = append(r.exceptions, name) }
func (r *parseRef) truncated()         { r.key.Flags |= uint8(FlagTruncated) }

// referenceKey decodes frame (at least an Ethernet header) with gopacket.
func referenceKey(frame []byte) parseRef {
	var r parseRef
	nf := gopacket.NilDecodeFeedback
	var eth layers.Ethernet
	if err := eth.DecodeFromBytes(frame, nf); err != nil {
		r.truncated()
		return r
	}
	etype := uint16(eth.EthernetType)
	data := frame[14:]
	if eth.EthernetType == layers.EthernetTypeLLC {
		etype = eth.Length
		if etype != 0 {
			r.except(excLLCLength)
		}
	}
	for i := 0; i < 2 && (etype == uint16(layers.EthernetTypeDot1Q) || etype == uint16(layers.EthernetTypeQinQ)); i++ {
		var q layers.Dot1Q
		if err := q.DecodeFromBytes(data, nf); err != nil {
			r.key.EthProto = etype
			r.truncated()
			return r
		}
		if i == 0 {
			r.key.VlanId = q.VLANIdentifier
		}
		etype = uint16(q.Type)
		data = data[4:] // q.Payload is cut to an 802.3 length, which has no L3 to parse
	}
	r.key.EthProto = etype
	off := len(frame) - len(data)
	switch layers.EthernetType(etype) {
	case layers.EthernetTypeDot1Q, layers.EthernetTypeQinQ:
		r.except(excVLANDepth)
	case layers.EthernetTypeIPv4:
		r.ipv4(frame, off)
	case layers.EthernetTypeIPv6:
		r.ipv6(frame, off)
	case layers.EthernetTypeARP:
		r.arp(data)
	}
	return r
}

func (r *parseRef) ipv4(frame []byte, off int) {
	nf := gopacket.NilDecodeFeedback
	data := frame[off:]
	var ip layers.IPv4
	err := ip.DecodeFromBytes(data, nf)
	if len(data) < 20 {
		r.truncated()
		return
	}
	// Set before any check fails.
	length, ihl := int(ip.Length), int(ip.IHL)*4
	if length >= 20 && off+length < len(frame) {
		r.ipEnd = off + length
	}
	if err != nil && ihl > 20 {
		nops := slices.Clone(data)
		for i := 20; i < ihl && i < len(nops); i++ {
			nops[i] = 1 // NOP
		}
		if ip.DecodeFromBytes(nops, nf) == nil {
			r.except(excIPv4Options)
			err = nil
		}
	}
	if err != nil {
		fixed := slices.Clone(data[:20])
		fixed[0] = fixed[0]&0xf0 | 5
		binary.BigEndian.PutUint16(fixed[2:], 20)
		if err := ip.DecodeFromBytes(fixed, nf); err != nil {
			panic("fixed ipv4 header does not decode: " + err.Error())
		}
		if r.wrongVersion(ip.Version, 4) {
			return
		}
		r.except(excIPv4Header)
		r.ipv4Fixed(&ip)
		r.truncated()
		return
	}
	if r.wrongVersion(ip.Version, 4) {
		return
	}
	if length > len(data) {
		r.except(excIPBeyondFrame)
	}
	r.ipv4Fixed(&ip)
	if ip.FragOffset != 0 {
		return
	}
	if ip.Flags&layers.IPv4MoreFragments != 0 {
		r.except(excFirstFragment)
	}
	r.transport(ip.Protocol, ip.Payload)
}

// wrongVersion keys a version nibble other than the EtherType's as the parser does.
func (r *parseRef) wrongVersion(got, want uint8) bool {
	if got == want {
		return false
	}
	r.except(excIPVersion)
	r.truncated()
	return true
}

func (r *parseRef) ipv4Fixed(ip *layers.IPv4) {
	copy(r.key.SrcAddr[:], ip.SrcIP.To4())
	copy(r.key.DstAddr[:], ip.DstIP.To4())
	r.key.IpProto = uint8(ip.Protocol)
	if ip.FragOffset != 0 {
		r.key.Flags |= uint8(FlagFragment)
	}
}

func (r *parseRef) ipv6(frame []byte, off int) {
	nf := gopacket.NilDecodeFeedback
	data := frame[off:]
	var ip layers.IPv6
	// Its errors past the fixed header are about hop-by-hop options and
	// jumbograms, which the chain below judges by the parser's rules; the
	// fixed fields are set by then.
	_ = ip.DecodeFromBytes(data, nf)
	if len(data) < 40 {
		r.truncated()
		return
	}
	if r.wrongVersion(ip.Version, 6) {
		return
	}
	copy(r.key.SrcAddr[:], ip.SrcIP)
	copy(r.key.DstAddr[:], ip.DstIP)
	payload := data[40:]
	if ip.Length == 0 {
		r.except(excIPv6ZeroLength)
	} else if n := int(ip.Length); n < len(payload) {
		payload = payload[:n]
		r.ipEnd = off + 40 + n
	} else if n > len(payload) {
		r.except(excIPBeyondFrame)
	}
	nh := ip.NextHeader
	for n := 0; ; n++ {
		switch nh {
		case layers.IPProtocolIPv6HopByHop, layers.IPProtocolIPv6Routing, layers.IPProtocolIPv6Destination, layers.IPProtocolIPv6Fragment:
			if n == maxIPv6ExtHdrs {
				r.except(excIPv6ExtDepth)
				r.key.IpProto = uint8(nh)
				r.truncated()
				return
			}
		}
		switch nh {
		case layers.IPProtocolIPv6HopByHop, layers.IPProtocolIPv6Routing, layers.IPProtocolIPv6Destination:
			var x layers.IPv6ExtensionSkipper
			if err := x.DecodeFromBytes(payload, nf); err != nil {
				r.key.IpProto = uint8(nh)
				r.truncated()
				return
			}
			if optionsRejected(nh, payload) {
				r.except(excIPv6ExtOptions)
			}
			nh, payload = x.NextHeader, x.Payload
		case layers.IPProtocolIPv6Fragment:
			var f layers.IPv6Fragment
			if err := f.DecodeFromBytes(payload, nf); err != nil {
				r.key.IpProto = uint8(nh)
				r.truncated()
				return
			}
			if f.FragmentOffset != 0 {
				r.key.IpProto = uint8(f.NextHeader)
				r.key.Flags |= uint8(FlagFragment)
				return
			}
			if f.MoreFragments {
				r.except(excFirstFragment)
			}
			nh, payload = f.NextHeader, f.Payload
		default:
			r.key.IpProto = uint8(nh)
			r.transport(nh, payload)
			return
		}
	}
}

// optionsRejected says whether gopacket's full decoder of a hop-by-hop or
// destination options header refuses one the skipper accepted.
func optionsRejected(nh layers.IPProtocol, b []byte) bool {
	nf := gopacket.NilDecodeFeedback
	switch nh {
	case layers.IPProtocolIPv6HopByHop:
		var h layers.IPv6HopByHop
		return h.DecodeFromBytes(b, nf) != nil
	case layers.IPProtocolIPv6Destination:
		var d layers.IPv6Destination
		return d.DecodeFromBytes(b, nf) != nil
	}
	return false
}

// transportSizes holds, per protocol with identifiers in the key, the
// bytes they take (need) and gopacket's smallest header (min).
var transportSizes = map[layers.IPProtocol]struct{ need, min int }{
	layers.IPProtocolTCP:     {4, 20},
	layers.IPProtocolUDP:     {4, 8},
	layers.IPProtocolUDPLite: {4, 8},
	layers.IPProtocolSCTP:    {4, 12},
	layers.IPProtocolGRE:     {4, 4},
	layers.IPProtocolESP:     {4, 8},
	layers.IPProtocolICMPv4:  {2, 8},
	layers.IPProtocolICMPv6:  {2, 4},
	layers.IPProtocolOSPF:    {2, 24},
	layers.IPProtocolAH:      {8, 12},
}

// transport keys the identifiers of proto's header at the start of b.
func (r *parseRef) transport(proto layers.IPProtocol, b []byte) {
	nf := gopacket.NilDecodeFeedback
	size, ok := transportSizes[proto]
	if !ok {
		return
	}
	need, min := size.need, size.min
	if len(b) < need {
		r.truncated()
		return
	}
	if len(b) < min {
		r.except(excShortTransport)
		b = append(slices.Clone(b), make([]byte, min-len(b))...)
	}
	var err error
	set := func(s, d uint16) { r.key.SrcPort, r.key.DstPort = s, d }
	switch proto {
	case layers.IPProtocolTCP:
		var t layers.TCP
		err = t.DecodeFromBytes(b, nf) // the ports are set before any check of the rest
		set(uint16(t.SrcPort), uint16(t.DstPort))
	case layers.IPProtocolUDP:
		var u layers.UDP
		err = u.DecodeFromBytes(b, nf)
		set(uint16(u.SrcPort), uint16(u.DstPort))
	case layers.IPProtocolUDPLite:
		p := gopacket.NewPacket(b, layers.LayerTypeUDPLite, gopacket.NoCopy)
		u := p.Layer(layers.LayerTypeUDPLite).(*layers.UDPLite)
		set(uint16(u.SrcPort), uint16(u.DstPort))
	case layers.IPProtocolSCTP:
		var s layers.SCTP
		err = s.DecodeFromBytes(b, nf)
		set(uint16(s.SrcPort), uint16(s.DstPort))
	case layers.IPProtocolGRE:
		var g layers.GRE
		err = g.DecodeFromBytes(b, nf) // the first word and the protocol are set before the optional fields
		w := uint16(g.Flags)<<3 | uint16(g.Version) | uint16(g.RecursionControl)<<8
		for i, bit := range []bool{g.StrictSourceRoute, g.SeqPresent, g.KeyPresent, g.RoutingPresent, g.ChecksumPresent} {
			if bit {
				w |= 1 << (11 + i)
			}
		}
		set(w, uint16(g.Protocol))
	case layers.IPProtocolESP:
		var e layers.IPSecESP
		err = e.DecodeFromBytes(b, nf)
		set(uint16(e.SPI>>16), uint16(e.SPI))
	case layers.IPProtocolAH:
		var a layers.IPSecAH
		err = a.DecodeFromBytes(b, nf) // the SPI is set before the length check
		set(uint16(a.SPI>>16), uint16(a.SPI))
		r.except(excAHTerminal)
	case layers.IPProtocolICMPv4:
		var i layers.ICMPv4
		err = i.DecodeFromBytes(b, nf)
		set(uint16(i.TypeCode.Type()), uint16(i.TypeCode.Code()))
	case layers.IPProtocolICMPv6:
		var i layers.ICMPv6
		err = i.DecodeFromBytes(b, nf)
		set(uint16(i.TypeCode.Type()), uint16(i.TypeCode.Code()))
	case layers.IPProtocolOSPF:
		var v2 layers.OSPFv2
		var v3 layers.OSPFv3
		switch b[0] { // gopacket's decodeOSPF dispatches on the version the same way
		case 2:
			err = v2.DecodeFromBytes(b, nf)
			set(uint16(v2.Version), uint16(v2.Type))
		case 3:
			err = v3.DecodeFromBytes(b, nf)
			set(uint16(v3.Version), uint16(v3.Type))
		default:
			r.except(excOSPFVersion)
			set(uint16(b[0]), uint16(b[1]))
		}
	}
	if err != nil {
		r.except(excTransportRest)
	}
}

func (r *parseRef) arp(b []byte) {
	var a layers.ARP
	err := a.DecodeFromBytes(b, gopacket.NilDecodeFeedback)
	if len(b) < 8 {
		r.truncated()
		return
	}
	r.key.DstPort = a.Operation // set before the length check
	if a.Protocol != layers.EthernetTypeIPv4 || a.HwAddressSize != 6 || a.ProtAddressSize != 4 {
		r.except(excARPOther)
		return
	}
	if err != nil {
		r.truncated()
		return
	}
	copy(r.key.SrcAddr[:], a.SourceProtAddress)
	copy(r.key.DstAddr[:], a.DstProtAddress)
}
