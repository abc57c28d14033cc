package core

import (
	"errors"
	"fmt"
	"log/slog"
	"path"
	"path/filepath"
	"time"
)

// Mode selects the kernel hook that counts packets.
type Mode string

const (
	// ModeTC attaches to TC ingress and egress (TCX on kernels >= 6.6, clsact/cls_bpf before).
	ModeTC Mode = "tc"
	// ModeXDP attaches to XDP; it sees ingress only.
	ModeXDP Mode = "xdp"
	// ModeCgroup attaches cgroup_skb ingress and egress to a cgroup v2 directory.
	ModeCgroup Mode = "cgroup"
	// ModeKprobe hooks the kernel's socket send and receive paths (fentry or kprobes).
	ModeKprobe Mode = "kprobe"
)

// XDP attach modes, as in the xdp_mode config key.
const (
	XDPAuto    = "auto"
	XDPGeneric = "generic"
	XDPNative  = "native"
	XDPOffload = "offload"
)

// Kprobe attach methods, as in the kprobe_attach config key.
const (
	KprobeAttachAuto   = "auto"
	KprobeAttachFentry = "fentry"
	KprobeAttachKprobe = "kprobe"
)

// Defaults applied by Config.withDefaults.
const (
	DefaultMaxFlows    = 131072
	DefaultIdleTimeout = 2 * time.Minute
	// MinMaxFlows keeps the kernel table large enough to be useful; smaller
	// values are rejected rather than silently raised.
	MinMaxFlows = 16
	// MaxMaxFlows bounds kernel memory: the flow table costs max_flows *
	// 160 bytes in tc and xdp modes (192 with cgroup mode's longer key),
	// and tc and cgroup modes' retransmit table as much again at 192,
	// whatever the number of CPUs (one shared value per flow).
	MaxMaxFlows = 1 << 24
)

// defaultMaxFlows is what an empty MaxFlows means: DefaultMaxFlows. The
// package's tests lower it (TestMain), because creating a preallocated
// table of 131,072 entries is most of a start's cost under the
// emulated guests of make vmtest; a test that needs the default size names it.
var defaultMaxFlows = DefaultMaxFlows

// Config says what to count and where. The zero value, after defaults, counts
// TC ingress and egress on the interface of the default route.
type Config struct {
	// Mode is the capture hook; empty means tc.
	Mode Mode
	// Interfaces are interface names or path.Match globs ("eth*"). Empty
	// means the interface of the IPv4 (else IPv6) default route. Unused in
	// cgroup and kprobe modes.
	Interfaces []string
	// XDPMode is auto, generic, native or offload; empty means auto.
	XDPMode string
	// KprobeAttach is how kprobe mode attaches: fentry (BPF trampolines),
	// kprobe, or auto (fentry, else kprobes); empty means auto.
	KprobeAttach string
	// CgroupPath is the cgroup v2 directory for cgroup mode; empty means the
	// root of the cgroup2 mount found in /proc/mounts.
	CgroupPath string
	// MaxFlows is the size of the kernel flow table; empty means 131072.
	// Packets of flows that do not fit are counted in overflow records.
	MaxFlows int
	// IdleTimeout removes a flow from the kernel table after it has carried
	// no packet for this long; its final counts are reported once, marked
	// Expired. Zero means DefaultIdleTimeout.
	IdleTimeout time.Duration
	// Filters leave packets out of the flows in the kernel; they are counted
	// in Filtered records instead. Not in kprobe mode.
	Filters Filters
	// NetNS is an optional path to a network namespace (for example
	// /var/run/netns/blue or /proc/PID/ns/net) whose interfaces are
	// watched and attached instead of the caller's own.
	NetNS string
	// Drops (key drops) loads a kfree_skb tracepoint program that counts
	// the packets the kernel drops on the watched interfaces, per flow and
	// drop reason (Snapshot.Drops); tc and xdp modes, Linux 5.17 or later
	// (the tracepoint's reason argument). Off: nothing extra is loaded.
	Drops bool
	// PinPath, if set, is a directory on a bpffs mount where the flow maps
	// and the program links are pinned, so that counting goes on while no
	// agent runs and the next Start with the same PinPath adopts them
	// (see pin.go). Empty means everything is detached and freed at Close.
	PinPath string
	// Logger receives attach/detach events; nil means slog.Default().
	Logger *slog.Logger
	// TCPRTT (key tcp_rtt) reports TCP sockets' smoothed RTT per egress
	// flow (tp_btf/tcp_probe), in tc and cgroup modes. Off, nothing
	// RTT-related is loaded.
	TCPRTT bool

	// legacyTC forces the clsact/cls_bpf path, so that tests exercise it on
	// kernels that have TCX.
	legacyTC bool
	// breakFentry makes the fentry/fexit load for this kernel function
	// fail, so that tests exercise the fallback to kprobes.
	breakFentry string
	// dropTable, if set, replaces dropTableSize, so that tests fill it.
	dropTable int
	// hideTracepoint makes the BTF probe miss this raw tracepoint, so that
	// tests see what a kernel without it does.
	hideTracepoint string
}

