package pgstream

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/scalr-platform/scalr-backup/repo"
)

// DrillFormat identifies a drill record's layout.
const DrillFormat = "scalr-backup/pgstream-drill/v1"

// Drill record tags: every record has DrillTag, DrillOfTagPrefix followed
// by the container's name (drill-of:CONTAINER), and DrillPassedTag or
// DrillFailedTag. A record never carries the bare container name: that tag
// marks the container's backups, and `restic dump --tag CONTAINER latest
// /CONTAINER/DB.pgdump` takes the newest snapshot with it. (Records written
// before drill-of: existed do carry it; readers take both.) A Docker
// container name never holds ':' or ',', so drill-of:CONTAINER is no
// container's own tag, and restic's --tag takes it as it is.
const (
	DrillTag         = "drill"
	DrillOfTagPrefix = "drill-of:"
	DrillPassedTag   = "drill-passed"
	DrillFailedTag   = "drill-failed"
)

// DrillRecordPath is where a container's drill record lives in its
// snapshot: /drill/CONTAINER.json.
func DrillRecordPath(containerName string) string { return "/drill/" + containerName + ".json" }

// DrillOptions configure Drill.
type DrillOptions struct {
	// Snapshot is the backup to restore: "latest" (default) or an ID.
	Snapshot string
	// Image replaces the image of the throwaway container; by default it
	// is the live container's image, else the one the manifest names.
	// Another image than the live container's starts with its own
	// entrypoint and command.
	Image string
	// ReadyTimeout bounds the wait for the throwaway Postgres to accept
	// connections (default 3 minutes).
	ReadyTimeout time.Duration
	// NoRecord skips saving the drill record snapshot.
	NoRecord bool
	// Hostname is the host the drill runs for: only its backups are
	// considered (any host's when empty), and it is the record's host.
	// ProgramVersion goes to the record's snapshot.
	Hostname       string
	ProgramVersion string
	// Warn receives notes that do not fail the drill.
	Warn func(string)
}

// DrillResult is a drill's outcome; it is also the record saved as
// /drill/CONTAINER.json in its own snapshot.
type DrillResult struct {
	Format          string          `json:"format"`
	Container       string          `json:"container"`
	Snapshot        string          `json:"snapshot"`
	SnapshotTime    time.Time       `json:"snapshot_time"`
	Image           string          `json:"image"`
	DrillContainer  string          `json:"drill_container"`
	Started         time.Time       `json:"started"`
	Finished        time.Time       `json:"finished"`
	DurationSeconds float64         `json:"duration_seconds"`
	Passed          bool            `json:"passed"`
	Error           string          `json:"error,omitempty"`
	Databases       []DrillDatabase `json:"databases"`
	Warnings        []string        `json:"warnings,omitempty"`

	// RecordID is the snapshot holding this record (zero with NoRecord or
	// when saving it failed, see RecordErr).
	RecordID  repo.ID `json:"-"`
	RecordErr error   `json:"-"`
}

// DrillDatabase is one database's table checks.
type DrillDatabase struct {
	Name   string       `json:"name"`
	Tables []DrillTable `json:"tables"`
}

// DrillTable is one table's counts (-1: table missing on that side) and
// the checksum of its restored rows (ChecksumSQL's "ROWS:SUM").
type DrillTable struct {
	Schema   string `json:"schema"`
	Name     string `json:"name"`
	Expected int64  `json:"expected"`
	Restored int64  `json:"restored"`
	OK       bool   `json:"ok"`
	Checksum string `json:"checksum,omitempty"`
}

