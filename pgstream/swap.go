package pgstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/scalr-platform/scalr-backup/repo"
)

// Names of the databases a restore makes.
//
// A side database is named scalr_restore_TIMESTAMP_NAME (cut to Postgres'
// 63 bytes): whatever carries that prefix and is not in use is an
// interrupted restore's leftover. The database a swap replaced is kept as
// NAME__replaced_TIMESTAMP (NAME cut to fit), until dropped by hand.
const (
	sidePrefix     = "scalr_restore_"
	replacedInfix  = "__replaced_"
	nameTimeLayout = "20060102T150405Z"
	maxIdentBytes  = 63
)

var replacedRE = regexp.MustCompile(`^(.*)` + replacedInfix + `(\d{8}T\d{6}Z)(?:_\d+)?$`)

// cutBytes shortens s to at most n bytes without splitting a UTF-8 rune.
func cutBytes(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && n < len(s) && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}

// unusedName returns name, or name with "_2", "_3"... when the server has it.
func unusedName(name string, s *ServerFacts) string {
	if s == nil || !s.Exists(name) {
		return name
	}
	for i := 2; ; i++ {
		suffix := "_" + strconv.Itoa(i)
		cand := cutBytes(name, maxIdentBytes-len(suffix)) + suffix
		if !s.Exists(cand) {
			return cand
		}
	}
}

// sideDatabaseName names the side database restoring db at t.
func sideDatabaseName(db string, t time.Time, s *ServerFacts) string {
	return unusedName(cutBytes(sidePrefix+t.UTC().Format(nameTimeLayout)+"_"+db, maxIdentBytes), s)
}

// replacedDatabaseName names the database db once a swap at t replaced it.
func replacedDatabaseName(db string, t time.Time, s *ServerFacts) string {
	suffix := replacedInfix + t.UTC().Format(nameTimeLayout)
	return unusedName(cutBytes(db, maxIdentBytes-len(suffix)-3)+suffix, s)
}

// ReplacedDatabase is a database a restore swapped out and kept.
type ReplacedDatabase struct {
	Name string `json:"name"`
	// Of is the database it was (empty when its name had to be cut).
	Of       string    `json:"of,omitempty"`
	Replaced time.Time `json:"replaced"`
	Bytes    int64     `json:"bytes"`
}

// parseReplaced reads a kept database's name.
func parseReplaced(name string, size int64) (ReplacedDatabase, bool) {
	m := replacedRE.FindStringSubmatch(name)
	if m == nil {
		return ReplacedDatabase{}, false
	}
	t, err := time.Parse(nameTimeLayout, m[2])
	if err != nil {
		return ReplacedDatabase{}, false
	}
	rd := ReplacedDatabase{Name: name, Replaced: t, Bytes: size}
	// A name cut to fit cannot tell the database it was.
	if len(m[1])+len(replacedInfix)+len(nameTimeLayout)+1 < maxIdentBytes-3 {
		rd.Of = m[1]
	}
	return rd, true
}

// serverFactsSQL asks a server what a restore needs to know.
const serverFactsSQL = `SELECT json_build_object(
  'version_num', current_setting('server_version_num')::int,
  'version', current_setting('server_version'),
  'databases', (SELECT json_object_agg(datname, CASE WHEN datallowconn THEN pg_database_size(oid) ELSE 0 END) FROM pg_database),
  'roles', (SELECT json_agg(rolname) FROM pg_roles),
  'extensions', (SELECT coalesce(json_agg(name), '[]') FROM pg_available_extensions),
  'data_directory', (SELECT setting FROM pg_settings WHERE name = 'data_directory'));`

