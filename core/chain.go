package core

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// Our TC programs must run first on their hook: a program in front of ours
// that drops, redirects or ends the chain (TCX_PASS does, under TCX) hides
// packets from us. We attach at the head, and check the position after
// attaching and at every Read, because another agent (Cilium, Calico) may
// insert itself before us later. We do not move back to the head: a second
// copy of our program at the head, then removing the first, would count
// the packets in between twice. We report it instead.

// checkChains updates each TC hook's inFront and logs every change. It must
// run in the hooks' network namespace (TCX queries take an ifindex).
func checkChains(hooks []*hook, log *slog.Logger) {
	for _, h := range hooks {
		front, err := h.chainFront()
		if err != nil {
			log.Debug("pktstat-bpf: could not check the hook's chain", "interface", h.target, "hook", h.kind, "err", err)
			continue
		}
		if front == h.inFront {
			continue
		}
		switch {
		case front != "" && h.legacy != nil && h.legacy.blocker != "":
			log.Warn("pktstat-bpf: a tc filter holds priority 1 with another classifier kind or protocol, so no filter can run "+
				"before it; ours runs after it and counts only the packets it passes on", "interface", h.target, "hook", h.kind, "in_front", front)
		case front != "":
			log.Warn("pktstat-bpf: another program runs before ours on this hook; packets it drops, redirects or passes "+
				"without TCX_NEXT are not counted", "interface", h.target, "hook", h.kind, "in_front", front)
		default:
			log.Info("pktstat-bpf: our program runs first on this hook again", "interface", h.target, "hook", h.kind)
		}
		h.inFront = front
	}
}

// chainFront names what runs before our program on h's hook, "" when ours
// runs first (or the hook has no chain, as XDP and cgroup hooks).
func (h *hook) chainFront() (string, error) {
	switch {
	case h.legacy != nil:
		return h.legacy.front()
	case h.attach == ebpf.AttachTCXIngress || h.attach == ebpf.AttachTCXEgress:
		res, err := link.QueryPrograms(link.QueryOptions{Target: h.ifindex, Attach: h.attach})
		if err != nil {
			return "", fmt.Errorf("query tcx chain: %w", err)
		}
		if len(res.Programs) == 0 {
			return "", errors.New("tcx chain is empty: our link is gone")
		}
		if id := res.Programs[0].ID; id != h.progID {
			return describeProgram(id), nil
		}
	}
	return "", nil
}
