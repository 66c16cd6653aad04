// Package sftp stores a repository on an SSH server over SFTP, in restic's
// layout (the local backend's):
//
//	config
//	keys/ID  snapshots/ID  index/ID  locks/ID
//	data/ID[0:2]/ID
//
// It speaks SSH itself (golang.org/x/crypto/ssh and github.com/pkg/sftp);
// no ssh program runs. Logins use public keys only: the SSH agent's
// (SSH_AUTH_SOCK), then key files (-o sftp.identity, ~/.ssh/config's
// IdentityFile, or ~/.ssh/id_ed25519, id_ecdsa, id_rsa). Host keys are
// checked against known_hosts (-o sftp.known-hosts, else
// ~/.ssh/known_hosts); an unknown or changed key is refused with its
// fingerprint and the line to add, never trusted on first use.
//
// Files are written as the local backend writes them: to a temporary name
// (".tmp-…") in the target's folder, fsynced when the server offers
// fsync@openssh.com, made read-only, then put in place without replacing
// an existing file (hardlink@openssh.com, else the protocol's rename, which
// OpenSSH's server and the SFTP specification make fail when the target
// exists). A failed write removes its temporary file; one left behind by a
// dropped connection is what ListLeftovers reports.
//
// One SSH connection carries every request (SFTP pipelines them); at most
// Config.Connections operations run at once. Keep-alives detect a dead
// connection; the next operation dials again, so the retry decorator's
// budget covers a dropped connection or a restarted server.
package sftp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/user"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"

	pkgsftp "github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/scalr-platform/scalr-backup/backend"
)

// Backend is a repository on an SFTP server. It is safe for concurrent use.
type Backend struct {
	cfg      Config
	dialHost string // the host to dial (~/.ssh/config's HostName, else cfg.Host)
	location string
	sem      chan struct{}

	mu     sync.Mutex
	sess   *session
	closed bool
}

var (
	_ backend.Backend        = (*Backend)(nil)
	_ backend.Creator        = (*Backend)(nil)
	_ backend.LeftoverLister = (*Backend)(nil)
)

// session is one SSH connection with its SFTP client.
type session struct {
	conn *ssh.Client
	c    *pkgsftp.Client
	done chan struct{} // closed when the SSH connection has ended

	hardlink, fsync, statvfs bool
}

func (s *session) dead() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

func (s *session) close() {
	_ = s.c.Close()
	_ = s.conn.Close()
}

// New returns a backend for cfg (from ParseConfig, with ApplyEnv and
// ApplyOption applied). It reads ~/.ssh/config for the host but makes no
// connection: the first operation connects, inside the caller's retries.
// ctx bounds only that reading.
func New(ctx context.Context, cfg Config) (*Backend, error) {
	if cfg.Connections < 1 {
		cfg.Connections = DefaultConnections
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = DefaultKeepAlive
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	localUser := ""
	if u, err := user.Current(); err == nil {
		localUser = u.Username
	}
	loc := cfg.Location()
	dialHost, err := cfg.applySSHConfig(ctx, localUser)
	if err != nil {
		return nil, err
	}
	if cfg.User == "" {
		return nil, fmt.Errorf("sftp: %s: no user name: write user@host in the location", loc)
	}
	return &Backend{
		cfg:      cfg,
		dialHost: dialHost,
		location: loc,
		sem:      make(chan struct{}, cfg.Connections),
	}, nil
}

// Location returns the location as given (user, host alias, port if any,
// folder); it holds no secret.
func (b *Backend) Location() string { return b.location }

// Close ends the connection. Operations after Close fail.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	if b.sess != nil {
		b.sess.close()
		b.sess = nil
	}
	return nil
}

// target names the server for messages: user@host:port.
func (b *Backend) target() string {
	port := b.cfg.Port
	if port == "" {
		port = "22"
	}
	return b.cfg.User + "@" + net.JoinHostPort(b.dialHost, port)
}

// session returns the live session, dialling a new one when there is none
// or the last one died. One dial at a time: the others wait for it.
func (b *Backend) session(ctx context.Context) (*session, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, backend.Permanent(fmt.Errorf("sftp %s: backend closed", b.location))
	}
	if b.sess != nil && !b.sess.dead() {
		return b.sess, nil
	}
	if b.sess != nil {
		b.sess.close()
		b.sess = nil
	}
	s, err := b.dial(ctx)
	if err != nil {
		return nil, err
	}
	b.sess = s
	return s, nil
}

