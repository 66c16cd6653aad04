package pgstream

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/scalr-platform/scalr-backup/repo"
)

// ErrCountMismatch means a restored table's row count differs from the
// manifest's (or a table is missing on one side).
var ErrCountMismatch = errors.New("restored row counts differ from the snapshot's manifest")

// ErrNoManifest means a snapshot has no readable manifest: it was not made
// by BackupContainer.
var ErrNoManifest = errors.New("snapshot has no pgstream manifest")

// ContainerSnapshotFilter selects the backups of one container: tagged with
// its name, with the paths ["/CONTAINER"] (which leaves out drill records,
// tagged with the name too).
func ContainerSnapshotFilter(containerName string) repo.SnapshotFilter {
	return repo.SnapshotFilter{Tags: []string{containerName}, Paths: []string{"/" + containerName}}
}

// FindBackup resolves ref ("latest", a snapshot ID or a unique prefix) to a
// backup of the container and loads its manifest.
func FindBackup(ctx context.Context, r *repo.Repository, containerName, ref string) (*repo.Snapshot, *Manifest, error) {
	if ref == "" {
		ref = "latest"
	}
	sn, err := r.FindSnapshot(ctx, ref, ContainerSnapshotFilter(containerName))
	if err != nil {
		if errors.Is(err, repo.ErrNoSnapshot) && ref == "latest" {
			return nil, nil, fmt.Errorf("no backup of container %s in the repository: %w", containerName, err)
		}
		if errors.Is(err, repo.ErrNoSnapshot) {
			return nil, nil, fmt.Errorf("snapshot %s is not a backup of container %s: %w", ref, containerName, err)
		}
		return nil, nil, err
	}
	m, err := LoadManifest(ctx, r, sn)
	if err != nil {
		return nil, nil, err
	}
	if m.Container != containerName {
		return nil, nil, fmt.Errorf("snapshot %s: its manifest is for container %s, not %s", sn.ID.Str(), m.Container, containerName)
	}
	return sn, m, nil
}

// LoadManifest reads /CONTAINER/manifest.json of a container backup.
func LoadManifest(ctx context.Context, r *repo.Repository, sn *repo.Snapshot) (*Manifest, error) {
	if len(sn.Paths) != 1 {
		return nil, fmt.Errorf("snapshot %s: %w (paths %q)", sn.ID.Str(), ErrNoManifest, sn.Paths)
	}
	p := sn.Paths[0] + "/" + ManifestFile
	buf, err := readSmallFile(ctx, r, sn, p, 16<<20)
	if err != nil {
		if errors.Is(err, repo.ErrNotFound) {
			return nil, fmt.Errorf("snapshot %s: %w (%s missing)", sn.ID.Str(), ErrNoManifest, p)
		}
		return nil, err
	}
	m, err := ParseManifest(buf)
	if err != nil {
		return nil, fmt.Errorf("snapshot %s: %s: %w", sn.ID.Str(), p, err)
	}
	return m, nil
}

func readSmallFile(ctx context.Context, r *repo.Repository, sn *repo.Snapshot, p string, limit int64) ([]byte, error) {
	node, err := r.FindNode(ctx, sn, p)
	if err != nil {
		return nil, err
	}
	if int64(node.Size) > limit {
		return nil, fmt.Errorf("%s in snapshot %s is %d bytes, more than the %d expected", p, sn.ID.Str(), node.Size, limit)
	}
	fr, err := r.OpenFile(ctx, node)
	if err != nil {
		return nil, err
	}
	defer fr.Close()
	return io.ReadAll(fr)
}

// RestoreOptions configure Restore.
type RestoreOptions struct {
	// Into restores into this running container instead of the one the
	// snapshot was taken from (a new container, a drill's).
	Into string
	// Databases restores only these databases of the snapshot; nil
	// restores all of them.
	Databases []string
	// Globals applies the snapshot's globals.sql (roles, tablespaces) first
	// and then keeps the objects' owners and privileges; see Restore.
	Globals bool
	// PgRestoreArgs are added to pg_restore's options.
	PgRestoreArgs []string
	// Confirm is called with the plan, before anything is changed; an
	// error stops the restore there.
	Confirm func(*RestorePlan) error
	// Warn receives notes that do not fail the restore (statements of
	// globals.sql that failed, such as creating a role that exists).
	Warn func(string)
}