func serverFacts(ctx context.Context, d Docker, c Conn) (*ServerFacts, error) {
	target := c.Container
	out, _, err := runPsql(ctx, d, c, "template1", strings.NewReader(serverFactsSQL+"\n"), true)
	if err != nil {
		return nil, fmt.Errorf("connect to Postgres in container %s: %w", target, err)
	}
	var raw struct {
		VersionNum    int              `json:"version_num"`
		Version       string           `json:"version"`
		Databases     map[string]int64 `json:"databases"`
		Roles         []string         `json:"roles"`
		Extensions    []string         `json:"extensions"`
		DataDirectory *string          `json:"data_directory"`
	}
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		return nil, fmt.Errorf("container %s: server facts %q: %w", target, out, err)
	}
	s := &ServerFacts{VersionNum: raw.VersionNum, Version: raw.Version, FreeBytes: -1,
		databases: raw.Databases, roles: map[string]bool{}, extensions: map[string]bool{}}
	if s.databases == nil {
		s.databases = map[string]int64{}
	}
	for _, r := range raw.Roles {
		s.roles[r] = true
	}
	for _, e := range raw.Extensions {
		s.extensions[e] = true
	}
	if raw.DataDirectory != nil {
		s.DataDirectory = *raw.DataDirectory
	}
	return s, nil
}

