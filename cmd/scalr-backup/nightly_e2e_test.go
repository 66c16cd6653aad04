package main

// End-to-end tests of "The nightly service" through the real binary: the
// built scalr-backup runs as a subprocess (run, daemon, snapshots) against
// a private dockerd with three Postgres containers and a repository on
// versitygw, configured only through its environment (RESTIC_REPOSITORY,
// RESTIC_PASSWORD_FILE, AWS_*, DOCKER_HOST, SCALR_BACKUP_*); restic 0.18.1
// cross-checks what it wrote. nightly_integration_test.go covers the same
// wiring in-process; this file covers what only a separate process shows:
// exit codes, JSON logs, hooks, /metrics and /healthz over HTTP, SIGTERM.
//
// How a dump is made to fail (or stall) in the middle of its stream, on
// demand: scalr-e2ec-db has a tiny extension, e2e_gate, whose configuration
// table e2e_gated (10000 rows) is registered with
// pg_extension_config_dump('e2e_gated', 'WHERE public.e2e_gate(id)'). pg_dump
// dumps the data of an extension's configuration table with that filter,
// as COPY (SELECT id, payload FROM public.e2e_gated WHERE
// public.e2e_gate(id)) TO stdout, so the filter function runs inside
// pg_dump's COPY, row by row. At row 5000 it reads public.e2e_control: mode
// 'fail' raises an error (the COPY, and pg_dump, fail half-way through the
// table: pg_dump -Fc -Z0 has written ~680 KiB by then, which testRun
// checks), mode 'hold' sleeps (pg_dump stays in the middle of its COPY,
// which pg_stat_activity shows), mode 'ok' lets it through. The row counts
// pgstream takes skip extension members, so only the dump sees the gate. The
// switch is one UPDATE, so "fail in the first pass only" needs no timing
// luck, and nothing depends on killing processes at the right moment.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/backend/local"
	"github.com/scalr-platform/scalr-backup/backend/open"
	"github.com/scalr-platform/scalr-backup/internal/testenv"
	"github.com/scalr-platform/scalr-backup/nightly"
	"github.com/scalr-platform/scalr-backup/repo"
	"github.com/scalr-platform/scalr-backup/repo/repotest"
)

const (
	e2eA    = "scalr-e2ea-db"
	e2eB    = "scalr-e2eb-db"
	e2eC    = "scalr-e2ec-db" // the one with the gate
	e2eHost = "e2e-host"
	// e2ePatterns selects exactly the three containers.
	e2ePatterns = "scalr-e2e?-db"
	// e2eGateRow is the row of e2e_gated (of e2eGateRows) at which the gate
	// acts.
	e2eGateRow  = 5000
	e2eGateRows = 10000
)

var e2eNames = []string{e2eA, e2eB, e2eC}

// The e2e_gate extension (see the top of the file).
const e2eGateControl = `comment = 'scalr-backup e2e test: a dump that fails or stalls half-way on demand'
default_version = '1.0'
relocatable = false
schema = public
superuser = true
`

var e2eGateScript = fmt.Sprintf(`CREATE TABLE e2e_gated (id int PRIMARY KEY, payload text NOT NULL);
CREATE FUNCTION e2e_gate(row_id int) RETURNS boolean LANGUAGE plpgsql
SET search_path = pg_catalog, public AS $$
DECLARE m text;
BEGIN
  IF row_id <> %d THEN RETURN true; END IF;
  SELECT mode INTO m FROM public.e2e_control;
  IF m = 'fail' THEN RAISE EXCEPTION 'e2e gate: dump failed on purpose at row %%', row_id; END IF;
  IF m = 'hold' THEN PERFORM pg_sleep(300); END IF;
  RETURN true;
END $$;
SELECT pg_extension_config_dump('e2e_gated', 'WHERE public.e2e_gate(id)');
`, e2eGateRow)

// e2eGateError is what the gate's failure says.
const e2eGateError = "e2e gate: dump failed on purpose at row 5000"

type e2eFixture struct {
	bin     string
	d       *testenv.Docker
	s3      *testenv.S3Server
	restic  *testenv.ResticCLI // 0.18.1
	a, b, c *testenv.Container
}

// TestNightlyE2E: one dockerd, one versitygw and three containers shared by
// the subtests, each of which has a bucket of its own.
func TestNightlyE2E(t *testing.T) {
	testenv.Integration(t)
	begin := time.Now()
	fx := &e2eFixture{bin: testBinary(t)}
	fx.restic = testenv.Restic(t, testenv.Restic0181)
	fx.s3 = testenv.StartS3(t)
	fx.d = testenv.StartDocker(t)
	fx.a = fx.postgres(t, e2eA, 1000)
	fx.b = fx.postgres(t, e2eB, 2000)
	fx.c = fx.postgres(t, e2eC, 3000)
	fx.installGate(t)
	t.Logf("binary, dockerd (%s), versitygw and 3 containers ready in %s", fx.d.StorageDriver(), time.Since(begin).Round(time.Millisecond))

	for _, st := range []struct {
		name string
		fn   func(*testing.T)
	}{
		{"run", fx.testRun},
		{"daemon", fx.testDaemon},
		{"dead-man", fx.testDeadMan},
	} {
		step := time.Now()
		t.Run(st.name, st.fn)
		t.Logf("%s: %s", st.name, time.Since(step).Round(time.Millisecond))
	}
	t.Logf("total %s", time.Since(begin).Round(time.Millisecond))
}

// postgres starts a container with a table of rows rows.
func (fx *e2eFixture) postgres(t *testing.T, name string, rows int) *testenv.Container {
	t.Helper()
	user := strings.TrimSuffix(strings.TrimPrefix(name, "scalr-"), "-db") // e2ea
	c := fx.d.RunPostgres(t, name, map[string]string{"POSTGRES_USER": user, "POSTGRES_DB": user}, nil)
	c.Psql(t, "", fmt.Sprintf(`CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO items SELECT i, %s || ' item ' || i FROM generate_series(1, %d) i;`, e2eLiteral(name), rows))
	return c
}