// RestorePlan is what a restore is about to do.
type RestorePlan struct {
	// Container is the container whose backup is restored; Target the
	// one restored into, as TargetUser.
	Container  string
	Target     string
	TargetUser string
	Snapshot   *repo.Snapshot
	Manifest   *Manifest
	// Databases are the manifest's entries to restore: each is dropped in
	// Target and recreated from its dump.
	Databases []DatabaseDump
	Globals   bool

	nodes map[string]*repo.Node // dump file nodes, by database name
}

// RestoreResult reports a restore.
type RestoreResult struct {
	Plan      *RestorePlan
	Databases []DatabaseCheck
	Duration  time.Duration
	// Warnings from the globals (statements that failed).
	Warnings []string
}

// DatabaseCheck compares a restored database's row counts with the
// manifest's.
type DatabaseCheck struct {
	Name   string
	Tables []TableCheck
}

// TableCheck is one table's row count in the manifest and after the
// restore; -1 where the table is missing.
type TableCheck struct {
	Schema   string
	Name     string
	Expected int64
	Restored int64
}

// OK reports whether the counts agree.
func (t TableCheck) OK() bool { return t.Expected == t.Restored && t.Expected >= 0 }

// QualifiedName is schema.name, quoted where SQL would need it.
func (t TableCheck) QualifiedName() string { return qualifiedName(t.Schema, t.Name) }

// Describe says how a table's counts differ.
func (t TableCheck) Describe() string {
	switch {
	case t.Expected < 0:
		return fmt.Sprintf("%s: not in the manifest, %d rows restored", t.QualifiedName(), t.Restored)
	case t.Restored < 0:
		return fmt.Sprintf("%s: %d rows in the manifest, table missing after the restore", t.QualifiedName(), t.Expected)
	case t.OK():
		return fmt.Sprintf("%s: %d rows", t.QualifiedName(), t.Restored)
	}
	return fmt.Sprintf("%s: %d rows in the manifest, %d restored", t.QualifiedName(), t.Expected, t.Restored)
}

// Mismatches lists the tables whose counts disagree, "db: schema.table: ...".
func (r *RestoreResult) Mismatches() []string {
	var out []string
	for _, db := range r.Databases {
		for _, t := range db.Tables {
			if !t.OK() {
				out = append(out, "database "+db.Name+": "+t.Describe())
			}
		}
	}
	return out
}

// PlanRestore works out, without changing anything, what Restore would do:
// it finds the snapshot (ref "latest" is the container's newest backup),
// reads its manifest, checks the target container runs and that every dump
// to restore is in the snapshot.
func PlanRestore(ctx context.Context, d Docker, r *repo.Repository, containerName, ref string, opts RestoreOptions) (*RestorePlan, error) {
	target := opts.Into
	if target == "" {
		target = containerName
	}
	ins, err := inspectRunning(ctx, d, target)
	if err != nil {
		return nil, err
	}
	user := envMap(ins.Config.Env)["POSTGRES_USER"]
	if user == "" {
		user = "postgres"
	}
	sn, m, err := FindBackup(ctx, r, containerName, ref)
	if err != nil {
		return nil, err
	}
	plan := &RestorePlan{
		Container: containerName, Target: strings.TrimPrefix(ins.Name, "/"), TargetUser: user,
		Snapshot: sn, Manifest: m, Globals: opts.Globals, nodes: map[string]*repo.Node{},
	}
	if plan.Target == "" {
		plan.Target = target
	}
	if opts.Databases == nil {
		plan.Databases = append(plan.Databases, m.Databases...)
	}
	for _, name := range opts.Databases {
		db := m.Database(name)
		if db == nil {
			var have []string
			for _, d := range m.Databases {
				have = append(have, d.Name)
			}
			return nil, fmt.Errorf("%w: snapshot %s of container %s holds no database %s (it has: %s)",
				ErrDatabaseMissing, sn.ID.Str(), containerName, quoteIdent(name), strings.Join(have, ", "))
		}
		if !slices.ContainsFunc(plan.Databases, func(x DatabaseDump) bool { return x.Name == name }) {
			plan.Databases = append(plan.Databases, *db)
		}
	}
	for _, db := range plan.Databases {
		node, err := r.FindNode(ctx, sn, sn.Paths[0]+"/"+db.File)
		if err != nil {
			return nil, err
		}
		if db.Size > 0 && int64(node.Size) != db.Size {
			return nil, fmt.Errorf("snapshot %s: %s is %d bytes, its manifest says %d", sn.ID.Str(), db.File, node.Size, db.Size)
		}
		plan.nodes[db.Name] = node
	}
	if opts.Globals && (m.Globals == nil || m.Globals.File == "") {
		return nil, fmt.Errorf("snapshot %s has no globals file to restore", sn.ID.Str())
	}
	return plan, nil
}

