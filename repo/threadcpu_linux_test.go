package repo

import (
	"syscall"
	"time"
)

// threadCPU is the calling thread's user and system CPU time: what a
// stage cost, whatever else the machine runs meanwhile.
func threadCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(1 /* RUSAGE_THREAD */, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
