// Package bpftest builds the TC programs that tests put in front of ours,
// standing for another datapath (Cilium, Calico) on the same hooks.
package bpftest

import (
	"encoding/binary"
	"net"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"

	"github.com/pktstat-bpf/pktstat-bpf/internal/nettest"
)

// TC verdicts a program in front of ours may return.
const (
	TCXNext = -1
	TCXPass = 0 // TC_ACT_OK: ends a TCX chain
	TCXDrop = 2 // TC_ACT_SHOT
)

// Front is a TC program that counts what it sees, then returns its verdict
// or redirects to another interface. Its counts are the oracle for what
// reached the hook.
type Front struct {
	Prog  *ebpf.Program
	count *ebpf.Map // one entry: packets, bytes
}

// NewFront loads a Front program called name that returns verdict, or,
// when redirectTo is not zero, redirects every packet to that ifindex.
// It is closed when t ends.
func NewFront(t testing.TB, name string, verdict int32, redirectTo int) *Front {
	t.Helper()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 16, MaxEntries: 1})
	if err != nil {
		t.Fatalf("front counter map: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	addBytes := asm.StoreXAdd(asm.R0, asm.R1, asm.DWord)
	addBytes.Offset = 8
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1), // ctx
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "verdict"),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		asm.LoadMem(asm.R1, asm.R6, 0, asm.Word), // skb->len
		addBytes,
	}
	if redirectTo != 0 {
		insns = append(insns,
			asm.Mov.Imm(asm.R1, int32(redirectTo)).WithSymbol("verdict"),
			asm.Mov.Imm(asm.R2, 0),
			asm.FnRedirect.Call(),
			asm.Return())
	} else {
		insns = append(insns, asm.Mov.Imm(asm.R0, verdict).WithSymbol("verdict"), asm.Return())
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{Name: name, Type: ebpf.SchedCLS, Instructions: insns, License: "Dual MIT/GPL"})
	if err != nil {
		t.Fatalf("load front program %s: %v", name, err)
	}
	t.Cleanup(func() { prog.Close() })
	return &Front{Prog: prog, count: m}
}

// Seen returns the packets and bytes the program has seen.
func (f *Front) Seen(t testing.TB) (packets, bytes uint64) {
	t.Helper()
	var v [16]byte
	if err := f.count.Lookup(uint32(0), &v); err != nil {
		t.Fatalf("read front counter: %v", err)
	}
	return binary.LittleEndian.Uint64(v[:8]), binary.LittleEndian.Uint64(v[8:])
}

// ID is the program's kernel id.
func (f *Front) ID(t testing.TB) ebpf.ProgramID {
	t.Helper()
	info, err := f.Prog.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, ok := info.ID()
	if !ok {
		t.Fatal("no program id")
	}
	return id
}

// AttachTCX attaches prog to dev in the namespace at nsPath; anchor nil
// appends at the tail. The link is closed when t ends.
func AttachTCX(t testing.TB, nsPath, dev string, prog *ebpf.Program, at ebpf.AttachType, anchor link.Anchor) link.Link {
	t.Helper()
	var l link.Link
	if err := nettest.Do(nsPath, func() error {
		ifc, err := net.InterfaceByName(dev)
		if err != nil {
			return err
		}
		l, err = link.AttachTCX(link.TCXOptions{Interface: ifc.Index, Program: prog, Attach: at, Anchor: anchor})
		return err
	}); err != nil {
		t.Fatalf("attach tcx program to %s: %v", dev, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}
