package core

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// explainLoad turns a load failure into an error that says what to do.
func explainLoad(what string, err error) error {
	var verr *ebpf.VerifierError
	switch {
	case errors.As(err, &verr):
		// Without CAP_PERFMON the verifier forbids the pointer arithmetic
		// packet parsing needs, which reads like a program bug.
		if missing := missingCaps(); len(missing) > 0 {
			return fmt.Errorf("load %s: the verifier rejected the program because the process lacks %s: grant CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON or run as root: %w",
				what, strings.Join(missing, " and "), err)
		}
		return fmt.Errorf("load %s: the kernel verifier rejected the program (kernel too old for this mode?): %w", what, err)
	case errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES):
		return fmt.Errorf("load %s: %w: run as root, or grant CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON "+
			"(CAP_SYS_ADMIN on kernels before 5.8) and raise RLIMIT_MEMLOCK on kernels before 5.11 (LimitMEMLOCK=infinity)", what, err)
	case errors.Is(err, ebpf.ErrNotSupported):
		return fmt.Errorf("load %s: %w", what, err)
	}
	return fmt.Errorf("load %s: %w", what, err)
}

// needRoot explains a permission failure of an attach step.
func needPrivilege(op string, err error) error {
	if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
		return fmt.Errorf("%s: %w: run as root or grant CAP_NET_ADMIN and CAP_BPF", op, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// missingCaps names the capabilities the BPF loads need that the process
// does not have in its effective set.
func missingCaps() []string {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return nil
	}
	has := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	if has(unix.CAP_SYS_ADMIN) {
		return nil
	}
	var out []string
	for _, c := range []struct {
		bit  uint
		name string
	}{{unix.CAP_BPF, "CAP_BPF"}, {unix.CAP_PERFMON, "CAP_PERFMON"}, {unix.CAP_NET_ADMIN, "CAP_NET_ADMIN"}} {
		if !has(c.bit) {
			out = append(out, c.name)
		}
	}
	return out
}

func isNotExist(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV)
}
