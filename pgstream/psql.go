package pgstream

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
)

// ErrDatabaseMissing means a database named in a request does not exist in
// the container.
var ErrDatabaseMissing = errors.New("database does not exist")

// quoteIdent quotes a name for SQL: "na""me".
func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// quoteLiteral quotes a string for SQL as a literal, doubling single quotes.
// (standard_conforming_strings is on in every supported server.)
func quoteLiteral(s string) string { return `'` + strings.ReplaceAll(s, `'`, `''`) + `'` }

// conninfo is a libpq connection string for db with the given user over
// the default (local socket) host. Passing the database as a quoted
// conninfo keeps a name holding '=' or starting with "postgres://" from
// being taken for a connection string itself.
func conninfo(db, user string) string { return conninfoApp(db, user, "scalr-backup") }

// conninfoApp is conninfo with its own application_name, which lets a
// connection be found (and ended) in pg_stat_activity.
func conninfoApp(db, user, app string) string {
	q := func(v string) string {
		return `'` + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(v) + `'`
	}
	s := "dbname=" + q(db)
	if user != "" {
		s += " user=" + q(user)
	}
	return s + " application_name=" + q(app)
}

// toolEnv is the environment given to psql: UTF-8 client encoding, so that
// names are read right whatever the container's locale. (pg_dump and
// pg_restore do without: PGCLIENTENCODING would change a dump's encoding.)
var toolEnv = []string{"PGCLIENTENCODING=UTF8"}

// psqlSession is one psql process in a container, fed SQL through its
// standard input, its results read back from its standard output between
// marker lines. It holds one server session, so a transaction (and the
// snapshot it exported) lives as long as the session does.
type psqlSession struct {
	p      *proc
	out    *bufio.Reader
	marker string
	db     string
}

// openPsql starts psql in db over the connection c. ON_ERROR_STOP makes
// psql exit at the first failing statement, which Query reports with psql's
// message.
func openPsql(ctx context.Context, d Docker, c Conn, db string) (*psqlSession, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	p, err := startProc(ctx, d, c.Container, execSpec{
		Cmd: []string{"psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "--no-password",
			"--dbname=" + conninfo(db, c.User)},
		Env:   c.psqlEnv(),
		Stdin: true,
	})
	if err != nil {
		return nil, err
	}
	return &psqlSession{p: p, out: bufio.NewReaderSize(p.Stdout(), 64<<10), marker: "scalr-backup-" + hex.EncodeToString(b[:]), db: db}, nil
}

// Query runs sql (one or more statements, each ending in ';') and returns
// what they printed (unaligned, tuples only), without the final newline.
func (s *psqlSession) Query(ctx context.Context, sql string) (string, error) {
	begin, end := s.marker+"-begin", s.marker+"-end"
	script := "\\echo " + begin + "\n" + strings.TrimSpace(sql) + "\n\\echo " + end + "\n"
	if _, err := io.WriteString(s.p.Stdin(), script); err != nil {
		return "", s.failed(ctx, err)
	}
	var out strings.Builder
	started := false
	for {
		line, err := s.out.ReadString('\n')
		if err != nil {
			return "", s.failed(ctx, err)
		}
		line = strings.TrimSuffix(line, "\n")
		switch {
		case !started && line == begin:
			started = true
		case !started:
			// Output of an earlier statement nobody asked for: skip.
		case line == end:
			return strings.TrimSuffix(out.String(), "\n"), nil
		default:
			out.WriteString(line)
			out.WriteByte('\n')
		}
	}
}

// failed explains a broken session: psql's exit (with its message) if it
// exited, else the I/O error.
func (s *psqlSession) failed(ctx context.Context, ioErr error) error {
	_ = s.p.CloseStdin()
	go io.Copy(io.Discard, s.p.Stdout())
	err := s.p.Wait(ctx)
	if err == nil {
		err = fmt.Errorf("psql in container %s ended early: %v", s.p.container, ioErr)
	}
	if strings.Contains(s.p.StderrTail(), "does not exist") && strings.Contains(s.p.StderrTail(), "database") {
		return fmt.Errorf("%w: %s in container %s: %v", ErrDatabaseMissing, quoteIdent(s.db), s.p.container, err)
	}
	return err
}

// Close ends the session: psql gets end of input and must exit 0. An
// open transaction is rolled back by the server; run "COMMIT;" first to
// end one cleanly.
func (s *psqlSession) Close(ctx context.Context) error {
	_, werr := io.WriteString(s.p.Stdin(), "\\q\n")
	_ = s.p.CloseStdin()
	_, _ = io.Copy(io.Discard, s.out)
	err := s.p.Wait(ctx)
	if err == nil && werr != nil {
		err = fmt.Errorf("psql in container %s: %w", s.p.container, werr)
	}
	return err
}

// Abort drops the session without waiting.
func (s *psqlSession) Abort() { s.p.Close() }

// runPsql runs sql in db over the connection c as one psql process and
// returns its output. With stopOnError, psql stops at the first error (and
// Query fails); without, statement errors are reported in the returned
// stderr tail only.
func runPsql(ctx context.Context, d Docker, c Conn, db string, stdin io.Reader, stopOnError bool) (stdout, stderr string, err error) {
	containerName := c.Container
	cmd := []string{"psql", "-X", "-q", "-A", "-t", "--no-password", "--dbname=" + conninfo(db, c.User)}
	if stopOnError {
		cmd = append(cmd, "-v", "ON_ERROR_STOP=1")
	}
	var out tailBuffer
	out.max = 1 << 20
	p, err := startProc(ctx, d, containerName, execSpec{Cmd: cmd, Env: c.psqlEnv(), Stdin: true, Stdout: &out})
	if err != nil {
		return "", "", err
	}
	defer p.Close()
	_, cerr := io.Copy(p.Stdin(), stdin)
	_ = p.CloseStdin()
	werr := p.Wait(ctx)
	if werr == nil && cerr != nil {
		werr = fmt.Errorf("psql in container %s: writing its input: %w", containerName, cerr)
	}
	return strings.TrimSpace(out.String()), p.StderrTail(), werr
}