// Drill proves that a container's backup restores: it starts a throwaway
// container (named scalr-drill-CONTAINER-RANDOM, without network, labelled
// scalr.backup=false) the way the live container was started: the same
// image, entrypoint, command, user and environment, with the files the
// environment's *_FILE variables and the command's *_file settings name
// mounted read-only from the same mounts (never the data directory; a
// password file that cannot be mounted is replaced by a generated
// password). When its server accepts connections (on its final server, not
// the entrypoint's set-up one: checked by listen_addresses), crash safety
// is switched off through the server (ALTER SYSTEM, pg_reload_conf): the
// throwaway needs no fsync. Then it restores the backup with its globals
// (Restore with Globals and Into), checks every table's row count against
// the manifest and records every table's checksum (ChecksumSQL). The
// throwaway container and its volume are removed afterwards, also when the
// drill fails or ctx ends.
//
// Waiting for the server ends at once on a permanent error: the container
// stopped (its entrypoint exited), authentication failed, the role is
// missing. The error of a drill that failed with its container then carries
// the last lines of the container's log, read before it is removed.
//
// The outcome is saved (unless NoRecord) as /drill/CONTAINER.json in a
// snapshot of its own tagged "drill", "drill-of:CONTAINER" and
// "drill-passed" or "drill-failed". Drill returns the result and, when the
// drill failed, an error too (wrapping ErrCountMismatch for a count that
// differs).
func Drill(ctx context.Context, d Docker, r *repo.Repository, containerName string, opts DrillOptions) (*DrillResult, error) {
	warn := opts.Warn
	if warn == nil {
		warn = func(string) {}
	}
	res := &DrillResult{Format: DrillFormat, Container: containerName, Started: time.Now().UTC()}
	err := drill(ctx, d, r, containerName, opts, res, warn)
	res.Finished = time.Now().UTC()
	res.DurationSeconds = res.Finished.Sub(res.Started).Seconds()
	res.Passed = err == nil
	if err != nil {
		res.Error = err.Error()
	}
	if !opts.NoRecord && res.Snapshot != "" {
		res.RecordID, res.RecordErr = saveDrillRecord(context.WithoutCancel(ctx), r, res, opts)
		if res.RecordErr != nil && err == nil {
			err = fmt.Errorf("drill passed, but saving its record failed: %w", res.RecordErr)
		}
	}
	if err != nil {
		return res, fmt.Errorf("drill of container %s: %w", containerName, err)
	}
	return res, nil
}

// ErrDrillNotReady means the drill's throwaway Postgres never accepted the
// drill's connection: its container stopped, a permanent error (such as
// authentication) was met, or the readiness timeout passed.
var ErrDrillNotReady = errors.New("the drill container's Postgres did not become ready")

// drillLogLines is how many of a failed drill container's last log lines
// its error carries.
const drillLogLines = 25

func drill(ctx context.Context, d Docker, r *repo.Repository, containerName string, opts DrillOptions, res *DrillResult, warn func(string)) (err error) {
	sn, m, err := FindBackup(ctx, r, containerName, opts.Snapshot, opts.Hostname)
	if err != nil {
		return err
	}
	res.Snapshot, res.SnapshotTime = sn.ID.String(), sn.Time

	spec := drillSpec(ctx, d, containerName, m, warn)
	if opts.Image != "" && opts.Image != spec.image && opts.Image != spec.imageName {
		spec.image, spec.entrypoint, spec.cmd = opts.Image, nil, nil
	}
	if spec.image == "" {
		return fmt.Errorf("no image known for container %s (give one)", containerName)
	}
	res.Image = spec.image
	var suffix [4]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		return err
	}
	name := "scalr-drill-" + containerName + "-" + hex.EncodeToString(suffix[:])
	res.DrillContainer = name

	created, err := d.ContainerCreate(ctx, &container.Config{
		Image:      spec.image,
		Env:        spec.env,
		Entrypoint: spec.entrypoint,
		Cmd:        spec.cmd,
		User:       spec.user,
		WorkingDir: spec.workdir,
		StopSignal: spec.stopSignal,
		Labels:     map[string]string{LabelBackup: "false", LabelDrillOf: containerName},
	}, &container.HostConfig{NetworkMode: "none", Mounts: spec.mounts}, nil, nil, name)
	if err != nil {
		return fmt.Errorf("create the drill container %s from image %s: %w", name, spec.image, err)
	}
	started := false
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		// What went wrong with the throwaway server is in its log: read
		// it before the container goes, when the server never became
		// ready or the container stopped. (A count that differs, a
		// snapshot that cannot be read, are not the container's doing.)
		if err != nil && started && (errors.Is(err, ErrDrillNotReady) || errors.Is(err, ErrNotRunning) || !containerRuns(rctx, d, created.ID)) {
			if tail := containerLogTail(rctx, d, created.ID, drillLogLines); tail != "" {
				err = fmt.Errorf("%w\nlast lines of the drill container's log:\n%s", err, tail)
			}
		}
		rerr := d.ContainerRemove(rctx, created.ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
		if rerr != nil && !cerrdefs.IsNotFound(rerr) {
			rerr = fmt.Errorf("remove the drill container %s: %w", name, rerr)
			if err == nil {
				err = rerr
			} else {
				warn(rerr.Error())
			}
		}
	}()
	if err := d.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		return fmt.Errorf("start the drill container %s: %w", name, err)
	}
	started = true
	conn, err := waitReady(ctx, d, name, spec.wantListen, cmp.Or(max(opts.ReadyTimeout, 0), 3*time.Minute))
	if err != nil {
		return err
	}
	if _, _, err := runPsql(ctx, d, conn, "template1", strings.NewReader(fastSettingsSQL), true); err != nil {
		msg := fmt.Sprintf("drill container %s: crash safety not switched off (the drill is only slower): %v", name, err)
		warn(msg)
		res.Warnings = append(res.Warnings, msg)
	}
	rr, rerr := Restore(ctx, d, r, containerName, sn.ID.String(), RestoreOptions{Into: name, Host: opts.Hostname, Globals: true, DropPrevious: true, intoConn: &conn})
	res.addRestore(rr)
	if rerr != nil {
		return rerr
	}
	return res.addChecksums(ctx, d, conn)
}

