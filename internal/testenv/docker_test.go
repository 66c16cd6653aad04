//go:build linux

package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMain stops the shared services (SharedDocker's daemon) after the
// tests. There can be only one TestMain in this package: a service added
// later registers with RunWithServices instead of adding another.
func TestMain(m *testing.M) { os.Exit(RunWithServices(m)) }

// TestDockerPostgresDumpRestoreList runs the Postgres image in the shared
// daemon, fills a table through Psql, and checks that pg_dump -Fc inside
// the container writes an archive pg_restore -l can list, the path
// pgstream takes. The container is gone after its test.
func TestDockerPostgresDumpRestoreList(t *testing.T) {
	Integration(t)
	d := SharedDocker(t)
	if again := SharedDocker(t); again != d {
		t.Fatalf("SharedDocker started a second daemon")
	}
	if !strings.HasPrefix(d.Host(), "unix:///") || d.Getenv("DOCKER_HOST") != d.Host() {
		t.Fatalf("Host %q, Getenv %q", d.Host(), d.Getenv("DOCKER_HOST"))
	}
	t.Logf("dockerd storage driver: %s", d.StorageDriver())

	const name = "scalr-testenv-dump-db"
	t.Run("container", func(t *testing.T) {
		c := d.RunPostgres(t, name,
			map[string]string{"POSTGRES_USER": "app", "POSTGRES_PASSWORD": "not-a-secret", "POSTGRES_DB": "appdb"},
			map[string]string{"scalr.test": "dump"})
		if c.User != "app" || c.DB != "appdb" || c.ID == "" {
			t.Fatalf("container %+v", c)
		}

		c.Psql(t, "", `
			CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);
			INSERT INTO items VALUES (1, 'one'), (2, 'two'), (3, 'three');`)
		if got := c.Psql(t, "appdb", "SELECT count(*), string_agg(name, ',' ORDER BY id) FROM items"); got != "3|one,two,three" {
			t.Fatalf("rows: %q", got)
		}
		// The superuser has the name POSTGRES_USER, as in the official image.
		if got := c.Psql(t, "postgres", "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"); got != "t" {
			t.Fatalf("app is not a superuser: %q", got)
		}

		// What discovery reads: the label and the environment.
		inspect := d.CLI(t, "inspect", "--format", `{{index .Config.Labels "scalr.test"}} {{json .Config.Env}}`, name)
		label, envJSON, _ := strings.Cut(inspect, " ")
		var env []string
		if err := json.Unmarshal([]byte(envJSON), &env); err != nil {
			t.Fatalf("inspect: %q: %v", inspect, err)
		}
		if label != "dump" {
			t.Errorf("label scalr.test = %q", label)
		}
		for _, want := range []string{"POSTGRES_USER=app", "POSTGRES_DB=appdb"} {
			if !slices.Contains(env, want) {
				t.Errorf("container environment %q lacks %q", env, want)
			}
		}

		// pg_dump and pg_restore from the image's PATH, run by docker exec.
		dump := c.Exec(t, nil, "pg_dump", "-Fc", "-Z0", "-U", "app", "appdb")
		if !bytes.HasPrefix(dump, []byte("PGDMP")) {
			t.Fatalf("pg_dump -Fc wrote %d bytes not starting with PGDMP: %q", len(dump), dump[:min(len(dump), 32)])
		}
		list := string(c.Exec(t, bytes.NewReader(dump), "pg_restore", "-l"))
		for _, want := range []string{"TABLE public items app", "TABLE DATA public items app"} {
			if !strings.Contains(list, want) {
				t.Errorf("pg_restore -l lacks %q:\n%s", want, list)
			}
		}
		if globals := string(c.Exec(t, nil, "pg_dumpall", "--globals-only", "-U", "app")); !strings.Contains(globals, "CREATE ROLE app") {
			t.Errorf("pg_dumpall --globals-only lacks CREATE ROLE app:\n%s", globals)
		}
	})
	if ps := d.CLI(t, "ps", "--all", "--quiet", "--filter", "name=^"+name+"$"); ps != "" {
		t.Fatalf("container %s still there after its test: %s", name, ps)
	}
}

// TestDockerPostgresNotRoot checks that postgres runs as the image's
// postgres user, never root, and that the client tools (the version's own
// and Debian's /usr/bin wrappers) work for an unprivileged user too.
func TestDockerPostgresNotRoot(t *testing.T) {
	Integration(t)
	d := SharedDocker(t)
	c := d.RunPostgres(t, "scalr-testenv-user-db", nil, nil)
	if c.User != "postgres" || c.DB != "postgres" || c.Password == "" {
		t.Fatalf("defaults: %+v", c)
	}

	uid := strings.TrimSpace(string(c.Exec(t, nil, "id", "-u", "postgres")))
	if uid == "" || uid == "0" {
		t.Fatalf("the image's postgres user has uid %q", uid)
	}
	// Every process of the container (docker top lists them from the
	// host, with numeric user ids; only the server runs now).
	top := d.CLI(t, "top", c.Name, "-o", "pid,uid,args")
	lines := strings.Split(top, "\n")
	if len(lines) < 2 {
		t.Fatalf("docker top: %q", top)
	}
	for _, line := range lines[1:] {
		fields := strings.Fields(line)
		if len(fields) < 3 {
			continue
		}
		if fields[1] != uid {
			t.Errorf("process runs as uid %s, want the postgres user's %s: %s", fields[1], uid, line)
		}
	}
	if got := string(c.Exec(t, nil, "cat", "/proc/1/status")); !strings.Contains(got, "\nUid:\t"+uid+"\t"+uid+"\t") {
		t.Errorf("PID 1 is not the postgres user's:\n%s", got)
	}
	if comm := strings.TrimSpace(string(c.Exec(t, nil, "cat", "/proc/1/comm"))); comm != "postgres" {
		t.Errorf("PID 1 is %q, want postgres", comm)
	}

	for _, tool := range []string{"psql", "/usr/bin/psql"} {
		out := strings.TrimSpace(string(c.Exec(t, nil, "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
			tool, "-X", "-At", "-U", "postgres", "-c", "SELECT current_user")))
		if out != "postgres" {
			t.Errorf("%s as nobody: %q", tool, out)
		}
	}
	for _, tool := range []string{"pg_dump", "pg_dumpall", "pg_restore", "psql", "/usr/bin/pg_dump", "/usr/bin/pg_restore"} {
		if out := string(c.Exec(t, nil, "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", tool, "--version")); !strings.Contains(out, "(PostgreSQL) 15.") {
			t.Errorf("%s --version: %q", tool, out)
		}
	}
}

// TestDockerPostgresMajors runs a container of each Postgres image
// scripts/setup-docker.sh builds (17 from trixie, 15 from bookworm; 15 also
// as PostgresOptions' zero Major) in the shared daemon and checks the
// server's and the client tools' versions and the image config.
func TestDockerPostgresMajors(t *testing.T) {
	Integration(t)
	d := SharedDocker(t)
	for _, tc := range []struct {
		major, want int
	}{{17, 17}, {15, 15}, {0, DefaultPostgresMajor}} {
		t.Run(strconv.Itoa(tc.major), func(t *testing.T) {
			t.Parallel()
			name := "scalr-testenv-major-" + strconv.Itoa(tc.major)
			c := d.RunPostgresWith(t, name, PostgresOptions{Major: tc.major,
				Env: map[string]string{"POSTGRES_DB": "majordb"}})
			if c.Major != tc.want || c.DB != "majordb" || c.User != "postgres" {
				t.Fatalf("container %+v", c)
			}
			want := strconv.Itoa(tc.want)
			if got := c.Psql(t, "", "SHOW server_version_num"); !strings.HasPrefix(got, want) || len(got) != 6 {
				t.Errorf("server_version_num %q, want %sxxxx", got, want)
			}
			// The client tools on the image's PATH are the server's version.
			for _, tool := range []string{"pg_dump", "pg_restore", "psql", "/usr/bin/pg_dump"} {
				if out := string(c.Exec(t, nil, tool, "--version")); !strings.Contains(out, "(PostgreSQL) "+want+".") {
					t.Errorf("%s --version: %q", tool, out)
				}
			}
			inspect := d.CLI(t, "inspect", "--format", `{{.Config.Image}} {{json .Config.Env}}`, name)
			image, envJSON, _ := strings.Cut(inspect, " ")
			var env []string
			if err := json.Unmarshal([]byte(envJSON), &env); err != nil {
				t.Fatalf("inspect: %q: %v", inspect, err)
			}
			if image != PostgresImageNameFor(tc.want) {
				t.Errorf("image %q, want %q", image, PostgresImageNameFor(tc.want))
			}
			for _, w := range []string{"PG_MAJOR=" + want, "PATH=/usr/lib/postgresql/" + want + "/bin:"} {
				if !slices.ContainsFunc(env, func(e string) bool { return strings.HasPrefix(e, w) }) {
					t.Errorf("container environment %q lacks %q", env, w)
				}
			}
		})
	}
}

// TestDockerPostgresTmpfsData runs each Postgres image with PGDATA on a
// 64 MiB tmpfs: the entrypoint makes the postgres user own it, initdb and
// the server work there, and df inside the container shows the small size.
func TestDockerPostgresTmpfsData(t *testing.T) {
	Integration(t)
	d := SharedDocker(t)
	const pgdata = "/var/lib/postgresql/data"
	for _, major := range PostgresMajors {
		t.Run(strconv.Itoa(major), func(t *testing.T) {
			t.Parallel()
			name := "scalr-testenv-tmpfs-" + strconv.Itoa(major)
			c := d.RunPostgresWith(t, name, PostgresOptions{Major: major,
				Tmpfs: map[string]string{pgdata: "size=64m"}})

			// df -P -k: the second line's second field is the size in KiB.
			df := strings.Split(strings.TrimSpace(string(c.Exec(t, nil, "df", "-P", "-k", pgdata))), "\n")
			if len(df) != 2 {
				t.Fatalf("df: %q", df)
			}
			fields := strings.Fields(df[1])
			if len(fields) < 6 || fields[0] != "tmpfs" || fields[1] != "65536" || fields[5] != pgdata {
				t.Errorf("PGDATA is not on a 64 MiB tmpfs:\n%s", strings.Join(df, "\n"))
			}
			if got := strings.TrimSpace(string(c.Exec(t, nil, "stat", "-c", "%U %a", pgdata))); got != "postgres 700" {
				t.Errorf("PGDATA owner and mode: %q, want postgres 700", got)
			}
			// No anonymous volume for the image's VOLUME: the tmpfs
			// takes its place.
			if mounts := d.CLI(t, "inspect", "--format", "{{len .Mounts}}", name); mounts != "0" {
				t.Errorf("%s volume mounts besides the tmpfs", mounts)
			}

			c.Psql(t, "", `
				CREATE TABLE t AS SELECT g AS id, repeat('x', 100) AS pad FROM generate_series(1, 10000) g;
				CHECKPOINT;`)
			if got := c.Psql(t, "", "SELECT count(*) FROM t"); got != "10000" {
				t.Errorf("rows: %q", got)
			}
			if got := c.Psql(t, "", "SHOW data_directory"); got != pgdata {
				t.Errorf("data_directory %q", got)
			}
		})
	}
}

// TestDockerPostgresVolumeCmd runs the 17 image with PGDATA on a named
// volume and its own command: the volume is mounted and outlives the
// container, the command's settings reach the server.
func TestDockerPostgresVolumeCmd(t *testing.T) {
	Integration(t)
	d := SharedDocker(t)
	const volume = "scalr-testenv-volume-data"
	// Registered first, so it runs after the container's removal.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := d.Run(ctx, nil, "volume", "rm", volume); err != nil {
			t.Errorf("remove volume %s: %v", volume, err)
		}
	})
	const name = "scalr-testenv-volume-db"
	t.Run("container", func(t *testing.T) {
		c := d.RunPostgresWith(t, name, PostgresOptions{Major: 17,
			Volumes: []string{volume + ":/var/lib/postgresql/data"},
			Cmd:     []string{"postgres", "-c", "fsync=off", "-c", "work_mem=7MB"}})
		if got := c.Psql(t, "", "SHOW work_mem"); got != "7MB" {
			t.Errorf("work_mem %q", got)
		}
		if got := d.CLI(t, "inspect", "--format", `{{range .Mounts}}{{.Type}} {{.Name}} {{.Destination}}{{end}}`, name); got != "volume "+volume+" /var/lib/postgresql/data" {
			t.Errorf("mounts: %q", got)
		}
		c.Psql(t, "", "CREATE TABLE kept (id int)")
	})
	if got := d.CLI(t, "volume", "inspect", "--format", "{{.Name}}", volume); got != volume {
		t.Errorf("named volume gone with its container: %q", got)
	}
}

