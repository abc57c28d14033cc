package core

import (
	"errors"
	"fmt"
	"log/slog"
	"path"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// attachFunc attaches the mode's programs to one interface.
type attachFunc func(ifindex int, name string) ([]*hook, error)

// ifaceSet keeps the programs attached to every interface whose name
// matches the patterns, following link events: new matches are attached,
// deleted interfaces are dropped, returning ones are attached again.
type ifaceSet struct {
	ns       *nsContext
	patterns []string
	attach   attachFunc
	log      *slog.Logger
	// watch, if set, is told when an interface is attached (on) and when
	// it no longer is, so that the drops program follows the same set.
	watch func(ifindex int, on bool)

	mu       sync.Mutex
	attached map[int]*ifaceHooks // by ifindex
	names    map[int]string      // every ifindex seen, kept for naming flows of gone interfaces
	failed   map[string]string   // interface name -> last attach error

	done chan struct{}
	wg   sync.WaitGroup
}

type ifaceHooks struct {
	name  string
	hooks []*hook
}

func (s *ifaceSet) matches(name string) bool {
	for _, p := range s.patterns {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

// defaultRouteInterface is the interface of the IPv4 default route, else IPv6's.
func defaultRouteInterface(ns *nsContext) (string, error) {
	for _, family := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		routes, err := ns.nl.RouteListFiltered(family, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		if err != nil {
			return "", fmt.Errorf("list routes: %w", err)
		}
		for _, r := range routes {
			if r.Dst != nil {
				if ones, _ := r.Dst.Mask.Size(); ones != 0 {
					continue
				}
			}
			idx := r.LinkIndex
			if idx == 0 && len(r.MultiPath) > 0 {
				idx = r.MultiPath[0].LinkIndex
			}
			if l, err := ns.nl.LinkByIndex(idx); err == nil {
				return l.Attrs().Name, nil
			}
		}
	}
	return "", fmt.Errorf("no default route in %s to pick an interface from: set interfaces (names or globs such as \"eth*\")", ns.name())
}

// start attaches every matching interface and begins following link events.
// A pattern without glob characters that names no interface is an error.
func (s *ifaceSet) start() error {
	s.attached = map[int]*ifaceHooks{}
	s.names = map[int]string{}
	s.failed = map[string]string{}
	s.done = make(chan struct{})

	updates := make(chan netlink.LinkUpdate, 64)
	opts := netlink.LinkSubscribeOptions{
		ErrorCallback: func(err error) {
			select {
			case <-s.done:
				// Closing the socket at shutdown surfaces as a receive error.
				return
			default:
			}
			s.log.Warn("pktstat-bpf: link event subscription failed; new interfaces will not be attached", "err", err)
		},
	}
	if s.ns.path != "" {
		h := s.ns.handle
		opts.Namespace = &h
	}
	// Subscribe before listing so that no interface appearing in between is missed.
	if err := netlink.LinkSubscribeWithOptions(updates, s.done, opts); err != nil {
		return fmt.Errorf("subscribe to link events: %w", err)
	}

	links, err := s.ns.nl.LinkList()
	if err != nil {
		close(s.done)
		return fmt.Errorf("list interfaces in %s: %w", s.ns.name(), err)
	}
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	sort.Strings(names)
	for _, p := range s.patterns {
		if !hasGlobMeta(p) && !slices.Contains(names, p) {
			close(s.done)
			return fmt.Errorf("interface %q not found in %s (have: %s)", p, s.ns.name(), strings.Join(names, ", "))
		}
	}
	var errs []error
	matched := 0
	for _, l := range links {
		a := l.Attrs()
		s.mu.Lock()
		s.names[a.Index] = a.Name
		s.mu.Unlock()
		if !s.matches(a.Name) {
			continue
		}
		matched++
		if err := s.add(a.Index, a.Name); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		close(s.done)
		s.closeAll()
		return err
	}
	if matched == 0 {
		s.log.Warn("pktstat-bpf: no interface matches yet; waiting for one to appear", "interfaces", s.patterns)
	}
	s.wg.Add(1)
	go s.follow(updates)
	return nil
}

func (s *ifaceSet) add(ifindex int, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.attached[ifindex]; ok && cur.name == name {
		s.checkChains(cur.hooks)
		return nil
	}
	hooks, err := s.attach(ifindex, name)
	if err != nil {
		s.failed[name] = err.Error()
		return err
	}
	delete(s.failed, name)
	s.attached[ifindex] = &ifaceHooks{name: name, hooks: hooks}
	if s.watch != nil {
		s.watch(ifindex, true)
	}
	s.names[ifindex] = name
	kinds := make([]string, len(hooks))
	adopted := 0
	for i, h := range hooks {
		kinds[i] = h.kind
		if h.adopted {
			adopted++
		}
	}
	s.log.Info("pktstat-bpf: attached", "interface", name, "ifindex", ifindex, "hooks", kinds, "adopted_pinned", adopted)
	s.checkChains(hooks)
	return nil
}

// checkChains checks where our programs sit in their chains (chain.go).
func (s *ifaceSet) checkChains(hooks []*hook) {
	if err := s.ns.do(func() error { checkChains(hooks, s.log); return nil }); err != nil {
		s.log.Debug("pktstat-bpf: could not check tc chains", "err", err)
	}
}

// pinned reports whether path is the pin of an attached hook.
func (s *ifaceSet) pinned(path string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.attached {
		for _, h := range a.hooks {
			if h.pin == path {
				return true
			}
		}
	}
	return false
}

func (s *ifaceSet) remove(ifindex int, gone bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.attached[ifindex]
	if !ok {
		return
	}
	delete(s.attached, ifindex)
	if s.watch != nil {
		s.watch(ifindex, false)
	}
	// No longer watched: a pinned link is unpinned too, which detaches it.
	if err := closeHooks(cur.hooks, true); err != nil && !gone {
		s.log.Warn("pktstat-bpf: detach failed", "interface", cur.name, "err", err)
	}
	s.log.Info("pktstat-bpf: detached", "interface", cur.name, "ifindex", ifindex, "gone", gone)
}

func (s *ifaceSet) follow(updates <-chan netlink.LinkUpdate) {
	defer s.wg.Done()
	for {
		select {
		case <-s.done:
			return
		case u, ok := <-updates:
			if !ok {
				return
			}
			a := u.Attrs()
			switch u.Header.Type {
			case unix.RTM_DELLINK:
				s.remove(a.Index, true)
			case unix.RTM_NEWLINK:
				s.mu.Lock()
				s.names[a.Index] = a.Name
				cur, had := s.attached[a.Index]
				s.mu.Unlock()
				switch {
				case s.matches(a.Name):
					if had && cur.name != a.Name {
						s.remove(a.Index, false)
					}
					if err := s.add(a.Index, a.Name); err != nil {
						s.log.Warn("pktstat-bpf: attach failed", "interface", a.Name, "err", err)
					}
				case had:
					// Renamed to a name that no longer matches.
					s.remove(a.Index, false)
				}
			}
		}
	}
}

// name returns the interface name of ifindex, also for interfaces now gone.
func (s *ifaceSet) name(ifindex int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.names[ifindex]
}

// states checks every hook's chain position and reports the hooks.
func (s *ifaceSet) states() []HookState {
	s.mu.Lock()
	defer s.mu.Unlock()
	var all []*hook
	for _, a := range s.attached {
		all = append(all, a.hooks...)
	}
	s.checkChains(all)
	var out []HookState
	for _, h := range all {
		out = append(out, HookState{Target: h.target, Hook: h.kind, Attached: true, InFront: h.inFront})
	}
	for name, err := range s.failed {
		out = append(out, HookState{Target: name, Attached: false, Error: err})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Target != out[j].Target {
			return out[i].Target < out[j].Target
		}
		return out[i].Hook < out[j].Hook
	})
	return out
}

func (s *ifaceSet) closeAll() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for idx, a := range s.attached {
		// Pinned hooks stay in the kernel (pin_path), the rest is detached.
		errs = append(errs, closeHooks(a.hooks, false))
		delete(s.attached, idx)
	}
	return errors.Join(errs...)
}

// stop ends link following and detaches everything.
func (s *ifaceSet) stop() error {
	if s.done != nil {
		select {
		case <-s.done:
		default:
			close(s.done)
		}
	}
	s.wg.Wait()
	return s.closeAll()
}