// freeBytes asks df in the container how much room dir's file system has
// for an unprivileged writer.
func freeBytes(ctx context.Context, d Docker, containerName, dir string) (int64, error) {
	out, err := runCapture(ctx, d, containerName, []string{"df", "-Pk", dir})
	if err != nil {
		return -1, err
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	fields := strings.Fields(lines[len(lines)-1])
	if len(lines) < 2 || len(fields) < 4 {
		return -1, fmt.Errorf("df -Pk %s printed %q", dir, out)
	}
	kb, err := strconv.ParseInt(fields[3], 10, 64)
	if err != nil {
		return -1, fmt.Errorf("df -Pk %s printed %q", dir, out)
	}
	return kb * 1024, nil
}

// sideCopyBytes is the room a side restore of db needs: its size on the
// server when it was dumped (indexes included), plus a tenth for the WAL
// the restore writes, plus 64 MiB; without that size, twice the dump.
func sideCopyBytes(db DatabaseDump) int64 {
	size := db.SizeOnServer
	if size <= 0 {
		size = 2 * db.Size
	}
	return size + size/10 + 64<<20
}

// preflight checks, changing nothing, that the target can take the dumps:
// it fills plan.Server, plan.schemas and plan.Leftovers, and returns an
// error wrapping ErrPreflight that lists every problem found.
func (plan *RestorePlan) preflight(ctx context.Context, d Docker, r *repo.Repository, opts RestoreOptions) error {
	s, err := serverFacts(ctx, d, plan.conn)
	if err != nil {
		return err
	}
	plan.Server = s
	for name := range s.databases {
		if strings.HasPrefix(name, sidePrefix) {
			plan.Leftovers = append(plan.Leftovers, name)
		}
	}
	slices.Sort(plan.Leftovers)
	var problems []string
	if dumped := plan.Manifest.ServerVersionNum; dumped/10000 > s.VersionNum/10000 {
		problems = append(problems, fmt.Sprintf("the backup was dumped from Postgres %s, a newer major version than the target's %s: pg_dump output does not load into older servers; restore into a container of version %d or newer",
			plan.Manifest.ServerVersion, s.Version, dumped/10000))
	}
	var createdRoles map[string]bool
	if plan.Globals {
		createdRoles = map[string]bool{}
		for _, r := range rolesCreatedBy(plan.globals) {
			createdRoles[r] = true
		}
	}
	for _, db := range plan.Databases {
		schema, err := readArchiveSchema(ctx, d, r, plan, db)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		plan.schemas[db.Name] = schema
		var missingExt, missingRoles []string
		for _, e := range schema.Extensions {
			if !s.extensions[e] {
				missingExt = append(missingExt, e)
			}
		}
		if len(missingExt) > 0 {
			problems = append(problems, fmt.Sprintf("database %s needs the extension(s) %s, which container %s does not have (pg_available_extensions): install them in its image first",
				quoteIdent(db.Name), strings.Join(missingExt, ", "), plan.Target))
		}
		for _, role := range schema.Roles {
			if !s.roles[role] && !createdRoles[role] {
				missingRoles = append(missingRoles, role)
			}
		}
		if len(missingRoles) > 0 {
			hint := "create them, or restore with --globals to apply the backup's roles"
			if plan.Globals {
				hint = "the backup's globals.sql does not create them either"
			}
			problems = append(problems, fmt.Sprintf("database %s grants to or is owned by role(s) %s, which do not exist in container %s: %s",
				quoteIdent(db.Name), strings.Join(missingRoles, ", "), plan.Target, hint))
		}
	}
	if !plan.InPlace {
		for _, db := range plan.Databases {
			s.NeededBytes += sideCopyBytes(db)
		}
		if s.DataDirectory != "" {
			free, err := freeBytes(ctx, d, plan.Target, s.DataDirectory)
			if err == nil {
				s.FreeBytes = free
			} else if opts.Warn != nil {
				opts.Warn(fmt.Sprintf("free space in %s of container %s not checked: %v", s.DataDirectory, plan.Target, err))
			}
		}
		if s.FreeBytes >= 0 && s.FreeBytes < s.NeededBytes {
			problems = append(problems, fmt.Sprintf("not enough room for the side copy in %s of container %s: %s free, %s needed (the restored databases beside the live ones until the swap, and the live ones kept afterwards); free space, or restore --in-place (drops the live database first)",
				s.DataDirectory, plan.Target, humanBytes(s.FreeBytes), humanBytes(s.NeededBytes)))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w:\n  %s", ErrPreflight, strings.Join(problems, "\n  "))
	}
	return nil
}

// readArchiveSchema has the target's own pg_restore list the dump's table
// of contents: if it cannot read the archive (a version it does not know),
// its error says so.
func readArchiveSchema(ctx context.Context, d Docker, r *repo.Repository, plan *RestorePlan, db DatabaseDump) (*archiveSchema, error) {
	fr, err := r.OpenFile(ctx, plan.nodes[db.Name])
	if err != nil {
		return nil, fmt.Errorf("read the dump %s: %w", db.File, err)
	}
	defer fr.Close()
	head := make([]byte, 512)
	n, _ := io.ReadFull(fr, head)
	head = head[:n]
	isTar := n >= 262 && string(head[257:262]) == "ustar"
	if !strings.HasPrefix(string(head), "PGDMP") && !isTar {
		return nil, fmt.Errorf("%s is not a pg_dump custom-format archive (pg_dump args %q): restore it by hand", db.File, plan.Manifest.PgDumpArgs)
	}
	pr, pw := io.Pipe()
	parsed := make(chan struct{})
	var schema *archiveSchema
	var perr error
	go func() {
		defer close(parsed)
		schema, perr = parseArchiveSchema(pr)
		_, _ = io.Copy(io.Discard, pr)
	}()
	cmd := pgRestoreCmd(plan.TargetUser, plan.Globals, nil, "--create", "--schema-only", "--file=-")
	p, err := startProc(ctx, d, plan.Target, execSpec{Cmd: cmd, Env: plan.conn.env(), Stdin: true, Stdout: pw})
	if err != nil {
		pw.Close()
		<-parsed
		return nil, err
	}
	defer p.Close()
	readErr, _, _ := p.feed(io.MultiReader(strings.NewReader(string(head)), fr))
	werr := p.Wait(ctx)
	<-p.done
	pw.Close()
	<-parsed
	switch {
	case readErr != nil:
		return nil, fmt.Errorf("read the dump %s from the repository: %w", db.File, readErr)
	case werr != nil:
		return nil, fmt.Errorf("the pg_restore of container %s cannot read the dump of database %s: %w", plan.Target, quoteIdent(db.Name), werr)
	case perr != nil:
		return nil, fmt.Errorf("reading the table of contents of %s: %w", db.File, perr)
	}
	return schema, nil
}

// swapDatabases makes side the database db, in one transaction: db's
// sessions are ended, db is renamed previous (when previous is not empty)
// and side renamed db. The transaction is retried a few times when a client
// reconnects to db between the end of its session and the rename.
func swapDatabases(ctx context.Context, d Docker, c Conn, s *ServerFacts, db, side, previous string, progress func(RestoreStep)) error {
	maint := s.maintenanceDB(db)
	var sql strings.Builder
	sql.WriteString("BEGIN;\n")
	if previous != "" {
		sql.WriteString("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = " + quoteLiteral(db) + " AND pid <> pg_backend_pid();\n")
		sql.WriteString("ALTER DATABASE " + quoteIdent(db) + " RENAME TO " + quoteIdent(previous) + ";\n")
	}
	sql.WriteString("ALTER DATABASE " + quoteIdent(side) + " RENAME TO " + quoteIdent(db) + ";\n")
	var last error
	for attempt := 1; attempt <= 5; attempt++ {
		progress(RestoreStep{Stage: StageSwap, Database: db, Detail: previous})
		last = swapOnce(ctx, d, c, maint, sql.String(), db, progress)
		if last == nil {
			progress(RestoreStep{Stage: StageSwapped, Database: db, Detail: previous})
			return nil
		}
		if !strings.Contains(last.Error(), "is being accessed by other users") || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(attempt) * 200 * time.Millisecond):
		}
	}
	return fmt.Errorf("swap the restored database %s in for %s: %w; nothing was renamed, the live database is untouched", side, db, last)
}