// drop closes s if it is still the current session, so the next
// operation dials again.
func (b *Backend) drop(s *session) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s.close()
	if b.sess == s {
		b.sess = nil
	}
}

// dial connects, checks the host key, logs in and starts SFTP. Errors no
// retry fixes (host key, refused keys, no key, no SFTP on the server) are
// permanent; a refused or dropped TCP connection is not.
func (b *Backend) dial(ctx context.Context) (*session, error) {
	fail := func(err error) error { return fmt.Errorf("sftp: connect to %s: %w", b.target(), err) }
	keys, err := b.cfg.loadKeys(ctx)
	if err != nil {
		return nil, backend.Permanent(err)
	}
	defer keys.close()
	hk, err := b.cfg.loadHostKeys(ctx)
	if err != nil {
		return nil, backend.Permanent(err)
	}

	ctx, cancel := context.WithTimeout(ctx, b.cfg.DialTimeout)
	defer cancel()
	port := b.cfg.Port
	if port == "" {
		port = "22"
	}
	addr := net.JoinHostPort(b.dialHost, port)
	d := net.Dialer{KeepAlive: b.cfg.KeepAlive}
	tcp, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fail(err)
	}
	// The handshake, the login and starting SFTP have no context of
	// their own: a deadline bounds them, and ending ctx closes the
	// connection.
	deadline, _ := ctx.Deadline()
	_ = tcp.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = tcp.Close() })
	timedOut := func(err error) error { return fail(fmt.Errorf("%w (%v)", ctx.Err(), err)) }

	auth := ssh.PublicKeysCallback(func() ([]ssh.Signer, error) { return keys.signers, nil })
	cc := &ssh.ClientConfig{
		User:              b.cfg.User,
		Auth:              []ssh.AuthMethod{auth},
		HostKeyCallback:   hk.check,
		HostKeyAlgorithms: hk.algorithms(addr, tcp.RemoteAddr()),
		Timeout:           b.cfg.DialTimeout,
	}
	sc, chans, reqs, err := ssh.NewClientConn(tcp, addr, cc)
	if err != nil {
		stopped := stop()
		_ = tcp.Close()
		var he *HostKeyError
		switch {
		case !stopped || ctx.Err() != nil:
			return nil, timedOut(err)
		case errors.As(err, &he):
			return nil, backend.Permanent(he)
		case strings.Contains(err.Error(), "unable to authenticate"):
			// x/crypto/ssh has no type for a refused login; its message
			// is the only sign. No retry makes the server take a key.
			msg := fmt.Sprintf("the server refused the keys offered (%s)", strings.Join(keys.tried, ", "))
			if len(keys.skipped) > 0 {
				msg += "; not offered: " + strings.Join(keys.skipped, "; ")
			}
			return nil, backend.Permanent(fail(fmt.Errorf("%s: %w", msg, err)))
		}
		return nil, fail(err)
	}
	conn := ssh.NewClient(sc, chans, reqs)
	c, err := pkgsftp.NewClient(conn,
		// Requests in flight per file: 64 packets of 32 KiB keep a
		// long link busy while bounding what one upload holds.
		pkgsftp.MaxConcurrentRequestsPerFile(64),
		pkgsftp.UseConcurrentWrites(true),
	)
	stopped := stop()
	switch {
	case err != nil && (!stopped || ctx.Err() != nil):
		_ = conn.Close()
		return nil, timedOut(err)
	case err != nil && strings.Contains(err.Error(), "subsystem request failed"):
		_ = conn.Close()
		return nil, backend.Permanent(fail(fmt.Errorf("the server offers no SFTP subsystem: %w", err)))
	case err != nil:
		_ = conn.Close()
		return nil, fail(fmt.Errorf("start SFTP: %w", err))
	case !stopped:
		_ = c.Close()
		_ = conn.Close()
		return nil, timedOut(errors.New("the connection was closed"))
	}
	_ = tcp.SetDeadline(time.Time{})
	s := &session{conn: conn, c: c, done: make(chan struct{})}
	_, s.hardlink = c.HasExtension("hardlink@openssh.com")
	v, ok := c.HasExtension("fsync@openssh.com")
	s.fsync = ok && v == "1"
	_, s.statvfs = c.HasExtension("statvfs@openssh.com")
	go func() {
		_ = conn.Wait()
		close(s.done)
	}()
	go keepAlive(s, b.cfg.KeepAlive)
	return s, nil
}