// addRestore takes the restore's warnings and row counts (rr may be nil).
func (res *DrillResult) addRestore(rr *RestoreResult) {
	if rr == nil {
		return
	}
	res.Warnings = append(res.Warnings, rr.Warnings...)
	for _, db := range rr.Databases {
		dd := DrillDatabase{Name: db.Name, Tables: []DrillTable{}}
		for _, t := range db.Tables {
			dd.Tables = append(dd.Tables, DrillTable{Schema: t.Schema, Name: t.Name, Expected: t.Expected, Restored: t.Restored, OK: t.OK()})
		}
		res.Databases = append(res.Databases, dd)
	}
}

// addChecksums records each restored table's checksum, read from the
// drill's server over conn.
func (res *DrillResult) addChecksums(ctx context.Context, d Docker, conn Conn) error {
	for i := range res.Databases {
		db := &res.Databases[i]
		sums, err := tableChecksums(ctx, d, conn, db.Name)
		if err != nil {
			return fmt.Errorf("checksums of the restored database %s: %w", quoteIdent(db.Name), err)
		}
		for j := range db.Tables {
			db.Tables[j].Checksum = sums[qualifiedName(db.Tables[j].Schema, db.Tables[j].Name)]
		}
	}
	return nil
}

// containerRuns reports whether a container runs (false when it cannot be
// told).
func containerRuns(ctx context.Context, d Docker, id string) bool {
	ins, err := d.ContainerInspect(ctx, id)
	return err == nil && ins.ContainerJSONBase != nil && ins.State != nil && ins.State.Running
}

// fastSettingsSQL switches the throwaway server's crash safety off: nothing
// in it must survive a crash. Applied through the server (the live
// container's command line is kept as it is).
const fastSettingsSQL = `ALTER SYSTEM SET fsync = off;
ALTER SYSTEM SET full_page_writes = off;
ALTER SYSTEM SET synchronous_commit = off;
SELECT pg_reload_conf();
`

// drillEnv is how to start a container like the backed-up one.
type drillEnv struct {
	image      string // the exact image (ID)
	imageName  string // the image as the live container names it
	env        []string
	entrypoint []string
	cmd        []string
	user       string // the container's user (Config.User), not the role
	workdir    string
	stopSignal string
	mounts     []mount.Mount
	// wantListen: the live server listens on TCP, so the throwaway's must
	// too before it counts as ready (the official image's set-up server
	// listens on no address).
	wantListen bool
}