// Restore replaces databases of a running container with a backup's.
//
// For each database: connected to the maintenance database ("postgres";
// "template1" when the database to restore is "postgres" itself, or there
// is no "postgres"), it drops the database, ending every other session in
// it (DROP DATABASE ... WITH (FORCE) on Postgres 13 and later; before,
// connections are disallowed and the sessions terminated first); then it
// streams the dump from the repository into pg_restore --create
// --exit-on-error in the container, and finally counts every table's rows
// and compares them with the manifest (ErrCountMismatch when they differ).
//
// Decisions:
//
//   - pg_restore --create recreates the database as it was dumped: same
//     encoding, collation and ctype, and its database-level settings
//     (ALTER DATABASE ... SET), comment and privileges (GRANT ... ON
//     DATABASE), which a dump only carries for --create.
//   - Ownership: by default the restore runs as the container's
//     POSTGRES_USER with --no-owner, so the database and every object in it
//     belong to POSTGRES_USER (the usual set-up: the app connects as that
//     user). Privileges granted to other roles are restored; such roles
//     must exist, which they do in the container the backup came from
//     (roles live outside databases and are not dropped). With
//     Globals, globals.sql is applied first (roles as they were, without
//     passwords unless the backup kept them; statements that fail, such as
//     creating a role that exists, are warnings) and owners are kept.
//   - Extensions are recreated by the dump's CREATE EXTENSION statements
//     with the target's own extension files: the restore fails (and says
//     which) if the image lacks one.
//
// A failure after the database was dropped leaves it missing or partly
// restored; the error says so.
func Restore(ctx context.Context, d Docker, r *repo.Repository, containerName, ref string, opts RestoreOptions) (*RestoreResult, error) {
	plan, err := PlanRestore(ctx, d, r, containerName, ref, opts)
	if err != nil {
		return nil, err
	}
	if opts.Confirm != nil {
		if err := opts.Confirm(plan); err != nil {
			return nil, err
		}
	}
	return plan.Run(ctx, d, r, opts)
}

// Run carries out the plan (see Restore).
func (plan *RestorePlan) Run(ctx context.Context, d Docker, r *repo.Repository, opts RestoreOptions) (*RestoreResult, error) {
	start := time.Now()
	warn := opts.Warn
	if warn == nil {
		warn = func(string) {}
	}
	res := &RestoreResult{Plan: plan}
	if _, err := inspectRunning(ctx, d, plan.Target); err != nil {
		return nil, err
	}
	target, user := plan.Target, plan.TargetUser
	info, err := serverState(ctx, d, target, user)
	if err != nil {
		return nil, err
	}
	if plan.Globals {
		ws, err := restoreGlobals(ctx, d, r, plan, info)
		res.Warnings = append(res.Warnings, ws...)
		for _, w := range ws {
			warn(w)
		}
		if err != nil {
			return res, err
		}
	}
	var mismatches []string
	for _, db := range plan.Databases {
		check, err := restoreDatabase(ctx, d, r, plan, db, info, opts)
		if err != nil {
			return res, fmt.Errorf("restore of database %s into container %s: %w", quoteIdent(db.Name), target, err)
		}
		res.Databases = append(res.Databases, *check)
		for _, t := range check.Tables {
			if !t.OK() {
				mismatches = append(mismatches, "database "+db.Name+": "+t.Describe())
			}
		}
	}
	res.Duration = time.Since(start)
	if len(mismatches) > 0 {
		return res, fmt.Errorf("%w: %s", ErrCountMismatch, strings.Join(mismatches, "; "))
	}
	return res, nil
}