func e2eLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// installGate puts the e2e_gate extension into scalr-e2ec-db (files as
// root through docker exec, then CREATE EXTENSION), mode ok.
func (fx *e2eFixture) installGate(t *testing.T) {
	t.Helper()
	const dir = `d=$(ls -d /usr/share/postgresql/*/extension | head -n 1) && test -d "$d" && `
	fx.c.Exec(t, strings.NewReader(e2eGateControl), "sh", "-c", dir+`cat > "$d/e2e_gate.control"`)
	fx.c.Exec(t, strings.NewReader(e2eGateScript), "sh", "-c", dir+`cat > "$d/e2e_gate--1.0.sql"`)
	fx.c.Psql(t, "", fmt.Sprintf(`CREATE TABLE e2e_control (mode text NOT NULL);
INSERT INTO e2e_control VALUES ('ok');
CREATE EXTENSION e2e_gate;
INSERT INTO e2e_gated SELECT i, repeat(md5(i::text), 4) FROM generate_series(1, %d) i;`, e2eGateRows))
}

// setGate switches the gate: ok, fail or hold.
func (fx *e2eFixture) setGate(t *testing.T, mode string) {
	t.Helper()
	fx.c.Psql(t, "", "UPDATE e2e_control SET mode = "+e2eLiteral(mode)+";")
}

// releaseHeld ends the pg_dump backends the gate holds.
func (fx *e2eFixture) releaseHeld(t *testing.T) {
	t.Helper()
	fx.c.Psql(t, "", "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE wait_event = 'PgSleep';")
}

// heldDumps counts the pg_dump backends (application_name
// scalr-backup-dump-SNAPSHOT, as pgstream connects) sleeping in the gate, in the middle of their COPY.
func (fx *e2eFixture) heldDumps(t *testing.T) int {
	t.Helper()
	out := fx.c.Psql(t, "", `SELECT count(*) FROM pg_stat_activity
WHERE application_name LIKE 'scalr-backup%' AND wait_event = 'PgSleep' AND query LIKE 'COPY (SELECT % FROM public.e2e_gated WHERE public.e2e_gate(id)) TO stdout;';`)
	n, err := strconv.Atoi(out)
	if err != nil {
		t.Fatalf("pg_stat_activity: %q", out)
	}
	return n
}

// ---------------------------------------------------------------------------
// A repository and the binary's environment for it.

type e2eRepo struct {
	fx          *e2eFixture
	loc         string
	pw          string
	pwFile      string
	metricsAddr string
	env         []string
}

// newRepo prepares a bucket of its own on versitygw. With create, the
// repository is made through the library with a cheap KDF (the commands
// under test open it many times); else `run --init` must make it.
func (fx *e2eFixture) newRepo(t *testing.T, label string, create bool) *e2eRepo {
	t.Helper()
	r := &e2eRepo{fx: fx, loc: fx.s3.URL("e2e-" + label + "-" + e2eRandHex(t, 4)), pw: "e2e " + label + " " + e2eRandHex(t, 8)}
	r.pwFile = writePasswordFile(t, r.pw)
	r.metricsAddr = freeAddr(t)
	home := t.TempDir()
	var env []string
	for _, kv := range cleanEnv() {
		// Nothing from the caller's shell may configure the service or
		// point it at another engine.
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "SCALR_BACKUP_") || strings.HasPrefix(k, "DOCKER_") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env,
		"HOME="+home,
		"XDG_CACHE_HOME="+filepath.Join(home, ".cache"),
		"XDG_CONFIG_HOME="+filepath.Join(home, ".config"),
		"RESTIC_REPOSITORY="+r.loc,
		"RESTIC_PASSWORD_FILE="+r.pwFile,
		"DOCKER_HOST="+fx.d.Host(),
		"SCALR_BACKUP_LOG_FORMAT=json",
		"SCALR_BACKUP_METRICS_ADDR="+r.metricsAddr,
		"SCALR_BACKUP_HOST="+e2eHost,
		"SCALR_BACKUP_PATTERNS="+e2ePatterns,
		"SCALR_BACKUP_DRILL_SCHEDULE=off",
	)
	r.env = append(env, fx.s3.Env()...)
	if create {
		ctx := context.Background()
		be, err := open.Create(ctx, r.loc, open.Options{Getenv: fx.s3.Getenv})
		if err != nil {
			t.Fatal(err)
		}
		rp, err := repo.Init(ctx, be, r.pw, repo.InitOptions{KDF: repotest.FastKDF()}, repo.Options{})
		if err != nil {
			t.Fatal(err)
		}
		rp.Close()
		be.Close()
	}
	return r
}

// open opens the repository through the library, for the test's own
// writes; it is closed when the test ends.
func (r *e2eRepo) open(t *testing.T) *repo.Repository {
	t.Helper()
	rp, err := r.openLib(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be := rp.Backend(); rp.Close(); be.Close() })
	return rp
}

// openLib opens the repository through the library; the caller closes it
// and its backend.
func (r *e2eRepo) openLib(ctx context.Context) (*repo.Repository, error) {
	be, err := open.Open(ctx, r.loc, open.Options{Getenv: r.fx.s3.Getenv})
	if err != nil {
		return nil, err
	}
	rp, err := repo.Open(ctx, be, r.pw, repo.Options{})
	if err != nil {
		be.Close()
		return nil, err
	}
	return rp, nil
}

// hookFile sets SCALR_BACKUP_ON_FAILURE to append
// EVENT|CONTAINER|STAGE|LAST_SUCCESS|ERROR lines to a file and returns it.
func (r *e2eRepo) hookFile(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "failures.log")
	r.env = append(r.env, "SCALR_BACKUP_ON_FAILURE="+fmt.Sprintf(
		`printf '%%s|%%s|%%s|%%s|%%s\n' "$SCALR_BACKUP_EVENT" "$SCALR_BACKUP_CONTAINER" "$SCALR_BACKUP_STAGE" "$SCALR_BACKUP_LAST_SUCCESS" "$(printf '%%s' "$SCALR_BACKUP_ERROR" | tr '\n' ' ')" >> %q`, p))
	return p
}

type e2eResult struct {
	args           []string
	code           int
	stdout, stderr []byte
	took           time.Duration
}

func (r e2eResult) String() string {
	return fmt.Sprintf("scalr-backup %q: exit %d after %s\nstdout:\n%s\nstderr:\n%s", r.args, r.code, r.took.Round(time.Millisecond), clip(r.stdout), clip(r.stderr))
}