// TestStartDockerStopCleansUp starts a private daemon, leaves a container
// running in it, stops it, and checks that nothing remains: no process, no
// mount, no cgroup, no folder.
func TestStartDockerStopCleansUp(t *testing.T) {
	Integration(t)
	d := StartDocker(t)
	pid := d.proc.pid
	if got := d.CLI(t, "version", "--format", "{{.Server.Os}}"); got != "linux" {
		t.Fatalf("docker version: %q", got)
	}
	image := d.PostgresImage(t)
	// sleep as PID 1 ignores SIGTERM: the daemon's shutdown must kill it.
	d.CLI(t, "run", "--detach", "--network", "none", "--name", "left-running", "--stop-timeout", "1",
		"--entrypoint", "sleep", image, "infinity")
	if len(mountsUnder(d.dir)) == 0 && d.StorageDriver() == "overlay2" {
		t.Errorf("no mounts under %s with a container running", d.dir)
	}

	if err := d.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if procMentions(pid, d.dir) {
		t.Errorf("dockerd (pid %d) still runs", pid)
	}
	if m := mountsUnder(d.dir); len(m) > 0 {
		t.Errorf("still mounted: %v", m)
	}
	if dirs := cgroupDirs(d.cgroupParent, d.cgroupPaths); len(dirs) > 0 {
		t.Errorf("cgroups left: %v", dirs)
	}
	if _, err := os.Stat(d.dir); !os.IsNotExist(err) {
		t.Errorf("%s still exists: %v", d.dir, err)
	}
	if err := d.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

// TestSweepStaleDockerDirs: the folder of a daemon whose test process died
// is removed by the next start; one whose owner runs is left alone.
func TestSweepStaleDockerDirs(t *testing.T) {
	// A PID that no longer runs: a finished child's.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skipf("cannot run true: %v", err)
	}
	deadPID := cmd.Process.Pid
	self, err := procStartTime(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}

	mk := func(st dockerState) string {
		dir, err := os.MkdirTemp("", dockerDirPrefix)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		b, _ := json.Marshal(st)
		if err := os.WriteFile(filepath.Join(dir, "state.json"), b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dir, "data", "vfs", "dir", "x"), 0o700); err != nil {
			t.Fatal(err)
		}
		return dir
	}
	stale := mk(dockerState{OwnerPID: deadPID, OwnerStart: "1"})
	reused := mk(dockerState{OwnerPID: os.Getpid(), OwnerStart: self + "0"}) // our PID, another start time
	live := mk(dockerState{OwnerPID: os.Getpid(), OwnerStart: self})

	sweepStaleDockerDirs()
	for _, dir := range []string{stale, reused} {
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("stale %s not removed: %v", dir, err)
		}
	}
	if _, err := os.Stat(filepath.Join(live, "state.json")); err != nil {
		t.Errorf("live %s removed: %v", live, err)
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{
		`/tmp/a\040b`: "/tmp/a b",
		`/plain`:      "/plain",
		`/x\134y`:     `/x\y`,
		`/short\04`:   `/short\04`,
	} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}