// drillSpec copies the live container's image (the exact one), entrypoint,
// command, user, environment and the read-only mounts of the files its
// configuration names (drillMounts); without the live container, the
// manifest's image and role with a generated password (the drill container
// has no network) and the image's own entrypoint and command.
func drillSpec(ctx context.Context, d Docker, containerName string, m *Manifest, warn func(string)) drillEnv {
	s := drillEnv{stopSignal: "SIGINT", wantListen: true}
	ins, err := d.ContainerInspect(ctx, containerName)
	if err == nil && ins.ContainerJSONBase != nil && ins.Config != nil {
		s.image, s.imageName = ins.Image, ins.Config.Image
		if s.image == "" {
			s.image = ins.Config.Image
		}
		s.env = append([]string(nil), ins.Config.Env...)
		s.entrypoint = ins.Config.Entrypoint
		s.cmd = ins.Config.Cmd
		s.user = ins.Config.User
		s.workdir = ins.Config.WorkingDir
		if ins.Config.StopSignal != "" {
			s.stopSignal = ins.Config.StopSignal
		}
		s.mounts, s.env = drillMounts(ctx, d, ins, s.env, warn)
		if ins.State != nil && ins.State.Running {
			if c, err := findConn(ctx, d, ins, connOptions{}); err == nil {
				out, _, err := runPsql(ctx, d, c, "template1", strings.NewReader("SELECT current_setting('listen_addresses') <> '';\n"), true)
				if err == nil && strings.TrimSpace(out) == "f" {
					s.wantListen = false
				}
			}
		}
		return s
	}
	s.image = m.ImageID
	if s.image == "" {
		s.image = m.Image
	}
	user := m.User
	if user == "" {
		user = "postgres"
	}
	s.env = []string{"POSTGRES_USER=" + user, "POSTGRES_PASSWORD=" + randomPassword()}
	return s
}

func randomPassword() string {
	var pw [16]byte
	_, _ = rand.Read(pw[:])
	return hex.EncodeToString(pw[:])
}

// drillMounts finds the live container's mounts that hold files its
// configuration names: the values of its *_FILE variables, the *_file
// settings of its command (config_file, hba_file, ssl_cert_file...), its
// entrypoint. Each is mounted read-only in the drill container (bind mounts
// from the same source, volumes by name); never one holding or inside the
// data directory. A file on a mount that cannot be copied (tmpfs, or the
// data directory's) is replaced where an equivalent exists: a generated
// password for POSTGRES_PASSWORD_FILE, the values read in the live
// container for POSTGRES_USER_FILE and POSTGRES_DB_FILE. It returns the
// mounts and the environment to use.
func drillMounts(ctx context.Context, d Docker, ins container.InspectResponse, env []string, warn func(string)) ([]mount.Mount, []string) {
	em := envMap(env)
	pgdata := path.Clean(em["PGDATA"])
	if em["PGDATA"] == "" {
		pgdata = "/var/lib/postgresql/data"
	}
	name := strings.TrimPrefix(ins.Name, "/")
	refs := drillFileRefs(ins, em)
	var mounts []mount.Mount
	have := map[string]bool{}
	for _, p := range slices.Sorted(maps.Keys(refs)) {
		mp := mountHolding(ins.Mounts, p)
		if mp == nil {
			continue // in the image itself: the drill container has it too
		}
		if mnt := readOnlyCopy(mp, pgdata); mnt != nil {
			if !have[mnt.Target] {
				have[mnt.Target] = true
				mounts = append(mounts, *mnt)
			}
			continue
		}
		// No copy: an equivalent where there is one.
		v := refs[p]
		switch v {
		case "POSTGRES_PASSWORD_FILE":
			env = setEnv(env, "POSTGRES_PASSWORD_FILE", "")
			env = setEnv(env, "POSTGRES_PASSWORD", randomPassword())
			warn(fmt.Sprintf("drill of container %s: POSTGRES_PASSWORD_FILE (%s) is on a %s mount that is not copied: the drill container gets a generated password", name, p, mp.Type))
		case "POSTGRES_USER_FILE", "POSTGRES_DB_FILE":
			base := strings.TrimSuffix(v, "_FILE")
			val, err := fileEnv(ctx, d, name, envMap(ins.Config.Env), base)
			if err == nil && val != "" {
				env = setEnv(env, v, "")
				env = setEnv(env, base, val)
				continue
			}
			fallthrough
		default:
			warn(fmt.Sprintf("drill of container %s: %s names %s, on a %s mount that is not copied: the drill container may not start", name, v, p, mp.Type))
		}
	}
	return mounts, env
}

