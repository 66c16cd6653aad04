package pgstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/mount"
)

func TestServerArgs(t *testing.T) {
	for _, c := range []struct {
		args []string
		port int
		dirs []string
	}{
		{[]string{"docker-entrypoint.sh", "postgres"}, 0, nil},
		{[]string{"docker-entrypoint.sh", "postgres", "-c", "port=5433"}, 5433, nil},
		{[]string{"postgres", "-p", "6000"}, 6000, nil},
		{[]string{"postgres", "-p6001", "-c", "fsync=off"}, 6001, nil},
		{[]string{"postgres", "--port=6002"}, 6002, nil},
		{[]string{"postgres", "-cport=6003", "-p", "6004"}, 6004, nil}, // the last wins
		{[]string{"postgres", "-k", "/sock"}, 0, []string{"/sock"}},
		{[]string{"postgres", "-c", "unix_socket_directories='/a, /b'"}, 0, []string{"/a", "/b"}},
		{[]string{"postgres", "--unix-socket-directories=/c"}, 0, []string{"/c"}},
		{[]string{"postgres", "-c", "port=nope", "-p"}, 0, nil},
	} {
		port, dirs := serverArgs(c.args)
		if port != c.port || !reflect.DeepEqual(dirs, c.dirs) {
			t.Errorf("serverArgs(%q) = %d %q, want %d %q", c.args, port, dirs, c.port, c.dirs)
		}
	}
}

func TestChooseSocket(t *testing.T) {
	std := []string{"/var/run/postgresql", "/run/postgresql", "/tmp"}
	for _, c := range []struct {
		want  int
		dirs  []string
		found []socket
		port  int
		dir   string
	}{
		{0, std, nil, 5432, ""},
		{5433, std, nil, 5433, ""},
		{5433, append([]string{"/custom"}, std...), nil, 5433, "/custom"},
		{0, std, []socket{{"/var/run/postgresql", 5433}}, 5433, "/var/run/postgresql"},
		{0, std, []socket{{"/tmp", 5434}, {"/var/run/postgresql", 5432}}, 5432, "/var/run/postgresql"},
		{5433, std, []socket{{"/var/run/postgresql", 5432}}, 5433, ""}, // a set-up server on 5432: not it
		{5433, std, []socket{{"/tmp", 5433}, {"/var/run/postgresql", 5433}}, 5433, "/var/run/postgresql"},
	} {
		port, dir := chooseSocket(c.want, c.dirs, c.found)
		if port != c.port || dir != c.dir {
			t.Errorf("chooseSocket(%d, %q, %v) = %d %q, want %d %q", c.want, c.dirs, c.found, port, dir, c.port, c.dir)
		}
	}
}

// connFake is a fake container whose sh finds the given sockets and whose
// cat reads the given files.
func connFake(t *testing.T, env, cmd []string, sockets []string, files map[string]string) *fakeDocker {
	t.Helper()
	f := newFakeDocker()
	f.handler = func(x *execCall) int {
		switch x.Cmd[0] {
		case "sh":
			for _, s := range sockets {
				fmt.Fprintln(x.Stdout, s)
			}
			return 0
		case "cat":
			content, ok := files[x.Cmd[len(x.Cmd)-1]]
			if !ok {
				fmt.Fprintf(x.Stderr, "cat: %s: No such file or directory\n", x.Cmd[len(x.Cmd)-1])
				return 1
			}
			io.WriteString(x.Stdout, content)
			return 0
		}
		return 127
	}
	f.add(&fakeContainer{name: "scalr-conn-db", env: env, cmd: cmd, running: true})
	return f
}

