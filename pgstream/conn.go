package pgstream

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strconv"
	"strings"

	"github.com/docker/docker/api/types/container"
)

// Conn is how the Postgres tools reach one container's server from inside
// the container (docker exec): the role, the default database, the port and
// the socket directory, found from the container by FindConn, and the
// password. Every psql, pg_dump, pg_dumpall and pg_restore pgstream runs gets
// them through its environment (PGHOST, PGPORT, PGPASSWORD). The password
// never goes into a command line, a log line, an error, a manifest or JSON:
// it is held behind a pointer that fmt prints as an address and
// encoding/json does not see.
type Conn struct {
	// Container is the container's name.
	Container string `json:"-"`
	// User is POSTGRES_USER (or the content of POSTGRES_USER_FILE, read in
	// the container), default postgres; Database is POSTGRES_DB (or
	// POSTGRES_DB_FILE), default User.
	User     string `json:"user"`
	Database string `json:"database"`
	// Port is the server's port: from its command line (-p, -c port=,
	// --port=), else the container's PGPORT, else the socket found in the
	// container, else 5432.
	Port int `json:"port"`
	// SocketDir is the directory holding the server's socket (PGHOST);
	// empty when none was found (the tools' own default then).
	SocketDir string `json:"socket_dir,omitempty"`
	// PasswordFrom says where the password comes from: "PGPASSWORD" (the
	// container's own, which the tools inherit), "POSTGRES_PASSWORD",
	// "POSTGRES_PASSWORD_FILE", or "" for none.
	PasswordFrom string `json:"password_from,omitempty"`

	password *secret
	// stdbuf: GNU stdbuf works in the container, so a dump can write its
	// output in large pieces (see dumpCommand).
	stdbuf bool
}

// secret is a value fmt and encoding/json never show: fmt prints a nested
// pointer as its address, and the field holding it is unexported.
type secret struct{ s string }

// DefaultPort is Postgres' default port.
const DefaultPort = 5432

// socketDirs are where Postgres servers put their sockets: Debian's and the
// official image's default, and the source build's.
var socketDirs = []string{"/var/run/postgresql", "/run/postgresql", "/tmp"}

// env is the environment an exec of a Postgres tool gets: extra, then the
// socket directory, the port and the password when known. The container's
// own variables stay in effect for everything not set here.
func (c Conn) env(extra ...string) []string {
	env := append([]string(nil), extra...)
	if c.SocketDir != "" {
		env = append(env, "PGHOST="+c.SocketDir)
	}
	if c.Port > 0 {
		env = append(env, "PGPORT="+strconv.Itoa(c.Port))
	}
	if c.password != nil {
		env = append(env, "PGPASSWORD="+c.password.s)
	}
	return env
}

// psqlEnv is the environment of psql: UTF-8 client encoding (see toolEnv)
// and the connection.
func (c Conn) psqlEnv() []string { return c.env(toolEnv...) }

// Describe says how the tools connect, for messages: role, port, socket,
// where the password comes from (never the password).
func (c Conn) Describe() string {
	s := fmt.Sprintf("as role %s on port %d", quoteIdent(c.User), c.Port)
	if c.SocketDir != "" {
		s += " (socket " + path.Join(c.SocketDir, ".s.PGSQL."+strconv.Itoa(c.Port)) + ")"
	}
	if c.PasswordFrom != "" {
		s += ", password from " + c.PasswordFrom
	} else {
		s += ", no password"
	}
	return s
}

// connOptions tune FindConn.
type connOptions struct {
	// initPassword prefers the password the entrypoint initialised the
	// server with (POSTGRES_PASSWORD, POSTGRES_PASSWORD_FILE) over the
	// container's own PGPASSWORD: right for a drill's fresh server.
	initPassword bool
	// known, when set, gives the role, database and password (found
	// before) instead of reading the environment and the *_FILE files
	// again: only the socket is looked for.
	known *Conn
}

// FindConn works out how to connect to the Postgres server of a running
// container (see Conn): it inspects the container and, by exec in it,
// reads the *_FILE variables and looks for the server's socket.
func FindConn(ctx context.Context, d Docker, containerName string) (Conn, error) {
	ins, err := inspectRunning(ctx, d, containerName)
	if err != nil {
		return Conn{}, err
	}
	return findConn(ctx, d, ins, connOptions{})
}