// Validate checks the capture keys without touching the system. Agents call
// aggregate.Validate, which runs this and the aggregation rules together, so
// that both report the same mistake with the same words; a new capture key's
// rule belongs here.
func (c Config) Validate() error {
	var errs []error
	switch c.Mode {
	case "", ModeTC, ModeXDP, ModeCgroup, ModeKprobe:
	default:
		errs = append(errs, fmt.Errorf("mode %q is not one of tc, xdp, cgroup, kprobe", c.Mode))
	}
	switch c.XDPMode {
	case "", XDPAuto, XDPGeneric, XDPNative, XDPOffload:
	default:
		errs = append(errs, fmt.Errorf("xdp_mode %q is not one of auto, generic, native, offload", c.XDPMode))
	}
	if c.XDPMode != "" && c.XDPMode != XDPAuto && c.Mode != ModeXDP {
		errs = append(errs, fmt.Errorf("xdp_mode %q is set but mode is %q: set mode = \"xdp\" or remove xdp_mode", c.XDPMode, c.effectiveMode()))
	}
	switch c.KprobeAttach {
	case "", KprobeAttachAuto, KprobeAttachFentry, KprobeAttachKprobe:
	default:
		errs = append(errs, fmt.Errorf("kprobe_attach %q is not one of auto, fentry, kprobe", c.KprobeAttach))
	}
	if c.KprobeAttach != "" && c.KprobeAttach != KprobeAttachAuto && c.Mode != ModeKprobe {
		errs = append(errs, fmt.Errorf("kprobe_attach %q is set but mode is %q: set mode = \"kprobe\" or remove kprobe_attach", c.KprobeAttach, c.effectiveMode()))
	}
	for _, name := range c.Interfaces {
		if name == "" {
			errs = append(errs, errors.New("interfaces: empty interface name"))
			continue
		}
		if _, err := path.Match(name, ""); err != nil {
			errs = append(errs, fmt.Errorf("interfaces: bad glob %q: %w", name, err))
		}
		if len(name) > 15 && !hasGlobMeta(name) {
			errs = append(errs, fmt.Errorf("interfaces: %q is longer than the kernel's 15-character interface name limit", name))
		}
	}
	if len(c.Interfaces) > 0 && c.Mode.HasSockets() {
		errs = append(errs, fmt.Errorf("interfaces is set but mode %q counts per socket, not per interface: remove interfaces or use mode tc or xdp", c.Mode))
	}
	if c.CgroupPath != "" && c.Mode != ModeCgroup {
		errs = append(errs, fmt.Errorf("cgroup_path is set but mode is %q: set mode = \"cgroup\" or remove cgroup_path", c.effectiveMode()))
	}
	if c.MaxFlows != 0 && (c.MaxFlows < MinMaxFlows || c.MaxFlows > MaxMaxFlows) {
		errs = append(errs, fmt.Errorf("max_flows %d is out of range [%d, %d]", c.MaxFlows, MinMaxFlows, MaxMaxFlows))
	}
	if c.PinPath != "" {
		switch {
		case !path.IsAbs(c.PinPath):
			errs = append(errs, fmt.Errorf("pin_path %q is not an absolute path: use a directory under the bpffs mount, such as /sys/fs/bpf/pktstat-bpf/eth0", c.PinPath))
		case c.Mode == ModeKprobe:
			errs = append(errs, errors.New("pin_path is not supported in kprobe mode: its tracing links cannot be adopted across restarts; remove pin_path or use mode tc, xdp or cgroup"))
		}
	}
	if c.Drops && c.Mode.HasSockets() {
		errs = append(errs, fmt.Errorf("drops is set but mode is %q: drops are counted per watched interface; use mode tc or xdp, or remove drops", c.Mode))
	}
	if c.IdleTimeout < 0 {
		errs = append(errs, fmt.Errorf("idle_timeout %s is negative: set a positive duration or remove it for the default %s",
			c.IdleTimeout, DefaultIdleTimeout))
	}
	if c.NetNS != "" && !filepath.IsAbs(c.NetNS) {
		errs = append(errs, fmt.Errorf("netns %q is not an absolute path: use /var/run/netns/NAME or /proc/PID/ns/net", c.NetNS))
	}
	if c.TCPRTT && (c.Mode == ModeXDP || c.Mode == ModeKprobe) {
		errs = append(errs, fmt.Errorf("tcp_rtt = true is set but mode is %q: RTT is reported on egress flows of the tc and cgroup modes; set tcp_rtt = false or use mode tc or cgroup", c.Mode))
	}
	if _, err := c.Filters.compile(); err != nil {
		errs = append(errs, err)
	}
	if c.Mode == ModeKprobe && !c.Filters.empty() {
		errs = append(errs, fmt.Errorf("%s is set but mode is \"kprobe\": filters run in the tc, xdp and cgroup programs; remove the filter keys or use one of those modes", c.Filters.firstKey()))
	}
	return errors.Join(errs...)
}

// HasSockets reports whether the mode sees the socket that sent or received
// a packet, and with it the process and cgroup (cgroup and kprobe modes).
func (m Mode) HasSockets() bool { return m == ModeCgroup || m == ModeKprobe }

// EffectiveMode is the mode in force: an empty mode is tc.
func (c Config) EffectiveMode() Mode { return c.effectiveMode() }

func (c Config) effectiveMode() Mode {
	if c.Mode == "" {
		return ModeTC
	}
	return c.Mode
}

// withDefaults returns c with every empty field set to its default.
func (c Config) withDefaults() Config {
	c.Mode = c.effectiveMode()
	if c.XDPMode == "" {
		c.XDPMode = XDPAuto
	}
	if c.KprobeAttach == "" {
		c.KprobeAttach = KprobeAttachAuto
	}
	if c.MaxFlows == 0 {
		c.MaxFlows = defaultMaxFlows
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

func hasGlobMeta(s string) bool {
	for _, r := range s {
		switch r {
		case '*', '?', '[', '\\':
			return true
		}
	}
	return false
}
