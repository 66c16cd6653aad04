package pgstream

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"syscall"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"
)

// ErrToolMissing means a Postgres client tool (pg_dump, psql, ...) is not
// in the container: it is probably not a Postgres container.
var ErrToolMissing = errors.New("tool not found in the container")

// ErrNotRunning means a container is not running (or stopped while a tool
// ran in it).
var ErrNotRunning = errors.New("container is not running")

// ErrExecUpgrade means the Docker API answered an exec's attach without
// switching protocols (HTTP 101): something between scalr-backup and the
// engine, in practice a socket proxy, does not pass HTTP connection
// upgrades, so no command can run in any container through it
// (tecnativa/docker-socket-proxy 0.2.0, on HAProxy 3.0, is one).
var ErrExecUpgrade = errors.New("the Docker API did not upgrade the exec connection")

// stderrKeep is how much of a tool's standard error is kept for messages:
// the end, where the reason for a failure is.
const stderrKeep = 8 << 10

// execSpec is a command to run in a container by exec.
type execSpec struct {
	Cmd []string
	// Tool names the command in messages; empty: Cmd[0]. (A command run
	// through a wrapper such as stdbuf is still named for what it is.)
	Tool  string
	Env   []string // added to the container's environment
	Stdin bool     // attach standard input (see proc.Stdin, proc.CloseStdin)
	// Stdout receives the standard output; nil makes it readable from
	// proc.Stdout, which must then be read to the end (or the proc closed).
	Stdout io.Writer
}

// proc is a command running in a container by exec: its standard output
// and error come demultiplexed (stdcopy) from the hijacked connection, its
// exit code from exec inspect once the output has ended.
type proc struct {
	d         Docker
	container string // the container's name, for messages
	tool      string // the command's name, for messages
	execID    string
	hj        types.HijackedResponse
	stdout    *io.PipeReader // when execSpec.Stdout was nil
	stderr    *tailBuffer

	done      chan struct{} // closed when the demultiplexer returned
	demuxErr  error
	truncated bool
	stopAfter func() bool

	closeOnce sync.Once
	waitOnce  sync.Once
	waitErr   error
}

// startProc creates and attaches an exec of spec in the container. When ctx
// ends, the connection is closed (the command then gets EOF on its input
// and a broken pipe on its output).
func startProc(ctx context.Context, d Docker, containerName string, spec execSpec) (*proc, error) {
	tool := spec.Tool
	if tool == "" {
		tool = spec.Cmd[0]
	}
	cr, err := d.ContainerExecCreate(ctx, containerName, container.ExecOptions{
		Cmd:          spec.Cmd,
		Env:          spec.Env,
		AttachStdin:  spec.Stdin,
		AttachStdout: true,
		AttachStderr: true,
	})
	if err != nil {
		return nil, fmt.Errorf("run %s in container %s: %w", tool, containerName, dockerErr(containerName, err))
	}
	hj, err := d.ContainerExecAttach(ctx, cr.ID, container.ExecAttachOptions{})
	if err != nil {
		if strings.Contains(err.Error(), "unable to upgrade to") {
			return nil, execUpgradeErr(d, tool, containerName, err)
		}
		return nil, fmt.Errorf("run %s in container %s: %w", tool, containerName, dockerErr(containerName, err))
	}
	p := &proc{
		d: d, container: containerName, tool: tool, execID: cr.ID, hj: hj,
		stderr: &tailBuffer{max: stderrKeep},
		done:   make(chan struct{}),
	}
	out := spec.Stdout
	var pw *io.PipeWriter
	if out == nil {
		p.stdout, pw = io.Pipe()
		out = pw
	}
	p.stopAfter = context.AfterFunc(ctx, p.Close)
	go func() {
		defer close(p.done)
		src := &countReader{r: bufio.NewReaderSize(hj.Reader, execReadBuffer)}
		ow, ew := &frameWriter{w: out}, &frameWriter{w: p.stderr}
		_, err := stdcopy.StdCopy(ow, ew, src)
		// StdCopy takes a stream that ends inside a frame for a clean end;
		// every byte read is a header or a payload byte written, so the
		// sums tell.
		atBoundary := src.n == ow.bytes+ew.bytes+8*(ow.frames+ew.frames)
		if errors.Is(err, syscall.ECONNRESET) && atBoundary {
			// The engine closed the connection with input we sent still
			// unread (a command that exits without reading all of its
			// input): every frame it sent arrived whole. Whether the
			// command succeeded is its exit code's to say.
			err = nil
		}
		if err == nil && !atBoundary {
			p.truncated = true
			// Not io.ErrUnexpectedEOF: the chunker (io.ReadFull) would
			// take that for a short read and keep reading.
			err = errStreamCut
		}
		p.demuxErr = err
		if pw != nil {
			pw.CloseWithError(err) // nil: EOF
		}
	}()
	return p, nil
}

