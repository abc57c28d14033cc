package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/pktstat-bpf/pktstat-bpf/bpf"
)

// vethPair is two throw-away network namespaces joined by a veth pair:
// 192.0.2.1 in A, 192.0.2.2 in B, static neighbours, no route anywhere else.
// All bench traffic stays inside it.
type vethPair struct {
	nsA, nsB   string
	ifA, ifB   string
	macA, macB net.HardwareAddr
	ifindexB   int
	// cgroup is a cgroup v2 directory trafgen runs in, so that its CPU time
	// (workers and the receive path they run included) can be read.
	cgroup string
}

func ipCmd(args ...string) error {
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func newVethPair() (*vethPair, error) {
	b := make([]byte, 3)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	id := hex.EncodeToString(b)
	p := &vethPair{nsA: "pkbench-a-" + id, nsB: "pkbench-b-" + id, ifA: "pkba" + id, ifB: "pkbb" + id}
	steps := [][]string{
		{"netns", "add", p.nsA},
		{"netns", "add", p.nsB},
		{"link", "add", p.ifA, "netns", p.nsA, "type", "veth", "peer", "name", p.ifB, "netns", p.nsB},
	}
	for _, end := range []struct{ ns, dev, addr string }{{p.nsA, p.ifA, "192.0.2.1/24"}, {p.nsB, p.ifB, "192.0.2.2/24"}} {
		steps = append(steps,
			[]string{"-n", end.ns, "link", "set", "lo", "up"},
			[]string{"-n", end.ns, "link", "set", end.dev, "addrgenmode", "none"},
			[]string{"-n", end.ns, "addr", "add", end.addr, "dev", end.dev},
			[]string{"-n", end.ns, "link", "set", end.dev, "up"})
	}
	for _, s := range steps {
		if err := ipCmd(s...); err != nil {
			p.Close()
			return nil, fmt.Errorf("create veth pair: %w", err)
		}
	}
	mount, err := cgroup2Mount()
	if err == nil {
		p.cgroup = filepath.Join(mount, "pkbench-"+id)
		err = os.Mkdir(p.cgroup, 0o755)
	}
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("create a cgroup for the generator: %w", err)
	}
	if p.macA, _, err = p.link(p.nsA, p.ifA); err == nil {
		p.macB, p.ifindexB, err = p.link(p.nsB, p.ifB)
	}
	if err == nil {
		err = ipCmd("-n", p.nsA, "neigh", "replace", "192.0.2.2", "lladdr", p.macB.String(), "dev", p.ifA, "nud", "permanent")
	}
	if err == nil {
		err = ipCmd("-n", p.nsB, "neigh", "replace", "192.0.2.1", "lladdr", p.macA.String(), "dev", p.ifB, "nud", "permanent")
	}
	if err != nil {
		p.Close()
		return nil, err
	}
	return p, nil
}

// cgroup2Mount finds the cgroup v2 mount (hybrid hosts have it at
// /sys/fs/cgroup/unified, not /sys/fs/cgroup).
func cgroup2Mount() (string, error) {
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) > 2 && f[2] == "cgroup2" {
			return f[1], nil
		}
	}
	return "", errors.New("no cgroup2 mount in /proc/mounts")
}

// cgroupCPU returns usage_usec of the cgroup in nanoseconds.
func cgroupCPU(dir string) (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cpu.stat"))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "usage_usec "); ok {
			us, err := strconv.ParseInt(v, 10, 64)
			return time.Duration(us) * time.Microsecond, err
		}
	}
	return 0, fmt.Errorf("no usage_usec in %s/cpu.stat", dir)
}

func (p *vethPair) Close() {
	if p.cgroup != "" {
		_ = os.Remove(p.cgroup)
	}
	// Deleting a namespace deletes the veth end in it, and so its peer.
	_ = exec.Command("ip", "netns", "del", p.nsA).Run()
	_ = exec.Command("ip", "netns", "del", p.nsB).Run()
}

