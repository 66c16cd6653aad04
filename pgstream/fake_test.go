package pgstream

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/pkg/stdcopy"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/scalr-platform/scalr-backup/backend/mem"
	"github.com/scalr-platform/scalr-backup/repo"
	"github.com/scalr-platform/scalr-backup/repo/repotest"
)

// fakeDocker implements Docker in memory. Execs run handler, which gets
// the command and its streams: stdout and stderr framed as the engine
// frames them, the raw connection for tests that break the framing.
type fakeDocker struct {
	mu         sync.Mutex
	containers map[string]*fakeContainer
	order      []string
	execs      map[string]*fakeExec
	nextID     int
	handler    func(x *execCall) int
	// stillRunningPolls makes exec inspect report Running this many times
	// after the command ended.
	stillRunningPolls int
	created, removed  []string
	createdConfig     map[string]*container.Config
	execLog           [][]string
}

type fakeContainer struct {
	name    string
	id      string
	image   string
	env     []string
	labels  map[string]string
	cmd     []string
	running bool
	exit    int
	log     []string
}

type fakeExec struct {
	container string
	opts      container.ExecOptions
	done      chan struct{}
	exitCode  int
	polls     int
}

// execCall is one exec as the handler sees it.
type execCall struct {
	Container string
	Cmd       []string
	Env       []string
	Stdin     io.Reader // EOF when the client closes its write side
	Stdout    io.Writer
	Stderr    io.Writer
	Raw       io.Writer // the connection itself, unframed
	d         *fakeDocker
}

func newFakeDocker() *fakeDocker {
	return &fakeDocker{containers: map[string]*fakeContainer{}, execs: map[string]*fakeExec{}}
}

func (f *fakeDocker) add(c *fakeContainer) *fakeContainer {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c.id == "" {
		f.nextID++
		c.id = fmt.Sprintf("%064x", f.nextID)
	}
	if c.image == "" {
		c.image = "postgres:15"
	}
	f.containers[c.name] = c
	f.order = append(f.order, c.name)
	return c
}

func (f *fakeDocker) get(nameOrID string) *fakeContainer {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := f.containers[nameOrID]; c != nil {
		return c
	}
	for _, c := range f.containers {
		if c.id == nameOrID {
			return c
		}
	}
	return nil
}

func (f *fakeDocker) setRunning(name string, running bool, exit int) {
	c := f.get(name)
	f.mu.Lock()
	c.running, c.exit = running, exit
	f.mu.Unlock()
}

type notFound struct{ what string }

func (e notFound) Error() string { return "No such container: " + e.what }
func (e notFound) NotFound()     {}

var _ = cerrdefs.IsNotFound(notFound{})

func (f *fakeDocker) ContainerList(ctx context.Context, options container.ListOptions) ([]container.Summary, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []container.Summary
	for _, n := range f.order {
		c := f.containers[n]
		if c == nil || (!c.running && !options.All) {
			continue
		}
		state := "running"
		if !c.running {
			state = "exited"
		}
		out = append(out, container.Summary{ID: c.id, Names: []string{"/" + c.name}, Image: c.image, Labels: c.labels, State: state})
	}
	return out, nil
}

