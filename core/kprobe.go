package core

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/pktstat-bpf/pktstat-bpf/bpf"
)

// kprobeHook is one kernel function the kprobe mode hooks, with the program
// that attaches through a BPF trampoline and the ones that attach as kprobes.
// bpf/kprobe.c says what each counts.
type kprobeHook struct {
	fn      string
	fentry  []string // fentry and fexit programs
	kprobes []string // kprobe and kretprobe programs
	// optional hooks are functions a kernel may inline, rename, build as a
	// module or not have (tcp_sendpage is gone in 6.5); without them the
	// mode still counts TCP and UDP.
	optional bool
}

var kprobeHooks = []kprobeHook{
	{"tcp_sendmsg", []string{bpf.KprobeProgFexitTcpSendmsg}, []string{bpf.KprobeProgKprobeTcpSendmsg, bpf.KprobeProgKretprobeTcpSendmsg}, false},
	{"tcp_sendpage", []string{bpf.KprobeProgFentryTcpSendpage, bpf.KprobeProgFexitTcpSendpage}, []string{bpf.KprobeProgKprobeTcpSendpage, bpf.KprobeProgKretprobeTcpSendpage}, true},
	{"tcp_cleanup_rbuf", []string{bpf.KprobeProgFentryTcpCleanupRbuf}, []string{bpf.KprobeProgKprobeTcpCleanupRbuf}, false},
	{"udp_sendmsg", []string{bpf.KprobeProgFexitUdpSendmsg}, []string{bpf.KprobeProgKprobeUdpSendmsg, bpf.KprobeProgKretprobeUdpSendmsg}, false},
	{"udpv6_sendmsg", []string{bpf.KprobeProgFexitUdpv6Sendmsg}, []string{bpf.KprobeProgKprobeUdpv6Sendmsg, bpf.KprobeProgKretprobeUdpv6Sendmsg}, false},
	{"skb_consume_udp", []string{bpf.KprobeProgFentrySkbConsumeUdp}, []string{bpf.KprobeProgKprobeSkbConsumeUdp}, false},
	{"tcp_retransmit_skb", []string{bpf.KprobeProgFexitTcpRetransmitSkb}, []string{bpf.KprobeProgKprobeTcpRetransmitSkb, bpf.KprobeProgKretprobeTcpRetransmitSkb}, false},
	{"tcp_close", []string{bpf.KprobeProgFentryTcpClose}, []string{bpf.KprobeProgKprobeTcpClose}, false},
	{"ping_v4_sendmsg", []string{bpf.KprobeProgFexitPingV4Sendmsg}, []string{bpf.KprobeProgKprobePingV4Sendmsg, bpf.KprobeProgKretprobePingV4Sendmsg}, true},
	{"ping_v6_sendmsg", []string{bpf.KprobeProgFexitPingV6Sendmsg}, []string{bpf.KprobeProgKprobePingV6Sendmsg, bpf.KprobeProgKretprobePingV6Sendmsg}, true},
	{"icmp_rcv", []string{bpf.KprobeProgFentryIcmpRcv}, []string{bpf.KprobeProgKprobeIcmpRcv}, true},
	{"icmpv6_rcv", []string{bpf.KprobeProgFentryIcmpv6Rcv}, []string{bpf.KprobeProgKprobeIcmpv6Rcv}, true},
	// Without these, unbound unconnected sockets' sends have no source address.
	{"ip_route_output_flow", []string{bpf.KprobeProgFexitIpRouteOutputFlow}, []string{bpf.KprobeProgKprobeIpRouteOutputFlow, bpf.KprobeProgKretprobeIpRouteOutputFlow}, true},
	{"ip6_dst_lookup_flow", []string{bpf.KprobeProgFexitIp6DstLookupFlow}, []string{bpf.KprobeProgKprobeIp6DstLookupFlow, bpf.KprobeProgKretprobeIp6DstLookupFlow}, true},
	// ip6_sk_dst_lookup_flow's call of ip6_dst_lookup_flow is inlined in
	// arm64's 6.1 build: ICMPv6 pings route only through this one there.
	{"ip6_sk_dst_lookup_flow", []string{bpf.KprobeProgFexitIp6SkDstLookupFlow}, []string{bpf.KprobeProgKprobeIp6SkDstLookupFlow, bpf.KprobeProgKretprobeIp6SkDstLookupFlow}, true},
}

