package aggregate

import (
	"net/netip"
	"slices"
	"unique"

	"github.com/pktstat-bpf/pktstat-bpf/core"
	"github.com/pktstat-bpf/pktstat-bpf/core/container"
)

// Key identifies one series: the kept parts of a flow key after folding and
// grouping. Parts whose dimension is not kept are zero, so two keys are
// equal exactly when their rendered tags are.
type Key struct {
	Interface string
	Direction core.Direction
	// IPVersion is 4, 6, or 0 for a non-IP flow.
	IPVersion uint8
	// Transport is the proto tag value (core.FlowKey.Transport).
	Transport string
	// SrcAddr and DstAddr are set when the address is reported as itself,
	// Labels' SrcGroup and DstGroup when it is reported as a CIDR group
	// name or Other. Both are empty for non-IP flows.
	SrcAddr, DstAddr netip.Addr
	// HasPorts, filled in whenever a port dimension is kept, says that
	// SrcPort and DstPort are transport ports (tcp, udp, udplite, sctp).
	HasPorts bool
	// SrcPort and DstPort are transport ports, or, for other protocols and
	// only when proto is kept too, the identifiers core.FlowKey stores in
	// their place (ICMP type and code, ...), which mean nothing without it.
	SrcPort, DstPort uint16
	// SrcPortFolded and DstPortFolded mark a port removed by fold_ports;
	// the port is then 0, which is not what to report.
	SrcPortFolded, DstPortFolded bool
	VLAN                         uint16
	Flags                        core.Flags
	PID                          uint32
	// CgroupID stands in for Labels' Cgroup when the path is unknown (the
	// cgroup was removed before it could be resolved), so that such flows
	// are not lumped together under an empty path.
	CgroupID uint64
	// labels holds the key's Labels interned: keys with equal labels share
	// one copy, and a key without any (the default dimensions) holds none.
	// Eight string fields of their own would add 120 bytes to every series
	// of a full table.
	labels unique.Handle[Labels]
}

// Labels are the string parts of a key that most keys leave empty: CIDR
// groups, process and container identity, application protocol and drop
// reason.
type Labels struct {
	// SrcGroup and DstGroup are set when the address is reported as a
	// CIDR group name or Other, which the agents report under their own
	// names (src_group, pktstatbpf.source.group): a group is not an address.
	SrcGroup, DstGroup string
	Comm               string
	// Cgroup is the cgroup path.
	Cgroup string
	// AppProto is the application protocol detected in the flow's first payload.
	AppProto    string
	ContainerID string
	PodUID      string
	// DropReason is the kernel's drop reason of a drop series, always kept
	// (core.Record.DropReason); empty for flow series.
	DropReason string
}

// Labels returns k's labels, all empty when it has none.
func (k *Key) Labels() Labels {
	if k.labels == (unique.Handle[Labels]{}) {
		return Labels{}
	}
	return k.labels.Value()
}

// WithLabels returns k with labels l.
func (k Key) WithLabels(l Labels) Key {
	k.labels = intern(l)
	return k
}

func intern(l Labels) unique.Handle[Labels] {
	if l == (Labels{}) {
		return unique.Handle[Labels]{}
	}
	return unique.Make(l)
}

// keyer turns records into keys. Its fields are the Config resolved once so
// that the per-record work is branches and lookups only.
type keyer struct {
	iface, dir, ipVersion, proto   bool
	srcIP, dstIP, srcPort, dstPort bool
	vlan, flags, pid, comm, cgroup bool
	containerID, podUID, appProto  bool

	fold   string
	ephMin uint16
	groups *groupMatcher

	// transport caches the proto names of IP flows so they cost no lookup.
	transport [256]string
	// identities caches container.Parse per cgroup path for one Aggregate
	// call; it is cleared each call so pod churn cannot grow it.
	identities map[string]container.Identity
	// last and lastHandle are the labels the previous record's key
	// interned: consecutive records mostly share them.
	last       Labels
	lastHandle unique.Handle[Labels]
}

// intern is intern with the keyer's one-entry cache (which starts at the
// empty labels and their zero handle).
func (kr *keyer) intern(l Labels) unique.Handle[Labels] {
	if l != kr.last {
		kr.last, kr.lastHandle = l, intern(l)
	}
	return kr.lastHandle
}

func newKeyer(cfg Config) *keyer {
	var dims dimSet
	for _, d := range cfg.Dimensions {
		dims |= dimBit(d)
	}
	k := &keyer{
		iface:       dims.has(DimInterface),
		dir:         dims.has(DimDirection),
		ipVersion:   dims.has(DimIPVersion),
		proto:       dims.has(DimProto),
		srcIP:       dims.has(DimSrcIP),
		dstIP:       dims.has(DimDstIP),
		srcPort:     dims.has(DimSrcPort),
		dstPort:     dims.has(DimDstPort),
		vlan:        dims.has(DimVLAN),
		flags:       dims.has(DimFlags),
		pid:         dims.has(DimPID),
		comm:        dims.has(DimComm),
		cgroup:      dims.has(DimCgroup),
		containerID: dims.has(DimContainerID),
		podUID:      dims.has(DimPodUID),
		appProto:    dims.has(DimAppProto),
		fold:        cfg.FoldPorts,
		ephMin:      uint16(cfg.EphemeralPortMin),
		identities:  map[string]container.Identity{},
	}
	if len(cfg.CIDRGroups) > 0 {
		k.groups = newGroupMatcher(cfg.CIDRGroups, cfg.UngroupedAsOther)
	}
	for p := range k.transport {
		k.transport[p] = core.ProtoName(uint8(p))
	}
	return k
}