func (p *vethPair) link(ns, dev string) (net.HardwareAddr, int, error) {
	h, err := netns.GetFromName(ns)
	if err != nil {
		return nil, 0, fmt.Errorf("open netns %s: %w", ns, err)
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		return nil, 0, fmt.Errorf("netlink in %s: %w", ns, err)
	}
	defer nh.Close()
	l, err := nh.LinkByName(dev)
	if err != nil {
		return nil, 0, fmt.Errorf("link %s in %s: %w", dev, ns, err)
	}
	return l.Attrs().HardwareAddr, l.Attrs().Index, nil
}

func (p *vethPair) rxPackets() (uint64, error) {
	h, err := netns.GetFromName(p.nsB)
	if err != nil {
		return 0, err
	}
	defer h.Close()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		return 0, err
	}
	defer nh.Close()
	l, err := nh.LinkByName(p.ifB)
	if err != nil {
		return 0, err
	}
	return l.Attrs().Statistics.RxPackets, nil
}

// inNS runs fn on a locked OS thread inside namespace name; the thread is
// discarded afterwards rather than returned to the pool in the wrong namespace.
func inNS(name string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		target, err := netns.GetFromName(name)
		if err != nil {
			errc <- fmt.Errorf("open netns %s: %w", name, err)
			return
		}
		defer target.Close()
		if err := netns.Set(target); err != nil {
			errc <- fmt.Errorf("enter netns %s: %w", name, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// udpFrame is an Ethernet/IPv4/UDP frame from A to B's discard port.
func udpFrame(srcMAC, dstMAC net.HardwareAddr, sport, dport uint16, payload int) []byte {
	f := make([]byte, 14+20+8+payload)
	copy(f[0:6], dstMAC)
	copy(f[6:12], srcMAC)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:34]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+payload))
	copy(ip[12:16], []byte{192, 0, 2, 1})
	copy(ip[16:20], []byte{192, 0, 2, 2})
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum&0xffff + sum>>16
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	udp := f[34:42]
	binary.BigEndian.PutUint16(udp[0:], sport)
	binary.BigEndian.PutUint16(udp[2:], dport)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+payload)) // checksum 0: none, valid for IPv4
	return f
}

// e2eFlows is how many distinct flows the trafgen configuration cycles through.
const e2eFlows = 1024