// keepAlive asks the server for a reply every interval and closes the
// connection when none comes within two more intervals, so that a link
// that died without a reset (a NAT timeout, a pulled cable) fails the
// operations waiting on it instead of hanging them.
func keepAlive(s *session, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
		}
		replied := make(chan error, 1)
		go func() {
			// OpenSSH answers an unknown global request with a failure;
			// any answer proves the link is alive.
			_, _, err := s.conn.SendRequest("keepalive@openssh.com", true, nil)
			replied <- err
		}()
		select {
		case err := <-replied:
			if err != nil {
				_ = s.conn.Close()
				return
			}
		case <-time.After(2 * interval):
			_ = s.conn.Close()
			return
		case <-s.done:
			return
		}
	}
}

// do runs fn with a session while holding one of the Connections slots.
// When fn fails because the connection broke, the session is dropped so
// the next attempt (the retry decorator's) dials again.
func (b *Backend) do(ctx context.Context, fn func(s *session) error) error {
	select {
	case b.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-b.sem }()
	s, err := b.session(ctx)
	if err != nil {
		return err
	}
	err = fn(s)
	if err != nil && (s.dead() || connectionError(err)) {
		b.drop(s)
	}
	return err
}

// connectionError reports whether err says the connection itself failed,
// as opposed to the server answering a request with an error status.
func connectionError(err error) bool {
	var st *pkgsftp.StatusError
	if errors.As(err, &st) {
		return false
	}
	var ne net.Error
	return errors.Is(err, pkgsftp.ErrSSHFxConnectionLost) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed) || errors.As(err, &ne)
}

// fileMode is what saved files end with: read-only for the owner, as the
// local backend and restic leave them.
const fileMode fs.FileMode = 0o400

// dirMode is the mode of the folders Create makes.
const dirMode fs.FileMode = 0o700

// paths returns h's path relative to the repository (for messages) and on
// the server, or an error for a handle that cannot name a file (callers
// make it permanent: no retry makes a handle valid).
func (b *Backend) paths(h backend.Handle) (rel, full string, err error) {
	rel, err = backend.LayoutPath(h)
	if err != nil {
		return "", "", err
	}
	return rel, path.Join(b.cfg.Path, rel), nil
}

// wrap adds the operation, the server and the file to err, marks missing
// files with backend.ErrNotExist and what retries cannot fix (denied
// access, no space, an operation the server does not support) permanent.
func (b *Backend) wrap(op, rel string, err error) error {
	if err == nil {
		return nil
	}
	err = fmt.Errorf("%s %s on %s: %w", op, rel, b.location, backend.NotExist(err))
	if isUnsupported(err) || backend.Unfixable(err) {
		return backend.Permanent(err)
	}
	return err
}

// noSpaceError is a failed write on a server whose file system is full:
// OpenSSH's server reports that only as a generic failure, so statvfs
// tells. It matches syscall.ENOSPC, which backend.Unfixable knows.
type noSpaceError struct {
	err   error
	avail uint64
}

func (e *noSpaceError) Error() string {
	return fmt.Sprintf("no space left on the server (%d bytes free): %v", e.avail, e.err)
}
func (e *noSpaceError) Unwrap() []error { return []error{syscall.ENOSPC, e.err} }

// checkNoSpace turns a generic write failure into a noSpaceError when the
// server's file system in dir has less room than the file needs.
func checkNoSpace(ctx context.Context, s *session, dir string, need int64, err error) error {
	var st *pkgsftp.StatusError
	if !s.statvfs || !errors.As(err, &st) || st.FxCode() != pkgsftp.ErrSSHFxFailure || ctx.Err() != nil {
		return err
	}
	vfs, verr := s.c.StatVFS(dir)
	if verr != nil {
		return err
	}
	avail := vfs.Frsize * vfs.Bavail
	if vfs.Favail == 0 || avail < uint64(need) {
		return &noSpaceError{err: err, avail: avail}
	}
	return err
}