func (kr *keyer) key(r *core.Record) Key {
	var k Key
	l := Labels{DropReason: r.DropReason}
	if kr.iface {
		k.Interface = r.Interface
	}
	if kr.dir {
		k.Direction = r.Direction
	}
	ipv := r.IPVersion()
	if kr.ipVersion {
		k.IPVersion = uint8(ipv)
	}
	if kr.proto {
		if ipv != 0 {
			k.Transport = kr.transport[r.Proto]
		} else {
			k.Transport = r.Transport()
		}
	}
	if kr.srcIP {
		k.SrcAddr, l.SrcGroup = kr.addr(r.SrcAddr)
	}
	if kr.dstIP {
		k.DstAddr, l.DstGroup = kr.addr(r.DstAddr)
	}
	if (kr.srcPort || kr.dstPort) && (r.HasPorts() || kr.proto) {
		k.HasPorts = r.HasPorts()
		sp, dp := r.SrcPort, r.DstPort
		var sf, df bool
		if kr.fold != FoldOff && k.HasPorts {
			sf, df = kr.folds(sp, dp)
		}
		if kr.srcPort {
			if sf {
				k.SrcPortFolded = true
			} else {
				k.SrcPort = sp
			}
		}
		if kr.dstPort {
			if df {
				k.DstPortFolded = true
			} else {
				k.DstPort = dp
			}
		}
	}
	if kr.vlan {
		k.VLAN = r.VLAN
	}
	if kr.flags {
		k.Flags = r.Flags
	}
	if kr.pid {
		k.PID = r.PID
	}
	if kr.comm {
		l.Comm = r.Comm
	}
	if kr.appProto {
		l.AppProto = r.AppProto
	}
	if kr.cgroup {
		l.Cgroup = r.CgroupPath
		if l.Cgroup == "" {
			k.CgroupID = r.CgroupID
		}
	}
	if (kr.containerID || kr.podUID) && r.CgroupPath != "" {
		id, ok := kr.identities[r.CgroupPath]
		if !ok {
			id = container.Parse(r.CgroupPath)
			kr.identities[r.CgroupPath] = id
		}
		if kr.containerID {
			l.ContainerID = id.ContainerID
		}
		if kr.podUID {
			l.PodUID = id.PodUID
		}
	}
	k.labels = kr.intern(l)
	return k
}

// folds says which ports of a flow lose their value.
func (kr *keyer) folds(sp, dp uint16) (src, dst bool) {
	switch kr.fold {
	case FoldEphemeral:
		// Both sides fold when both are ephemeral (peer-to-peer, passive
		// FTP data): there is no service port to keep.
		return sp >= kr.ephMin, dp >= kr.ephMin
	case FoldHigher:
		// Equal ports (mDNS 5353 to 5353) name the service on both sides.
		return sp > dp, dp > sp
	}
	return false, false
}

func (kr *keyer) addr(a netip.Addr) (netip.Addr, string) {
	if kr.groups == nil || !a.IsValid() {
		return a, ""
	}
	return kr.groups.match(a)
}

// groupMatcher finds the most specific group of an address with one map
// lookup per distinct prefix length, longest first, so its cost does not
// grow with the number of groups.
type groupMatcher struct {
	byPrefix         map[netip.Prefix]string
	v4Bits, v6Bits   []int
	ungroupedAsOther bool
}

// newGroupMatcher expects groups that passed Validate.
func newGroupMatcher(groups []CIDRGroup, ungroupedAsOther bool) *groupMatcher {
	g := &groupMatcher{byPrefix: map[netip.Prefix]string{}, ungroupedAsOther: ungroupedAsOther}
	for _, grp := range groups {
		p := netip.MustParsePrefix(grp.CIDR)
		g.byPrefix[p] = grp.Name
		if p.Addr().Is4() {
			g.v4Bits = append(g.v4Bits, p.Bits())
		} else {
			g.v6Bits = append(g.v6Bits, p.Bits())
		}
	}
	for _, bits := range []*[]int{&g.v4Bits, &g.v6Bits} {
		slices.Sort(*bits)
		*bits = slices.Compact(*bits)
		slices.Reverse(*bits)
	}
	return g
}

// match returns the group name of a, or a itself when no group holds it.
func (g *groupMatcher) match(a netip.Addr) (netip.Addr, string) {
	// A v4-mapped address (a dual-stack socket in kprobe mode) is IPv4
	// traffic on the wire and belongs to the IPv4 groups.
	u := a.Unmap()
	bits := g.v6Bits
	if u.Is4() {
		bits = g.v4Bits
	}
	for _, b := range bits {
		p, _ := u.Prefix(b)
		if name, ok := g.byPrefix[p]; ok {
			return netip.Addr{}, name
		}
	}
	if g.ungroupedAsOther {
		return netip.Addr{}, Other
	}
	return a, ""
}
