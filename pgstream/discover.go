package pgstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"path"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
)

// Labels a container can carry to steer discovery.
const (
	// LabelBackup "true" includes a running container whatever its name;
	// "false" excludes it whatever its name.
	LabelBackup = "scalr.backup"
	// LabelDatabases selects the container's databases to dump, as
	// Options.Databases does for every container (a list separated by
	// commas or spaces: all, POSTGRES_DB, database name patterns); it wins
	// over Options.Databases and LabelAllDatabases.
	LabelDatabases = "scalr.backup.databases"
	// LabelAllDatabases "true" dumps every database of the container (as
	// LabelDatabases=all), "false" its POSTGRES_DB only (as
	// LabelDatabases=POSTGRES_DB).
	LabelAllDatabases = "scalr.backup.all-databases"
	// LabelDrillOf marks a restore drill's throwaway container with the
	// name of the container whose snapshot it holds.
	LabelDrillOf = "scalr.backup.drill-of"
)

// DefaultPatterns are the container name patterns (path.Match syntax)
// discovery selects by default: every app's database container and the
// auth database.
var DefaultPatterns = []string{"scalr-*-db", "scalr-auth-postgres"}

// The keywords of a database selection (Options.Databases).
const (
	// SelectAll selects every database that accepts connections,
	// templates excepted: the default.
	SelectAll = "all"
	// SelectPostgresDB selects the container's POSTGRES_DB (or the content
	// of POSTGRES_DB_FILE; default POSTGRES_USER).
	SelectPostgresDB = "POSTGRES_DB"
)

// Options configure discovery.
type Options struct {
	// Patterns select running containers by name (path.Match syntax);
	// nil means DefaultPatterns. The label scalr.backup overrides them.
	Patterns []string
	// Databases selects the databases of each container a backup dumps,
	// each to its own file: SelectAll ("all"), SelectPostgresDB
	// ("POSTGRES_DB"), or database name patterns (path.Match syntax, '*'
	// and '?' matching '/' too), any
	// mix; nil or empty means SelectAll. Databases that exist but are not
	// selected (or do not accept connections, or were left by a restore)
	// are listed in Target.LeftOut and reported through Warn. A database
	// named without a wildcard (POSTGRES_DB included, also under "all")
	// must exist, else the container cannot be backed up. The labels
	// scalr.backup.databases and scalr.backup.all-databases override it
	// for one container.
	Databases []string
	// Warn, when set, receives problems that leave a container out or a
	// detail unknown without failing the discovery (a bad label, a
	// container without Postgres), and the databases left out of a
	// container's backups.
	Warn func(string)
}

// ParseDatabases splits a database selection written as one string (an
// environment variable's or a label's value: entries separated by commas or
// white space) and checks it; "" gives nil (every database).
func ParseDatabases(s string) ([]string, error) {
	out := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || unicode.IsSpace(r) })
	if len(out) == 0 {
		out = nil // "" is every database, as documented
	}
	return out, CheckDatabases(out)
}

// CheckDatabases checks a database selection's patterns.
func CheckDatabases(sel []string) error {
	for _, p := range sel {
		if p == "" {
			return errors.New("empty database name in the selection")
		}
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("database pattern %q: %w", p, err)
		}
	}
	return nil
}