// kprobeCapture is what the kprobe mode holds besides hooks and overflow.
type kprobeCapture struct {
	maps    *ebpf.Collection // maps only; programs are loaded per hook
	progs   []*ebpf.Collection
	flows   *table[bpf.KprobeCgroupFlowKey]
	retrans *table[bpf.KprobeCgroupFlowKey]
	// retransmits of the current Read, by flow, until their flow claims them
	pending map[bpf.KprobeCgroupFlowKey]retransmits
	// retransmits that found their table full, in one total
	rov retransOverflow
}

type retransmits struct {
	total, delta uint64
	st           flowState
	expired      bool
}

// close releases programs and maps; the hooks are closed with c.hooks.
func (k *kprobeCapture) close() error {
	if k.flows != nil {
		k.flows.walk.close()
		k.flows.walk = nil
	}
	for _, p := range k.progs {
		p.Close()
	}
	if k.maps != nil {
		k.maps.Close()
	}
	return nil
}

// startKprobe loads the kprobe-mode maps and attaches every hook with
// fentry/fexit or kprobes, as kprobe_attach says.
func (c *Collector) startKprobe() error {
	spec, err := c.loadKprobeMaps()
	if err != nil {
		return err
	}
	// The socket hooks see no TCP headers, so no flags: say so once rather
	// than leave the flag fields silently absent.
	c.cfg.Logger.Info("pktstat-bpf: kprobe mode counts no TCP flags (SYN, SYN+ACK, FIN, RST); use mode tc, xdp or cgroup for them")
	return c.attachKprobe(spec)
}

// loadKprobeMaps creates the mode's maps and the tables that drain them.
func (c *Collector) loadKprobeMaps() (*ebpf.CollectionSpec, error) {
	spec, err := bpf.LoadKprobe()
	if err != nil {
		return nil, fmt.Errorf("load kprobe object spec: %w", err)
	}
	spec.Maps[bpf.KprobeMapKprobeFlows].MaxEntries = uint32(c.cfg.MaxFlows)
	spec.Maps[bpf.KprobeMapKprobeRetransmits].MaxEntries = uint32(c.cfg.MaxFlows)
	mapsOnly := spec.Copy()
	mapsOnly.Programs = nil
	maps, err := ebpf.NewCollection(mapsOnly)
	if err != nil {
		return nil, explainLoad("kprobe-mode maps", err)
	}
	kp := &kprobeCapture{maps: maps, pending: map[bpf.KprobeCgroupFlowKey]retransmits{}}
	c.kp = kp
	if kp.flows, err = newTable[bpf.KprobeCgroupFlowKey](maps.Maps[bpf.KprobeMapKprobeFlows]); err != nil {
		return nil, err
	}
	// The same key and counters as cgroup mode's table: its walk program.
	useWalker(kp.flows, walkCgroupFlows, c.cfg.Logger)
	if kp.retrans, err = newTable[bpf.KprobeCgroupFlowKey](maps.Maps[bpf.KprobeMapKprobeRetransmits]); err != nil {
		return nil, err
	}
	rov := maps.Maps[bpf.KprobeMapRetransmitsOverflow]
	lanes, err := valueLanes(rov) // per CPU, unlike the shared kprobe_retransmits
	if err != nil {
		return nil, err
	}
	kp.rov = retransOverflow{m: rov, buf: make([]counters, lanes)}
	if err := c.startOverflow(maps.Maps[bpf.KprobeMapFlowsOverflow], maps.Maps[bpf.KprobeMapFlowsOverflowTotal]); err != nil {
		return nil, err
	}
	if mount, err := cgroup2Mount(); err == nil {
		c.cgroups = &cgroupResolver{root: mount}
	} else {
		c.cfg.Logger.Warn("pktstat-bpf: cgroup paths not resolved", "err", err)
	}
	return spec, nil
}

