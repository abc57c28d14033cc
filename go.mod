module github.com/pktstat-bpf/pktstat-bpf

go 1.26

require (
	github.com/vishvananda/netlink v1.3.1
	github.com/vishvananda/netns v0.0.5
)

require golang.org/x/sys v0.43.0 // indirect
