package pgstream

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/scalr-platform/scalr-backup/repo"
)

// DefaultPgDumpArgs are pg_dump's format options unless configured: the
// custom format, uncompressed (the repository compresses, and an
// uncompressed dump deduplicates from one day to the next).
var DefaultPgDumpArgs = []string{"-Fc", "-Z0"}

// BackupOptions configure BackupContainer.
type BackupOptions struct {
	// PgDumpArgs replace DefaultPgDumpArgs (format, compression, other
	// pg_dump options). Options that would move the output off standard
	// output or conflict with what BackupContainer sets (-f, -j, -d, -U,
	// --snapshot, -h, -p) are refused.
	PgDumpArgs []string
	// RolePasswords keeps the roles' password hashes in globals.sql
	// (pg_dumpall --globals-only without --no-role-passwords).
	RolePasswords bool
	// Hostname, Time, ProgramVersion and Progress go to the snapshot.
	Hostname       string
	Time           time.Time
	ProgramVersion string
	Progress       func(repo.BackupProgress)
	// Tags are added to the container's name, which is always a tag.
	Tags []string
}

// Result describes a finished container backup.
type Result struct {
	Container  string
	SnapshotID repo.ID
	Snapshot   *repo.Snapshot
	Manifest   *Manifest
	Stats      repo.WriteStats
	Duration   time.Duration
}

// BackupContainer stores one container's databases as one snapshot tagged
// with the container's name, whose paths are ["/CONTAINER"] and whose files
// are, in this order:
//
//	/CONTAINER/DB.pgdump       pg_dump of each database (t.Databases)
//	/CONTAINER/globals.sql     pg_dumpall --globals-only
//	/CONTAINER/manifest.json   the Manifest
//
// Each database is dumped in one MVCC snapshot: a psql session in the
// container begins a repeatable-read transaction, exports its snapshot,
// counts every table's rows in it, and holds it while pg_dump
// --snapshot=NAME runs; so the manifest's counts are exactly the dump's.
// The dump streams from the exec connection into the repository; its size
// and SHA-256 are taken on the way.
//
// A tool that exits non-zero, a connection to the engine that breaks, or a
// container that stops during the backup fails the backup: the error names
// the container and carries the end of the tool's standard error, and no
// snapshot is written.
func BackupContainer(ctx context.Context, d Docker, r *repo.Repository, t Target, opts BackupOptions) (*Result, error) {
	res, err := backupContainer(ctx, d, r, t, opts)
	if err != nil {
		return nil, fmt.Errorf("backup of container %s: %w; no snapshot was saved", t.Container, err)
	}
	return res, nil
}

func backupContainer(ctx context.Context, d Docker, r *repo.Repository, t Target, opts BackupOptions) (*Result, error) {
	if t.Problem != "" {
		return nil, fmt.Errorf("%w: %s", ErrCannotBackUp, t.Problem)
	}
	start := time.Now()
	args := opts.PgDumpArgs
	if args == nil {
		args = DefaultPgDumpArgs
	}
	if err := checkPgDumpArgs(args); err != nil {
		return nil, err
	}
	if len(t.Databases) == 0 {
		return nil, errors.New("no databases to dump")
	}
	// The container must still be there and running; the connection is
	// found again (the password is never part of a Target).
	ins, err := inspectRunning(ctx, d, t.Container)
	if err != nil {
		return nil, err
	}
	c, err := findConn(ctx, d, ins, connOptions{})
	if err != nil {
		return nil, err
	}
	if t.User != "" {
		c.User = t.User
	}
	user := c.User

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	b := &backupRun{ctx: ctx, d: d, t: t, c: c, user: user}
	defer b.cleanup()

	m := &Manifest{
		Format:        ManifestFormat,
		Container:     t.Container,
		ContainerID:   t.ID,
		Image:         t.Image,
		ImageID:       t.ImageID,
		PostgresMajor: t.PostgresMajor,
		User:          user,
		PgDumpArgs:    append([]string(nil), args...),
		Started:       start.UTC(),
		LeftOut:       t.LeftOut,
		Selection:     t.Selection,
	}
	var streams []repo.Stream
	files := map[string]bool{GlobalsFile: true, ManifestFile: true}
	for _, db := range t.Databases {
		file := DumpFileName(db)
		if files[file] {
			return nil, fmt.Errorf("database %s listed twice", quoteIdent(db))
		}
		files[file] = true
		m.Databases = append(m.Databases, DatabaseDump{Name: db, File: file})
	}
	for i := range m.Databases {
		dd := &dbDump{b: b, m: m, entry: &m.Databases[i], args: args}
		streams = append(streams, repo.Stream{Name: dd.entry.File, Reader: &lazyReader{open: dd.open}, Close: dd.close})
	}
	g := &globalsDump{b: b, passwords: opts.RolePasswords}
	m.Globals = &GlobalsDump{File: GlobalsFile, RolePasswords: opts.RolePasswords}
	g.entry = m.Globals
	streams = append(streams, repo.Stream{Name: GlobalsFile, Reader: &lazyReader{open: g.open}, Close: g.close})
	streams = append(streams, repo.Stream{Name: ManifestFile, Reader: &lazyReader{open: func() (io.Reader, error) {
		m.Finished = time.Now().UTC()
		buf, err := m.Marshal()
		if err != nil {
			return nil, err
		}
		return bytes.NewReader(buf), nil
	}}})

	tags := append([]string{t.Container}, opts.Tags...)
	br, err := r.BackupStreams(ctx, t.Container, streams, repo.BackupOptions{
		Tags: tags, Hostname: opts.Hostname, Time: opts.Time,
		ProgramVersion: opts.ProgramVersion, Progress: opts.Progress,
	})
	if err != nil {
		return nil, err
	}
	return &Result{
		Container: t.Container, SnapshotID: br.SnapshotID, Snapshot: br.Snapshot,
		Manifest: m, Stats: br.Stats, Duration: time.Since(start),
	}, nil
}

