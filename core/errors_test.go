package core

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// Start fails with an error that says what is wrong and what to do, and
// leaves nothing attached.
func TestStartErrorsSayWhatToDo(t *testing.T) {
	p := nettest.NewPair(t)
	for _, tc := range []struct {
		name string
		cfg  Config
		want []string
	}{
		{"unknown interface", Config{Interfaces: []string{"nosuch0"}, NetNS: p.NSPathA()},
			[]string{`interface "nosuch0" not found in network namespace`, "have: lo, " + p.IfA}},
		{"no default route", Config{NetNS: p.NSPathA()},
			[]string{"no default route", "set interfaces"}},
		{"missing namespace", Config{Interfaces: []string{"lo"}, NetNS: "/var/run/netns/nosuch"},
			[]string{"open network namespace /var/run/netns/nosuch"}},
		{"cgroup path outside the mount", Config{Mode: ModeCgroup, CgroupPath: "/tmp"},
			[]string{"cgroup_path /tmp is not below the cgroup2 mount"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := New(tc.cfg)
			if err != nil {
				t.Fatal(err)
			}
			err = c.Start(context.Background())
			if err == nil {
				c.Close()
				t.Fatal("Start succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if _, rerr := c.Read(context.Background()); rerr == nil {
				t.Error("Read after a failed Start succeeded")
			}
		})
	}
	if n := attachedPrograms(t, p.NSA, p.IfA); n != 0 {
		t.Errorf("%d programs attached after failed starts", n)
	}
}

// Without privileges the error names the capabilities to grant.
func TestUnprivilegedStartNamesCapabilities(t *testing.T) {
	nettest.RequireBPF(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Fatalf("setpriv (util-linux) is needed: %v", err)
	}
	cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
		os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PKTSTAT_HELPER=hold-collector", "PKTSTAT_MODE=tc", "PKTSTAT_IFACE=lo")
	out, _ := cmd.CombinedOutput()
	for _, w := range []string{"error", "CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"} {
		if !strings.Contains(string(out), w) {
			t.Errorf("unprivileged start said %q; want it to mention %s", out, w)
		}
	}

	// With CAP_BPF and CAP_NET_ADMIN but not CAP_PERFMON the verifier
	// rejects the parser; the error must blame the capability, not the kernel.
	cmd = exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
		"--inh-caps=-all,+bpf,+net_admin", "--ambient-caps=-all,+bpf,+net_admin", os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PKTSTAT_HELPER=hold-collector", "PKTSTAT_MODE=tc", "PKTSTAT_IFACE=lo")
	out, _ = cmd.CombinedOutput()
	if !strings.Contains(string(out), "lacks CAP_PERFMON") || strings.Contains(string(out), "too old") {
		t.Errorf("start without CAP_PERFMON said %q; want it to say the process lacks CAP_PERFMON", out)
	}
}
