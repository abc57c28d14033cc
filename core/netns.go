package core

import (
	"errors"
	"fmt"
	"runtime"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// nsContext runs work in the configured network namespace, or in the
// caller's when none is configured.
type nsContext struct {
	path   string
	handle netns.NsHandle // -1 (closed) when path is empty
	nl     *netlink.Handle
}

func openNS(path string) (*nsContext, error) {
	n := &nsContext{path: path, handle: netns.None()}
	if path != "" {
		h, err := netns.GetFromPath(path)
		if err != nil {
			return nil, fmt.Errorf("open network namespace %s: %w", path, err)
		}
		n.handle = h
	}
	var err error
	if path == "" {
		n.nl, err = netlink.NewHandle()
	} else {
		n.nl, err = netlink.NewHandleAt(n.handle)
	}
	if err != nil {
		n.close()
		return nil, fmt.Errorf("open netlink socket: %w", err)
	}
	return n, nil
}

func (n *nsContext) name() string {
	if n.path == "" {
		return "the current network namespace"
	}
	return "network namespace " + n.path
}

// do runs fn with the calling thread inside the namespace. Attach calls that
// take an ifindex resolve it in the calling thread's namespace.
func (n *nsContext) do(fn func() error) error {
	if n.path == "" {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Never unlocked: a thread that failed to switch back must exit
		// with this goroutine instead of running others in the wrong namespace.
		orig, err := netns.Get()
		if err != nil {
			errc <- fmt.Errorf("get current network namespace: %w", err)
			return
		}
		defer orig.Close()
		if err := netns.Set(n.handle); err != nil {
			errc <- fmt.Errorf("enter %s: %w", n.name(), err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("leave %s: %w", n.name(), err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

func (n *nsContext) close() {
	if n.nl != nil {
		n.nl.Close()
	}
	if n.handle.IsOpen() {
		n.handle.Close()
	}
}