func swapOnce(ctx context.Context, d Docker, c Conn, maint, sql, db string, progress func(RestoreStep)) error {
	sess, err := openPsql(ctx, d, c, maint)
	if err != nil {
		return err
	}
	defer sess.Abort()
	if _, err := sess.Query(ctx, sql); err != nil {
		return err
	}
	progress(RestoreStep{Stage: StageSwapCommit, Database: db})
	if _, err := sess.Query(ctx, "COMMIT;"); err != nil {
		return err
	}
	return sess.Close(ctx)
}

// dropLeftovers drops the side databases of interrupted restores; one a
// session still uses (another restore at work) is left alone.
func (rs *restoreRun) dropLeftovers() (dropped, inUse []string) {
	for _, name := range rs.plan.Leftovers {
		if !rs.server.Exists(name) {
			continue
		}
		rs.progress(RestoreStep{Stage: StageLeftover, Detail: name})
		// No FORCE: a database with a session is another restore's.
		_, err := rs.psql(rs.server.maintenanceDB(name), "DROP DATABASE IF EXISTS "+quoteIdent(name)+";\n")
		if err != nil {
			inUse = append(inUse, name)
			if rs.opts.Warn != nil {
				rs.opts.Warn(fmt.Sprintf("side database %s of another restore left alone: %v", name, err))
			}
			continue
		}
		dropped = append(dropped, name)
	}
	return dropped, inUse
}

// Leftovers lists a container's side databases of interrupted restores,
// connecting as FindConn finds (as user when not empty).
func Leftovers(ctx context.Context, d Docker, containerName, user string) ([]string, error) {
	st, err := RestoreStateOf(ctx, d, containerName, user)
	if err != nil {
		return nil, err
	}
	return st.Leftovers, nil
}

// RestoreState is what restores left in a container: side databases of
// interrupted restores (dropped by the next restore) and the databases
// swaps replaced and kept (see DropReplaced, SwapBack).
type RestoreState struct {
	Leftovers []string           `json:"interrupted_restores,omitempty"`
	Replaced  []ReplacedDatabase `json:"replaced_databases,omitempty"`
}