// attachKprobe attaches every hook with the method kprobe_attach asks for.
func (c *Collector) attachKprobe(spec *ebpf.CollectionSpec) error {
	var fentryErr error
	if c.cfg.KprobeAttach != KprobeAttachKprobe {
		fentryErr = c.attachKprobeHooks(spec, true)
		if fentryErr == nil {
			c.cfg.Logger.Info("pktstat-bpf: attached with fentry/fexit (BPF trampolines)", "kprobe_attach", c.cfg.KprobeAttach, "hooks", len(c.hooks))
			return nil
		}
		c.detachKprobeHooks()
		if c.cfg.KprobeAttach == KprobeAttachFentry {
			return fmt.Errorf("mode kprobe with kprobe_attach = \"fentry\": %w: set kprobe_attach = \"kprobe\" or \"auto\", or use mode tc or cgroup", fentryErr)
		}
		c.cfg.Logger.Info("pktstat-bpf: fentry/fexit unavailable, falling back to kprobes", "reason", fentryErr)
	}
	kprobeErr := c.attachKprobeHooks(spec, false)
	if kprobeErr == nil {
		c.cfg.Logger.Info("pktstat-bpf: attached with kprobes/kretprobes", "kprobe_attach", c.cfg.KprobeAttach, "hooks", len(c.hooks))
		return nil
	}
	if fentryErr != nil {
		return fmt.Errorf("mode kprobe: this kernel has neither BPF trampolines (fentry: %v) nor kprobes (%w): use mode tc or cgroup", fentryErr, kprobeErr)
	}
	return fmt.Errorf("mode kprobe with kprobe_attach = \"kprobe\": %w: set kprobe_attach = \"fentry\" or \"auto\", or use mode tc or cgroup", kprobeErr)
}

// attachKprobeHooks loads and attaches every hook's programs of one kind.
// An optional hook that fails is logged and skipped; a required one fails
// the whole attempt.
func (c *Collector) attachKprobeHooks(spec *ebpf.CollectionSpec, fentry bool) error {
	cache := c.kernelBTF
	for _, h := range kprobeHooks {
		names := h.kprobes
		if fentry {
			names = h.fentry
		}
		err := c.attachKprobeHook(spec, cache, h.fn, names)
		if err == nil {
			continue
		}
		if h.optional {
			c.cfg.Logger.Info("pktstat-bpf: optional hook not attached (kernels differ in these functions)", "function", h.fn, "err", err)
			continue
		}
		return err
	}
	return nil
}

func (c *Collector) attachKprobeHook(spec *ebpf.CollectionSpec, cache *btf.Cache, fn string, names []string) error {
	one := spec.Copy()
	for n, ps := range one.Programs {
		if !slices.Contains(names, n) {
			delete(one.Programs, n)
		} else if ps.Type == ebpf.Tracing && fn == c.cfg.breakFentry {
			ps.AttachTo = "pktstat_no_such_function"
		}
	}
	coll, err := ebpf.NewCollectionWithOptions(one, ebpf.CollectionOptions{MapReplacements: c.kp.maps.Maps, Cache: cache})
	if err != nil {
		return explainKprobeLoad(names[0], fn, err)
	}
	c.kp.progs = append(c.kp.progs, coll)
	for _, n := range names {
		ps := spec.Programs[n]
		kind := strings.SplitN(ps.SectionName, "/", 2)[0]
		var l link.Link
		switch {
		case ps.Type == ebpf.Tracing:
			l, err = link.AttachTracing(link.TracingOptions{Program: coll.Programs[n]})
		case kind == "kretprobe":
			l, err = link.Kretprobe(fn, coll.Programs[n], nil)
		default:
			l, err = link.Kprobe(fn, coll.Programs[n], nil)
		}
		if err != nil {
			if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
				return needPrivilege(fmt.Sprintf("attach %s to %s", kind, fn), err)
			}
			if ps.Type == ebpf.Kprobe && !haveKprobes() {
				return fmt.Errorf("attach %s to %s: %w: the kernel has no kprobes (no kprobe PMU in /sys/bus/event_source/devices and no kprobe_events in tracefs: CONFIG_KPROBES, CONFIG_KPROBE_EVENTS): %v", kind, fn, ErrNotSupported, err)
			}
			return fmt.Errorf("attach %s to %s: %w", kind, fn, err)
		}
		c.hooks = append(c.hooks, &hook{target: fn, kind: kind, link: l})
	}
	return nil
}