// findConn is FindConn for an inspected container.
func findConn(ctx context.Context, d Docker, ins container.InspectResponse, o connOptions) (Conn, error) {
	name := strings.TrimPrefix(ins.Name, "/")
	env := envMap(ins.Config.Env)
	c := Conn{Container: name}
	if k := o.known; k != nil {
		c.User, c.Database, c.PasswordFrom, c.password = k.User, k.Database, k.PasswordFrom, k.password
	} else {
		var err error
		if c.User, err = fileEnv(ctx, d, name, env, "POSTGRES_USER"); err != nil {
			return c, err
		}
		if c.User == "" {
			c.User = "postgres"
		}
		if c.Database, err = fileEnv(ctx, d, name, env, "POSTGRES_DB"); err != nil {
			return c, err
		}
		if c.Database == "" {
			c.Database = c.User
		}
		if err := c.findPassword(ctx, d, env, o.initPassword); err != nil {
			return c, err
		}
	}
	// The container's process: its entrypoint and command.
	args := append([]string{ins.Path}, ins.Args...)
	if ins.Path == "" {
		args = append(append([]string(nil), ins.Config.Entrypoint...), ins.Config.Cmd...)
	}
	port, dirs := serverArgs(args)
	if port == 0 {
		if p, err := strconv.Atoi(strings.TrimSpace(env["PGPORT"])); err == nil && p > 0 && p < 65536 {
			port = p
		}
	}
	if h := env["PGHOST"]; strings.HasPrefix(h, "/") {
		dirs = append(dirs, h)
	}
	for _, dir := range socketDirs {
		if !slices.Contains(dirs, dir) {
			dirs = append(dirs, dir)
		}
	}
	sockets, stdbuf := probeContainer(ctx, d, name, dirs)
	c.Port, c.SocketDir = chooseSocket(port, dirs, sockets)
	c.stdbuf = stdbuf
	return c, nil
}

// findPassword sets the password as the tools should get it.
func (c *Conn) findPassword(ctx context.Context, d Docker, env map[string]string, initPassword bool) error {
	if _, ok := env["PGPASSWORD"]; ok && !initPassword {
		// The container's own: the tools inherit it; nothing to add.
		c.PasswordFrom = "PGPASSWORD"
		return nil
	}
	pw, err := fileEnv(ctx, d, c.Container, env, "POSTGRES_PASSWORD")
	if err != nil {
		return err
	}
	switch {
	case pw != "" && env["POSTGRES_PASSWORD_FILE"] != "":
		c.password, c.PasswordFrom = &secret{pw}, "POSTGRES_PASSWORD_FILE"
	case pw != "":
		c.password, c.PasswordFrom = &secret{pw}, "POSTGRES_PASSWORD"
	default:
		if _, ok := env["PGPASSWORD"]; ok {
			c.PasswordFrom = "PGPASSWORD"
		}
	}
	return nil
}

// ErrFileEnv means a *_FILE variable names a file that cannot be read in
// the container.
var ErrFileEnv = errors.New("cannot read the file a *_FILE variable names")

// fileEnv reads a variable as the official image's entrypoint does: NAME, or
// the content of the file NAME_FILE names (read in the container, trailing
// newlines dropped); both set is an error, as there.
func fileEnv(ctx context.Context, d Docker, containerName string, env map[string]string, name string) (string, error) {
	v, file := env[name], env[name+"_FILE"]
	if file == "" {
		return v, nil
	}
	if v != "" {
		return "", fmt.Errorf("container %s sets both %s and %s_FILE", containerName, name, name)
	}
	var out tailBuffer
	out.max = 64 << 10
	p, err := startProc(ctx, d, containerName, execSpec{Cmd: []string{"cat", "--", file}, Stdout: &out})
	if err == nil {
		err = p.Wait(ctx)
	}
	if err != nil {
		return "", fmt.Errorf("%w: %s_FILE=%s in container %s: %w", ErrFileEnv, name, file, containerName, err)
	}
	return strings.TrimRight(out.String(), "\n"), nil
}

