package main

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// pipeSize is what growPipe asks for: Linux's default pipe-max-size, so
// an unprivileged user gets it.
const pipeSize = 1 << 20

// growPipe enlarges the kernel buffer of w when w is a pipe. A dump writes
// whole blobs, and through the default 64 KiB buffer every blob cost the
// writer and the reader (pg_restore, a hash, a compressor) many wake-ups:
// 1 GiB dumped into a pipe took 10 to 15% less wall time with 1 MiB. A
// refusal (per-user pipe quota) leaves the pipe as it was, which only
// costs that time.
func growPipe(w io.Writer) {
	f, ok := w.(*os.File)
	if !ok {
		return
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFIFO {
		return
	}
	_, _ = unix.FcntlInt(f.Fd(), unix.F_SETPIPE_SZ, pipeSize)
}