func TestFindConn(t *testing.T) {
	ctx := context.Background()
	// The official image's variables, read from files in the container;
	// the server on another port.
	f := connFake(t, []string{"POSTGRES_USER_FILE=/run/secrets/user", "POSTGRES_PASSWORD_FILE=/run/secrets/pw"},
		[]string{"postgres", "-c", "port=5433"}, []string{"/var/run/postgresql/.s.PGSQL.5433"},
		map[string]string{"/run/secrets/user": "app\n", "/run/secrets/pw": "s3cret pw\n\n"})
	c, err := FindConn(ctx, f, "scalr-conn-db")
	if err != nil {
		t.Fatal(err)
	}
	if c.User != "app" || c.Database != "app" || c.Port != 5433 || c.SocketDir != "/var/run/postgresql" || c.PasswordFrom != "POSTGRES_PASSWORD_FILE" {
		t.Errorf("conn %+v", c)
	}
	if env := c.env(); !slices.Equal(env, []string{"PGHOST=/var/run/postgresql", "PGPORT=5433", "PGPASSWORD=s3cret pw"}) {
		t.Errorf("env %q", env)
	}
	// The password is never shown.
	b, _ := json.Marshal(c)
	for _, s := range []string{fmt.Sprintf("%v %+v %#v %s", c, c, c, c.Describe()), string(b)} {
		if strings.Contains(s, "s3cret") {
			t.Errorf("the password shows: %s", s)
		}
	}
	if d := c.Describe(); d != `as role "app" on port 5433 (socket /var/run/postgresql/.s.PGSQL.5433), password from POSTGRES_PASSWORD_FILE` {
		t.Errorf("Describe: %s", d)
	}

	// The container's own PGPASSWORD wins (the tools inherit it); PGPORT
	// moves the server; the socket found where the server put it.
	f = connFake(t, []string{"POSTGRES_PASSWORD=init", "PGPASSWORD=current", "PGPORT=6432", "POSTGRES_DB=appdb"},
		nil, []string{"/tmp/.s.PGSQL.6432"}, nil)
	c, err = FindConn(ctx, f, "scalr-conn-db")
	if err != nil || c.PasswordFrom != "PGPASSWORD" || c.Port != 6432 || c.SocketDir != "/tmp" || c.Database != "appdb" || c.User != "postgres" ||
		!slices.Equal(c.env(), []string{"PGHOST=/tmp", "PGPORT=6432"}) {
		t.Errorf("conn %+v %v", c, err)
	}
	// ... except for a drill's fresh server, initialised with
	// POSTGRES_PASSWORD.
	ins, _ := f.ContainerInspect(ctx, "scalr-conn-db")
	c, err = findConn(ctx, f, ins, connOptions{initPassword: true})
	if err != nil || c.PasswordFrom != "POSTGRES_PASSWORD" || !slices.Contains(c.env(), "PGPASSWORD=init") {
		t.Errorf("drill conn %+v %v", c, err)
	}

	// No socket found, no sh: the defaults.
	f = connFake(t, nil, nil, nil, nil)
	f.handler = func(x *execCall) int { return 127 }
	if c, err := FindConn(ctx, f, "scalr-conn-db"); err != nil || c.Port != 5432 || c.SocketDir != "" || c.PasswordFrom != "" || len(c.env()) != 1 {
		t.Errorf("defaults %+v %v", c, err)
	}

	// A *_FILE that cannot be read, or set beside its variable.
	f = connFake(t, []string{"POSTGRES_PASSWORD_FILE=/run/secrets/missing"}, nil, nil, nil)
	if _, err := FindConn(ctx, f, "scalr-conn-db"); !errors.Is(err, ErrFileEnv) || !strings.Contains(err.Error(), "POSTGRES_PASSWORD_FILE=/run/secrets/missing") ||
		!strings.Contains(err.Error(), "No such file") {
		t.Errorf("missing file: %v", err)
	}
	f = connFake(t, []string{"POSTGRES_PASSWORD_FILE=/run/secrets/pw", "POSTGRES_PASSWORD=x"}, nil, nil, map[string]string{"/run/secrets/pw": "y"})
	if _, err := FindConn(ctx, f, "scalr-conn-db"); err == nil || !strings.Contains(err.Error(), "both POSTGRES_PASSWORD and POSTGRES_PASSWORD_FILE") {
		t.Errorf("both set: %v", err)
	}
}

