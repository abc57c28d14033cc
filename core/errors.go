package core

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// explainLoad turns a load failure into an error that says what to do.
func explainLoad(what string, err error) error {
	var verr *ebpf.VerifierError
	switch {
	case errors.As(err, &verr):
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

func isNotExist(err error) bool {
	return errors.Is(err, os.ErrNotExist) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV)
}
