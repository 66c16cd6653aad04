package pgstream

import (
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
// its name, with the paths ["/CONTAINER"] (which leaves out drill records),
// made on host (any host when empty).
func ContainerSnapshotFilter(containerName, host string) repo.SnapshotFilter {
	f := repo.SnapshotFilter{Tags: []string{containerName}, Paths: []string{"/" + containerName}}
	if host != "" {
		f.Hosts = []string{host}
	}
	return f
}

// FindBackup resolves ref ("latest", a snapshot ID or a unique prefix) to a
// backup of the container made on host (any host when empty) and loads its
// manifest.
func FindBackup(ctx context.Context, r *repo.Repository, containerName, ref, host string) (*repo.Snapshot, *Manifest, error) {
	if ref == "" {
		ref = "latest"
	}
	onHost := ""
	if host != "" {
		onHost = " made on host " + host
	}
	sn, err := r.FindSnapshot(ctx, ref, ContainerSnapshotFilter(containerName, host))
	if err != nil {
		if errors.Is(err, repo.ErrNoSnapshot) && ref == "latest" {
			return nil, nil, fmt.Errorf("no backup of container %s%s in the repository: %w", containerName, onHost, err)
		}
		if errors.Is(err, repo.ErrNoSnapshot) {
			return nil, nil, fmt.Errorf("snapshot %s is not a backup of container %s%s%s: %w", ref, containerName, onHost, whoseSnapshot(ctx, r, ref, containerName), err)
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

// whoseSnapshot says what snapshot ref is when it is not a backup of
// containerName: another container's backup (then how to restore it into
// this one), or a drill record; empty when that cannot be told.
func whoseSnapshot(ctx context.Context, r *repo.Repository, ref, containerName string) string {
	sn, err := r.FindSnapshot(ctx, ref, repo.SnapshotFilter{})
	if err != nil || len(sn.Paths) != 1 {
		return ""
	}
	other := strings.TrimPrefix(sn.Paths[0], "/")
	if sn.Paths[0] != "/"+other || strings.Contains(other, "/") || !slices.Contains(sn.Tags, other) {
		return " (it is not a container backup)"
	}
	if other == containerName {
		return fmt.Sprintf(" (it was made on host %s: name that host with --host %s)", sn.Hostname, sn.Hostname)
	}
	return fmt.Sprintf(" (it is a backup of container %s made on host %s; to restore it into %s: scalr-backup restore %s %s --into %s)",
		other, sn.Hostname, containerName, other, sn.ID.Str(), containerName)
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
	// Host selects among the backups of that host only ("latest" is the
	// host's newest); empty accepts any host's.
	Host string
	// Databases restores only these databases of the snapshot; nil
	// restores all of them.
	Databases []string
	// Globals applies the snapshot's globals.sql (roles, tablespaces) first
	// and then keeps the objects' owners and privileges; see Restore.
	Globals bool
	// InPlace drops each live database first and restores under its own
	// name, as pg_restore --create does: no room is needed for a second
	// copy, but a restore that fails leaves the database missing or partly
	// restored. Only for a server without room for the side copy.
	InPlace bool
	// DropPrevious drops the database a restore replaced once the swap is
	// done, instead of keeping it (see Restore).
	DropPrevious bool
	// PgRestoreArgs are added to pg_restore's options.
	PgRestoreArgs []string
	// Confirm is called with the plan, before anything is changed; an
	// error stops the restore there.
	Confirm func(*RestorePlan) error
	// Warn receives notes that do not fail the restore (statements of
	// globals.sql that failed, such as creating a role that exists).
	Warn func(string)
	// Progress receives each step as it starts.
	Progress func(RestoreStep)

	// intoConn, when set, is how to reach Into's server (a drill's, whose
	// password is the one its entrypoint initialised it with).
	intoConn *Conn
}

// RestoreStep is a step of a restore, for progress output.
type RestoreStep struct {
	// Stage is one of the Stage* constants.
	Stage    string
	Database string
	// Detail names the objects of the step (the side database, the name
	// the live one is kept under).
	Detail string
}

// Restore stages, in the order a restore passes them.
const (
	StageLeftover     = "leftover"      // an interrupted restore's side database is dropped
	StageGlobals      = "globals"       // globals.sql is applied
	StageCreate       = "create"        // the side database is created
	StageRestore      = "restore"       // pg_restore runs into it
	StageVerify       = "verify"        // row counts are compared
	StageSwap         = "swap"          // the swap transaction began
	StageSwapCommit   = "swap-commit"   // the renames are done, COMMIT is next
	StageSwapped      = "swapped"       // committed: the restored database is live
	StageDropPrevious = "drop-previous" // the replaced database is dropped
	StageDropInPlace  = "drop-in-place" // InPlace: the live database is dropped
)

// RestorePlan is what a restore is about to do.
type RestorePlan struct {
	// Container is the container whose backup is restored; Target the
	// one restored into, as TargetUser.
	Container  string
	Target     string
	TargetUser string
	Snapshot   *repo.Snapshot
	Manifest   *Manifest
	// Databases are the manifest's entries to restore.
	Databases []DatabaseDump
	Globals   bool
	InPlace   bool
	// Server is the target server as the preflight found it.
	Server *ServerFacts
	// Leftovers are side databases of interrupted restores found on the
	// target; Run drops them first (those still in use are left alone).
	Leftovers []string

	conn    Conn                      // how the tools reach Target's server
	nodes   map[string]*repo.Node     // dump file nodes, by database name
	schemas map[string]*archiveSchema // the dumps' TOCs, by database name
	globals string                    // globals.sql, when Globals
}

// ServerFacts are what the preflight learned of the target server.
type ServerFacts struct {
	VersionNum int    `json:"version_num"`
	Version    string `json:"version"`
	// DataDirectory and FreeBytes are where the side copy goes and the
	// room there (FreeBytes -1: unknown); NeededBytes is what the restore
	// needs there.
	DataDirectory string `json:"data_directory,omitempty"`
	FreeBytes     int64  `json:"free_bytes"`
	NeededBytes   int64  `json:"needed_bytes"`

	databases  map[string]int64 // name -> size
	roles      map[string]bool
	extensions map[string]bool
}

// Exists reports whether the server has database db.
func (s *ServerFacts) Exists(db string) bool { _, ok := s.databases[db]; return ok }

// Size is database db's size on the server (0 when it does not exist).
func (s *ServerFacts) Size(db string) int64 { return s.databases[db] }

// ErrPreflight means a restore was refused before anything was created:
// the target cannot take the dump (archive version, missing extensions or
// roles, no room for the side copy).
var ErrPreflight = errors.New("restore refused by its preflight; nothing was changed")

// RestoreResult reports a restore.
type RestoreResult struct {
	Plan      *RestorePlan
	Databases []DatabaseCheck
	Duration  time.Duration
	// Warnings from the globals (statements that failed).
	Warnings []string
	// LeftoversDropped are interrupted restores' side databases dropped
	// first; LeftoversInUse those left alone because a session uses them.
	LeftoversDropped []string
	LeftoversInUse   []string
}

// DatabaseCheck compares a restored database's row counts with the
// manifest's.
type DatabaseCheck struct {
	Name   string
	Tables []TableCheck
	// Previous is the name the replaced database is kept under (empty
	// when there was none, when it was dropped, or for an in-place
	// restore); PreviousBytes its size.
	Previous      string
	PreviousBytes int64
	// PreviousDropped says DropPrevious dropped it.
	PreviousDropped bool
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
		out = append(out, db.mismatches()...)
	}
	return out
}

func (c *DatabaseCheck) mismatches() []string {
	var out []string
	for _, t := range c.Tables {
		if !t.OK() {
			out = append(out, "database "+c.Name+": "+t.Describe())
		}
	}
	return out
}

// PlanRestore works out, without changing anything, what Restore would do:
// it finds the snapshot (ref "latest" is the container's newest backup, of
// opts.Host when set), reads its manifest, checks the target container runs
// and that every dump to restore is in the snapshot, and runs the
// preflight (see Restore). A refused preflight returns the plan with an
// error wrapping ErrPreflight.
func PlanRestore(ctx context.Context, d Docker, r *repo.Repository, containerName, ref string, opts RestoreOptions) (*RestorePlan, error) {
	target := opts.Into
	if target == "" {
		target = containerName
	}
	ins, err := inspectRunning(ctx, d, target)
	if err != nil {
		return nil, err
	}
	conn, err := findConn(ctx, d, ins, connOptions{known: opts.intoConn})
	if err != nil {
		return nil, err
	}
	user := conn.User
	sn, m, err := FindBackup(ctx, r, containerName, ref, opts.Host)
	if err != nil {
		return nil, err
	}
	plan := &RestorePlan{
		Container: containerName, Target: strings.TrimPrefix(ins.Name, "/"), TargetUser: user, conn: conn,
		Snapshot: sn, Manifest: m, Globals: opts.Globals, InPlace: opts.InPlace,
		nodes: map[string]*repo.Node{}, schemas: map[string]*archiveSchema{},
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
	if opts.Globals {
		if m.Globals == nil || m.Globals.File == "" {
			return nil, fmt.Errorf("snapshot %s has no globals file to restore", sn.ID.Str())
		}
		buf, err := readSmallFile(ctx, r, sn, sn.Paths[0]+"/"+m.Globals.File, 64<<20)
		if err != nil {
			return nil, fmt.Errorf("snapshot %s: read %s: %w", sn.ID.Str(), m.Globals.File, err)
		}
		plan.globals = string(buf)
	}
	if err := plan.preflight(ctx, d, r, opts); err != nil {
		return plan, err
	}
	return plan, nil
}

// Restore replaces databases of a running container with a backup's,
// without ever putting the live database at risk:
//
//  1. Preflight (PlanRestore), before anything is created: the target's
//     pg_restore must read the archive (a dump from a newer major version is
//     refused); every extension the dump creates must be available on the
//     target; every role its statements name must exist (or come from
//     globals.sql with Globals); the data directory must have room for the
//     side copy. A refusal wraps ErrPreflight.
//  2. Side databases of interrupted restores (scalr_restore_*) are dropped,
//     unless a session still uses them.
//  3. For each database: a side database is created with the dump's own
//     CREATE DATABASE (encoding, locale, collation); the dump streams from
//     the repository into pg_restore --exit-on-error in the container; the
//     database-level statements (settings, comment, privileges) are applied
//     to it; its SHA-256 and every table's row count are compared with the
//     manifest. Any failure drops the side database and leaves the live one
//     untouched.
//  4. Swap, in one transaction: the live database's sessions are ended, it
//     is renamed NAME__replaced_TIMESTAMP, and the side database is renamed
//     NAME. A crash before COMMIT leaves the old database live, after it the
//     new one: never neither. The replaced database is kept (its name and
//     size are in the result) unless DropPrevious; SwapBack undoes a swap.
//
// With InPlace, step 3 drops the live database first and restores under its
// own name with pg_restore --create; a failure then leaves it missing or
// partly restored.
//
// Ownership: by default the restore runs as the container's POSTGRES_USER
// with --no-owner, so every object belongs to POSTGRES_USER (the usual
// set-up: the app connects as that user). Privileges granted to other roles
// are restored; such roles must exist. With Globals, globals.sql is applied
// first (roles as they were, without passwords unless the backup kept them;
// statements that fail, such as creating a role that exists, are warnings)
// and owners are kept.
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
	// A non-exclusive lock for as long as the dumps are read, as restic's
	// restore and dump take: a prune (restic's or a nightly pass's) waits
	// or fails instead of deleting what is being restored. A lock that can
	// no longer be refreshed ends the restore (the side database is then
	// dropped, the live one untouched).
	ctx, done, err := r.Hold(ctx, false, "restore")
	if err != nil {
		return nil, fmt.Errorf("restore of container %s: %w; nothing was changed", plan.Container, err)
	}
	defer done()
	rs := &restoreRun{ctx: ctx, d: d, r: r, plan: plan, opts: opts, progress: opts.Progress}
	if rs.progress == nil {
		rs.progress = func(RestoreStep) {}
	}
	res := &RestoreResult{Plan: plan}
	if _, err := inspectRunning(ctx, d, plan.Target); err != nil {
		return nil, err
	}
	if err := rs.refresh(); err != nil {
		return nil, err
	}
	if !plan.InPlace {
		res.LeftoversDropped, res.LeftoversInUse = rs.dropLeftovers()
	}
	if plan.Globals {
		rs.progress(RestoreStep{Stage: StageGlobals})
		ws, err := rs.applyGlobals()
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
		var check *DatabaseCheck
		var err error
		if plan.InPlace {
			check, err = rs.inPlace(db)
		} else {
			check, err = rs.sideRestore(db)
		}
		if check != nil {
			res.Databases = append(res.Databases, *check)
		}
		if err != nil {
			res.Duration = time.Since(start)
			return res, fmt.Errorf("restore of database %s into container %s: %w", quoteIdent(db.Name), plan.Target, err)
		}
		mismatches = append(mismatches, check.mismatches()...)
	}
	res.Duration = time.Since(start)
	if len(mismatches) > 0 {
		// Only an in-place restore gets here: a side restore with counts
		// that differ is never swapped in.
		return res, fmt.Errorf("%w: %s", ErrCountMismatch, strings.Join(mismatches, "; "))
	}
	return res, nil
}

// restoreRun is the state of one RestorePlan.Run.
type restoreRun struct {
	ctx      context.Context
	d        Docker
	r        *repo.Repository
	plan     *RestorePlan
	opts     RestoreOptions
	progress func(RestoreStep)
	server   *ServerFacts
}

func (rs *restoreRun) refresh() error {
	s, err := serverFacts(rs.ctx, rs.d, rs.plan.conn)
	if err != nil {
		return err
	}
	rs.server = s
	return nil
}

// maintenanceDB is the database to connect to while db is created, renamed
// or dropped: "postgres", unless that is db itself or missing.
func (s *ServerFacts) maintenanceDB(db string) string {
	if db != "postgres" && s.Exists("postgres") {
		return "postgres"
	}
	return "template1"
}

func (rs *restoreRun) psql(db, sql string) (string, error) {
	out, _, err := runPsql(rs.ctx, rs.d, rs.plan.conn, db, strings.NewReader(sql), true)
	return out, err
}

func (rs *restoreRun) applyGlobals() ([]string, error) {
	// No ON_ERROR_STOP: "role ... already exists" for the superuser (and
	// any role the target has) is expected.
	_, stderr, err := runPsql(rs.ctx, rs.d, rs.plan.conn, rs.server.maintenanceDB(""), strings.NewReader(rs.plan.globals), false)
	if err != nil {
		return nil, fmt.Errorf("apply globals.sql in container %s: %w", rs.plan.Target, err)
	}
	var warnings []string
	for _, line := range strings.Split(stderr, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			warnings = append(warnings, "globals.sql: "+line)
		}
	}
	return warnings, nil
}

// pgRestoreCmd is pg_restore's command line, with extra options.
func (rs *restoreRun) pgRestoreCmd(extra ...string) []string {
	return pgRestoreCmd(rs.plan.TargetUser, rs.plan.Globals, rs.opts.PgRestoreArgs, extra...)
}

func pgRestoreCmd(user string, keepOwners bool, args []string, extra ...string) []string {
	cmd := []string{"pg_restore", "--exit-on-error", "--no-password", "--username=" + user}
	if !keepOwners {
		cmd = append(cmd, "--no-owner")
	}
	cmd = append(cmd, args...)
	return append(cmd, extra...)
}

// streamInto streams database db's dump from the repository into
// pg_restore (cmd) in the target, checks the bytes against the manifest and
// returns when pg_restore has exited: at once when it fails, with the end
// of its standard error.
func (rs *restoreRun) streamInto(db DatabaseDump, cmd []string) error {
	fr, err := rs.r.OpenFile(rs.ctx, rs.plan.nodes[db.Name])
	if err != nil {
		return err
	}
	defer fr.Close()
	hc := newHashCounter()
	var out tailBuffer
	out.max = stderrKeep
	p, err := startProc(rs.ctx, rs.d, rs.plan.Target, execSpec{Cmd: cmd, Env: rs.plan.conn.env(), Stdin: true, Stdout: &out})
	if err != nil {
		return err
	}
	defer p.Close()
	readErr, writeErr, early := p.feed(io.TeeReader(fr, hc))
	if readErr != nil {
		p.Close() // pg_restore must not finish on a cut archive
		_ = p.Wait(rs.ctx)
		return fmt.Errorf("reading the dump %s from the repository failed: %w", db.File, readErr)
	}
	if err := p.Wait(rs.ctx); err != nil {
		return err
	}
	// With --exit-on-error any error ends pg_restore non-zero; an error
	// line despite exit 0 is still not a restore to trust.
	if tail := p.StderrTail(); strings.Contains(tail, "pg_restore: error:") {
		return fmt.Errorf("pg_restore in container %s exited 0 but reported errors: %s", rs.plan.Target, tail)
	}
	if early || writeErr != nil {
		return fmt.Errorf("pg_restore in container %s stopped reading the dump after %d of %d bytes (%v)", rs.plan.Target, hc.n, db.Size, writeErr)
	}
	if db.SHA256 != "" && (hc.sum() != db.SHA256 || hc.n != db.Size) {
		return fmt.Errorf("the dump restored has SHA-256 %s (%d bytes) but the manifest says %s (%d bytes)", hc.sum(), hc.n, db.SHA256, db.Size)
	}
	return nil
}

// sideRestore restores db into a side database, verifies it and swaps it
// in. The live database is only touched by the swap's renames.
func (rs *restoreRun) sideRestore(db DatabaseDump) (check *DatabaseCheck, err error) {
	schema := rs.plan.schemas[db.Name]
	side := sideDatabaseName(db.Name, time.Now(), rs.server)
	maint := rs.server.maintenanceDB(db.Name)

	rs.progress(RestoreStep{Stage: StageCreate, Database: db.Name, Detail: side})
	create := "CREATE DATABASE " + quoteIdent(side) + " WITH TEMPLATE = template0 ENCODING = " + quoteLiteral(db.Encoding) +
		" LC_COLLATE = " + quoteLiteral(db.Collate) + " LC_CTYPE = " + quoteLiteral(db.Ctype) + ";"
	if schema != nil && schema.CreateDatabase != "" {
		create = renameDatabaseIn(schema.CreateDatabase, db.Name, side)
	}
	if _, err := rs.psql(maint, create+"\n"); err != nil {
		return nil, fmt.Errorf("create the side database %s: %w; the live database is untouched", side, err)
	}
	created := true
	defer func() {
		if created {
			if derr := rs.dropSide(side, maint); derr != nil {
				err = fmt.Errorf("%w; dropping the side database %s failed too: %v (the next restore drops it)", err, side, derr)
			}
		}
	}()
	// A session in the side database for as long as it is being built:
	// another restore's clean-up of leftovers leaves databases in use alone.
	holder, err := openPsql(rs.ctx, rs.d, rs.plan.conn, side)
	if err != nil {
		return nil, fmt.Errorf("connect to the side database %s: %w; the live database is untouched", side, err)
	}
	defer holder.Abort()

	rs.progress(RestoreStep{Stage: StageRestore, Database: db.Name, Detail: side})
	if err := rs.streamInto(db, rs.pgRestoreCmd("--dbname="+conninfo(side, rs.plan.TargetUser))); err != nil {
		return nil, fmt.Errorf("%w; the live database is untouched", err)
	}
	if schema != nil && len(schema.DatabaseLevel) > 0 {
		var sql strings.Builder
		for _, st := range schema.DatabaseLevel {
			if !rs.plan.Globals && strings.Contains(st, " OWNER TO ") {
				continue
			}
			sql.WriteString(renameDatabaseIn(st, db.Name, side) + "\n")
		}
		if sql.Len() > 0 {
			if _, err := rs.psql(maint, sql.String()); err != nil {
				return nil, fmt.Errorf("apply the database's settings, comment and privileges to %s: %w; the live database is untouched", side, err)
			}
		}
	}

	rs.progress(RestoreStep{Stage: StageVerify, Database: db.Name, Detail: side})
	check, err = compareCounts(rs.ctx, rs.d, rs.plan.conn, side, db)
	if err != nil {
		return nil, fmt.Errorf("%w; the live database is untouched", err)
	}
	if bad := check.mismatches(); len(bad) > 0 {
		return check, fmt.Errorf("%w: %s; the live database is untouched", ErrCountMismatch, strings.Join(bad, "; "))
	}
	_ = holder.Close(rs.ctx)

	if err := rs.refresh(); err != nil {
		return check, fmt.Errorf("%w; the live database is untouched", err)
	}
	previous, err := rs.swap(db.Name, side)
	if err != nil {
		return check, err
	}
	created = false
	check.Previous = previous
	if previous != "" {
		check.PreviousBytes = rs.server.Size(db.Name)
		if rs.opts.DropPrevious {
			rs.progress(RestoreStep{Stage: StageDropPrevious, Database: db.Name, Detail: previous})
			if err := rs.dropSide(previous, maint); err != nil {
				return check, fmt.Errorf("the restore is live, but dropping the replaced database %s failed: %w", previous, err)
			}
			check.PreviousDropped = true
		}
	}
	return check, nil
}

// swap makes side the database db in one transaction and returns the name
// the replaced database is kept under ("" when db did not exist).
func (rs *restoreRun) swap(db, side string) (string, error) {
	previous := ""
	if rs.server.Exists(db) {
		previous = replacedDatabaseName(db, time.Now(), rs.server)
	}
	err := swapDatabases(rs.ctx, rs.d, rs.plan.conn, rs.server, db, side, previous, rs.progress)
	if err != nil {
		return "", err
	}
	return previous, nil
}

// dropSide drops a database this restore made, ending its sessions.
func (rs *restoreRun) dropSide(name, maint string) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(rs.ctx), time.Minute)
	defer cancel()
	_, _, err := runPsql(ctx, rs.d, rs.plan.conn, maint, strings.NewReader(dropDatabaseSQL(name, rs.server.VersionNum)), true)
	return err
}