func TestDrillMounts(t *testing.T) {
	ctx := context.Background()
	f := connFake(t, nil, nil, nil, map[string]string{"/tmpfs/user": "app\n"})
	ins := container.InspectResponse{
		ContainerJSONBase: &container.ContainerJSONBase{Name: "/scalr-conn-db"},
		Config: &container.Config{
			Entrypoint: []string{"/opt/entry/start.sh"},
			Cmd:        []string{"postgres", "-c", "config_file=/etc/pg/postgresql.conf", "-c", "external_pid_file=/run/pg/pid", "--hba-file=/data/pg_hba.conf"},
		},
		Mounts: []container.MountPoint{
			{Type: mount.TypeVolume, Name: "pgdata", Destination: "/data"},
			{Type: mount.TypeBind, Source: "/srv/secrets", Destination: "/run/secrets"},
			{Type: mount.TypeBind, Source: "/srv/pg.conf", Destination: "/etc/pg/postgresql.conf"},
			{Type: mount.TypeVolume, Name: "entry", Destination: "/opt/entry"},
			{Type: mount.TypeBind, Source: "/srv/pid", Destination: "/run/pg"},
			{Type: mount.TypeBind, Source: "/srv/initdb", Destination: "/docker-entrypoint-initdb.d"},
			{Type: mount.TypeTmpfs, Destination: "/tmpfs"},
		},
	}
	env := []string{"PGDATA=/data/pg", "POSTGRES_PASSWORD_FILE=/run/secrets/pw", "POSTGRES_USER_FILE=/tmpfs/user", "POSTGRES_DB_FILE=/data/db"}
	ins.Config.Env = env
	var warnings []string
	mounts, newEnv := drillMounts(ctx, f, ins, env, func(s string) { warnings = append(warnings, s) })
	want := []mount.Mount{
		{Type: mount.TypeBind, Source: "/srv/pg.conf", Target: "/etc/pg/postgresql.conf", ReadOnly: true},
		{Type: mount.TypeVolume, Source: "entry", Target: "/opt/entry", ReadOnly: true},
		{Type: mount.TypeBind, Source: "/srv/secrets", Target: "/run/secrets", ReadOnly: true},
	}
	if !reflect.DeepEqual(mounts, want) {
		t.Errorf("mounts %+v\nwant %+v", mounts, want)
	}
	// The user file on a tmpfs: its value instead. The database file in
	// the data directory's volume: never mounted, a warning.
	if !slices.Contains(newEnv, "POSTGRES_USER=app") || slices.Contains(newEnv, "POSTGRES_USER_FILE=/tmpfs/user") ||
		!slices.Contains(newEnv, "POSTGRES_PASSWORD_FILE=/run/secrets/pw") {
		t.Errorf("env %q", newEnv)
	}
	if len(warnings) != 2 || !strings.Contains(warnings[0], "POSTGRES_DB_FILE names /data/db") || !strings.Contains(warnings[1], "hba_file names /data/pg_hba.conf") {
		t.Errorf("warnings %q", warnings)
	}

	// A password file that cannot be mounted: a generated password.
	ins.Config.Env = []string{"POSTGRES_PASSWORD_FILE=/tmpfs/pw"}
	warnings = nil
	_, newEnv = drillMounts(ctx, f, ins, ins.Config.Env, func(s string) { warnings = append(warnings, s) })
	if len(newEnv) != 1 || !strings.HasPrefix(newEnv[0], "POSTGRES_PASSWORD=") || len(newEnv[0]) < 30 || len(warnings) != 1 {
		t.Errorf("env %q warnings %q", newEnv, warnings)
	}
}

func TestPermanentConnError(t *testing.T) {
	for msg, want := range map[string]bool{
		`psql: error: connection to server on socket "/var/run/postgresql/.s.PGSQL.5432" failed: FATAL:  password authentication failed for user "app"`: true,
		`psql: error: connection to server on socket "/var/run/postgresql/.s.PGSQL.5432" failed: fe_sendauth: no password supplied`:                     true,
		`FATAL:  role "app" does not exist`:                                                                                 true,
		`FATAL:  no pg_hba.conf entry for host "[local]", user "app"`:                                                       true,
		`psql: error: connection to server on socket "/var/run/postgresql/.s.PGSQL.5432" failed: No such file or directory`: false,
		`FATAL:  the database system is starting up`:                                                                        false,
		`FATAL:  the database system is shutting down`:                                                                      false,
		`connection refused`: false,
	} {
		if got := permanentConnError(errors.New(msg)); got != want {
			t.Errorf("permanentConnError(%q) = %v", msg, got)
		}
	}
	if !permanentConnError(fmt.Errorf("x: %w", ErrToolMissing)) {
		t.Error("a missing psql is permanent")
	}
}
