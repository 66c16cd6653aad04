package pgstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
)

// Labels a container can carry to steer discovery.
const (
	// LabelBackup "true" includes a running container whatever its name;
	// "false" excludes it whatever its name.
	LabelBackup = "scalr.backup"
	// LabelAllDatabases "true" dumps every database of the container (not
	// templates), each to its own file, instead of POSTGRES_DB only.
	LabelAllDatabases = "scalr.backup.all-databases"
	// LabelDrillOf marks a restore drill's throwaway container with the
	// name of the container whose snapshot it holds.
	LabelDrillOf = "scalr.backup.drill-of"
)

// DefaultPatterns are the container name patterns (path.Match syntax)
// discovery selects by default: every app's database container and the
// auth database.
var DefaultPatterns = []string{"scalr-*-db", "scalr-auth-postgres"}

// Options configure discovery.
type Options struct {
	// Patterns select running containers by name (path.Match syntax);
	// nil means DefaultPatterns. The label scalr.backup overrides them.
	Patterns []string
	// AllDatabases dumps every database of every container found, as the
	// label scalr.backup.all-databases=true does for one container.
	AllDatabases bool
	// Warn, when set, receives problems that leave a container out or a
	// detail unknown without failing the discovery (a bad label, a
	// container without Postgres).
	Warn func(string)
}

// Target is a Postgres container to back up.
type Target struct {
	Container string `json:"container"`
	ID        string `json:"id"`
	// Image is the image reference the container was created from;
	// ImageID the exact image.
	Image   string `json:"image"`
	ImageID string `json:"image_id"`
	// User is POSTGRES_USER (default postgres), Database POSTGRES_DB
	// (default: the user's name).
	User     string `json:"user"`
	Database string `json:"database"`
	// Databases are what a backup dumps: Database, or with AllDatabases
	// every database that is not a template and accepts connections.
	Databases    []string `json:"databases"`
	AllDatabases bool     `json:"all_databases"`
	// PostgresMajor is the major version (15), PostgresVersion the full
	// one where known ("15.18").
	PostgresMajor   int    `json:"postgres_major"`
	PostgresVersion string `json:"postgres_version,omitempty"`
	// MatchedBy says why the container was selected: "name scalr-*-db",
	// "label scalr.backup=true" or "named".
	MatchedBy string `json:"matched_by"`
	// Problem, when set, says why this selected container cannot be
	// backed up now (not running, no Postgres in it, no connection): the
	// fields above are filled as far as known, and a backup of it fails
	// with this reason. A selected container is never left out in silence.
	Problem string `json:"problem,omitempty"`
}

// Discover lists the containers to back up: those whose name matches a
// pattern, plus those labelled scalr.backup=true, minus those labelled
// scalr.backup=false, sorted by name. For each running one it reads the
// Postgres user and database from the container's environment and the
// Postgres version from PG_MAJOR / PG_VERSION, or by running postgres
// --version, psql -V or (last) SHOW server_version_num inside it. A selected
// container that is not running (exited, restarting, paused, dead) or in
// which no Postgres answers is listed too, with Problem saying why: the
// caller reports it as that container's failure. No match is not an error:
// the list is empty.
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
			// Gone or stopped since the list, or no Postgres in it.
			t = Target{Container: name, ID: c.ID, Image: c.Image, ImageID: c.ImageID, Problem: err.Error()}
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

// InspectTarget describes one named container as a backup target, whatever
// its name and labels (an operator named it). It fails when the container
// does not exist, is not running or has no Postgres.
func InspectTarget(ctx context.Context, d Docker, name string, opts Options) (Target, error) {
	warn := opts.Warn
	if warn == nil {
		warn = func(string) {}
	}
	t, err := inspectTarget(ctx, d, name, opts, warn)
	if err != nil {
		return t, err
	}
	t.MatchedBy = "named"
	return t, nil
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
		User:      env["POSTGRES_USER"],
		Database:  env["POSTGRES_DB"],
	}
	if t.Container == "" {
		t.Container = name
	}
	if t.User == "" {
		t.User = "postgres"
	}
	if t.Database == "" {
		t.Database = t.User
	}
	if err := findVersion(ctx, d, &t, env); err != nil {
		return Target{}, err
	}
	t.AllDatabases = opts.AllDatabases
	if v, ok := ins.Config.Labels[LabelAllDatabases]; ok {
		on, err := strconv.ParseBool(strings.TrimSpace(v))
		if err != nil {
			warn(fmt.Sprintf("container %s: label %s=%q is not true or false: ignored", t.Container, LabelAllDatabases, v))
		} else if on {
			t.AllDatabases = true
		}
	}
	t.Databases = []string{t.Database}
	if t.AllDatabases {
		dbs, err := ListDatabases(ctx, d, t.Container, t.User)
		if err != nil {
			return Target{}, err
		}
		t.Databases = dbs
	}
	return t, nil
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
func findVersion(ctx context.Context, d Docker, t *Target, env map[string]string) error {
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
	out, _, err := runPsql(ctx, d, t.Container, t.User, "template1",
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
// accept connections, sorted by name.
func ListDatabases(ctx context.Context, d Docker, containerName, user string) ([]string, error) {
	out, _, err := runPsql(ctx, d, containerName, user, "template1", strings.NewReader(
		`SELECT coalesce(json_agg(datname ORDER BY datname), '[]') FROM pg_database WHERE NOT datistemplate AND datallowconn;`+"\n"), true)
	if err != nil {
		return nil, fmt.Errorf("list the databases of container %s: %w", containerName, err)
	}
	var dbs []string
	if err := json.Unmarshal([]byte(out), &dbs); err != nil {
		return nil, fmt.Errorf("list the databases of container %s: %q: %w", containerName, out, err)
	}
	return dbs, nil
}