// Create makes the repository's folders: the folder itself (with its
// parents), keys, snapshots, index, locks, data and data/00 … data/ff. It
// fails if a config file exists.
func (b *Backend) Create(ctx context.Context) error {
	return b.do(ctx, func(s *session) error {
		if _, err := s.c.Lstat(path.Join(b.cfg.Path, "config")); err == nil {
			return fmt.Errorf("create repository %s: config file already exists: %w", b.location, fs.ErrExist)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return b.wrap("create", "config", err)
		}
		_, statErr := s.c.Stat(b.cfg.Path)
		if err := s.c.MkdirAll(b.cfg.Path); err != nil {
			return b.wrap("create", ".", err)
		}
		// A folder made here is private, as the local backend's; the
		// folders inside need no mode of their own then (a request each
		// saved). A folder that was there keeps its mode.
		if errors.Is(statErr, fs.ErrNotExist) {
			if err := s.c.Chmod(b.cfg.Path, dirMode); err != nil && !errors.Is(err, fs.ErrPermission) && !isUnsupported(err) {
				return b.wrap("create", ".", err)
			}
		}
		dirs := backend.LayoutFolders()
		// data/ must exist before data/XX: make the first six in order,
		// then the 256 others with requests in flight together (SFTP
		// pipelines them over the one connection).
		for _, d := range dirs[:len(backend.FileTypes)] {
			if err := b.mkdir(ctx, s, d); err != nil {
				return err
			}
		}
		errs := make(chan error, 256)
		var wg sync.WaitGroup
		limit := make(chan struct{}, 32)
		for _, d := range dirs[len(backend.FileTypes):] {
			wg.Add(1)
			limit <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-limit }()
				errs <- b.mkdir(ctx, s, d)
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				return err
			}
		}
		return ctx.Err()
	})
}

// mkdir makes one folder; one that exists already is fine (servers answer
// that with a generic failure, so a stat tells).
func (b *Backend) mkdir(ctx context.Context, s *session, rel string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("create %s: %w", rel, err)
	}
	p := path.Join(b.cfg.Path, rel)
	err := s.c.Mkdir(p)
	if err == nil {
		return nil
	}
	if fi, serr := s.c.Stat(p); serr == nil && fi.IsDir() {
		return nil
	}
	return b.wrap("create", rel, err)
}

// Save writes src to a temporary file next to h's place, checks its
// length, fsyncs it where the server can, makes it read-only and moves it
// into place without replacing an existing file (that is an error wrapping
// fs.ErrExist). On failure the temporary file is removed (unless the
// connection is gone: then it is a leftover) and nothing is under h.
func (b *Backend) Save(ctx context.Context, h backend.Handle, src backend.Source) error {
	rel, full, err := b.paths(h)
	if err != nil {
		return backend.Permanent(fmt.Errorf("save: %w", err))
	}
	size := src.Length()
	if size < 0 {
		return backend.Permanent(fmt.Errorf("save %s: negative source length %d", rel, size))
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("save %s: %w", rel, err)
	}
	return b.do(ctx, func(s *session) error {
		return b.wrap("save", rel, b.save(ctx, s, full, src, size))
	})
}