// checkPgDumpArgs refuses options that would break streaming or conflict
// with the ones BackupContainer sets.
func checkPgDumpArgs(args []string) error {
	for _, a := range args {
		name, value, _ := strings.Cut(a, "=")
		short := len(a) >= 2 && a[0] == '-' && a[1] != '-'
		switch {
		case short && strings.ContainsRune("fjdUhpW", rune(a[1])),
			name == "--file", name == "--jobs", name == "--dbname", name == "--username",
			name == "--host", name == "--port", name == "--snapshot", name == "--password":
			return fmt.Errorf("pg_dump option %q is not allowed: the dump must stream to standard output, and pgstream sets the connection and the snapshot itself", a)
		case a == "-Fd" || name == "--format" && strings.HasPrefix(value, "d"):
			return fmt.Errorf("pg_dump option %q is not allowed: the directory format cannot stream", a)
		case !strings.HasPrefix(a, "-"):
			return fmt.Errorf("pg_dump argument %q is not an option (the database is chosen by discovery)", a)
		}
	}
	return nil
}

// backupRun is the state of one BackupContainer call.
type backupRun struct {
	ctx  context.Context
	d    Docker
	t    Target
	c    Conn
	user string

	mu       sync.Mutex
	cleanups []func()
}

func (b *backupRun) onCleanup(f func()) {
	b.mu.Lock()
	b.cleanups = append(b.cleanups, f)
	b.mu.Unlock()
}

// cleanup drops every connection still open: after a failure, the tools
// in the container get end of input or a broken pipe and exit, and an open
// transaction is rolled back.
func (b *backupRun) cleanup() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := len(b.cleanups) - 1; i >= 0; i-- {
		b.cleanups[i]()
	}
	b.cleanups = nil
}

// terminateBackends ends, on the server, the connections of an abandoned
// dump (best effort, bounded: the backup has already failed).
func (b *backupRun) terminateBackends(appName string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(b.ctx), 10*time.Second)
	defer cancel()
	sql := "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = " + quoteLiteral(appName) + ";"
	_, _, _ = runPsql(ctx, b.d, b.c, "postgres", strings.NewReader(sql), false)
}

// toolFailed adds to a tool's failure whether the container stopped.
func (b *backupRun) toolFailed(err error) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(b.ctx), 15*time.Second)
	defer cancel()
	ierr := stoppedAfterFailure(ctx, b.d, b.t.Container, err)
	if ierr != nil && (!errors.Is(err, ErrToolMissing) || errors.Is(ierr, ErrNotRunning)) {
		return fmt.Errorf("%w (%v)", ierr, err)
	}
	return err
}

// lazyReader starts its stream at the first Read, so that each dump starts
// only when the repository is ready to read it.
type lazyReader struct {
	open func() (io.Reader, error)
	r    io.Reader
	err  error
}

func (l *lazyReader) Read(p []byte) (int, error) {
	if l.r == nil && l.err == nil {
		l.r, l.err = l.open()
	}
	if l.err != nil {
		return 0, l.err
	}
	return l.r.Read(p)
}

// procReader reads a tool's standard output. When reading fails (the
// connection broke, the stream was cut), the tool's exit status explains
// better than the I/O error: the error returned is Wait's when it has one.
type procReader struct {
	b   *backupRun
	p   *proc
	err error
}

func (r *procReader) Read(buf []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.p.Stdout().Read(buf)
	if err != nil && err != io.EOF {
		if werr := r.p.Wait(r.b.ctx); werr != nil {
			err = werr
		} else {
			err = fmt.Errorf("%s in container %s: reading its output: %w", r.p.tool, r.p.container, err)
		}
		r.err = r.b.toolFailed(err)
		return n, r.err
	}
	return n, err
}

