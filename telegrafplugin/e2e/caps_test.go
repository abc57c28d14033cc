package e2e

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// The capabilities the README and the systemd units in dist/ grant instead
// of root: load BPF programs and maps, let the verifier accept the
// programs' pointer arithmetic, attach to TC/XDP/cgroups.
const (
	capNetAdmin = 12
	capPerfmon  = 38
	capBPF      = 39
	leastCaps   = "+bpf,+net_admin,+perfmon"
	unprivUser  = "nobody"
	unprivGroup = "nogroup"
	unprivUID   = 65534
)

var leastCapsMask = uint64(1)<<capNetAdmin | uint64(1)<<capPerfmon | uint64(1)<<capBPF

// ambientCaps runs the command as nobody with exactly the three
// capabilities as ambient ones, as systemd's AmbientCapabilities= does.
func ambientCaps(t *testing.T) []string {
	t.Helper()
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Fatalf("setpriv (util-linux) is needed to drop root: %v", err)
	}
	return []string{"setpriv", "--reuid=" + unprivUser, "--regid=" + unprivGroup, "--clear-groups",
		"--inh-caps=-all," + leastCaps, "--ambient-caps=-all," + leastCaps, "--bounding-set=-all," + leastCaps}
}

// TestLeastPrivilege runs both delivery paths as an unprivileged user with
// only CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON and requires exact counts.
func TestLeastPrivilege(t *testing.T) {
	nettest.RequireBPF(t)
	t.Run("telegraf ambient capabilities", func(t *testing.T) {
		telegrafBin := requireBinary(t, "telegraf")
		p := nettest.NewPair(t)
		runTelegrafOnce(t, p, telegrafBin, ambientCaps(t), false)
	})
	t.Run("shim ambient capabilities", func(t *testing.T) {
		shimBin := requireBinary(t, "telegraf-pktstat-bpf")
		p := nettest.NewPair(t)
		runShim(t, p, shimBin, ambientCaps(t))
	})
	t.Run("shim file capabilities", func(t *testing.T) {
		// setcap on a copy: the shim alone is privileged, and the Telegraf
		// that starts it (here: setpriv with no capabilities) is not.
		shimBin := requireBinary(t, "telegraf-pktstat-bpf")
		if _, err := exec.LookPath("setcap"); err != nil {
			t.Fatalf("setcap (libcap2-bin) is needed for file capabilities: %v", err)
		}
		copyBin := filepath.Join(sharedTempDir(t), "telegraf-pktstat-bpf")
		copyFile(t, shimBin, copyBin, 0o755)
		out, err := exec.Command("setcap", "cap_bpf,cap_net_admin,cap_perfmon=ep", copyBin).CombinedOutput()
		require.NoError(t, err, "setcap: %s", out)
		p := nettest.NewPair(t)
		runShim(t, p, copyBin, []string{"setpriv", "--reuid=" + unprivUser, "--regid=" + unprivGroup,
			"--clear-groups", "--inh-caps=-all", "--bounding-set=-all," + leastCaps})
	})
}

// requireUnprivileged checks that the running process is nobody with
// exactly the three capabilities effective.
func requireUnprivileged(t *testing.T, proc *process) {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", proc.cmd.Process.Pid))
	require.NoError(t, err)
	var uid string
	var capEff uint64
	for _, line := range strings.Split(string(status), "\n") {
		k, v, _ := strings.Cut(line, ":")
		v = strings.TrimSpace(v)
		switch k {
		case "Uid":
			uid = strings.Fields(v)[1] // effective
		case "CapEff":
			capEff, err = strconv.ParseUint(v, 16, 64)
			require.NoError(t, err)
		}
	}
	require.Equal(t, strconv.Itoa(unprivUID), uid, "effective uid of %s", proc.name)
	require.Equal(t, fmt.Sprintf("%016x", leastCapsMask), fmt.Sprintf("%016x", capEff), "effective capabilities of %s", proc.name)
}

// sharedTempDir is a temporary directory that the unprivileged user can
// read and write (t.TempDir's parent is 0700).
func sharedTempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.Chmod(filepath.Dir(dir), 0o755))
	require.NoError(t, os.Chmod(dir, 0o777))
	return dir
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	require.NoError(t, err)
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	require.NoError(t, err)
	_, err = io.Copy(out, in)
	require.NoError(t, errors.Join(err, out.Close()))
}