// run runs the binary to its end (at most 3 minutes).
func (r *e2eRepo) run(t *testing.T, args ...string) e2eResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, r.fx.bin, args...)
	cmd.Env = r.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	res := e2eResult{args: args, stdout: stdout.Bytes(), stderr: stderr.Bytes(), took: time.Since(start)}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr) && exitErr.ExitCode() >= 0:
		res.code = exitErr.ExitCode()
	default:
		t.Fatalf("scalr-backup %q: %v\nstderr:\n%s", args, err, clip(stderr.Bytes()))
	}
	return res
}

func (r *e2eRepo) mustRun(t *testing.T, args ...string) e2eResult {
	t.Helper()
	res := r.run(t, args...)
	if res.code != 0 {
		t.Fatal(res)
	}
	return res
}

// resticCLI is restic 0.18.1 with this repository's password file and the
// S3 credentials.
func (r *e2eRepo) resticCLI() *testenv.ResticCLI {
	return r.fx.restic.WithEnv(append([]string{"RESTIC_PASSWORD_FILE=" + r.pwFile}, r.fx.s3.Env()...)...)
}

// e2eSnap is the part of `snapshots --json` (either CLI) the tests read.
type e2eSnap struct {
	ID       string    `json:"id"`
	Time     time.Time `json:"time"`
	Paths    []string  `json:"paths"`
	Hostname string    `json:"hostname"`
	Tags     []string  `json:"tags"`
}

func e2eDecodeSnaps(t *testing.T, who string, b []byte) []e2eSnap {
	t.Helper()
	var list []e2eSnap
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatalf("%s: %v\n%s", who, err, clip(b))
	}
	return list
}

// snapshots lists the repository with `scalr-backup snapshots --json` (no
// --retry-lock) and, when withRestic, checks that restic 0.18.1 lists the
// same.
func (r *e2eRepo) snapshots(t *testing.T, withRestic bool) []e2eSnap {
	t.Helper()
	ours := r.mustRun(t, "snapshots", "--json").stdout
	if withRestic {
		theirs := r.resticCLI().MustRun(t, r.loc, "", nil, "snapshots", "--json").Stdout
		compareSnapshotLists(t, theirs, ours, false)
	}
	return e2eDecodeSnaps(t, "scalr-backup snapshots --json", ours)
}

// byContainer sorts container backups (as nightly.ContainerOf defines them:
// one path /NAME, tag NAME) by container, oldest first; anything else
// fails the test.
func e2eByContainer(t *testing.T, snaps []e2eSnap) map[string][]e2eSnap {
	t.Helper()
	out := map[string][]e2eSnap{}
	for _, s := range snaps {
		name, ok := strings.CutPrefix(strings.Join(s.Paths, ","), "/")
		if !ok || strings.Contains(name, "/") || !slices.Contains(s.Tags, name) || s.Hostname != e2eHost {
			t.Errorf("snapshot %.8s is not a container backup of %s: paths %q, tags %q, host %q", s.ID, e2eHost, s.Paths, s.Tags, s.Hostname)
			continue
		}
		out[name] = append(out[name], s)
	}
	for _, l := range out {
		sort.Slice(l, func(i, j int) bool { return l[i].Time.Before(l[j].Time) })
	}
	return out
}

// ---------------------------------------------------------------------------
// Logs, metrics, processes.

// e2eLog parses JSON log lines; every non-empty line but the CLI's last
// "scalr-backup: ..." error line must be JSON.
func e2eLog(t *testing.T, b []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 4<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 || bytes.HasPrefix(line, []byte("scalr-backup: ")) {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(line, &m); err != nil {
			t.Errorf("log line is not JSON (SCALR_BACKUP_LOG_FORMAT=json): %q", line)
			continue
		}
		out = append(out, m)
	}
	return out
}

func e2eCount(lines []map[string]any, msg string, attrs map[string]any) int {
	n := 0
	for _, l := range lines {
		if l["msg"] != msg {
			continue
		}
		ok := true
		for k, v := range attrs {
			if l[k] != v {
				ok = false
			}
		}
		if ok {
			n++
		}
	}
	return n
}

// e2eMetrics is one scrape: series ("name" or `name{label="v"}`) to value.
type e2eMetrics map[string]float64

func (m e2eMetrics) of(name, container string) (float64, bool) {
	key := name
	if container != "" {
		key += `{container="` + container + `"}`
	}
	v, ok := m[key]
	return v, ok
}

func (m e2eMetrics) must(t *testing.T, name, container string) float64 {
	t.Helper()
	v, ok := m.of(name, container)
	if !ok {
		t.Fatalf("/metrics has no %s{container=%q}", name, container)
	}
	return v
}

func e2eScrape(addr string) (e2eMetrics, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	m := e2eMetrics{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("/metrics line %q: %v", line, err)
		}
		m[line[:i]] = v
	}
	return m, sc.Err()
}

type e2eHealth struct {
	status int
	Health nightly.Health
	raw    string
}

func e2eHealthz(t *testing.T, addr string) e2eHealth {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	h := e2eHealth{status: resp.StatusCode, raw: string(b)}
	if err := json.Unmarshal(b, &h.Health); err != nil {
		t.Fatalf("/healthz: %v: %s", err, b)
	}
	return h
}

// e2eDaemon is a running `scalr-backup daemon`.
type e2eDaemon struct {
	cmd    *exec.Cmd
	stderr testenv.LockedBuffer
	stdout testenv.LockedBuffer
	done   chan struct{}
	err    error
}

func (r *e2eRepo) startDaemon(t *testing.T, args ...string) *e2eDaemon {
	t.Helper()
	d := &e2eDaemon{done: make(chan struct{})}
	d.cmd = exec.Command(r.fx.bin, append([]string{"daemon"}, args...)...)
	d.cmd.Env = r.env
	d.cmd.Stdout, d.cmd.Stderr = &d.stdout, &d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			_ = d.cmd.Process.Kill() // this test's own child, by its PID
			<-d.done
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", clip(d.stderr.Bytes()))
		}
	})
	return d
}

func (d *e2eDaemon) exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and returns the exit code (failing after 60 s).
func (d *e2eDaemon) stop(t *testing.T) (int, time.Duration) {
	t.Helper()
	start := time.Now()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.done:
	case <-time.After(60 * time.Second):
		t.Fatalf("the daemon did not exit within 60 s of SIGTERM; log:\n%s", clip(d.stderr.Bytes()))
	}
	var exitErr *exec.ExitError
	switch {
	case d.err == nil:
		return 0, time.Since(start)
	case errors.As(d.err, &exitErr):
		return exitErr.ExitCode(), time.Since(start)
	}
	t.Fatal(d.err)
	return -1, 0
}