// LeftOutDatabase is a database of a container that its backups do not
// hold, and why.
type LeftOutDatabase struct {
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

// Reasons for leaving a database out.
const (
	LeftOutNotSelected = "not in the selection" // followed by the selection
	LeftOutNoConnect   = "does not accept connections"
	LeftOutInterrupted = "left by an interrupted restore, which the next restore drops"
	LeftOutReplaced    = "kept aside by a restore that replaced it (see scalr-backup previous)"
)

// Target is a Postgres container to back up.
type Target struct {
	Container string `json:"container"`
	ID        string `json:"id"`
	// Image is the image reference the container was created from;
	// ImageID the exact image.
	Image   string `json:"image"`
	ImageID string `json:"image_id"`
	// User is POSTGRES_USER (default postgres), Database POSTGRES_DB
	// (default: the user's name), either read from the file its _FILE
	// variable names where that is set.
	User     string `json:"user"`
	Database string `json:"database"`
	// Port and SocketDir are where the server listens in the container;
	// PasswordFrom where the password the tools get comes from (see Conn).
	Port         int    `json:"port,omitempty"`
	SocketDir    string `json:"socket_dir,omitempty"`
	PasswordFrom string `json:"password_from,omitempty"`
	// Databases are what a backup dumps, sorted by name: those Selection
	// selects among the server's databases that accept connections,
	// templates excepted. LeftOut are the server's other databases
	// (templates excepted), with the reason.
	Databases []string          `json:"databases"`
	LeftOut   []LeftOutDatabase `json:"left_out,omitempty"`
	Selection []string          `json:"selection"`
	// AllDatabases says Selection holds SelectAll.
	AllDatabases bool `json:"all_databases"`
	// PostgresMajor is the major version (15), PostgresVersion the full
	// one where known ("15.18").
	PostgresMajor   int    `json:"postgres_major"`
	PostgresVersion string `json:"postgres_version,omitempty"`
	// MatchedBy says why the container was selected: "name scalr-*-db",
	// "label scalr.backup=true" or "named".
	MatchedBy string `json:"matched_by"`
	// Problem, when set, says why this selected container cannot be
	// backed up now (not running, no Postgres in it, no connection with
	// the role, password and port found, a database it names missing): the
	// fields above are filled as far as known, and a backup of it fails
	// with this reason. A selected container is never left out in silence.
	Problem string `json:"problem,omitempty"`
}

// Discover lists the containers to back up: those whose name matches a
// pattern, plus those labelled scalr.backup=true, minus those labelled
// scalr.backup=false, sorted by name. For each running one it finds how to
// connect (FindConn: the role, database and password from the container's
// environment or the files its *_FILE variables name, the port and socket
// from the server's command line, PGPORT or the socket in the container),
// the Postgres version (PG_MAJOR / PG_VERSION, else postgres --version or
// psql -V inside it), then connects with a cheap query that lists the
// databases, and selects those to dump (Options.Databases). A selected
// container that is not running (exited, restarting, paused, dead), in
// which no Postgres answers, to whose server the tools cannot connect, or
// that lacks a database it names is listed too, with Problem saying why:
// the caller reports it as that container's failure. No match is not an
// error: the list is empty.
func Discover(ctx context.Context, d Docker, opts Options) ([]Target, error) {
	patterns := opts.Patterns
	if patterns == nil {
		patterns = DefaultPatterns
	}
	for _, p := range patterns {
		if _, err := path.Match(p, ""); err != nil {
			return nil, fmt.Errorf("container name pattern %q: %w", p, err)
		}
	}
	if err := CheckDatabases(opts.Databases); err != nil {
		return nil, err
	}
	warn := opts.Warn
	if warn == nil {
		warn = func(string) {}
	}
	list, err := d.ContainerList(ctx, container.ListOptions{All: true})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	var out []Target
	for _, c := range list {
		name := containerName(c.Names, c.ID)
		if c.Labels[LabelDrillOf] != "" {
			continue // a drill's throwaway container
		}
		matchedBy := ""
		for _, p := range patterns {
			if ok, _ := path.Match(p, name); ok {
				matchedBy = "name " + p
				break
			}
		}
		if v, ok := c.Labels[LabelBackup]; ok {
			on, err := strconv.ParseBool(strings.TrimSpace(v))
			switch {
			case err != nil:
				warn(fmt.Sprintf("container %s: label %s=%q is not true or false: ignored", name, LabelBackup, v))
			case on:
				matchedBy = "label " + LabelBackup + "=true"
			default:
				matchedBy = ""
			}
		}
		if matchedBy == "" {
			continue
		}
		if c.State != "" && c.State != "running" {
			out = append(out, Target{Container: name, ID: c.ID, Image: c.Image, ImageID: c.ImageID, MatchedBy: matchedBy,
				Problem: fmt.Sprintf("container is %s, not running (%s)", c.State, c.Status)})
			continue
		}
		t, err := inspectTarget(ctx, d, name, opts, warn)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if ue := (*execUpgradeError)(nil); errors.As(err, &ue) {
				// Not this container's problem: no exec works through
				// this API, so every container would seem to have no
				// Postgres.
				return nil, ue
			}
			// Gone or stopped since the list, no Postgres in it, no
			// connection: the target as far as known, and why.
			if t.Container == "" {
				t.Container = name
			}
			if t.ID == "" {
				t.ID, t.Image, t.ImageID = c.ID, c.Image, c.ImageID
			}
			t.Problem = err.Error()
		}
		t.MatchedBy = matchedBy
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Container < out[j].Container })
	return out, nil
}

// ErrCannotBackUp means a selected container cannot be backed up now; the
// error names the container and says why (Target.Problem).
var ErrCannotBackUp = errors.New("cannot be backed up")

// ErrNoContainer means no container has the given name.
var ErrNoContainer = errors.New("no such container")

// ErrConnect means the tools could not connect to a container's Postgres
// with the role, password, port and socket found (see Conn).
var ErrConnect = errors.New("cannot connect to Postgres")