// RestoreStateOf looks at a container's databases for what restores left,
// connecting as FindConn finds (as user when not empty).
func RestoreStateOf(ctx context.Context, d Docker, containerName, user string) (*RestoreState, error) {
	c, err := FindConn(ctx, d, containerName)
	if err != nil {
		return nil, err
	}
	if user != "" {
		c.User = user
	}
	s, err := serverFacts(ctx, d, c)
	if err != nil {
		return nil, err
	}
	st := &RestoreState{Replaced: s.replaced()}
	for name := range s.databases {
		if strings.HasPrefix(name, sidePrefix) {
			st.Leftovers = append(st.Leftovers, name)
		}
	}
	slices.Sort(st.Leftovers)
	return st, nil
}

// ListReplaced lists the databases restores replaced and kept in a
// container, oldest first.
func ListReplaced(ctx context.Context, d Docker, containerName string) ([]ReplacedDatabase, error) {
	st, err := RestoreStateOf(ctx, d, containerName, "")
	if err != nil {
		return nil, err
	}
	return st.Replaced, nil
}

func (s *ServerFacts) replaced() []ReplacedDatabase {
	var out []ReplacedDatabase
	for name, size := range s.databases {
		if rd, ok := parseReplaced(name, size); ok {
			out = append(out, rd)
		}
	}
	slices.SortFunc(out, func(a, b ReplacedDatabase) int {
		if c := a.Replaced.Compare(b.Replaced); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

// ErrNotReplaced means a database name is not one a restore kept.
var ErrNotReplaced = errors.New("not a database a restore replaced")

func findReplaced(ctx context.Context, d Docker, containerName, name string) (Conn, *ServerFacts, ReplacedDatabase, error) {
	c, err := FindConn(ctx, d, containerName)
	if err != nil {
		return c, nil, ReplacedDatabase{}, err
	}
	s, err := serverFacts(ctx, d, c)
	if err != nil {
		return c, nil, ReplacedDatabase{}, err
	}
	rd, ok := parseReplaced(name, s.Size(name))
	if !ok || !s.Exists(name) {
		var have []string
		for _, x := range s.replaced() {
			have = append(have, x.Name)
		}
		if len(have) == 0 {
			have = []string{"none"}
		}
		return c, nil, rd, fmt.Errorf("%w: container %s has no database %s (kept databases: %s)", ErrNotReplaced, containerName, quoteIdent(name), strings.Join(have, ", "))
	}
	return c, s, rd, nil
}

// DropReplaced drops a database a restore replaced and kept.
func DropReplaced(ctx context.Context, d Docker, containerName, name string) error {
	c, s, _, err := findReplaced(ctx, d, containerName, name)
	if err != nil {
		return err
	}
	_, _, err = runPsql(ctx, d, c, s.maintenanceDB(name), strings.NewReader(dropDatabaseSQL(name, s.VersionNum)), true)
	if err != nil {
		return fmt.Errorf("drop database %s in container %s: %w", quoteIdent(name), containerName, err)
	}
	return nil
}

// SwapBack puts a database a restore replaced back in place of db (by
// default the database it was), in the same one-transaction swap: the
// current db is kept in turn as db__replaced_NOW. It returns db and the
// name the replaced one is kept under ("" when db did not exist).
func SwapBack(ctx context.Context, d Docker, containerName, name, db string) (live, kept string, err error) {
	c, s, rd, err := findReplaced(ctx, d, containerName, name)
	if err != nil {
		return "", "", err
	}
	if db == "" {
		db = rd.Of
	}
	if db == "" {
		return "", "", fmt.Errorf("the name %s was cut to fit: say which database it goes back to (--db)", quoteIdent(name))
	}
	previous := ""
	if s.Exists(db) {
		previous = replacedDatabaseName(db, time.Now(), s)
	}
	if err := swapDatabases(ctx, d, c, s, db, name, previous, func(RestoreStep) {}); err != nil {
		return "", "", err
	}
	return db, previous, nil
}

// humanBytes is n in binary units, one decimal.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