// waitFor polls cond every 100 ms until it holds; it fails the test after
// timeout, or when the daemon (if any) exits.
func e2eWaitFor(t *testing.T, d *e2eDaemon, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if d != nil && d.exited() {
			t.Fatalf("waiting for %s: the daemon exited (%v); log:\n%s", what, d.err, clip(d.stderr.Bytes()))
		}
		if time.Now().After(deadline) {
			msg := ""
			if d != nil {
				msg = "; daemon log:\n" + clip(d.stderr.Bytes())
			}
			t.Fatalf("timed out after %s waiting for %s%s", timeout, what, msg)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func e2eRandHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func e2eReadLines(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	s := strings.TrimRight(string(b), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// noSecrets fails when a repository or database password shows up in text.
func (fx *e2eFixture) noSecrets(t *testing.T, r *e2eRepo, texts ...[]byte) {
	t.Helper()
	for _, s := range []string{r.pw, fx.a.Password, fx.b.Password, fx.c.Password} {
		for _, b := range texts {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("a password appears in the output, log or hook")
			}
		}
	}
}

// e2eBackupAt writes a container backup shaped like pgstream's (paths
// ["/NAME"], tag NAME, host e2eHost) at a given time, through the library.
func e2eBackupAt(t *testing.T, r *repo.Repository, name string, when time.Time) repo.ID {
	t.Helper()
	data := fmt.Sprintf("-- %s as of %s\n", name, when.Format(time.RFC3339Nano))
	res, err := r.BackupStreams(context.Background(), name, []repo.Stream{{Name: "app.pgdump", Reader: strings.NewReader(data)}},
		repo.BackupOptions{Tags: []string{name}, Hostname: e2eHost, Time: when, ProgramVersion: "e2e test history"})
	if err != nil {
		t.Fatal(err)
	}
	return res.SnapshotID
}

// ---------------------------------------------------------------------------
// Acceptance 1: `run` over three containers, one failing mid-dump; then a
// run "the next day" on a history of earlier days, whose forget keeps
// exactly what restic 0.18.1 keeps.

type e2eReport struct {
	OK      bool   `json:"ok"`
	Host    string `json:"host"`
	Targets []struct {
		Container  string `json:"container"`
		Status     string `json:"status"`
		SnapshotID string `json:"snapshot_id"`
		BytesRead  uint64 `json:"total_bytes_processed"`
		Error      string `json:"error"`
	} `json:"targets"`
	Forget *nightly.ForgetReport `json:"forget"`
	Errors []any                 `json:"errors"`
}

func (fx *e2eFixture) testRun(t *testing.T) {
	r := fx.newRepo(t, "run", false)
	hook := r.hookFile(t)

	// The first night: scalr-e2ec-db's pg_dump fails half-way through
	// its COPY. First, by hand, that it does: how much pg_dump writes
	// before it fails (wc -c gives the pipeline's status).
	fx.setGate(t, "fail")
	out := fx.c.Exec(t, nil, "sh", "-c", "pg_dump -Fc -Z0 -U "+fx.c.User+" "+fx.c.DB+" 2>/dev/null | wc -c")
	if n, err := strconv.Atoi(strings.TrimSpace(string(out))); err != nil || n < 256<<10 {
		t.Fatalf("pg_dump through the gate wrote %q bytes before failing, want > 256 KiB: the failure would not be mid-stream", out)
	} else {
		t.Logf("through the failing gate, pg_dump -Fc -Z0 writes %d bytes, then fails", n)
	}
	res := r.run(t, "run", "--init", "--json")
	t.Logf("first run: exit %d in %s", res.code, res.took.Round(time.Millisecond))
	if res.code != 1 {
		t.Errorf("first run: exit code %d, want 1 (a container failed)\n%s", res.code, res)
	}
	var rep e2eReport
	if err := json.Unmarshal(res.stdout, &rep); err != nil {
		t.Fatalf("run --json: %v\n%s", err, res)
	}
	got := map[string]string{}
	for _, tr := range rep.Targets {
		got[tr.Container] = tr.Status
		switch tr.Container {
		case e2eA, e2eB:
			if tr.Status != "ok" || len(tr.SnapshotID) != 64 || tr.BytesRead == 0 {
				t.Errorf("%s: %+v", tr.Container, tr)
			}
		case e2eC:
			t.Logf("%s: %s", e2eC, tr.Error)
			for _, want := range []string{"backup of container " + e2eC, "pg_dump", e2eGateError, "COPY (SELECT", "e2e_gated", "no snapshot was saved"} {
				if !strings.Contains(tr.Error, want) {
					t.Errorf("%s's error lacks %q: %s", e2eC, want, tr.Error)
				}
			}
			if tr.Status != "failed" || tr.SnapshotID != "" {
				t.Errorf("%s: %+v", tr.Container, tr)
			}
		}
	}
	if want := map[string]string{e2eA: "ok", e2eB: "ok", e2eC: "failed"}; !maps.Equal(got, want) || rep.OK || rep.Host != e2eHost {
		t.Errorf("report: ok %v, host %q, targets %v; want targets %v", rep.OK, rep.Host, got, want)
	}
	logs := e2eLog(t, res.stderr)
	if e2eCount(logs, "backup failed", map[string]any{"container": e2eC}) != 1 || e2eCount(logs, "backup done", nil) != 2 {
		t.Errorf("log: want one \"backup failed\" for %s and two \"backup done\":\n%s", e2eC, clip(res.stderr))
	}
	if !bytes.Contains(res.stderr, []byte("1 of 3 container backups failed: "+e2eC)) {
		t.Errorf("stderr does not end with the failure summary:\n%s", clip(res.stderr))
	}

	// Snapshots: the two good containers, as both CLIs list them.
	first := e2eByContainer(t, r.snapshots(t, true))
	for _, tr := range rep.Targets {
		list := first[tr.Container]
		switch {
		case tr.Container == e2eC && len(list) != 0:
			t.Errorf("%s failed but has %d snapshots", e2eC, len(list))
		case tr.Container != e2eC && (len(list) != 1 || list[0].ID != tr.SnapshotID):
			t.Errorf("%s: snapshots %+v, the report says %s", tr.Container, list, tr.SnapshotID)
		}
	}
	// The failure hook fired once, naming the failed container.
	lines := e2eReadLines(t, hook)
	if len(lines) != 1 || !strings.HasPrefix(lines[0], "failure|"+e2eC+"|backup||") || !strings.Contains(lines[0], e2eGateError) {
		t.Errorf("failure hook lines %q, want one failure|%s|backup||…%s…", lines, e2eC, e2eGateError)
	}
	fx.noSecrets(t, r, res.stdout, res.stderr, []byte(strings.Join(lines, "\n")))

	// "The next day": the run makes its snapshots at the current time, so
	// the earlier days are written through the library with
	// BackupOptions.Time, shaped as the run's (tag NAME, paths ["/NAME"],
	// host): daily for 36 days, twice on two of them, then every 7 days back
	// to ~7 months, for each container.
	rp := r.open(t)
	today := time.Now().UTC().Truncate(24 * time.Hour).Add(3 * time.Hour)
	step := time.Now()
	crafted := 0
	for i, name := range e2eNames {
		at := func(days int, hm time.Duration) time.Time {
			return today.AddDate(0, 0, -days).Add(hm + time.Duration(i)*time.Minute + 123456789*time.Nanosecond)
		}
		var times []time.Time
		for d := 1; d <= 36; d++ {
			times = append(times, at(d, 0))
		}
		times = append(times, at(2, 12*time.Hour), at(9, 20*time.Hour+30*time.Minute))
		for d := 38; d <= 220; d += 7 {
			times = append(times, at(d, 0))
		}
		for _, tm := range times {
			e2eBackupAt(t, rp, name, tm)
			crafted++
		}
	}
	t.Logf("history: %d snapshots written in %s", crafted, time.Since(step).Round(time.Millisecond))
	before := e2eByContainer(t, r.snapshots(t, false))

	fx.setGate(t, "ok")
	res = r.run(t, "run", "--json")
	t.Logf("second run: exit %d in %s", res.code, res.took.Round(time.Millisecond))
	if res.code != 0 {
		t.Fatalf("second run: %s", res)
	}
	rep = e2eReport{}
	if err := json.Unmarshal(res.stdout, &rep); err != nil || !rep.OK || len(rep.Targets) != 3 || rep.Forget == nil {
		t.Fatalf("second run report (%v): %s", err, res.stdout)
	}
	after := e2eByContainer(t, r.snapshots(t, true))

	// The oracle: the same snapshot times (the history, the first run's
	// and the second run's own snapshots) in a scratch repository, and
	// restic 0.18.1's forget --dry-run with the 30/4/6 policy on it.
	all := map[string][]time.Time{}
	newIDs := map[string]string{}
	for _, tr := range rep.Targets {
		newIDs[tr.Container] = tr.SnapshotID
	}
	for _, name := range e2eNames {
		for _, s := range before[name] {
			all[name] = append(all[name], s.Time)
		}
		var fresh []e2eSnap
		for _, s := range after[name] {
			if s.ID == newIDs[name] {
				fresh = append(fresh, s)
			}
		}
		if len(fresh) != 1 {
			t.Fatalf("%s: the second run's snapshot %.8s is not in the repository after forget", name, newIDs[name])
		}
		all[name] = append(all[name], fresh[0].Time)
	}
	keep := fx.resticKeeps(t, all, "--keep-daily", "30", "--keep-weekly", "4", "--keep-monthly", "6")
	removed := 0
	for _, name := range e2eNames {
		var gotTimes []string
		for _, s := range after[name] {
			gotTimes = append(gotTimes, s.Time.UTC().Format(time.RFC3339Nano))
		}
		if !slices.Equal(gotTimes, keep[name]) {
			t.Errorf("%s: forget kept %d snapshots:\n  %v\nrestic 0.18.1 keeps %d:\n  %v", name, len(gotTimes), gotTimes, len(keep[name]), keep[name])
		}
		removed += len(all[name]) - len(keep[name])
		for _, g := range rep.Forget.Groups {
			if g.Container == name && g.Kept != len(keep[name]) {
				t.Errorf("%s: the report says %d kept, restic keeps %d", name, g.Kept, len(keep[name]))
			}
		}
		t.Logf("%s: %d snapshots, %d kept", name, len(all[name]), len(keep[name]))
	}
	if rep.Forget.Removed != removed {
		t.Errorf("the report says %d removed, want %d", rep.Forget.Removed, removed)
	}
	// And restic, asked on the real repository now, would remove nothing
	// more; its check finds nothing wrong after our prune.
	rr := r.resticCLI()
	out = rr.MustRun(t, r.loc, "", nil, "forget", "--dry-run", "--json", "--keep-daily", "30", "--keep-weekly", "4", "--keep-monthly", "6", "--group-by", "host,paths").Stdout
	for _, g := range e2eDecodeForget(t, out) {
		if len(g.Remove) != 0 {
			t.Errorf("restic forget --dry-run on the repository would still remove %d snapshots of %v", len(g.Remove), g.Paths)
		}
	}
	chk := rr.MustRun(t, r.loc, "", nil, "check")
	if !strings.Contains(string(chk.Stdout), "no errors were found") {
		t.Errorf("restic check:\n%s\n%s", chk.Stdout, chk.Stderr)
	}
	if lines := e2eReadLines(t, hook); len(lines) != 1 {
		t.Errorf("the successful run fired the failure hook: %q", lines)
	}
}

type e2eForgetGroup struct {
	Host   string    `json:"host"`
	Paths  []string  `json:"paths"`
	Keep   []e2eSnap `json:"keep"`
	Remove []e2eSnap `json:"remove"`
}

func e2eDecodeForget(t *testing.T, b []byte) []e2eForgetGroup {
	t.Helper()
	var groups []e2eForgetGroup
	if err := json.Unmarshal(b, &groups); err != nil {
		t.Fatalf("restic forget --json: %v\n%s", err, clip(b))
	}
	return groups
}

// resticKeeps writes one snapshot per time (paths ["/NAME"], tag NAME,
// host e2eHost) into a scratch local repository and returns, per
// container, the times (UTC, RFC 3339, oldest first) that restic 0.18.1's
// `forget --dry-run --group-by host,paths` with policy keeps.
func (fx *e2eFixture) resticKeeps(t *testing.T, times map[string][]time.Time, policy ...string) map[string][]string {
	t.Helper()
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "oracle")
	pw := "oracle " + e2eRandHex(t, 8)
	r, err := repo.Init(ctx, local.New(dir), pw, repo.InitOptions{KDF: repotest.FastKDF()}, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for name, list := range times {
		for _, tm := range list {
			e2eBackupAt(t, r, name, tm)
		}
	}
	r.Close()
	args := append([]string{"forget", "--dry-run", "--json", "--group-by", "host,paths"}, policy...)
	res := fx.restic.WithEnv("RESTIC_PASSWORD_FILE="+writePasswordFile(t, pw)).MustRun(t, dir, "", nil, args...)
	keep := map[string][]string{}
	for _, g := range e2eDecodeForget(t, res.Stdout) {
		if len(g.Paths) != 1 || g.Host != e2eHost {
			t.Fatalf("restic forget group %v %q", g.Paths, g.Host)
		}
		name := strings.TrimPrefix(g.Paths[0], "/")
		var ts []time.Time
		for _, s := range g.Keep {
			ts = append(ts, s.Time)
		}
		slices.SortFunc(ts, func(a, b time.Time) int { return a.Compare(b) })
		for _, tm := range ts {
			keep[name] = append(keep[name], tm.UTC().Format(time.RFC3339Nano))
		}
	}
	return keep
}

// ---------------------------------------------------------------------------
// Acceptance 2: the daemon on a schedule of a few seconds: passes, metrics,
// a failing pass survived, SIGTERM in the middle of a dump.

func (fx *e2eFixture) testDaemon(t *testing.T) {
	r := fx.newRepo(t, "daemon", true)
	hook := r.hookFile(t)
	fx.setGate(t, "fail")
	defer func() {
		fx.releaseHeld(t)
		fx.setGate(t, "ok")
	}()

	d := r.startDaemon(t, "--schedule", "*/3 * * * * *")
	scrape := func() e2eMetrics {
		m, err := e2eScrape(r.metricsAddr)
		if err != nil {
			return nil
		}
		return m
	}
	passes := func(m e2eMetrics) float64 {
		v, _ := m.of("scalr_backup_passes_total", "")
		return v
	}

	// The first pass fails (scalr-e2ec-db mid-dump); then the gate opens.
	start := time.Now()
	var m e2eMetrics
	e2eWaitFor(t, d, 90*time.Second, "the first pass", func() bool { m = scrape(); return passes(m) >= 1 })
	t.Logf("first pass done after %s", time.Since(start).Round(time.Millisecond))
	h := e2eHealthz(t, r.metricsAddr)
	if m2 := scrape(); passes(m2) == 1 {
		if h.status != http.StatusServiceUnavailable || h.Health.LastPass != "failed" || !strings.Contains(h.Health.LastPassError, e2eC) {
			t.Errorf("/healthz after the failing first pass: %d %s", h.status, h.raw)
		}
		for _, c := range []struct {
			name, container string
			want            float64
		}{
			{"scalr_backup_pass_failures_total", "", 1},
			{"scalr_backup_last_pass_success", "", 0},
			{"scalr_backup_last_backup_success", e2eA, 1},
			{"scalr_backup_last_backup_success", e2eB, 1},
			{"scalr_backup_last_backup_success", e2eC, 0},
			{"scalr_backup_backup_failures_total", e2eC, 1},
			{"scalr_backup_snapshots", e2eA, 1},
		} {
			if got := m2.must(t, c.name, c.container); got != c.want {
				t.Errorf("after the first pass %s{container=%q} = %v, want %v", c.name, c.container, got, c.want)
			}
		}
		if _, ok := m2.of("scalr_backup_snapshots", e2eC); ok {
			t.Errorf("after the first pass scalr_backup_snapshots{container=%q} is set: it has no backup", e2eC)
		}
	} else {
		t.Logf("a second pass finished before /healthz was read; first-pass checks skipped")
	}
	fx.setGate(t, "ok")

	// It survives: a later pass succeeds.
	e2eWaitFor(t, d, 90*time.Second, "a successful pass", func() bool {
		m = scrape()
		v, _ := m.of("scalr_backup_last_pass_success", "")
		return v == 1
	})
	t.Logf("a successful pass after %s", time.Since(start).Round(time.Millisecond))

	// Hold the next dump of scalr-e2ec-db in the middle of its COPY.
	fx.setGate(t, "hold")
	e2eWaitFor(t, d, 45*time.Second, "pg_dump held in the middle of its COPY", func() bool { return fx.heldDumps(t) == 1 })
	t.Logf("pg_dump held mid-COPY after %s", time.Since(start).Round(time.Millisecond))

	// Now nothing moves: the metrics are those of the completed passes,
	// which the log tells apart from the running one.
	m = scrape()
	logs := e2eLog(t, d.stderr.Bytes())
	lastEnd := -1
	for i, l := range logs {
		if l["msg"] == "backup pass finished" {
			lastEnd = i
		}
	}
	completed := logs[:lastEnd+1]
	running := logs[lastEnd+1:]
	nPasses := e2eCount(completed, "backup pass finished", nil)
	nFailed := e2eCount(completed, "backup pass finished", map[string]any{"ok": false})
	cFailures := e2eCount(completed, "backup failed", map[string]any{"container": e2eC})
	done := map[string]int{}
	wantForgotten := 0
	for _, name := range e2eNames {
		done[name] = e2eCount(completed, "backup done", map[string]any{"container": name})
		// All on one day: restic's rules keep the newest (daily) and, while
		// the daily rule has periods left, the oldest ("oldest daily
		// snapshot"); forget removes the ones in between.
		wantForgotten += max(0, done[name]-2)
	}
	t.Logf("%d passes completed (%d failed, %d failures of %s), backups done %v; running pass: %d backups done",
		nPasses, nFailed, cFailures, e2eC, done, e2eCount(running, "backup done", nil))
	if nPasses < 2 || nFailed < 1 || cFailures != nFailed || done[e2eC] < 1 {
		t.Errorf("%d passes, %d failed, %d failures of %s, %d backups of it: want ≥ 2 passes, ≥ 1 failed, all by %s, ≥ 1 backup",
			nPasses, nFailed, cFailures, e2eC, done[e2eC], e2eC)
	}
	if e2eCount(running, "backing up", map[string]any{"container": e2eC}) != 1 || e2eCount(running, "backup pass finished", nil) != 0 {
		t.Errorf("the held pass is not the running one in the log")
	}
	for _, c := range []struct {
		name, container string
		want            float64
	}{
		{"scalr_backup_passes_total", "", float64(nPasses)},
		{"scalr_backup_pass_failures_total", "", float64(nFailed)},
		{"scalr_backup_backup_failures_total", e2eC, float64(cFailures)},
		{"scalr_backup_last_pass_success", "", 1},
		{"scalr_backup_last_backup_success", e2eA, 1},
		{"scalr_backup_last_backup_success", e2eC, 1},
		{"scalr_backup_snapshots", e2eA, float64(min(done[e2eA], 2))},
		{"scalr_backup_snapshots", e2eB, float64(min(done[e2eB], 2))},
		{"scalr_backup_snapshots", e2eC, float64(min(done[e2eC], 2))},
		{"scalr_backup_forgotten_snapshots_total", "", float64(wantForgotten)},
		{"scalr_backup_healthy", "", 1},
		{"scalr_backup_stale", e2eC, 0},
	} {
		if got := m.must(t, c.name, c.container); got != c.want {
			t.Errorf("%s{container=%q} = %v, want %v", c.name, c.container, got, c.want)
		}
	}
	if h := e2eHealthz(t, r.metricsAddr); h.status != http.StatusOK || h.Health.LastPass != "ok" {
		t.Errorf("/healthz: %d %s", h.status, h.raw)
	}
	// The repository as the last completed pass left it (the running pass
	// has added backups of the containers before scalr-e2ec-db since) is
	// what the metrics say.
	lastPass := time.Unix(0, int64(m.must(t, "scalr_backup_last_pass_timestamp_seconds", "")*1e9))
	held := e2eByContainer(t, r.snapshots(t, false))
	for _, name := range e2eNames {
		var upTo []e2eSnap
		for _, s := range held[name] {
			if !s.Time.After(lastPass) {
				upTo = append(upTo, s)
			}
		}
		ts := m.must(t, "scalr_backup_last_success_timestamp_seconds", name)
		if n := m.must(t, "scalr_backup_snapshots", name); len(upTo) == 0 || float64(len(upTo)) != n ||
			math.Abs(float64(upTo[len(upTo)-1].Time.UnixNano())/1e9-ts) > 0.001 {
			t.Errorf("%s: metrics say %v snapshots, newest at %f; the repository has %+v up to the last pass", name, n, ts, upTo)
		}
	}
	var cBefore []string
	for _, s := range held[e2eC] {
		cBefore = append(cBefore, s.ID)
	}

	// SIGTERM in the middle of the dump: a clean exit, no lock, no
	// snapshot of the held container.
	code, took := d.stop(t)
	t.Logf("SIGTERM mid-dump: exit %d after %s", code, took.Round(time.Millisecond))
	if code != 0 {
		t.Errorf("the daemon exited %d on SIGTERM, want 0", code)
	}
	// With --shutdown-grace 0 the pass is abandoned at once; the exit must
	// come well within docker stop's default 10 s, or the engine's SIGKILL
	// leaves the repository lock behind.
	if took > 10*time.Second {
		t.Errorf("the daemon took %s to exit after SIGTERM with --shutdown-grace 0 (a pg_dump that does not exit holds it: "+
			"pgstream's proc.wait polls the exec for up to 30 s after its context is cancelled); want < 10 s", took.Round(time.Millisecond))
	}
	// Docker cannot kill an exec: the abandoned backup ends its pg_dump's
	// connection on the server, so nothing keeps holding locks.
	deadline := time.Now().Add(15 * time.Second)
	for fx.heldDumps(t) != 0 {
		if time.Now().After(deadline) {
			t.Errorf("a pg_dump of the abandoned backup still runs in the server 15 s after the daemon exited")
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	logs = e2eLog(t, d.stderr.Bytes())
	for _, want := range []struct {
		msg   string
		attrs map[string]any
	}{
		{"daemon stopping", map[string]any{"job_running": true}},
		{"pass cancelled", nil},
		{"backup pass finished", map[string]any{"cancelled": true}},
		{"daemon stopped", nil},
	} {
		if e2eCount(logs, want.msg, want.attrs) != 1 {
			t.Errorf("the log has no single %q %v", want.msg, want.attrs)
		}
	}
	locks := r.resticCLI().MustRun(t, r.loc, "", nil, "list", "locks", "--no-lock")
	if s := strings.TrimSpace(string(locks.Stdout)); s != "" {
		t.Errorf("restic 0.18.1 list locks --no-lock after SIGTERM: %s", s)
	}
	after := e2eByContainer(t, r.snapshots(t, true))
	var cAfter []string
	for _, s := range after[e2eC] {
		cAfter = append(cAfter, s.ID)
	}
	if !slices.Equal(cAfter, cBefore) {
		t.Errorf("%s after SIGTERM has snapshots %v, want those it had while held: %v", e2eC, cAfter, cBefore)
	}
	chk := r.resticCLI().MustRun(t, r.loc, "", nil, "check")
	if !strings.Contains(string(chk.Stdout), "no errors were found") {
		t.Errorf("restic check after SIGTERM:\n%s\n%s", chk.Stdout, chk.Stderr)
	}
	lines := e2eReadLines(t, hook)
	if len(lines) != cFailures {
		t.Errorf("failure hook: %d lines, want %d: %q", len(lines), cFailures, lines)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "failure|"+e2eC+"|backup|") {
			t.Errorf("failure hook line %q", l)
		}
	}
	fx.noSecrets(t, r, d.stderr.Bytes(), d.stdout.Bytes(), []byte(strings.Join(lines, "\n")))
}

// ---------------------------------------------------------------------------
// Acceptance 3: the dead-man alert.
//
// The binary has no clock to inject, but the dead-man check runs when the
// daemon starts, on the repository's state: backups written through the
// library with old times make a container stale at once. How the alert
// follows time passing without a pass is then shown on the library's
// Service with an injected clock, on the same repository.

func (fx *e2eFixture) testDeadMan(t *testing.T) {
	r := fx.newRepo(t, "deadman", true)
	hook := r.hookFile(t)
	r.env = append(r.env, "SCALR_BACKUP_STALE_AFTER=1h")
	now := time.Now().UTC()
	rp := r.open(t)
	aTime := now.Add(-3 * time.Hour).Truncate(time.Second)
	bTime := now.Add(-10 * time.Minute).Truncate(time.Second)
	e2eBackupAt(t, rp, e2eA, aTime)
	e2eBackupAt(t, rp, e2eB, bTime)
	// A container that no longer runs (removed, not retired): this host
	// backed it up, so it stays expected, and it is stale.
	gone := "scalr-e2egone-db"
	goneTime := now.Add(-72 * time.Hour).Truncate(time.Second)
	e2eBackupAt(t, rp, gone, goneTime)

	t.Run("binary", func(t *testing.T) {
		// No pass comes due (1 January, 03:00): only the checks at start.
		d := r.startDaemon(t, "--schedule", "0 3 1 1 *")
		e2eWaitFor(t, d, 60*time.Second, "the daemon's first check and dead-man alerts", func() bool {
			return e2eCount(e2eLog(t, d.stderr.Bytes()), "check passed: repository and Docker engine work", nil) == 1 &&
				len(e2eReadLines(t, hook)) >= 2
		})
		lines := e2eReadLines(t, hook)
		slices.Sort(lines)
		if len(lines) != 2 || !strings.HasPrefix(lines[0], "stale|"+e2eA+"|stale|"+aTime.Format(time.RFC3339)+"|") ||
			!strings.HasPrefix(lines[1], "stale|"+gone+"|stale|"+goneTime.Format(time.RFC3339)+"|") {
			t.Errorf("hook lines %q, want stale|%s|stale|%s|… and stale|%s|stale|%s|…", lines, e2eA, aTime.Format(time.RFC3339), gone, goneTime.Format(time.RFC3339))
		}
		h := e2eHealthz(t, r.metricsAddr)
		if h.status != http.StatusServiceUnavailable || h.Health.LastPass != "none" || len(h.Health.Stale) != 2 ||
			h.Health.Stale[0].Container != e2eA || !h.Health.Stale[0].Newest.Equal(aTime) || h.Health.Stale[1].Container != gone {
			t.Errorf("/healthz: %d %s", h.status, h.raw)
		}
		m, err := e2eScrape(r.metricsAddr)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			name, container string
			want            float64
		}{
			{"scalr_backup_stale", e2eA, 1},
			{"scalr_backup_stale", e2eB, 0},
			{"scalr_backup_stale", e2eC, 0}, // never backed up, first seen now: gets its first night
			{"scalr_backup_last_success_timestamp_seconds", e2eA, float64(aTime.Unix())},
			{"scalr_backup_last_success_timestamp_seconds", e2eB, float64(bTime.Unix())},
			{"scalr_backup_healthy", "", 0},
			{"scalr_backup_passes_total", "", 0},
		} {
			if got := m.must(t, c.name, c.container); got != c.want {
				t.Errorf("%s{container=%q} = %v, want %v", c.name, c.container, got, c.want)
			}
		}
		if v, ok := m.of("scalr_backup_stale", gone); !ok || v != 1 {
			t.Errorf("scalr_backup_stale{container=%q} = %v (present %v): a removed container this host backed up stays expected", gone, v, ok)
		}
		for _, c := range []string{e2eA, gone} {
			if e2eCount(e2eLog(t, d.stderr.Bytes()), "dead-man check: backup is stale", map[string]any{"container": c}) != 1 {
				t.Errorf("no single dead-man warning for %s in the log", c)
			}
		}
		if code, _ := d.stop(t); code != 0 {
			t.Errorf("daemon exit code %d on SIGTERM", code)
		}
	})

	t.Run("library-clock", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "stale.log")
		clock := now
		var mu sync.Mutex
		at := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
		advance := func(d time.Duration) { mu.Lock(); clock = clock.Add(d); mu.Unlock() }
		s := &nightly.Service{
			Config: nightly.Config{Host: e2eHost, StaleAfter: 26 * time.Hour},
			Open:   r.openLib, // the Service closes it after each use
			Discoverer: nightly.DiscoverFunc(func(context.Context) ([]nightly.Target, error) {
				return []nightly.Target{{Name: e2eA}, {Name: e2eB}, {Name: e2eC}}, nil
			}),
			Alerter: &nightly.Alerter{Host: e2eHost, Now: at,
				OnFailure: fmt.Sprintf(`printf '%%s|%%s|%%s\n' "$SCALR_BACKUP_EVENT" "$SCALR_BACKUP_CONTAINER" "$SCALR_BACKUP_TIME" >> %q`, p)},
			Now: at,
		}
		ctx := context.Background()
		if err := s.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		names := func(list []nightly.StaleAlert) []string {
			var out []string
			for _, a := range list {
				out = append(out, a.Container)
			}
			return out
		}
		check := func(label string, wantStale, wantHook []string) {
			t.Helper()
			if got := names(s.CheckStale(ctx)); !slices.Equal(got, wantStale) {
				t.Errorf("%s: stale %v, want %v", label, got, wantStale)
			}
			if got := e2eReadLines(t, p); !slices.Equal(got, wantHook) {
				t.Errorf("%s: hook lines %q, want %q", label, got, wantHook)
			}
		}
		tm := func(d time.Duration) string { return now.Add(d).Format(time.RFC3339) }
		// The removed container, 72 h old, is stale from the start.
		hookGone := "stale|" + gone + "|" + tm(0)
		check("now", []string{gone}, []string{hookGone})
		// 24 h later: scalr-e2ea-db's newest is 27 h old.
		advance(24 * time.Hour)
		hookA := "stale|" + e2eA + "|" + tm(24*time.Hour)
		check("+24h", []string{e2eA, gone}, []string{hookGone, hookA})
		check("+24h again (alerted once)", []string{e2eA, gone}, []string{hookGone, hookA})
		// 27 h: scalr-e2eb-db's is 27 h old too, and scalr-e2ec-db, first
		// seen 27 h ago, still has none. (No reminders: StaleReminder is 0
		// in this Config.)
		advance(3 * time.Hour)
		check("+27h", []string{e2eA, e2eB, e2eC, gone}, []string{hookGone, hookA,
			"stale|" + e2eB + "|" + tm(27*time.Hour), "stale|" + e2eC + "|" + tm(27*time.Hour)})
	})
}