// ErrDatabaseSelection means a container lacks a database its selection
// names (POSTGRES_DB, or a name without wildcards), or none is selected.
var ErrDatabaseSelection = errors.New("database selection")

// InspectTarget describes one named container as a backup target, whatever
// its name and labels (an operator named it), as Discover does. It fails
// when the container does not exist, is not running, has no Postgres, or
// cannot be backed up (the target as far as known is returned with the
// error).
func InspectTarget(ctx context.Context, d Docker, name string, opts Options) (Target, error) {
	warn := opts.Warn
	if warn == nil {
		warn = func(string) {}
	}
	if err := CheckDatabases(opts.Databases); err != nil {
		return Target{Container: name}, err
	}
	t, err := inspectTarget(ctx, d, name, opts, warn)
	t.MatchedBy = "named"
	return t, err
}

func inspectTarget(ctx context.Context, d Docker, name string, opts Options, warn func(string)) (Target, error) {
	ins, err := inspectRunning(ctx, d, name)
	if err != nil {
		return Target{}, err
	}
	env := envMap(ins.Config.Env)
	t := Target{
		Container: strings.TrimPrefix(ins.Name, "/"),
		ID:        ins.ID,
		Image:     ins.Config.Image,
		ImageID:   ins.Image,
	}
	if t.Container == "" {
		t.Container = name
	}
	t.Selection = selection(opts.Databases, ins.Config.Labels, t.Container, warn)
	t.AllDatabases = slices.Contains(t.Selection, SelectAll)
	c, err := findConn(ctx, d, ins, connOptions{})
	t.User, t.Database = c.User, c.Database
	if err != nil {
		return t, err
	}
	t.Port, t.SocketDir, t.PasswordFrom = c.Port, c.SocketDir, c.PasswordFrom
	if err := findVersion(ctx, d, &t, env, c); err != nil {
		if serr := stoppedAfterFailure(ctx, d, t.Container, err); serr != nil {
			return t, serr
		}
		return t, err
	}
	dbs, err := listDatabases(ctx, d, c)
	if err != nil {
		if serr := stoppedAfterFailure(ctx, d, t.Container, err); serr != nil {
			return t, serr
		}
		return t, fmt.Errorf("%w in container %s %s: %w", ErrConnect, t.Container, c.Describe(), err)
	}
	t.Databases, t.LeftOut, err = selectDatabases(dbs, c.Database, t.Selection)
	if err != nil {
		return t, fmt.Errorf("container %s: %w", t.Container, err)
	}
	if len(t.LeftOut) > 0 {
		var l []string
		for _, o := range t.LeftOut {
			l = append(l, quoteIdent(o.Name)+": "+o.Reason)
		}
		warn(fmt.Sprintf("container %s: %d database(s) left out of its backups: %s", t.Container, len(l), strings.Join(l, "; ")))
	}
	return t, nil
}

// selection is the container's database selection: its label
// scalr.backup.databases, else scalr.backup.all-databases, else sel, else
// every database.
func selection(sel []string, labels map[string]string, containerName string, warn func(string)) []string {
	if v, ok := labels[LabelAllDatabases]; ok {
		on, err := strconv.ParseBool(strings.TrimSpace(v))
		switch {
		case err != nil:
			warn(fmt.Sprintf("container %s: label %s=%q is not true or false: ignored", containerName, LabelAllDatabases, v))
		case on:
			sel = []string{SelectAll}
		default:
			sel = []string{SelectPostgresDB}
		}
	}
	if v, ok := labels[LabelDatabases]; ok {
		l, err := ParseDatabases(v)
		switch {
		case err != nil:
			warn(fmt.Sprintf("container %s: label %s=%q: %v: ignored", containerName, LabelDatabases, v, err))
		case len(l) == 0:
			warn(fmt.Sprintf("container %s: label %s is empty: ignored", containerName, LabelDatabases))
		default:
			sel = l
		}
	}
	if len(sel) == 0 {
		sel = []string{SelectAll}
	}
	return append([]string(nil), sel...)
}

// serverDatabase is a database as the server lists it.
type serverDatabase struct {
	Name     string `json:"name"`
	Template bool   `json:"template"`
	Connect  bool   `json:"connect"`
}

// listDatabasesSQL lists every database of the server.
const listDatabasesSQL = `SELECT coalesce(json_agg(json_build_object('name', datname, 'template', datistemplate, 'connect', datallowconn) ORDER BY datname), '[]') FROM pg_database;`