func (b *Backend) save(ctx context.Context, s *session, full string, src backend.Source, size int64) (err error) {
	if _, err := s.c.Lstat(full); err == nil {
		return backend.Permanent(fs.ErrExist)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := src.Rewind(); err != nil {
		return fmt.Errorf("rewind source: %w", err)
	}
	dir := path.Dir(full)
	var rnd [12]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return err
	}
	tmp := path.Join(dir, backend.TempPrefix+hex.EncodeToString(rnd[:]))
	const flags = os.O_WRONLY | os.O_CREATE | os.O_EXCL
	f, err := s.c.OpenFile(tmp, flags)
	if errors.Is(err, fs.ErrNotExist) {
		// A folder is missing (a repository made by another tool).
		if mkErr := s.c.MkdirAll(dir); mkErr != nil {
			return fmt.Errorf("make folder %s: %w", dir, mkErr)
		}
		f, err = s.c.OpenFile(tmp, flags)
	}
	if err != nil {
		return err
	}
	placed := false
	defer func() {
		if err != nil {
			_ = f.Close() // closing twice is harmless
			if !placed && !s.dead() {
				_ = s.c.Remove(tmp)
			}
		}
	}()

	n, err := f.ReadFromWithConcurrency(&ctxReader{ctx: ctx, r: io.LimitReader(src, size)}, 0)
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		return checkNoSpace(ctx, s, dir, size, fmt.Errorf("write: %w", err))
	}
	if n != size {
		return fmt.Errorf("source ended after %d bytes, its length is %d", n, size)
	}
	var probe [1]byte
	if extra, _ := io.ReadFull(src, probe[:]); extra > 0 {
		return fmt.Errorf("source has more than its length of %d bytes", size)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if s.fsync {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("fsync: %w", err)
		}
	}
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat the written file: %w", err)
	}
	if fi.Size() != size {
		return fmt.Errorf("wrote %d bytes, the server's file has %d", size, fi.Size())
	}
	// Read-only, as restic leaves its files; some servers refuse modes.
	if err := f.Chmod(fileMode); err != nil && !errors.Is(err, fs.ErrPermission) && !isUnsupported(err) {
		return fmt.Errorf("chmod: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	return b.place(ctx, s, tmp, full, &placed)
}

// place moves tmp to full without replacing a file that is there: a hard
// link (then removing tmp) where the server offers hardlink@openssh.com,
// else the protocol's rename, which fails on an existing target. Never
// posix-rename@openssh.com: it replaces.
func (b *Backend) place(ctx context.Context, s *session, tmp, full string, placed *bool) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	exists := func() bool { _, err := s.c.Lstat(full); return err == nil }
	if s.hardlink {
		err := s.c.Link(tmp, full)
		if err == nil {
			*placed = true
			// The file is in place; a temporary name left by a failed
			// remove is a leftover (a second link to the same data).
			_ = s.c.Remove(tmp)
			return nil
		}
		if exists() {
			return backend.Permanent(fs.ErrExist)
		}
		// No hard links on the server's file system: rename instead.
	}
	if err := s.c.Rename(tmp, full); err != nil {
		if exists() {
			return backend.Permanent(fs.ErrExist)
		}
		return fmt.Errorf("rename into place: %w", err)
	}
	*placed = true
	return nil
}

func isUnsupported(err error) bool {
	var st *pkgsftp.StatusError
	return errors.As(err, &st) && st.FxCode() == pkgsftp.ErrSSHFxOpUnsupported
}

