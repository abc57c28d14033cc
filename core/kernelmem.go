package core

import (
	"reflect"

	"github.com/cilium/ebpf"
)

// kernelMemory sums the kernel's memory accounting (fdinfo memlock) of
// every BPF map this capture holds: the flow, overflow and filter tables,
// and those of the socket, drops and kprobe objects when loaded. Maps are
// charged to the memory cgroup of the process that created them, so in a
// container this is memory its limit has to hold beside the agent's RSS.
// Computed once per Start; a map the kernel reports no memlock for counts 0.
func (c *Collector) kernelMemory() uint64 {
	seen := map[*ebpf.Map]bool{}
	var total uint64
	add := func(m *ebpf.Map) {
		if m == nil || seen[m] {
			return
		}
		seen[m] = true
		if info, err := m.Info(); err == nil {
			if n, ok := info.Memlock(); ok {
				total += n
			}
		}
	}
	addColl := func(coll *ebpf.Collection) {
		if coll != nil {
			for _, m := range coll.Maps {
				add(m)
			}
		}
	}
	if c.flows != nil && c.flows.walk != nil {
		add(c.flows.walk.out)
	}
	if c.cgFlows != nil && c.cgFlows.walk != nil {
		add(c.cgFlows.walk.out)
	}
	if c.kp != nil && c.kp.flows != nil && c.kp.flows.walk != nil {
		add(c.kp.flows.walk.out)
	}
	if c.flowObjs != nil {
		mapFields(&c.flowObjs.FlowMaps, add)
	}
	if c.cgroupObjs != nil {
		mapFields(&c.cgroupObjs.CgroupMaps, add)
	}
	if c.tcpsock != nil {
		addColl(c.tcpsock.coll)
	}
	if c.kp != nil {
		addColl(c.kp.maps)
	}
	if c.drops != nil {
		mapFields(&c.drops.objs, add)
	}
	return total
}

// mapFields calls f with every *ebpf.Map field of the struct s points to
// (bpf2go's object structs), nested structs included.
func mapFields(s any, f func(*ebpf.Map)) {
	var walk func(v reflect.Value)
	walk = func(v reflect.Value) {
		for i := 0; i < v.NumField(); i++ {
			fv := v.Field(i)
			switch {
			case fv.Type() == reflect.TypeFor[*ebpf.Map]():
				if m, ok := fv.Interface().(*ebpf.Map); ok {
					f(m)
				}
			case fv.Kind() == reflect.Struct && v.Type().Field(i).IsExported():
				walk(fv)
			}
		}
	}
	walk(reflect.ValueOf(s).Elem())
}