// explainKprobeLoad says which kernel feature a failed load points at. A
// kernel without BPF trampolines refuses fentry programs with EPERM or
// ENOTSUPP even for root, after the maps (which need the same privileges)
// were created, so a privilege problem would have shown up earlier.
func explainKprobeLoad(prog, fn string, err error) error {
	what := fmt.Sprintf("%s (%s)", prog, fn)
	var verr *ebpf.VerifierError
	if errors.As(err, &verr) {
		return explainLoad(what, err)
	}
	if strings.HasPrefix(prog, "fentry_") || strings.HasPrefix(prog, "fexit_") {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOTSUP) || errors.Is(err, unix.Errno(524)) || errors.Is(err, unix.EINVAL) {
			return fmt.Errorf("load %s: %w: the kernel does not support BPF trampolines here (CONFIG_DYNAMIC_FTRACE_WITH_DIRECT_CALLS, CONFIG_BPF_JIT): %v", what, ErrNotSupported, err)
		}
	}
	return explainLoad(what, err)
}

// haveKprobes reports whether the kernel offers kprobes to perf or tracefs,
// the two ways link.Kprobe attaches.
func haveKprobes() bool {
	for _, p := range []string{
		"/sys/bus/event_source/devices/kprobe/type",
		"/sys/kernel/tracing/kprobe_events",
		"/sys/kernel/debug/tracing/kprobe_events",
	} {
		if _, err := os.Stat(p); err == nil {
			return true
		}
	}
	return false
}

func (c *Collector) detachKprobeHooks() {
	_ = closeHooks(c.hooks, true)
	c.hooks = nil
	for _, p := range c.kp.progs {
		p.Close()
	}
	c.kp.progs = nil
}

// drainKprobe drains retransmits, then flows, attaching each flow's
// retransmits to its egress record; retransmits of flows with no record
// (the socket's sends expired, or its owner changed) get a record of their own.
func (c *Collector) drainKprobe(now time.Time, clock monoClock) (int, error) {
	kp := c.kp
	clear(kp.pending)
	if _, err := kp.retrans.drain(now, clock, c.cfg.IdleTimeout, func(k bpf.KprobeCgroupFlowKey, st *flowState, dp, _ uint64, expired bool) {
		kp.pending[k] = retransmits{total: st.packets, delta: dp, st: *st, expired: expired}
	}); err != nil {
		return 0, err
	}
	active, err := kp.flows.drain(now, clock, c.cfg.IdleTimeout, func(k bpf.KprobeCgroupFlowKey, st *flowState, dp, db uint64, expired bool) {
		rec := c.record(c.kprobeKey(k), st, dp, db, expired, false)
		if r, ok := kp.pending[k]; ok {
			rec.Retransmits, rec.DeltaRetransmits = r.total, r.delta
			delete(kp.pending, k)
		}
		c.put(rec)
	})
	if err != nil {
		return 0, err
	}
	for k, r := range kp.pending {
		st := flowState{start: r.st.start, lastSeen: r.st.lastSeen}
		rec := c.record(c.kprobeKey(k), &st, 0, 0, r.expired, false)
		rec.Retransmits, rec.DeltaRetransmits = r.total, r.delta
		c.put(rec)
	}
	if err := kp.rov.read(c, now, clock); err != nil {
		return 0, err
	}
	return active, nil
}

func (c *Collector) kprobeKey(k bpf.KprobeCgroupFlowKey) FlowKey {
	fk := decodeKey(bpf.FlowFlowKey(k.Flow))
	fk.CgroupID, fk.PID, fk.Comm = k.CgroupId, k.Pid, c.comm(k.Comm)
	return fk
}