// hashCounter is the SHA-256 and length of what was read through it.
type hashCounter struct {
	h hash.Hash
	n int64
}

func newHashCounter() *hashCounter { return &hashCounter{h: sha256.New()} }

func (c *hashCounter) Write(p []byte) (int, error) {
	c.h.Write(p)
	c.n += int64(len(p))
	return len(p), nil
}

func (c *hashCounter) sum() string { return hex.EncodeToString(c.h.Sum(nil)) }

// dbDump is one database's dump stream.
type dbDump struct {
	b     *backupRun
	m     *Manifest
	entry *DatabaseDump
	args  []string

	sess *psqlSession
	dump *proc
	hc   *hashCounter
	// counted receives countRows' outcome; until then the session is
	// countRows' alone.
	counted chan error
	// done is set once pg_dump exited 0.
	done bool
}

// The SQL run in the dump's snapshot.
const (
	// The session may wait idle in its transaction for as long as the dump
	// takes, and the counts may take long: no timeouts from the server's
	// or the database's settings.
	beginSnapshotSQL = `SET statement_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY;
SELECT pg_export_snapshot();`

	dbInfoSQL = `SELECT json_build_object(
  'encoding', pg_encoding_to_char(d.encoding),
  'collate', d.datcollate,
  'ctype', d.datctype,
  'size', pg_database_size(d.oid),
  'server_version', current_setting('server_version'),
  'server_version_num', current_setting('server_version_num')::int)
FROM pg_database d WHERE d.datname = current_database();`

	// Every ordinary table outside the system schemas, not temporary, not
	// an extension's member (its content belongs to the extension): the
	// exact row count of the table itself (ONLY: inheriting tables are
	// counted on their own). query_to_xml runs each count in the current
	// transaction, hence in the exported snapshot.
	countTablesSQL = `SELECT coalesce(json_agg(json_build_object(
    'schema', n.nspname, 'name', c.relname,
    'rows', (xpath('/row/n/text()', query_to_xml(
        format('SELECT count(*) AS n FROM ONLY %I.%I', n.nspname, c.relname), false, true, '')))[1]::text::bigint)
  ORDER BY n.nspname, c.relname), '[]')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence <> 't'
  AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend e
                  WHERE e.classid = 'pg_class'::regclass AND e.objid = c.oid AND e.deptype = 'e');`
)

type dbInfo struct {
	Encoding         string `json:"encoding"`
	Collate          string `json:"collate"`
	Ctype            string `json:"ctype"`
	Size             int64  `json:"size"`
	ServerVersion    string `json:"server_version"`
	ServerVersionNum int    `json:"server_version_num"`
}

func (dd *dbDump) open() (io.Reader, error) {
	b := dd.b
	db := dd.entry.Name
	sess, err := openPsql(b.ctx, b.d, b.c, db)
	if err != nil {
		return nil, b.toolFailed(err)
	}
	dd.sess = sess
	b.onCleanup(sess.Abort)
	snap, err := sess.Query(b.ctx, beginSnapshotSQL)
	if err != nil {
		return nil, b.toolFailed(err)
	}
	if snap == "" || strings.ContainsAny(snap, " \n'\"") {
		return nil, fmt.Errorf("pg_export_snapshot in database %s returned %q", quoteIdent(db), snap)
	}
	dd.entry.PGSnapshot = snap
	out, err := sess.Query(b.ctx, dbInfoSQL)
	if err != nil {
		return nil, b.toolFailed(err)
	}
	var info dbInfo
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		return nil, fmt.Errorf("database %s: reading its settings: %w (%q)", quoteIdent(db), err, out)
	}
	dd.entry.Encoding, dd.entry.Collate, dd.entry.Ctype, dd.entry.SizeOnServer = info.Encoding, info.Collate, info.Ctype, info.Size
	dd.m.ServerVersion, dd.m.ServerVersionNum = info.ServerVersion, info.ServerVersionNum
	if maj, _ := parseVersion(info.ServerVersion); maj > 0 {
		dd.m.PostgresMajor = maj
	}
	// A connection of its own name can be ended on the server if the
	// backup is abandoned: a pg_dump blocked in the server (or on a pipe
	// nobody reads) would otherwise hold its locks until its next write.
	appName := "scalr-backup-dump-" + snap
	cmd := append([]string{"pg_dump"}, dd.args...)
	cmd = append(cmd, "--snapshot="+snap, "--no-password", "--username="+b.user, "--dbname="+conninfoApp(db, b.user, appName))
	dump, err := startProc(b.ctx, b.d, b.t.Container, execSpec{Cmd: dumpCommand(b.c, cmd), Tool: "pg_dump", Env: b.c.env()})
	if err != nil {
		return nil, b.toolFailed(err)
	}
	dd.dump = dump
	b.onCleanup(func() {
		if !dd.done {
			b.terminateBackends(appName)
		}
	})
	b.onCleanup(dump.Close)
	// The row counts run in the same snapshot while pg_dump streams: they
	// read every table once more, and before pg_dump started they put
	// that scan in front of the whole dump. close waits for them.
	dd.counted = make(chan error, 1)
	go func() { dd.counted <- dd.countRows() }()
	dd.hc = newHashCounter()
	return io.TeeReader(&procReader{b: b, p: dump}, dd.hc), nil
}