// Stdout is the command's standard output (execSpec.Stdout nil only).
func (p *proc) Stdout() io.Reader { return p.stdout }

// Stdin is the command's standard input (execSpec.Stdin only).
func (p *proc) Stdin() io.Writer { return p.hj.Conn }

// CloseStdin closes the command's standard input: it reads EOF.
func (p *proc) CloseStdin() error { return p.hj.CloseWrite() }

// Close drops the connection; the demultiplexer ends. Safe to call more
// than once and together with Wait.
func (p *proc) Close() {
	p.closeOnce.Do(func() {
		if p.stopAfter != nil {
			p.stopAfter()
		}
		p.hj.Close()
		if p.stdout != nil {
			p.stdout.CloseWithError(errProcClosed)
		}
	})
}

var errProcClosed = errors.New("exec connection closed")

var errStreamCut = errors.New("the exec stream ended inside a frame")

// StderrTail is the end of what the command wrote to standard error.
func (p *proc) StderrTail() string { return strings.TrimSpace(p.stderr.String()) }

// exitPollTimeout bounds the wait for the engine to report a command's exit
// after its output ended.
const exitPollTimeout = 30 * time.Second

// Wait waits for the output to end, then for the engine to report the
// command's exit, and returns an error unless it exited 0 with its output
// delivered whole. The error names the tool, the container, the exit code
// and the end of the command's standard error.
func (p *proc) Wait(ctx context.Context) error {
	p.waitOnce.Do(func() { p.waitErr = p.wait(ctx) })
	return p.waitErr
}

func (p *proc) wait(ctx context.Context) error {
	select {
	case <-p.done:
	case <-ctx.Done():
		p.Close()
		<-p.done
	}
	defer p.Close()
	defer p.stopAfter()
	if ctx.Err() != nil {
		// Cancelled: the connection is closed, and the exit status of a
		// command that may be blocked on the server is not worth waiting
		// for (a shutdown must not hang on it).
		return fmt.Errorf("%s in container %s: %w", p.tool, p.container, ctx.Err())
	}
	// The output ended; the exit code may be a moment behind.
	ictx, cancel := context.WithTimeout(context.WithoutCancel(ctx), exitPollTimeout)
	defer cancel()
	var ins container.ExecInspect
	var err error
	for delay := 5 * time.Millisecond; ; delay = min(delay*2, 250*time.Millisecond) {
		ins, err = p.d.ContainerExecInspect(ictx, p.execID)
		if err != nil || !ins.Running {
			break
		}
		select {
		case <-ictx.Done():
			err = fmt.Errorf("still running %s after its output ended", exitPollTimeout)
		case <-time.After(delay):
			continue
		}
		break
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%s in container %s: %w", p.tool, p.container, ctx.Err())
	}
	if err != nil {
		return p.failure(fmt.Sprintf("exit status unknown: %v", err))
	}
	if ins.ExitCode == 126 || ins.ExitCode == 127 {
		// The engine's codes for a command it could not start (Postgres'
		// tools never exit so themselves); its reason may or may not
		// reach the stream.
		return fmt.Errorf("%w: %s could not be run in container %s (not found or not executable: is it a Postgres container?): exit code %d%s",
			ErrToolMissing, p.tool, p.container, ins.ExitCode, tailSuffix(p.StderrTail()))
	}
	if ins.ExitCode != 0 {
		return p.failure(fmt.Sprintf("exit code %d", ins.ExitCode))
	}
	if p.demuxErr != nil {
		if p.truncated {
			return p.failure("the connection to the Docker engine ended in the middle of its output")
		}
		if errors.Is(p.demuxErr, errProcClosed) || errors.Is(p.demuxErr, io.ErrClosedPipe) {
			return p.failure("its output was not read to the end")
		}
		return p.failure(fmt.Sprintf("the connection to the Docker engine broke: %v", p.demuxErr))
	}
	return nil
}

