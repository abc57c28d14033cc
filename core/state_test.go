package core

import (
	"reflect"
	"testing"
	"time"
)

// A flowState holds no pointer, so the slabs of a full table (131,072 of
// them by default) are memory the garbage collector does not scan.
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
			t.Errorf("%s is a %s (%s): flowState slabs would be scanned by the GC", path, typ.Kind(), typ)
		}
	}
	check("flowState", reflect.TypeFor[flowState]())
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