// ctxReader stops reading once its context is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// Load returns a reader for length bytes of h from offset; length 0 means
// to the end. A range past the end of the file is a permanent error.
func (b *Backend) Load(ctx context.Context, h backend.Handle, length int, offset int64) (io.ReadCloser, error) {
	if length < 0 || offset < 0 {
		return nil, backend.Permanent(fmt.Errorf("load %v: invalid range: offset %d, length %d", h, offset, length))
	}
	rel, full, err := b.paths(h)
	if err != nil {
		return nil, backend.Permanent(fmt.Errorf("load: %w", err))
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("load %s: %w", rel, err)
	}
	var rd *rangeReader
	err = b.do(ctx, func(s *session) error {
		f, err := s.c.Open(full)
		if err != nil {
			return b.wrap("load", rel, err)
		}
		fi, err := f.Stat()
		if err != nil {
			_ = f.Close()
			return b.wrap("load", rel, err)
		}
		if !fi.Mode().IsRegular() {
			_ = f.Close()
			return backend.Permanent(fmt.Errorf("load %s: not a regular file", rel))
		}
		size := fi.Size()
		if offset > size || offset+int64(length) > size {
			_ = f.Close()
			return backend.Permanent(fmt.Errorf("load %s: range %d+%d is past the end of the %d-byte file", rel, offset, length, size))
		}
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			_ = f.Close()
			return b.wrap("load", rel, err)
		}
		want := size - offset
		if length > 0 {
			want = int64(length)
		}
		rd = &rangeReader{ctx: ctx, b: b, s: s, f: f, left: want, rel: rel}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return rd, nil
}

// readBuffers hold what one request round fetches: a Read of a large
// buffer becomes many SFTP read requests in flight together, where reading
// a caller's small buffers (io.Copy's 32 KiB) one by one would wait a
// round trip each.
var readBuffers = sync.Pool{New: func() any { b := make([]byte, readAhead); return &b }}

const readAhead = 1 << 20

// rangeReader reads exactly left bytes of f; a file that ends sooner is an
// error, not a short read. Each fetch takes one of the Connections slots.
type rangeReader struct {
	ctx  context.Context
	b    *Backend
	s    *session
	f    *pkgsftp.File
	left int64 // bytes not yet fetched from the server
	rel  string

	bufp     *[]byte
	buf      []byte // fetched, not yet delivered
	fetchErr error
}

func (r *rangeReader) Read(p []byte) (int, error) {
	if len(r.buf) == 0 {
		if r.fetchErr != nil {
			return 0, r.fetchErr
		}
		if r.left <= 0 {
			return 0, io.EOF
		}
		r.fetchErr = r.fetch()
		if len(r.buf) == 0 {
			return 0, r.fetchErr
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	if len(r.buf) == 0 && r.left <= 0 && r.fetchErr == nil {
		return n, io.EOF
	}
	return n, nil
}

// fetch reads the next piece of the range into the buffer.
func (r *rangeReader) fetch() error {
	if err := r.ctx.Err(); err != nil {
		return err
	}
	select {
	case r.b.sem <- struct{}{}:
	case <-r.ctx.Done():
		return r.ctx.Err()
	}
	defer func() { <-r.b.sem }()
	if r.bufp == nil {
		r.bufp = readBuffers.Get().(*[]byte)
	}
	want := int64(len(*r.bufp))
	if r.left < want {
		want = r.left
	}
	n, err := io.ReadFull(r.f, (*r.bufp)[:want])
	r.buf = (*r.bufp)[:n]
	r.left -= int64(n)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		if r.s.dead() {
			r.b.drop(r.s)
			return fmt.Errorf("load %s on %s: connection lost %d bytes before the end: %w", r.rel, r.b.location, r.left, io.ErrUnexpectedEOF)
		}
		return fmt.Errorf("load %s: file ended %d bytes early: %w", r.rel, r.left, io.ErrUnexpectedEOF)
	default:
		if r.s.dead() || connectionError(err) {
			r.b.drop(r.s)
		}
		return r.b.wrap("load", r.rel, err)
	}
}

func (r *rangeReader) Close() error {
	if r.bufp != nil {
		readBuffers.Put(r.bufp)
		r.bufp, r.buf = nil, nil
	}
	return r.f.Close()
}

// Stat reports the size of h.
func (b *Backend) Stat(ctx context.Context, h backend.Handle) (backend.FileInfo, error) {
	rel, full, err := b.paths(h)
	if err != nil {
		return backend.FileInfo{}, backend.Permanent(fmt.Errorf("stat: %w", err))
	}
	if err := ctx.Err(); err != nil {
		return backend.FileInfo{}, fmt.Errorf("stat %s: %w", rel, err)
	}
	var fi os.FileInfo
	err = b.do(ctx, func(s *session) error {
		var err error
		fi, err = s.c.Stat(full)
		if errors.Is(err, fs.ErrNotExist) {
			// Say when the repository's folder itself is missing: the
			// location is wrong, not just this file.
			if _, derr := s.c.Stat(b.cfg.Path); errors.Is(derr, fs.ErrNotExist) {
				return b.wrap("stat", rel, &noRepoError{err: err, dir: b.cfg.Path})
			}
		}
		return b.wrap("stat", rel, err)
	})
	if err != nil {
		return backend.FileInfo{}, err
	}
	if !fi.Mode().IsRegular() {
		return backend.FileInfo{}, backend.Permanent(fmt.Errorf("stat %s: not a regular file", rel))
	}
	name := h.Name
	if h.Type == backend.ConfigFile {
		name = ""
	}
	return backend.FileInfo{Name: name, Size: fi.Size()}, nil
}

// noRepoError is a missing file whose repository folder is missing too.
type noRepoError struct {
	err error
	dir string
}

func (e *noRepoError) Error() string {
	return fmt.Sprintf("the repository folder %s does not exist on the server", e.dir)
}
func (e *noRepoError) Unwrap() []error {
	return []error{backend.ErrNoRepository, backend.ErrNotExist, e.err}
}

// List calls fn for every regular file of type t whose name is 64 lowercase
// hex digits. For packs it walks the folders in data/ and reports only files
// in the folder their name's first two characters pick. A missing folder
// lists as empty. fn runs outside the Connections slots, so it may call
// the backend (Remove while listing).
func (b *Backend) List(ctx context.Context, t backend.FileType, fn func(backend.FileInfo) error) error {
	folder, ok := backend.Folder(t)
	if !ok {
		return backend.Permanent(fmt.Errorf("list %q: not a listable file type", string(t)))
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("list %s: %w", folder, err)
	}
	if t != backend.PackFile {
		entries, err := b.readDir(ctx, folder)
		if err != nil {
			return err
		}
		return listEntries(ctx, folder, "", entries, fn)
	}
	top, err := b.readDir(ctx, folder)
	if err != nil {
		return err
	}
	var subs []string
	for _, e := range top {
		if e.IsDir() {
			subs = append(subs, e.Name())
		}
	}

	// The 256 sub-folders are read ahead, a few at a time, so their
	// round trips overlap; fn still sees one folder after the other, and
	// runs while no read holds a slot.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type dirResult struct {
		entries []os.FileInfo
		err     error
	}
	results := make([]chan dirResult, len(subs))
	for i := range results {
		results[i] = make(chan dirResult, 1)
	}
	window := make(chan struct{}, listAhead)
	go func() {
		for i, sub := range subs {
			select {
			case window <- struct{}{}:
			case <-ctx.Done():
				return
			}
			go func() {
				e, err := b.readDir(ctx, folder+"/"+sub)
				results[i] <- dirResult{e, err}
			}()
		}
	}()
	for i, sub := range subs {
		var r dirResult
		select {
		case r = <-results[i]:
		case <-ctx.Done():
			return fmt.Errorf("list %s: %w", folder, ctx.Err())
		}
		<-window
		if r.err != nil {
			return r.err
		}
		if err := listEntries(ctx, folder+"/"+sub, sub, r.entries, fn); err != nil {
			return err
		}
	}
	return nil
}

// listAhead is how many folders List reads ahead of the one it reports.
const listAhead = 8

// readDir lists one folder of the repository; a missing one is empty.
func (b *Backend) readDir(ctx context.Context, rel string) ([]os.FileInfo, error) {
	var entries []os.FileInfo
	err := b.do(ctx, func(s *session) error {
		var err error
		entries, err = s.c.ReadDirContext(ctx, path.Join(b.cfg.Path, rel))
		if errors.Is(err, fs.ErrNotExist) {
			entries, err = nil, nil
		}
		if err != nil && ctx.Err() != nil {
			return fmt.Errorf("list %s: %w", rel, ctx.Err())
		}
		return b.wrap("list", rel, err)
	})
	return entries, err
}

// listEntries reports the valid names of one folder's entries; prefix,
// when set, is what every reported name must start with.
func listEntries(ctx context.Context, rel, prefix string, entries []os.FileInfo, fn func(backend.FileInfo) error) error {
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("list %s: %w", rel, err)
		}
		name := e.Name()
		if !backend.IsValidName(name) || !strings.HasPrefix(name, prefix) || !e.Mode().IsRegular() {
			continue
		}
		if err := fn(backend.FileInfo{Name: name, Size: e.Size()}); err != nil {
			return err
		}
	}
	return nil
}

// Remove deletes h; a missing file is an error wrapping backend.ErrNotExist.
func (b *Backend) Remove(ctx context.Context, h backend.Handle) error {
	rel, full, err := b.paths(h)
	if err != nil {
		return backend.Permanent(fmt.Errorf("remove: %w", err))
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("remove %s: %w", rel, err)
	}
	return b.do(ctx, func(s *session) error {
		return b.remove(ctx, s, rel, full)
	})
}

// remove deletes one regular file; folders are refused.
func (b *Backend) remove(ctx context.Context, s *session, rel, full string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("remove %s: %w", rel, err)
	}
	fi, err := s.c.Lstat(full)
	if err != nil {
		return b.wrap("remove", rel, err)
	}
	if fi.IsDir() {
		return backend.Permanent(fmt.Errorf("remove %s: not a regular file", rel))
	}
	return b.wrap("remove", rel, s.c.Remove(full))
}