// drillFileRefs are the files the live container's start-up reads: *_FILE
// variables, file settings on its command line, its entrypoint; by path,
// with what names each.
func drillFileRefs(ins container.InspectResponse, em map[string]string) map[string]string {
	refs := map[string]string{} // path -> the variable or setting naming it
	for k, v := range em {
		if strings.HasSuffix(k, "_FILE") && strings.HasPrefix(v, "/") {
			refs[path.Clean(v)] = k
		}
	}
	args := append(append([]string(nil), ins.Config.Entrypoint...), ins.Config.Cmd...)
	for _, f := range fileSettings(args) {
		refs[f.path] = f.setting
	}
	if len(ins.Config.Entrypoint) > 0 && strings.HasPrefix(ins.Config.Entrypoint[0], "/") {
		refs[path.Clean(ins.Config.Entrypoint[0])] = "the entrypoint"
	}
	return refs
}

// pathWithin reports whether p is dir or below it.
func pathWithin(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, strings.TrimSuffix(dir, "/")+"/")
}

// mountHolding is the most specific of mounts holding p, or nil.
func mountHolding(mounts []container.MountPoint, p string) *container.MountPoint {
	var mp *container.MountPoint
	for i := range mounts {
		m := &mounts[i]
		if pathWithin(p, path.Clean(m.Destination)) && (mp == nil || len(m.Destination) > len(mp.Destination)) {
			mp = m
		}
	}
	return mp
}

// readOnlyCopy is mp mounted read-only at the same place (bind mounts from
// the same source, volumes by name), or nil when it cannot be copied: a
// tmpfs, or one holding or inside the data directory pgdata (never the
// live data, not even read-only).
func readOnlyCopy(mp *container.MountPoint, pgdata string) *mount.Mount {
	dest := path.Clean(mp.Destination)
	switch {
	case pathWithin(pgdata, dest) || pathWithin(dest, pgdata):
		return nil
	case mp.Type == mount.TypeBind && mp.Source != "":
		return &mount.Mount{Type: mount.TypeBind, Source: mp.Source, Target: dest, ReadOnly: true}
	case mp.Type == mount.TypeVolume && mp.Name != "":
		return &mount.Mount{Type: mount.TypeVolume, Source: mp.Name, Target: dest, ReadOnly: true}
	}
	return nil
}

// setEnv sets KEY=value in env, or removes KEY when value is "".
func setEnv(env []string, key, value string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if k, _, _ := strings.Cut(kv, "="); k != key {
			out = append(out, kv)
		}
	}
	if value != "" {
		out = append(out, key+"="+value)
	}
	return out
}

// fileSetting is a server setting on a command line that names a file the
// server reads.
type fileSetting struct{ setting, path string }

// fileSettings finds the settings that name files the server reads in a
// command line: -c NAME=PATH and --NAME=PATH where NAME ends in _file
// (config_file, hba_file, ident_file, ssl_*_file), external_pid_file (a
// file it writes) excepted.
func fileSettings(args []string) []fileSetting {
	var out []fileSetting
	add := func(kv string) {
		k, v, ok := strings.Cut(kv, "=")
		k = strings.ReplaceAll(strings.TrimSpace(k), "-", "_")
		v = strings.Trim(strings.TrimSpace(v), `'"`)
		if ok && strings.HasSuffix(k, "_file") && k != "external_pid_file" && strings.HasPrefix(v, "/") {
			out = append(out, fileSetting{k, path.Clean(v)})
		}
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-c" && i+1 < len(args):
			i++
			add(args[i])
		case strings.HasPrefix(a, "-c") && !strings.HasPrefix(a, "--"):
			add(a[2:])
		case strings.HasPrefix(a, "--"):
			add(a[2:])
		}
	}
	return out
}