// countRows counts every table's rows in the session's snapshot (see
// countTablesSQL) into the manifest entry.
func (dd *dbDump) countRows() error {
	b, db := dd.b, dd.entry.Name
	out, err := dd.sess.Query(b.ctx, countTablesSQL)
	if err != nil {
		return b.toolFailed(fmt.Errorf("counting the rows of database %s: %w", quoteIdent(db), err))
	}
	var tables []TableCount
	if err := json.Unmarshal([]byte(out), &tables); err != nil {
		return fmt.Errorf("database %s: reading the row counts: %w", quoteIdent(db), err)
	}
	if tables == nil {
		tables = []TableCount{}
	}
	dd.entry.Tables = tables
	return nil
}

// dumpOutputBuffer is the output buffer stdbuf gives pg_dump.
const dumpOutputBuffer = "1M"

// dumpCommand runs cmd (pg_dump) under stdbuf with a 1 MiB output buffer
// when the container has a working stdbuf. Through a pipe, stdio writes
// 4 KiB at a time, and every write becomes a frame that containerd's shim,
// dockerd and this process each handle with system calls of their own:
// on a 2-CPU host, 239 MiB of dump took 5.2-5.8 s to arrive with stdio's
// buffer and 3.4-4.0 s with 1 MiB, with dockerd's CPU 2.4-2.6 -> 1.3-1.5 s,
// the shim's 1.8 -> 1.0-1.1 s and the receiving side's 2.1-2.4 -> 1.0-1.3 s
// (64 and 256 KiB buffers gained less). stdbuf execs pg_dump, so its exit
// status and standard error are pg_dump's own; 125 (stdbuf failed) and 127
// (no pg_dump) fail the backup as pg_dump failing to run would. Without
// GNU coreutils (busybox images) pg_dump runs as it is.
func dumpCommand(c Conn, cmd []string) []string {
	if !c.stdbuf {
		return cmd
	}
	return append([]string{"stdbuf", "-o" + dumpOutputBuffer}, cmd...)
}

// close runs after the dump's output ended: pg_dump must have exited 0
// and the row counts must be in; then the session holding the snapshot
// commits and ends.
func (dd *dbDump) close() error {
	b := dd.b
	if dd.dump == nil {
		return errors.New("internal error: dump closed before it was read")
	}
	if err := dd.dump.Wait(b.ctx); err != nil {
		return b.toolFailed(err)
	}
	dd.done = true
	dd.entry.Size, dd.entry.SHA256 = dd.hc.n, dd.hc.sum()
	select {
	case err := <-dd.counted:
		if err != nil {
			return err
		}
	case <-b.ctx.Done():
		return b.ctx.Err()
	}
	if _, err := dd.sess.Query(b.ctx, "COMMIT;"); err != nil {
		return b.toolFailed(fmt.Errorf("ending the snapshot transaction: %w", err))
	}
	if err := dd.sess.Close(b.ctx); err != nil {
		return b.toolFailed(err)
	}
	return nil
}

// globalsDump is the pg_dumpall --globals-only stream.
type globalsDump struct {
	b         *backupRun
	passwords bool
	entry     *GlobalsDump
	p         *proc
	hc        *hashCounter
}

func (g *globalsDump) open() (io.Reader, error) {
	b := g.b
	cmd := []string{"pg_dumpall", "--globals-only", "--no-password", "--username=" + b.user}
	if !g.passwords {
		cmd = append(cmd, "--no-role-passwords")
	}
	p, err := startProc(b.ctx, b.d, b.t.Container, execSpec{Cmd: cmd, Env: b.c.env()})
	if err != nil {
		return nil, b.toolFailed(err)
	}
	g.p = p
	b.onCleanup(p.Close)
	g.hc = newHashCounter()
	return io.TeeReader(&procReader{b: b, p: p}, g.hc), nil
}

func (g *globalsDump) close() error {
	if err := g.p.Wait(g.b.ctx); err != nil {
		return g.b.toolFailed(err)
	}
	g.entry.Size, g.entry.SHA256 = g.hc.n, g.hc.sum()
	return nil
}