// serverInfo is what the restore needs to know of the target server.
type serverInfo struct {
	VersionNum int      `json:"version_num"`
	Databases  []string `json:"databases"`
}

func serverState(ctx context.Context, d Docker, target, user string) (*serverInfo, error) {
	out, _, err := runPsql(ctx, d, target, user, "template1", strings.NewReader(
		`SELECT json_build_object('version_num', current_setting('server_version_num')::int,
  'databases', (SELECT json_agg(datname) FROM pg_database));`+"\n"), true)
	if err != nil {
		return nil, fmt.Errorf("connect to Postgres in container %s: %w", target, err)
	}
	var info serverInfo
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		return nil, fmt.Errorf("container %s: server state %q: %w", target, out, err)
	}
	return &info, nil
}

// maintenanceDB is the database to connect to while db is dropped and
// created: "postgres", unless that is db itself or missing.
func (s *serverInfo) maintenanceDB(db string) string {
	if db != "postgres" && slices.Contains(s.Databases, "postgres") {
		return "postgres"
	}
	return "template1"
}

func restoreGlobals(ctx context.Context, d Docker, r *repo.Repository, plan *RestorePlan, info *serverInfo) ([]string, error) {
	p := plan.Snapshot.Paths[0] + "/" + plan.Manifest.Globals.File
	node, err := r.FindNode(ctx, plan.Snapshot, p)
	if err != nil {
		return nil, err
	}
	fr, err := r.OpenFile(ctx, node)
	if err != nil {
		return nil, err
	}
	defer fr.Close()
	// No ON_ERROR_STOP: "role ... already exists" for the superuser (and
	// any role the target has) is expected.
	_, stderr, err := runPsql(ctx, d, plan.Target, plan.TargetUser, info.maintenanceDB(""), fr, false)
	if err != nil {
		return nil, fmt.Errorf("apply globals.sql in container %s: %w", plan.Target, err)
	}
	var warnings []string
	for _, line := range strings.Split(stderr, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			warnings = append(warnings, "globals.sql: "+line)
		}
	}
	return warnings, nil
}