// waitReady waits until the container's final server accepts the drill's
// connection, and returns it: the official image's entrypoint first runs
// a set-up server with listen_addresses empty, which must not be mistaken
// for it (unless the live server, too, listens on no address: wantListen
// false). A stopped container, or a permanent error (authentication, a
// missing role, no client tools), ends the wait at once.
func waitReady(ctx context.Context, d Docker, name string, wantListen bool, timeout time.Duration) (Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	var known *Conn
	for {
		ins, err := d.ContainerInspect(ctx, name)
		switch {
		case err != nil:
			last = err
		case ins.ContainerJSONBase == nil || ins.State == nil || ins.Config == nil:
			last = errors.New("incomplete answer from the engine")
		case !ins.State.Running:
			return Conn{}, fmt.Errorf("%w: the drill container %s stopped before Postgres was ready (exit code %d%s)",
				ErrDrillNotReady, name, ins.State.ExitCode, tailSuffix(ins.State.Error))
		default:
			c, cerr := findConn(ctx, d, ins, connOptions{initPassword: true, known: known})
			if cerr != nil {
				if ctx.Err() == nil && (errors.Is(cerr, ErrFileEnv) || errors.Is(cerr, ErrToolMissing)) {
					return Conn{}, fmt.Errorf("%w: %w", ErrDrillNotReady, cerr)
				}
				last = cerr
				break
			}
			known = &c
			out, _, perr := runPsql(ctx, d, c, "template1",
				strings.NewReader("SELECT current_setting('listen_addresses') <> '';\n"), true)
			switch {
			case perr == nil && (strings.TrimSpace(out) == "t" || !wantListen):
				return c, nil
			case perr == nil:
				last = errors.New("still running its set-up (listen_addresses is empty)")
			case ctx.Err() == nil && permanentConnError(perr):
				return Conn{}, fmt.Errorf("%w: the drill container %s refuses the connection %s, which will not change: %w",
					ErrDrillNotReady, name, c.Describe(), perr)
			default:
				last = perr
			}
		}
		select {
		case <-ctx.Done():
			if last == nil {
				last = ctx.Err()
			}
			return Conn{}, fmt.Errorf("%w: Postgres in the drill container %s not ready within %s: %v", ErrDrillNotReady, name, timeout, last)
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// permanentConnError reports whether a failed connection will fail again
// the same way: the tools are missing, or the server refused the role or
// the password. (A missing socket, a refused connection, a server starting
// up or shutting down may change.)
func permanentConnError(err error) bool {
	if errors.Is(err, ErrToolMissing) {
		return true
	}
	s := err.Error()
	for _, p := range []string{
		"password authentication failed",
		"no password supplied",
		"authentication failed for user",
		"no pg_hba.conf entry",
		"is not permitted to log in",
	} {
		if strings.Contains(s, p) {
			return true
		}
	}
	return strings.Contains(s, `FATAL:  role "`) && strings.Contains(s, "does not exist")
}

// passwordLiteralRE finds log lines that may quote a password (a failed
// statement such as ALTER ROLE ... PASSWORD '...', which the server logs).
var passwordLiteralRE = regexp.MustCompile(`(?i)password\s*(=\s*)?'`)

// containerLogTail is the end of a container's log (standard output and
// error), lines indented, lines that may quote a password withheld; "" when
// it cannot be read or is empty.
func containerLogTail(ctx context.Context, d Docker, id string, lines int) string {
	rc, err := d.ContainerLogs(ctx, id, container.LogsOptions{ShowStdout: true, ShowStderr: true, Tail: strconv.Itoa(lines)})
	if err != nil {
		return "  (the log could not be read: " + err.Error() + ")"
	}
	defer rc.Close()
	var buf tailBuffer
	buf.max = 64 << 10
	if _, err := stdcopy.StdCopy(&buf, &buf, io.LimitReader(rc, 4<<20)); err != nil && buf.String() == "" {
		return "  (the log could not be read: " + err.Error() + ")"
	}
	var out []string
	for _, l := range strings.Split(strings.TrimRight(buf.String(), "\n"), "\n") {
		l = strings.TrimRight(l, "\r")
		if passwordLiteralRE.MatchString(l) {
			l = "[a line that may quote a password, withheld]"
		}
		out = append(out, "  | "+l)
	}
	if len(out) > lines {
		out = out[len(out)-lines:]
	}
	if len(out) == 1 && out[0] == "  | " {
		return ""
	}
	return strings.Join(out, "\n")
}

func saveDrillRecord(ctx context.Context, r *repo.Repository, res *DrillResult, opts DrillOptions) (repo.ID, error) {
	buf, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return repo.ID{}, err
	}
	status := DrillFailedTag
	if res.Passed {
		status = DrillPassedTag
	}
	br, err := r.BackupStream(ctx, repo.Stream{
		Name:   strings.TrimPrefix(DrillRecordPath(res.Container), "/"),
		Reader: bytes.NewReader(append(buf, '\n')),
	}, repo.BackupOptions{
		Tags:     []string{DrillTag, DrillOfTagPrefix + res.Container, status},
		Hostname: opts.Hostname, ProgramVersion: opts.ProgramVersion,
	})
	if err != nil {
		return repo.ID{}, err
	}
	return br.SnapshotID, nil
}
