package core

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/pktstat-bpf/pktstat-bpf/bpf"
)

// A table's slots (a flow's key and state) hold no pointer, so the chunks
// of a full table (131,072 slots by default) are memory the garbage
// collector does not scan.
func TestFlowStateHoldsNoPointers(t *testing.T) {
	var check func(path string, typ reflect.Type)
	check = func(path string, typ reflect.Type) {
		switch typ.Kind() {
		case reflect.Struct:
			for i := range typ.NumField() {
				f := typ.Field(i)
				check(path+"."+f.Name, f.Type)
			}
		case reflect.Array:
			check(path+"[]", typ.Elem())
		case reflect.Pointer, reflect.UnsafePointer, reflect.Map, reflect.Slice, reflect.String,
			reflect.Interface, reflect.Chan, reflect.Func:
			t.Errorf("%s is a %s (%s): a table's slots would be scanned by the GC", path, typ.Kind(), typ)
		}
	}
	check("flowState", reflect.TypeFor[flowState]())
	check("slot[FlowFlowKey]", reflect.TypeFor[slot[bpf.FlowFlowKey]]())
	check("slot[CgroupCgroupFlowKey]", reflect.TypeFor[slot[bpf.CgroupCgroupFlowKey]]())
	check("slot[KprobeCgroupFlowKey]", reflect.TypeFor[slot[bpf.KprobeCgroupFlowKey]]())
}

// A stamp keeps the drain's wall time for records and its monotonic time
// for idle timeouts.
func TestStamp(t *testing.T) {
	t0 := time.Now()
	s := stampOf(t0)
	if !s.time().Equal(t0) {
		t.Errorf("stamp's wall time %v, want %v", s.time(), t0)
	}
	for _, d := range []time.Duration{0, time.Millisecond, 3 * time.Second, time.Hour} {
		if got := s.since(stampOf(t0.Add(d))); got != d {
			t.Errorf("since(t0+%v) = %v, want %v", d, got, d)
		}
	}
	// Without a monotonic reading (times built from Unix nanoseconds)
	// both sides fall back to the wall clock.
	w := t0.Round(0)
	if got := stampOf(w).since(stampOf(w.Add(5 * time.Second))); got != 5*time.Second {
		t.Errorf("wall-only since = %v, want 5s", got)
	}
}

// Keys with the same hash share an index entry and are chained: each is
// found in its own slot, and removing the chain's head, middle or tail
// (an expired flow) leaves the others found, their slots unmoved, and the
// freed slots reused.
func TestTableChains(t *testing.T) {
	for name, hash := range map[string]func(*bpf.FlowOverflowKey) uint64{
		"all keys collide":  func(*bpf.FlowOverflowKey) uint64 { return 7 },
		"some keys collide": func(k *bpf.FlowOverflowKey) uint64 { return uint64(k.Ifindex % 2) },
	} {
		t.Run(name, func(t *testing.T) {
			tb := &table[bpf.FlowOverflowKey]{index: map[uint64]int32{}, hashOf: hash}
			key := func(i uint32) *bpf.FlowOverflowKey { return &bpf.FlowOverflowKey{Ifindex: i} }
			slots := map[uint32]int32{}
			for i := uint32(1); i <= 5; i++ {
				s := tb.add(key(i))
				tb.at(s).state.id = uint64(i)
				slots[i] = s
			}
			check := func(what string) {
				t.Helper()
				for i, s := range slots {
					if got := tb.lookup(key(i)); got != s || tb.at(got).state.id != uint64(i) {
						t.Fatalf("%s: key %d found in slot %d, want %d", what, i, got, s)
					}
				}
				if tb.flows != len(slots) {
					t.Fatalf("%s: %d flows counted, want %d", what, tb.flows, len(slots))
				}
			}
			check("added")
			// The newest (the chain's head), one in the middle, the oldest (its tail).
			var freed []int32
			for _, gone := range []uint32{5, 3, 1} {
				freed = append(freed, slots[gone])
				tb.forget(slots[gone])
				delete(slots, gone)
				if got := tb.lookup(key(gone)); got != -1 {
					t.Fatalf("forgotten key %d still found in slot %d", gone, got)
				}
				check(fmt.Sprintf("after forgetting %d", gone))
			}
			// New keys take the freed slots before new ones.
			for i := uint32(6); i <= 8; i++ {
				s := tb.add(key(i))
				tb.at(s).state.id = uint64(i)
				slots[i] = s
				if !slices.Contains(freed, s) {
					t.Errorf("key %d got slot %d, not one of the freed %v", i, s, freed)
				}
			}
			check("re-added")
			if tb.n != 5 {
				t.Errorf("%d slots handed out for at most 5 flows at once", tb.n)
			}
		})
	}
}