// serverArgs reads the port and the socket directories from a server's
// command line (the container's entrypoint and command): -p PORT, -pPORT,
// --port=PORT, -c port=PORT; -k DIR, -c unix_socket_directories=DIR,...
// The last setting wins, as in postgres.
func serverArgs(args []string) (port int, dirs []string) {
	setting := func(kv string) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return
		}
		k = strings.ReplaceAll(strings.TrimSpace(k), "-", "_")
		v = strings.Trim(strings.TrimSpace(v), `'"`)
		switch k {
		case "port":
			if p, err := strconv.Atoi(v); err == nil && p > 0 && p < 65536 {
				port = p
			}
		case "unix_socket_directories":
			dirs = nil
			for _, dir := range strings.Split(v, ",") {
				if dir = strings.Trim(strings.TrimSpace(dir), `'"`); strings.HasPrefix(dir, "/") {
					dirs = append(dirs, dir)
				}
			}
		}
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		next := func() string {
			if i+1 < len(args) {
				i++
				return args[i]
			}
			return ""
		}
		switch {
		case a == "-p":
			setting("port=" + next())
		case strings.HasPrefix(a, "-p") && !strings.HasPrefix(a, "--"):
			setting("port=" + a[2:])
		case a == "-k":
			setting("unix_socket_directories=" + next())
		case strings.HasPrefix(a, "-k") && !strings.HasPrefix(a, "--"):
			setting("unix_socket_directories=" + a[2:])
		case a == "-c":
			setting(next())
		case strings.HasPrefix(a, "-c") && !strings.HasPrefix(a, "--"):
			setting(a[2:])
		case strings.HasPrefix(a, "--") && strings.Contains(a, "="):
			setting(a[2:])
		}
	}
	return port, dirs
}

// probeScript lists the Postgres sockets in the folders given as its
// arguments, one path a line, then says "stdbuf" when GNU stdbuf can set
// a program's output buffer there: it exits 125 when its preload library
// is missing, and busybox has none (plain sh: busybox's too).
const probeScript = `for d in "$@"; do for s in "$d"/.s.PGSQL.*; do if [ -S "$s" ]; then echo "$s"; fi; done; done; ` +
	`if stdbuf -o1M true >/dev/null 2>&1; then echo stdbuf; fi; exit 0`

// socket is a Postgres socket found in a container.
type socket struct {
	dir  string
	port int
}

// probeContainer lists the Postgres sockets in dirs, in the container (nil
// when none), and whether stdbuf works there; nothing when the container
// has no sh.
func probeContainer(ctx context.Context, d Docker, containerName string, dirs []string) (found []socket, stdbuf bool) {
	out, err := runCapture(ctx, d, containerName, append([]string{"sh", "-c", probeScript, "sh"}, dirs...))
	if err != nil {
		return nil, false
	}
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		if line == "stdbuf" {
			stdbuf = true
			continue
		}
		dir, file := path.Split(line)
		p, err := strconv.Atoi(strings.TrimPrefix(file, ".s.PGSQL."))
		if err != nil || !strings.HasPrefix(file, ".s.PGSQL.") || p <= 0 {
			continue
		}
		found = append(found, socket{dir: path.Clean(dir), port: p})
	}
	return found, stdbuf
}

// chooseSocket picks the port and socket directory: the wanted port's
// socket (want 0: unknown), in the first of dirs that has it; with no
// wanted port, the one port found (5432 among several); without a socket,
// the wanted port (else 5432) and the first folder the command line named.
func chooseSocket(want int, dirs []string, found []socket) (port int, dir string) {
	inOrder := func(p int) (string, bool) {
		for _, d := range dirs {
			for _, s := range found {
				if s.port == p && s.dir == path.Clean(d) {
					return s.dir, true
				}
			}
		}
		for _, s := range found {
			if s.port == p {
				return s.dir, true
			}
		}
		return "", false
	}
	if want > 0 {
		if dir, ok := inOrder(want); ok {
			return want, dir
		}
		return want, argDir(dirs)
	}
	ports := map[int]bool{}
	for _, s := range found {
		ports[s.port] = true
	}
	switch {
	case len(ports) == 0:
		return DefaultPort, argDir(dirs)
	case ports[DefaultPort]:
		dir, _ = inOrder(DefaultPort)
		return DefaultPort, dir
	}
	port = found[0].port
	dir, _ = inOrder(port)
	return port, dir
}

// argDir is the first socket folder that is not one of the usual ones (the
// command line's), or "".
func argDir(dirs []string) string {
	if len(dirs) > 0 && !slices.Contains(socketDirs, dirs[0]) {
		return dirs[0]
	}
	return ""
}
