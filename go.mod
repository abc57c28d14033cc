module github.com/pktstat-bpf/pktstat-bpf

go 1.26