func restoreDatabase(ctx context.Context, d Docker, r *repo.Repository, plan *RestorePlan, db DatabaseDump, info *serverInfo, opts RestoreOptions) (*DatabaseCheck, error) {
	target, user := plan.Target, plan.TargetUser
	node := plan.nodes[db.Name]
	fr, err := r.OpenFile(ctx, node)
	if err != nil {
		return nil, err
	}
	defer fr.Close()
	// Look at the archive's header before anything is dropped.
	hc := newHashCounter()
	br := bufio.NewReaderSize(io.TeeReader(fr, hc), 64<<10)
	head, err := br.Peek(512)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read the dump %s: %w", db.File, err)
	}
	isTar := len(head) >= 262 && string(head[257:262]) == "ustar"
	if !bytes.HasPrefix(head, []byte("PGDMP")) && !isTar {
		return nil, fmt.Errorf("%s is not a pg_dump archive (a plain SQL dump? pg_dump args %q): restore it with psql by hand", db.File, plan.Manifest.PgDumpArgs)
	}

	maint := info.maintenanceDB(db.Name)
	var drop string
	if info.VersionNum >= 130000 {
		drop = "DROP DATABASE IF EXISTS " + quoteIdent(db.Name) + " WITH (FORCE);\n"
	} else if slices.Contains(info.Databases, db.Name) {
		drop = "ALTER DATABASE " + quoteIdent(db.Name) + " ALLOW_CONNECTIONS false;\n" +
			"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = " + quoteLiteral(db.Name) + " AND pid <> pg_backend_pid();\n" +
			"DROP DATABASE " + quoteIdent(db.Name) + ";\n"
	}
	if drop != "" {
		if _, _, err := runPsql(ctx, d, target, user, maint, strings.NewReader(drop), true); err != nil {
			return nil, fmt.Errorf("drop the database: %w", err)
		}
	}

	cmd := []string{"pg_restore", "--exit-on-error", "--create", "--no-password",
		"--username=" + user, "--dbname=" + conninfo(maint, user)}
	if !plan.Globals {
		cmd = append(cmd, "--no-owner")
	}
	cmd = append(cmd, opts.PgRestoreArgs...)
	var out tailBuffer
	out.max = stderrKeep
	p, err := startProc(ctx, d, target, execSpec{Cmd: cmd, Stdin: true, Stdout: &out})
	if err != nil {
		return nil, fmt.Errorf("%w; the database was dropped and is not restored", err)
	}
	defer p.Close()
	src := &readErrRecorder{r: br}
	_, copyErr := io.Copy(p.Stdin(), src)
	if src.err != nil {
		p.Close() // pg_restore must not finish on a cut archive
		_ = p.Wait(ctx)
		return nil, fmt.Errorf("reading the dump from the repository failed: %w; the database is only partly restored", src.err)
	}
	_ = p.CloseStdin()
	if err := p.Wait(ctx); err != nil {
		return nil, fmt.Errorf("%w; the database is missing or only partly restored", err)
	}
	if copyErr != nil {
		return nil, fmt.Errorf("streaming the dump into pg_restore: %w; the database is only partly restored", copyErr)
	}
	if db.SHA256 != "" && (hc.sum() != db.SHA256 || hc.n != db.Size) {
		return nil, fmt.Errorf("the dump restored has SHA-256 %s (%d bytes) but the manifest says %s (%d bytes)", hc.sum(), hc.n, db.SHA256, db.Size)
	}
	return compareCounts(ctx, d, target, user, db)
}

// compareCounts counts the restored database's rows and compares them with
// the manifest's.
func compareCounts(ctx context.Context, d Docker, target, user string, db DatabaseDump) (*DatabaseCheck, error) {
	out, _, err := runPsql(ctx, d, target, user, db.Name, strings.NewReader("SET statement_timeout = 0;\n"+countTablesSQL+"\n"), true)
	if err != nil {
		return nil, fmt.Errorf("count the restored rows: %w", err)
	}
	var got []TableCount
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		return nil, fmt.Errorf("count the restored rows: %w", err)
	}
	return &DatabaseCheck{Name: db.Name, Tables: CompareCounts(db.Tables, got)}, nil
}

// CompareCounts pairs the manifest's tables with the restored ones, by
// schema and name, in the manifest's order; restored tables the manifest
// lacks come last.
func CompareCounts(want, got []TableCount) []TableCheck {
	type key struct{ s, n string }
	restored := map[key]int64{}
	for _, t := range got {
		restored[key{t.Schema, t.Name}] = t.Rows
	}
	var out []TableCheck
	seen := map[key]bool{}
	for _, t := range want {
		k := key{t.Schema, t.Name}
		seen[k] = true
		n, ok := restored[k]
		if !ok {
			n = -1
		}
		out = append(out, TableCheck{Schema: t.Schema, Name: t.Name, Expected: t.Rows, Restored: n})
	}
	for _, t := range got {
		if k := (key{t.Schema, t.Name}); !seen[k] {
			out = append(out, TableCheck{Schema: t.Schema, Name: t.Name, Expected: -1, Restored: t.Rows})
		}
	}
	return out
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