// dropDatabaseSQL drops a database, ending its sessions first.
func dropDatabaseSQL(name string, versionNum int) string {
	if versionNum >= 130000 {
		return "DROP DATABASE IF EXISTS " + quoteIdent(name) + " WITH (FORCE);\n"
	}
	return "ALTER DATABASE " + quoteIdent(name) + " ALLOW_CONNECTIONS false;\n" +
		"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = " + quoteLiteral(name) + " AND pid <> pg_backend_pid();\n" +
		"DROP DATABASE " + quoteIdent(name) + ";\n"
}

// inPlace is the InPlace restore: drop, then pg_restore --create.
func (rs *restoreRun) inPlace(db DatabaseDump) (*DatabaseCheck, error) {
	maint := rs.server.maintenanceDB(db.Name)
	if rs.server.Exists(db.Name) {
		rs.progress(RestoreStep{Stage: StageDropInPlace, Database: db.Name})
		if _, err := rs.psql(maint, dropDatabaseSQL(db.Name, rs.server.VersionNum)); err != nil {
			return nil, fmt.Errorf("drop the database: %w", err)
		}
	}
	rs.progress(RestoreStep{Stage: StageRestore, Database: db.Name, Detail: db.Name})
	if err := rs.streamInto(db, rs.pgRestoreCmd("--create", "--dbname="+conninfo(maint, rs.plan.TargetUser))); err != nil {
		return nil, fmt.Errorf("%w; in place: the database is missing or only partly restored", err)
	}
	rs.progress(RestoreStep{Stage: StageVerify, Database: db.Name, Detail: db.Name})
	return compareCounts(rs.ctx, rs.d, rs.plan.conn, db.Name, db)
}

// compareCounts counts the rows of the restored database (named dbName on
// the server) and compares them with the manifest's for db.
func compareCounts(ctx context.Context, d Docker, c Conn, dbName string, db DatabaseDump) (*DatabaseCheck, error) {
	out, _, err := runPsql(ctx, d, c, dbName, strings.NewReader("SET statement_timeout = 0;\n"+countTablesSQL+"\n"), true)
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