func (p *proc) failure(why string) error {
	return fmt.Errorf("%s in container %s failed (%s)%s", p.tool, p.container, why, tailSuffix(p.StderrTail()))
}

func tailSuffix(tail string) string {
	if tail == "" {
		return ""
	}
	return ": " + tail
}

// execUpgradeError explains a refused exec upgrade: it names the API's
// address (DOCKER_HOST) and the proxy that is the likely cause. It is
// ErrExecUpgrade (errors.Is).
type execUpgradeError struct{ msg string }

func (e *execUpgradeError) Error() string        { return e.msg }
func (e *execUpgradeError) Is(target error) bool { return target == ErrExecUpgrade }

func execUpgradeErr(d Docker, tool, containerName string, err error) error {
	at := ""
	if h, ok := d.(interface{ DaemonHost() string }); ok {
		at = " at " + h.DaemonHost()
	}
	return &execUpgradeError{fmt.Sprintf("run %s in container %s: %v (%v): the Docker API%s did not switch protocols, so a proxy between scalr-backup and the engine does not pass HTTP connection upgrades; with tecnativa/docker-socket-proxy use the version deploy/compose.socket-proxy.yaml pins (0.2.0, on HAProxy 3.0, fails so), or reach the engine's socket directly",
		tool, containerName, ErrExecUpgrade, err, at)}
}

// dockerErr gives the engine's answers about the container itself the
// package's errors: no such container, container not running.
func dockerErr(containerName string, err error) error {
	switch {
	case cerrdefs.IsNotFound(err) && strings.Contains(err.Error(), containerName):
		return fmt.Errorf("%w: %s (%v)", ErrNoContainer, containerName, err)
	case strings.Contains(err.Error(), "is not running") || strings.Contains(err.Error(), "is paused") || strings.Contains(err.Error(), "is restarting"):
		return fmt.Errorf("%w: %s (%v)", ErrNotRunning, containerName, err)
	}
	return err
}

// execReadBuffer is how much one read from the engine's connection may
// take. The engine sends a dump in frames of at most 32 KiB, and the
// demultiplexer reads about one at a time: with this buffer one system
// call takes every frame already queued on the socket, and system calls
// are dear on a virtual machine.
const execReadBuffer = 1 << 20

// countReader counts the bytes read through it.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// frameWriter counts stdcopy's writes (one per frame) and their bytes.
type frameWriter struct {
	w      io.Writer
	frames int64
	bytes  int64
}

func (f *frameWriter) Write(p []byte) (int, error) {
	f.frames++
	n, err := f.w.Write(p)
	f.bytes += int64(n)
	return n, err
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
	cut bool
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
		b.cut = true
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := string(b.buf)
	if b.cut {
		if i := strings.IndexByte(s, '\n'); i >= 0 && i < len(s)-1 {
			s = s[i+1:]
		}
		s = "…" + s
	}
	return s
}

// feed copies src into the command's standard input, then closes it. It
// returns as soon as the copy is done or the command's output has ended,
// whichever comes first: a command that exits without reading all of its
// input (pg_restore failing, or listing only the archive's head) is not
// waited for while the copy sits blocked on a peer that is gone. early
// reports that the command stopped before it had all of src; readErr is
// src's own failure (the repository's), told apart from a refused write.
func (p *proc) feed(src io.Reader) (readErr, writeErr error, early bool) {
	rec := &readErrRecorder{r: src}
	copied := make(chan error, 1)
	go func() {
		_, err := io.Copy(p.hj.Conn, rec)
		copied <- err
	}()
	var err error
	select {
	case err = <-copied:
	case <-p.done:
		// The output ended: the command exited (or closed its output). A
		// copy still running would block for good; closing the connection
		// ends it. The exit status is read by Wait.
		p.Close()
		err = <-copied
	}
	if rec.err != nil {
		return rec.err, nil, false
	}
	if err != nil {
		return nil, err, true
	}
	_ = p.CloseStdin()
	return nil, nil, false
}

// readErrRecorder remembers its reader's first error other than EOF, so a
// failed copy can be blamed on the right side.
type readErrRecorder struct {
	r   io.Reader
	err error
}

func (e *readErrRecorder) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}