// writeTrafgenConf writes one packet block per flow.
func (p *vethPair) writeTrafgenConf(path string) error {
	var b strings.Builder
	for i := 0; i < e2eFlows; i++ {
		f := udpFrame(p.macA, p.macB, uint16(20000+i), 9, 18) // 60-byte frames, the minimum
		b.WriteString("{ ")
		for j, c := range f {
			if j > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "0x%02x", c)
		}
		b.WriteString(" }\n")
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

// genRun is one generator run: packets per second B received (its rx
// counter over the run) and the generator's CPU time per packet received.
// On veth the receive path, TC and XDP included, runs in the sender's
// context, so its CPU time holds the whole path's cost; unlike the packet
// rate it does not depend on what else the shared CPUs are doing.
type genRun struct {
	pps, cpuNsPerPkt float64
}

// trafgenRun sends count frames from A with one trafgen process.
func (p *vethPair) trafgenRun(conf string, count int) (genRun, error) {
	before, err := p.rxPackets()
	if err != nil {
		return genRun{}, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Leave the host's socket memory and IRQ affinity settings alone.
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", p.nsA, "trafgen", "--dev", p.ifA, "--conf", conf,
		"--num", strconv.Itoa(count), "--cpus", "1", "--no-sock-mem", "--notouch-irq", "--no-cpu-stats")
	cg, err := os.Open(p.cgroup)
	if err != nil {
		return genRun{}, err
	}
	defer cg.Close()
	// Started inside the cgroup (clone3), so trafgen's workers are in it too.
	cmd.SysProcAttr = &unix.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	cpu0, err := cgroupCPU(p.cgroup)
	if err != nil {
		return genRun{}, err
	}
	t0 := time.Now()
	out, err := cmd.CombinedOutput()
	elapsed := time.Since(t0)
	if err != nil {
		return genRun{}, fmt.Errorf("trafgen: %v: %s", err, bytes.TrimSpace(out))
	}
	after, err := p.rxPackets()
	if err != nil {
		return genRun{}, err
	}
	got := after - before
	if got < uint64(count)/2 {
		return genRun{}, fmt.Errorf("B received %d of %d frames: the link or generator is broken", got, count)
	}
	cpu1, err := cgroupCPU(p.cgroup)
	if err != nil {
		return genRun{}, err
	}
	return genRun{float64(got) / elapsed.Seconds(), float64((cpu1 - cpu0).Nanoseconds()) / float64(got)}, nil
}

// attachment is what one end-to-end configuration attaches to B.
type attachment struct {
	name  string
	progs []*ebpf.Program // for BPF stats
	links []link.Link
}

func (a *attachment) Close() {
	for _, l := range a.links {
		l.Close()
	}
}

func attachTC(p *vethPair, ingress, egress *ebpf.Program) ([]link.Link, error) {
	var links []link.Link
	err := inNS(p.nsB, func() error {
		for _, x := range []struct {
			prog *ebpf.Program
			typ  ebpf.AttachType
		}{{ingress, ebpf.AttachTCXIngress}, {egress, ebpf.AttachTCXEgress}} {
			l, err := link.AttachTCX(link.TCXOptions{Interface: p.ifindexB, Program: x.prog, Attach: x.typ})
			if err != nil {
				return fmt.Errorf("attach tcx to %s: %w", p.ifB, err)
			}
			links = append(links, l)
		}
		return nil
	})
	if err != nil {
		for _, l := range links {
			l.Close()
		}
		return nil, err
	}
	return links, nil
}

func attachXDP(p *vethPair, prog *ebpf.Program) ([]link.Link, error) {
	var l link.Link
	err := inNS(p.nsB, func() (err error) {
		// veth has native XDP: this is the driver path core's "auto" picks.
		l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: p.ifindexB, Flags: link.XDPDriverMode})
		if err != nil {
			return fmt.Errorf("attach xdp (native) to %s: %w", p.ifB, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return []link.Link{l}, nil
}

type e2eResult struct {
	// by generator, then configuration
	pps      map[string]map[string][]float64
	cpu      map[string]map[string][]float64 // generator CPU ns per packet
	nsPerPkt map[string]map[string][]float64 // BPF stats run_time_ns / run_cnt of the ingress program
	gens     []string
	configs  []string
}

// measureE2E alternates no program, the TC programs, an empty TC program,
// the XDP program and an empty XDP program on B, for rounds rounds, with
// each of two generators in A: trafgen (TX ring) and an AF_PACKET sendto loop.
func measureE2E(rounds, count int, tmp string) (*e2eResult, error) {
	if _, err := exec.LookPath("trafgen"); err != nil {
		return nil, fmt.Errorf("trafgen not found (Debian package netsniff-ng; `make deps` installs it): %w", err)
	}
	p, err := newVethPair()
	if err != nil {
		return nil, err
	}
	defer p.Close()
	conf := filepath.Join(tmp, "trafgen.cfg")
	if err := p.writeTrafgenConf(conf); err != nil {
		return nil, err
	}
	sender, err := p.newSender()
	if err != nil {
		return nil, err
	}
	defer sender.Close()
	frames := p.flowFrames(e2eFlows)
	spec, err := bpf.LoadFlow()
	if err != nil {
		return nil, fmt.Errorf("load flow spec: %w", err)
	}
	var objs bpf.FlowObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		return nil, fmt.Errorf("load flow object: %w", err)
	}
	defer objs.Close()
	emptyTC, err := emptyProg(kindTC)
	if err != nil {
		return nil, err
	}
	defer emptyTC.Close()
	emptyXDP, err := emptyProg(kindXDP)
	if err != nil {
		return nil, err
	}
	defer emptyXDP.Close()
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return nil, fmt.Errorf("enable BPF run-time stats: %w", err)
	}
	defer stats.Close()

	configs := []struct {
		name   string
		attach func() (*attachment, error)
	}{
		{"none", func() (*attachment, error) { return &attachment{}, nil }},
		{"tc", func() (*attachment, error) {
			l, err := attachTC(p, objs.TcIngress, objs.TcEgress)
			return &attachment{progs: []*ebpf.Program{objs.TcIngress}, links: l}, err
		}},
		{"tc-empty", func() (*attachment, error) {
			l, err := attachTC(p, emptyTC, emptyTC)
			return &attachment{progs: []*ebpf.Program{emptyTC}, links: l}, err
		}},
		{"xdp", func() (*attachment, error) {
			l, err := attachXDP(p, objs.XdpIngress)
			return &attachment{progs: []*ebpf.Program{objs.XdpIngress}, links: l}, err
		}},
		{"xdp-empty", func() (*attachment, error) {
			l, err := attachXDP(p, emptyXDP)
			return &attachment{progs: []*ebpf.Program{emptyXDP}, links: l}, err
		}},
	}
	gens := []struct {
		name string
		run  func(n int) (genRun, error)
	}{
		{"trafgen", func(n int) (genRun, error) { return p.trafgenRun(conf, n) }},
		{"af_packet", func(n int) (genRun, error) { return p.senderRun(sender, frames, n) }},
	}
	res := &e2eResult{pps: map[string]map[string][]float64{}, cpu: map[string]map[string][]float64{}, nsPerPkt: map[string]map[string][]float64{}}
	for _, c := range configs {
		res.configs = append(res.configs, c.name)
	}
	for _, g := range gens {
		res.gens = append(res.gens, g.name)
		res.pps[g.name], res.cpu[g.name], res.nsPerPkt[g.name] = map[string][]float64{}, map[string][]float64{}, map[string][]float64{}
		// A warm-up run, so the first configuration does not pay for cold caches.
		if _, err := g.run(count / 4); err != nil {
			return nil, fmt.Errorf("%s: %w", g.name, err)
		}
	}
	for r := 0; r < rounds; r++ {
		for _, g := range gens {
			for _, c := range configs {
				a, err := c.attach()
				if err != nil {
					return nil, err
				}
				var st0 *ebpf.ProgramStats
				if len(a.progs) > 0 {
					if st0, err = a.progs[0].Stats(); err != nil {
						a.Close()
						return nil, fmt.Errorf("read BPF stats: %w", err)
					}
				}
				gr, err := g.run(count)
				if err == nil && st0 != nil {
					var st1 *ebpf.ProgramStats
					if st1, err = a.progs[0].Stats(); err == nil && st1.RunCount > st0.RunCount {
						res.nsPerPkt[g.name][c.name] = append(res.nsPerPkt[g.name][c.name],
							float64((st1.Runtime-st0.Runtime).Nanoseconds())/float64(st1.RunCount-st0.RunCount))
					} else if err == nil {
						err = fmt.Errorf("attached but never ran: the hook is not on the traffic's path")
					}
				}
				a.Close()
				if err != nil {
					return nil, fmt.Errorf("%s with %s: %w", g.name, c.name, err)
				}
				res.pps[g.name][c.name] = append(res.pps[g.name][c.name], gr.pps)
				res.cpu[g.name][c.name] = append(res.cpu[g.name][c.name], gr.cpuNsPerPkt)
			}
		}
	}
	n, err := countEntries(objs.Flows)
	if err != nil {
		return nil, err
	}
	if n < e2eFlows {
		return nil, fmt.Errorf("the TC/XDP programs counted %d flows, want at least %d", n, e2eFlows)
	}
	return res, nil
}
