package main

import (
	"fmt"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// packetSender writes whole Ethernet frames on A's veth end through an
// AF_PACKET socket with sendto: small frames become linear skbs, as most
// NIC drivers deliver them (trafgen's TX ring gives 14-byte linear heads).
type packetSender struct {
	fd  int
	sll unix.SockaddrLinklayer
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

func (p *vethPair) newSender() (*packetSender, error) {
	s := &packetSender{fd: -1}
	err := inNS(p.nsA, func() error {
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open AF_PACKET socket: %w", err)
		}
		s.fd = fd
		_, idx, err := p.link(p.nsA, p.ifA)
		if err != nil {
			return err
		}
		s.sll = unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: idx, Halen: 6}
		copy(s.sll.Addr[:], p.macB)
		// The socket is bound to A's namespace when created; binding to the
		// interface keeps it from seeing anything else.
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: 0, Ifindex: idx})
	})
	if err != nil {
		if s.fd >= 0 {
			unix.Close(s.fd)
		}
		return nil, err
	}
	return s, nil
}

func (s *packetSender) Close() { unix.Close(s.fd) }

// send writes each frame once, in order.
func (s *packetSender) send(frames [][]byte) error {
	for _, f := range frames {
		for {
			err := unix.Sendto(s.fd, f, 0, &s.sll)
			if err == unix.ENOBUFS || err == unix.EAGAIN {
				time.Sleep(50 * time.Microsecond)
				continue
			}
			if err != nil {
				return fmt.Errorf("send frame on AF_PACKET socket: %w", err)
			}
			break
		}
	}
	return nil
}

// flowFrames returns n frames of n distinct UDP flows from A to B.
func (p *vethPair) flowFrames(n int) [][]byte {
	frames := make([][]byte, n)
	for i := range frames {
		frames[i] = udpFrame(p.macA, p.macB, uint16(1024+i%60000), uint16(10000+i/60000), 18)
	}
	return frames
}

// senderRun sends count frames cycling over frames from one locked thread,
// whose CPU time is the sender's.
func (p *vethPair) senderRun(s *packetSender, frames [][]byte, count int) (genRun, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before, err := p.rxPackets()
	if err != nil {
		return genRun{}, err
	}
	var ru0, ru1 unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru0); err != nil {
		return genRun{}, err
	}
	t0 := time.Now()
	deadline := t0.Add(60 * time.Second)
	for sent := 0; sent < count; sent += len(frames) {
		if err := s.send(frames[:min(len(frames), count-sent)]); err != nil {
			return genRun{}, err
		}
		if time.Now().After(deadline) {
			return genRun{}, fmt.Errorf("AF_PACKET sender: %d frames took more than a minute", sent)
		}
	}
	elapsed := time.Since(t0)
	if err := unix.Getrusage(unix.RUSAGE_THREAD, &ru1); err != nil {
		return genRun{}, err
	}
	after, err := p.rxPackets()
	if err != nil {
		return genRun{}, err
	}
	got := after - before
	if got < uint64(count)/2 {
		return genRun{}, fmt.Errorf("B received %d of %d frames: the link or sender is broken", got, count)
	}
	cpu := ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano()
	return genRun{float64(got) / elapsed.Seconds(), float64(cpu) / float64(got)}, nil
}