func (f *fakeDocker) ContainerInspect(ctx context.Context, id string) (container.InspectResponse, error) {
	c := f.get(id)
	if c == nil {
		return container.InspectResponse{}, notFound{id}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	status := container.StateRunning
	if !c.running {
		status = container.StateExited
	}
	return container.InspectResponse{
		ContainerJSONBase: &container.ContainerJSONBase{
			ID: c.id, Name: "/" + c.name, Image: "sha256:" + strings.Repeat("ab", 32),
			State: &container.State{Running: c.running, Status: status, ExitCode: c.exit},
		},
		Config: &container.Config{Image: c.image, Env: c.env, Labels: c.labels, Cmd: c.cmd},
	}, nil
}

func (f *fakeDocker) ContainerExecCreate(ctx context.Context, id string, options container.ExecOptions) (container.ExecCreateResponse, error) {
	c := f.get(id)
	if c == nil {
		return container.ExecCreateResponse{}, notFound{id}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !c.running {
		return container.ExecCreateResponse{}, fmt.Errorf("Container %s is not running", c.id)
	}
	f.nextID++
	eid := fmt.Sprintf("exec%d", f.nextID)
	f.execs[eid] = &fakeExec{container: c.name, opts: options, done: make(chan struct{})}
	f.execLog = append(f.execLog, options.Cmd)
	return container.ExecCreateResponse{ID: eid}, nil
}

func (f *fakeDocker) ContainerExecAttach(ctx context.Context, execID string, _ container.ExecAttachOptions) (types.HijackedResponse, error) {
	f.mu.Lock()
	x := f.execs[execID]
	f.mu.Unlock()
	if x == nil {
		return types.HijackedResponse{}, fmt.Errorf("no such exec %s", execID)
	}
	client, server, err := socketPair()
	if err != nil {
		return types.HijackedResponse{}, err
	}
	call := &execCall{
		Container: x.container, Cmd: x.opts.Cmd, Env: x.opts.Env,
		Stdin:  strings.NewReader(""),
		Stdout: stdcopy.NewStdWriter(server, stdcopy.Stdout),
		Stderr: stdcopy.NewStdWriter(server, stdcopy.Stderr),
		Raw:    server, d: f,
	}
	if x.opts.AttachStdin {
		call.Stdin = server
	}
	go func() {
		code := f.handler(call)
		f.mu.Lock()
		x.exitCode = code
		f.mu.Unlock()
		close(x.done)
		server.Close()
	}()
	return types.NewHijackedResponse(client, ""), nil
}

func (f *fakeDocker) ContainerExecInspect(ctx context.Context, execID string) (container.ExecInspect, error) {
	f.mu.Lock()
	x := f.execs[execID]
	f.mu.Unlock()
	if x == nil {
		return container.ExecInspect{}, fmt.Errorf("no such exec %s", execID)
	}
	select {
	case <-x.done:
	case <-time.After(5 * time.Second):
		return container.ExecInspect{ExecID: execID, Running: true}, nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if x.polls < f.stillRunningPolls {
		x.polls++
		return container.ExecInspect{ExecID: execID, Running: true}, nil
	}
	return container.ExecInspect{ExecID: execID, ExitCode: x.exitCode}, nil
}

func (f *fakeDocker) ContainerCreate(ctx context.Context, config *container.Config, hostConfig *container.HostConfig, _ *network.NetworkingConfig, _ *ocispec.Platform, name string) (container.CreateResponse, error) {
	if hostConfig == nil || hostConfig.NetworkMode != "none" {
		return container.CreateResponse{}, fmt.Errorf("drill container must have no network")
	}
	c := f.add(&fakeContainer{name: name, image: config.Image, env: config.Env, labels: config.Labels, cmd: config.Cmd})
	f.mu.Lock()
	f.created = append(f.created, name)
	if f.createdConfig == nil {
		f.createdConfig = map[string]*container.Config{}
	}
	f.createdConfig[name] = config
	f.mu.Unlock()
	return container.CreateResponse{ID: c.id}, nil
}

func (f *fakeDocker) ContainerStart(ctx context.Context, id string, _ container.StartOptions) error {
	c := f.get(id)
	if c == nil {
		return notFound{id}
	}
	f.setRunning(c.name, true, 0)
	return nil
}

func (f *fakeDocker) ContainerRemove(ctx context.Context, id string, opts container.RemoveOptions) error {
	c := f.get(id)
	if c == nil {
		return notFound{id}
	}
	if !opts.Force || !opts.RemoveVolumes {
		return fmt.Errorf("remove without force or volumes")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.containers, c.name)
	f.removed = append(f.removed, c.name)
	return nil
}

// ContainerLogs returns the container's log lines (fakeContainer.log), as
// the engine multiplexes them (no TTY).
func (f *fakeDocker) ContainerLogs(ctx context.Context, id string, opts container.LogsOptions) (io.ReadCloser, error) {
	c := f.get(id)
	if c == nil {
		return nil, notFound{id}
	}
	f.mu.Lock()
	lines := c.log
	f.mu.Unlock()
	var buf bytes.Buffer
	w := stdcopy.NewStdWriter(&buf, stdcopy.Stderr)
	for _, l := range lines {
		io.WriteString(w, l+"\n")
	}
	return io.NopCloser(&buf), nil
}

// socketPair is a connected pair of unix stream sockets: unlike net.Pipe,
// each end can close its write side alone, as a hijacked connection can.
func socketPair() (net.Conn, net.Conn, error) {
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	var conns [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f)
		f.Close()
		if err != nil {
			return nil, nil, err
		}
		conns[i] = c
	}
	return conns[0], conns[1], nil
}

// fakePG answers the SQL and tools pgstream runs, for one container.
type fakePG struct {
	mu        sync.Mutex
	snapshot  string
	databases []string
	tables    map[string]string // database -> JSON of the counts
	restored  map[string]string // database -> JSON of the counts after restore (default: tables)
	dump      map[string][]byte // database -> pg_dump output
	globals   string
	// Captured.
	dumpArgs    [][]string
	restoreIn   map[string][]byte
	sqlSeen     []string
	afterDrop   bool
	dumpHook    func(x *execCall) (int, bool) // overrides pg_dump when handled
	versionText string
	// schemaText is what pg_restore --schema-only prints (the TOC as SQL);
	// extensions what pg_available_extensions lists; freeKB what df says.
	schemaText string
	extensions []string
	freeKB     int64
	// closed are databases that do not accept connections.
	closed []string
	// stdbuf makes the container probe report a working stdbuf;
	// stdbufRuns are the commands run through it.
	stdbuf     bool
	stdbufRuns [][]string
	// countHook runs before each row-count query is answered; countErr,
	// when set, fails it with that message.
	countHook func()
	countErr  string
}

// checksumsJSON is ChecksumSQL's answer for db: each counted table with
// its row count and a made-up sum.
func (pg *fakePG) checksumsJSON(db string) string {
	var counts []TableCount
	_ = json.Unmarshal([]byte(pg.tables[db]), &counts)
	var out []TableChecksum
	for _, t := range counts {
		out = append(out, TableChecksum{Schema: t.Schema, Name: t.Name, Checksum: fmt.Sprintf("%d:%d", t.Rows, len(t.Name)*1000+int(t.Rows))})
	}
	if out == nil {
		return "[]"
	}
	b, _ := json.Marshal(out)
	return string(b)
}

func newFakePG() *fakePG {
	return &fakePG{
		snapshot:   "00000003-0000001B-1",
		databases:  []string{"app", "postgres"},
		tables:     map[string]string{},
		restored:   map[string]string{},
		dump:       map[string][]byte{},
		restoreIn:  map[string][]byte{},
		globals:    "CREATE ROLE app;\n",
		extensions: []string{"plpgsql", "pgcrypto"},
		freeKB:     50 << 20,
	}
}

// sideOf maps a restore's side database to the database it restores.
func sideOf(db string) string {
	if rest, ok := strings.CutPrefix(db, sidePrefix); ok {
		if _, name, ok := strings.Cut(rest, "_"); ok {
			return name
		}
	}
	return db
}

// quotedNames lists the double-quoted identifiers of a statement.
func quotedNames(s string) []string {
	var out []string
	for {
		i := strings.IndexByte(s, '"')
		if i < 0 {
			return out
		}
		j := strings.IndexByte(s[i+1:], '"')
		if j < 0 {
			return out
		}
		out = append(out, s[i+1:i+1+j])
		s = s[i+2+j:]
	}
}

// dbOf reads the database from a tool's --dbname=conninfo argument.
func dbOf(cmd []string) string {
	for _, a := range cmd {
		if v, ok := strings.CutPrefix(a, "--dbname=dbname='"); ok {
			var b strings.Builder
			for i := 0; i < len(v); i++ {
				switch v[i] {
				case '\\':
					i++
					if i < len(v) {
						b.WriteByte(v[i])
					}
				case '\'':
					return b.String()
				default:
					b.WriteByte(v[i])
				}
			}
		}
	}
	return ""
}

func (pg *fakePG) handle(x *execCall) int {
	switch x.Cmd[0] {
	case "psql":
		return pg.psql(x)
	case "pg_dump":
		pg.mu.Lock()
		pg.dumpArgs = append(pg.dumpArgs, x.Cmd)
		hook := pg.dumpHook
		pg.mu.Unlock()
		if hook != nil {
			if code, ok := hook(x); ok {
				return code
			}
		}
		db := dbOf(x.Cmd)
		pg.mu.Lock()
		data := pg.dump[db]
		pg.mu.Unlock()
		x.Stdout.Write(data)
		return 0
	case "pg_dumpall":
		io.WriteString(x.Stdout, pg.globals)
		return 0
	case "pg_restore":
		if contains(x.Cmd, "--schema-only") {
			// The real one reads the archive's head only.
			head := make([]byte, 5)
			io.ReadFull(x.Stdin, head)
			pg.mu.Lock()
			text := pg.schemaText
			pg.mu.Unlock()
			io.WriteString(x.Stdout, text)
			return 0
		}
		b, _ := io.ReadAll(x.Stdin)
		pg.mu.Lock()
		pg.restoreIn[dbOf(x.Cmd)] = b
		pg.mu.Unlock()
		return 0
	case "df":
		pg.mu.Lock()
		free := pg.freeKB
		pg.mu.Unlock()
		fmt.Fprintf(x.Stdout, "Filesystem 1024-blocks Used Available Capacity Mounted on\noverlay 100000000 1000 %d 1%% /\n", free)
		return 0
	case "sh":
		if strings.Contains(strings.Join(x.Cmd, " "), "stdbuf -o1M true") {
			// The container probe: sockets (none here), then stdbuf.
			pg.mu.Lock()
			ok := pg.stdbuf
			pg.mu.Unlock()
			if ok {
				fmt.Fprintln(x.Stdout, "stdbuf")
			}
			return 0
		}
	case "stdbuf":
		pg.mu.Lock()
		ok := pg.stdbuf
		pg.stdbufRuns = append(pg.stdbufRuns, x.Cmd)
		pg.mu.Unlock()
		if ok && len(x.Cmd) > 2 && strings.HasPrefix(x.Cmd[1], "-o") {
			x.Cmd = x.Cmd[2:]
			return pg.handle(x)
		}
	case "postgres":
		if pg.versionText == "" {
			fmt.Fprintln(x.Stderr, `exec: "postgres": executable file not found in $PATH`)
			return 127
		}
		fmt.Fprintln(x.Stdout, pg.versionText)
		return 0
	}
	fmt.Fprintf(x.Stderr, "exec: %q: executable file not found in $PATH\n", x.Cmd[0])
	return 127
}

// psql emulates psql reading a script: \echo lines are echoed, each
// statement (a line ending in ';') is answered by what it asks.
func (pg *fakePG) psql(x *execCall) int {
	db := dbOf(x.Cmd)
	in := bufio.NewReader(x.Stdin)
	var stmt strings.Builder
	for {
		line, err := in.ReadString('\n')
		line = strings.TrimRight(line, "\n")
		switch {
		case strings.HasPrefix(line, `\echo `):
			fmt.Fprintln(x.Stdout, strings.TrimPrefix(line, `\echo `))
		case line == `\q`:
			return 0
		case strings.TrimSpace(line) != "":
			stmt.WriteString(line + "\n")
			if strings.HasSuffix(strings.TrimSpace(line), ";") {
				s := stmt.String()
				stmt.Reset()
				pg.mu.Lock()
				hook := pg.countHook
				pg.mu.Unlock()
				if hook != nil && strings.Contains(s, "query_to_xml") {
					hook()
				}
				if code := pg.answer(x, db, s); code != 0 {
					return code
				}
			}
		}
		if err != nil {
			return 0
		}
	}
}

func (pg *fakePG) answer(x *execCall, db, s string) int {
	pg.mu.Lock()
	defer pg.mu.Unlock()
	pg.sqlSeen = append(pg.sqlSeen, s)
	if db != "template1" && db != "postgres" && !contains(pg.databases, db) {
		fmt.Fprintf(x.Stderr, "psql: error: connection to server on socket \"/var/run/postgresql/.s.PGSQL.5432\" failed: FATAL:  database \"%s\" does not exist\n", db)
		return 2
	}
	switch {
	case strings.Contains(s, "pg_export_snapshot()"):
		fmt.Fprintln(x.Stdout, pg.snapshot)
	case strings.Contains(s, "'encoding', pg_encoding_to_char"):
		fmt.Fprintln(x.Stdout, `{"encoding" : "UTF8", "collate" : "C.UTF-8", "ctype" : "C.UTF-8", "size" : 7000000, "server_version" : "15.18 (Debian 15.18-0+deb12u1)", "server_version_num" : 150018}`)
	case strings.Contains(s, "'checksum', (xpath"):
		fmt.Fprintln(x.Stdout, pg.checksumsJSON(sideOf(db)))
	case strings.Contains(s, "query_to_xml") && pg.countErr != "":
		fmt.Fprintln(x.Stderr, pg.countErr)
		return 3
	case strings.Contains(s, "query_to_xml"):
		t := pg.tables[sideOf(db)]
		if pg.afterDrop || sideOf(db) != db {
			if r, ok := pg.restored[sideOf(db)]; ok {
				t = r
			}
		}
		if t == "" {
			t = "[]"
		}
		fmt.Fprintln(x.Stdout, t)
	case strings.Contains(s, "'version_num', current_setting"):
		dbs := map[string]int64{"template1": 7000000, "template0": 0}
		for _, db := range pg.databases {
			dbs[db] = 7000000
		}
		facts, _ := json.Marshal(map[string]any{"version_num": 150018, "version": "15.18 (Debian 15.18-0+deb12u1)",
			"databases": dbs, "roles": []string{"app", "postgres", "reporting"}, "extensions": pg.extensions,
			"data_directory": "/var/lib/postgresql/data"})
		fmt.Fprintln(x.Stdout, string(facts))
	case strings.Contains(s, "'template', datistemplate"):
		list := []map[string]any{{"name": "template0", "template": true, "connect": false}, {"name": "template1", "template": true, "connect": true}}
		for _, db := range pg.databases {
			list = append(list, map[string]any{"name": db, "template": false, "connect": !contains(pg.closed, db)})
		}
		b, _ := json.Marshal(list)
		fmt.Fprintln(x.Stdout, string(b))
	case strings.Contains(s, "listen_addresses"):
		fmt.Fprintln(x.Stdout, "t")
	case strings.Contains(s, "server_version_num"):
		fmt.Fprintln(x.Stdout, "150018")
	case strings.HasPrefix(s, "DROP DATABASE"):
		if names := quotedNames(s); len(names) > 0 {
			pg.databases = slices.DeleteFunc(pg.databases, func(d string) bool { return d == names[0] })
			if !strings.HasPrefix(names[0], sidePrefix) {
				pg.afterDrop = true
			}
		}
	case strings.HasPrefix(s, "CREATE DATABASE"):
		if names := quotedNames(s); len(names) > 0 {
			pg.databases = append(pg.databases, names[0])
		}
	case strings.HasPrefix(s, "ALTER DATABASE") && strings.Contains(s, " RENAME TO "):
		if names := quotedNames(s); len(names) == 2 {
			for i, d := range pg.databases {
				if d == names[0] {
					pg.databases[i] = names[1]
				}
			}
		}
	case strings.HasPrefix(s, "ALTER DATABASE"), strings.HasPrefix(s, "COMMENT ON DATABASE"), strings.HasPrefix(s, "GRANT "):
	case strings.HasPrefix(s, "SELECT count(pg_terminate_backend"):
		fmt.Fprintln(x.Stdout, "0")
	case strings.HasPrefix(s, "ALTER SYSTEM"), strings.HasPrefix(s, "SELECT pg_reload_conf()"):
	case strings.HasPrefix(s, "BEGIN"), strings.HasPrefix(s, "COMMIT"), strings.HasPrefix(s, "CREATE ROLE"), strings.HasPrefix(s, "SET "):
	default:
		fmt.Fprintf(x.Stderr, "fake psql: unexpected statement %q\n", s)
		return 3
	}
	return 0
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// memRepo is a repository in memory with cheap key derivation.
func memRepo(t *testing.T) *repo.Repository {
	t.Helper()
	r, err := repo.Init(context.Background(), mem.New(), "test password", repo.InitOptions{KDF: repotest.FastKDF()}, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func countSnapshots(t *testing.T, r *repo.Repository) int {
	t.Helper()
	list, err := r.ListSnapshots(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return len(list)
}
