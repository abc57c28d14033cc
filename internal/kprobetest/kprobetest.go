// Package kprobetest lets the agents' end-to-end tests ask whether core's
// kprobe mode can run on this kernel, as core's own tests do.
package kprobetest

import (
	"context"
	"errors"
	"os"
	"testing"

	"github.com/pktstat-bpf/pktstat-bpf/core"
)

// Require skips t where kprobe mode cannot attach (neither kprobes nor
// fentry, as on the 6.18 build host), probed by starting it, unless
// PKTSTAT_REQUIRE_KPROBE=1 (set by make vmtest in its guests), which makes
// that a failure: kprobe mode must never pass CI by skipping everywhere.
func Require(t testing.TB) {
	t.Helper()
	c, err := core.New(core.Config{Mode: core.ModeKprobe})
	if err == nil {
		err = c.Start(context.Background())
		c.Close()
	}
	switch {
	case err == nil:
		return
	case !errors.Is(err, core.ErrNotSupported):
		t.Fatalf("probe kprobe mode: %v", err)
	case os.Getenv("PKTSTAT_REQUIRE_KPROBE") == "1":
		t.Fatalf("PKTSTAT_REQUIRE_KPROBE=1 but this kernel cannot run kprobe mode: %v", err)
	}
	t.Skipf("this kernel has neither kprobes nor fentry for kprobe mode: %v", err)
}