// listDatabases connects (to template1) and lists the server's databases:
// discovery's cheap query.
func listDatabases(ctx context.Context, d Docker, c Conn) ([]serverDatabase, error) {
	out, _, err := runPsql(ctx, d, c, "template1", strings.NewReader(listDatabasesSQL+"\n"), true)
	if err != nil {
		return nil, err
	}
	var dbs []serverDatabase
	if err := json.Unmarshal([]byte(out), &dbs); err != nil {
		return nil, fmt.Errorf("the list of databases %q: %w", out, err)
	}
	return dbs, nil
}

// matchDatabase matches a database name against a pattern in path.Match
// syntax, where '*' and '?' match '/' too: a database name is not a path.
// ('/' becomes NUL on both sides, a byte no name holds.)
func matchDatabase(pattern, name string) bool {
	ok, _ := path.Match(strings.ReplaceAll(pattern, "/", "\x00"), strings.ReplaceAll(name, "/", "\x00"))
	return ok
}

// hasWildcard reports whether a selection entry is a pattern rather than
// a name.
func hasWildcard(p string) bool { return strings.ContainsAny(p, `*?[\`) }

// selectDatabases applies a selection to the server's databases: the
// selected ones that accept connections, and the others (templates
// excepted) with the reason. A name the selection gives without wildcards
// (POSTGRES_DB, also under "all") that is missing or closed to connections
// is an error: a backup must not leave it out in silence.
func selectDatabases(dbs []serverDatabase, postgresDB string, sel []string) ([]string, []LeftOutDatabase, error) {
	byName := map[string]serverDatabase{}
	for _, db := range dbs {
		byName[db.Name] = db
	}
	need := map[string]string{} // name -> why it must exist
	for _, p := range sel {
		switch {
		case p == SelectAll || p == SelectPostgresDB:
			need[postgresDB] = "POSTGRES_DB"
		case !hasWildcard(p):
			need[p] = "selected by name"
		}
	}
	for _, name := range slices.Sorted(maps.Keys(need)) {
		db, ok := byName[name]
		switch {
		case !ok:
			return nil, nil, fmt.Errorf("%w: database %s (%s) does not exist", ErrDatabaseSelection, quoteIdent(name), need[name])
		case db.Template || !db.Connect:
			return nil, nil, fmt.Errorf("%w: database %s (%s) is a template or does not accept connections", ErrDatabaseSelection, quoteIdent(name), need[name])
		}
	}
	selected := func(name string) bool {
		for _, p := range sel {
			switch p {
			case SelectAll:
				return true
			case SelectPostgresDB:
				if name == postgresDB {
					return true
				}
			default:
				if matchDatabase(p, name) {
					return true
				}
			}
		}
		return false
	}
	var chosen []string
	var left []LeftOutDatabase
	slices.SortFunc(dbs, func(a, b serverDatabase) int { return strings.Compare(a.Name, b.Name) })
	for _, db := range dbs {
		_, replaced := parseReplaced(db.Name, 0)
		switch {
		case db.Template:
		case !db.Connect:
			left = append(left, LeftOutDatabase{db.Name, LeftOutNoConnect})
		case strings.HasPrefix(db.Name, sidePrefix):
			left = append(left, LeftOutDatabase{db.Name, LeftOutInterrupted})
		case replaced:
			left = append(left, LeftOutDatabase{db.Name, LeftOutReplaced})
		case !selected(db.Name):
			left = append(left, LeftOutDatabase{db.Name, LeftOutNotSelected + " " + strings.Join(sel, ",")})
		default:
			chosen = append(chosen, db.Name)
		}
	}
	if len(chosen) == 0 {
		return nil, left, fmt.Errorf("%w: no database selected (databases: %s)", ErrDatabaseSelection, strings.Join(sel, ","))
	}
	return chosen, left, nil
}

// inspectRunning inspects a container and fails unless it runs.
func inspectRunning(ctx context.Context, d Docker, name string) (container.InspectResponse, error) {
	ins, err := d.ContainerInspect(ctx, name)
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			return ins, fmt.Errorf("%w: %s", ErrNoContainer, name)
		}
		return ins, fmt.Errorf("inspect container %s: %w", name, err)
	}
	if ins.ContainerJSONBase == nil || ins.Config == nil {
		return ins, fmt.Errorf("inspect container %s: incomplete answer from the engine", name)
	}
	if ins.State == nil || !ins.State.Running {
		status := "unknown"
		if ins.State != nil {
			status = string(ins.State.Status)
		}
		return ins, fmt.Errorf("%w: %s is %s", ErrNotRunning, name, status)
	}
	return ins, nil
}

// stoppedAfterFailure tells, after a tool failed in a container, whether
// the container is gone or stopped: the error inspectRunning gives, else
// nil. A tool killed by a signal, one the engine could not start, or a
// broken exec connection may mean the container is stopping, and the engine
// reports a killed container's exit a moment after its processes died: then
// it looks again for a few seconds.
func stoppedAfterFailure(ctx context.Context, d Docker, name string, toolErr error) error {
	wait := time.Duration(0)
	if s := toolErr.Error(); strings.Contains(s, "exit code 126") || strings.Contains(s, "exit code 137") ||
		strings.Contains(s, "exit code 143") || strings.Contains(s, "the connection to the Docker engine") {
		wait = stopWait
	}
	deadline := time.Now().Add(wait)
	for {
		if _, err := inspectRunning(ctx, d, name); err != nil {
			return err
		}
		if !time.Now().Before(deadline) {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// stopWait is how long stoppedAfterFailure looks again.
var stopWait = 5 * time.Second

// envMap reads KEY=VALUE entries.
func envMap(env []string) map[string]string {
	m := make(map[string]string, len(env))
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

var versionRE = regexp.MustCompile(`\b(\d+)(?:\.(\d+))?(?:\.(\d+))?`)

// parseVersion reads "15.18", "15.18-1.pgdg120+1", "9.6.24" or "15beta2"
// and returns the major version (9.6 -> 9) and the version number part.
func parseVersion(s string) (major int, version string) {
	m := versionRE.FindStringSubmatch(s)
	if m == nil {
		return 0, ""
	}
	major, _ = strconv.Atoi(m[1])
	version = m[1]
	if m[2] != "" {
		version += "." + m[2]
	}
	if m[3] != "" {
		version += "." + m[3]
	}
	return major, version
}

// findVersion fills in the Postgres version: from the image's PG_MAJOR /
// PG_VERSION, else from the tools in the container, else from the server.
func findVersion(ctx context.Context, d Docker, t *Target, env map[string]string, c Conn) error {
	if v := env["PG_VERSION"]; v != "" {
		t.PostgresMajor, t.PostgresVersion = parseVersion(v)
	}
	if v := env["PG_MAJOR"]; v != "" {
		if major, _ := parseVersion(v); major > 0 {
			t.PostgresMajor = major
		}
	}
	if t.PostgresMajor > 0 {
		return nil
	}
	var errs []error
	for _, cmd := range [][]string{{"postgres", "--version"}, {"psql", "-V"}} {
		out, err := runCapture(ctx, d, t.Container, cmd)
		if err == nil {
			if major, v := parseVersion(strings.TrimPrefix(out, cmd[0])); major > 0 {
				t.PostgresMajor, t.PostgresVersion = major, v
				return nil
			}
			err = fmt.Errorf("%s printed %q", strings.Join(cmd, " "), out)
		}
		errs = append(errs, err)
	}
	out, _, err := runPsql(ctx, d, c, "template1",
		strings.NewReader("SELECT current_setting('server_version_num');\n"), true)
	if err == nil {
		if n, perr := strconv.Atoi(strings.TrimSpace(out)); perr == nil && n > 0 {
			t.PostgresMajor = n / 10000
			if n < 100000 {
				t.PostgresMajor = n / 100 / 100 // 90624 -> 9
			}
			return nil
		}
		err = fmt.Errorf("server_version_num %q", out)
	}
	errs = append(errs, err)
	return fmt.Errorf("no Postgres found in container %s: %w", t.Container, errors.Join(errs...))
}

// runCapture runs a short command and returns its standard output, trimmed.
func runCapture(ctx context.Context, d Docker, containerName string, cmd []string) (string, error) {
	var out tailBuffer
	out.max = 64 << 10
	p, err := startProc(ctx, d, containerName, execSpec{Cmd: cmd, Env: toolEnv, Stdout: &out})
	if err != nil {
		return "", err
	}
	if err := p.Wait(ctx); err != nil {
		return "", err
	}
	return strings.TrimSpace(out.String()), nil
}

// ListDatabases lists a container's databases that are not templates and
// accept connections, sorted by name, connecting as FindConn finds (as user
// when not empty).
func ListDatabases(ctx context.Context, d Docker, containerName, user string) ([]string, error) {
	c, err := FindConn(ctx, d, containerName)
	if err != nil {
		return nil, err
	}
	if user != "" {
		c.User = user
	}
	all, err := listDatabases(ctx, d, c)
	if err != nil {
		return nil, fmt.Errorf("list the databases of container %s: %w", containerName, err)
	}
	var dbs []string
	for _, db := range all {
		if !db.Template && db.Connect {
			dbs = append(dbs, db.Name)
		}
	}
	sort.Strings(dbs)
	return dbs, nil
}
