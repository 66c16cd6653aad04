//go:build linux

package imagetier

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/internal/testenv"
)

const (
	// imageName is the tag the test gives the image it builds; compose.yaml
	// takes it from SCALR_BACKUP_IMAGE.
	imageName = "scalr-backup:imagetier"
	// socketGID is the group the test gives the engine's socket, as a
	// host's docker group: the image must reach the socket through it.
	socketGID = "2375"
	// imageUID is the Dockerfile's scalr-backup user.
	imageUID = 10001
	// project is the compose project name.
	project = "scalrimagetier"
	// serviceContainer is compose.yaml's container_name.
	serviceContainer = "scalr-backup"
)

// The two database containers the daemon must discover (compose.yaml's
// default patterns: scalr-*-db).
var databases = []string{"scalr-app-db", "scalr-billing-db"}

func TestImageTier(t *testing.T) {
	testenv.Integration(t)
	start := time.Now()
	phase := start
	step := func(what string) {
		t.Logf("%s: %s (%s in all)", what, time.Since(phase).Round(100*time.Millisecond),
			time.Since(start).Round(100*time.Millisecond))
		phase = time.Now()
	}

	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	dockerfile, err := os.ReadFile(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	goVersion := dockerfileGoVersion(t, dockerfile)
	compose, err := exec.LookPath("docker-compose")
	if err != nil {
		testenv.Missing(t, "docker-compose not found: run scripts/test-setup.sh (installs Debian's docker-compose)")
	}
	images := filepath.Join(testenv.CacheDir(), "images")
	standins := map[string]string{
		"debian:bookworm-slim":              filepath.Join(images, "standin-debian-bookworm-slim.tar"),
		"golang:" + goVersion + "-bookworm": filepath.Join(images, "standin-golang-"+goVersion+"-bookworm.tar"),
	}
	for name, tarball := range standins {
		for _, f := range []string{tarball, tarball + ".changes"} {
			if _, err := os.Stat(f); err != nil {
				testenv.Missing(t, "stand-in for %s: %s missing: run scripts/test-setup.sh (scripts/setup-image-tier.sh builds it)", name, f)
			}
		}
	}

	d := testenv.StartDocker(t)
	sock := strings.TrimPrefix(d.Host(), "unix://")
	// The socket as on a host: root and a docker group, mode 660.
	if err := os.Chown(sock, 0, atoi(t, socketGID)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sock, 0o660); err != nil {
		t.Fatal(err)
	}
	step("private dockerd started")

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	for name, tarball := range standins {
		importStandin(ctx, t, d, name, tarball)
	}
	step("stand-in base images imported")

	// The Dockerfile as shipped: same FROM lines, the stand-ins answering
	// to their names; --network host reaches the Go module proxy and the
	// Debian mirror as this machine does.
	logDir := t.TempDir()
	buildArgs := []string{"build", "--network", "host",
		"--build-arg", "DOCKER_GID=" + socketGID, "--build-arg", "VERSION=imagetier",
		"-t", imageName, "-f", filepath.Join(root, "Dockerfile")}
	for _, v := range []string{"HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"} {
		if os.Getenv(v) != "" {
			buildArgs = append(buildArgs, "--build-arg", v) // the value comes from the environment
		}
	}
	buildArgs = append(buildArgs, root)
	build := d.Command(ctx, buildArgs...)
	// Debian's docker.io 20.10 builds with the classic builder; say so,
	// whatever the caller's environment.
	build.Env = append(build.Env, "DOCKER_BUILDKIT=0")
	runLogged(t, build, filepath.Join(logDir, "build.log"))
	step("image built")

	// USER scalr-backup keeps the group --build-arg DOCKER_GID added: `id`
	// shows it without any --group-add.
	id := d.CLI(t, "run", "--rm", "--network", "none", "--entrypoint", "id", imageName)
	if !strings.Contains(id, fmt.Sprintf("uid=%d(scalr-backup)", imageUID)) ||
		!regexp.MustCompile(`groups=.*\b`+socketGID+`\(`).MatchString(id) {
		t.Fatalf("id in the image: %q, want uid %d and the supplementary group %s (--build-arg DOCKER_GID)", id, imageUID, socketGID)
	}
	t.Logf("id in the image: %s", id)

	// Two databases to back up, on the same engine.
	pgs := map[string]*testenv.Container{}
	for _, name := range databases {
		c := d.RunPostgres(t, name, nil, nil)
		c.Psql(t, "", "CREATE TABLE items (id int PRIMARY KEY, name text); "+
			"INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 500) i;")
		pgs[name] = c
	}
	step("Postgres containers running")

	// The deployment's files as an operator writes them, in a project
	// folder of their own: .env.shared (env_file), the password file (the
	// secret; owned by the image's user, mode 0400, as compose.yaml says),
	// the repository folder (a bind mount owned by that user), and an
	// override for what differs on this machine.
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	repoDir := filepath.Join(dir, "repo")
	if err := os.Mkdir(repoDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(repoDir, imageUID, imageUID); err != nil {
		t.Fatal(err)
	}
	passwordFile := filepath.Join(dir, "restic-password")
	writeFile(t, passwordFile, randomHex(t, 24)+"\n", 0o400)
	if err := os.Chown(passwordFile, imageUID, imageUID); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, ".env.shared"), strings.Join([]string{
		"RESTIC_REPOSITORY=/repo",
		"SCALR_BACKUP_INIT=true",
		// Every 20 seconds (seconds first): the first pass comes soon.
		"SCALR_BACKUP_SCHEDULE=*/20 * * * * *",
		"SCALR_BACKUP_DRILL_SCHEDULE=off",
		"SCALR_BACKUP_SHUTDOWN_GRACE=2s",
		"SCALR_BACKUP_LOG_FORMAT=json",
		"",
	}, "\n"), 0o600)
	override := filepath.Join(dir, "compose.override.yaml")
	writeFile(t, override, fmt.Sprintf(`# Written by internal/imagetier: what differs from a host.
services:
  backup:
    # The private engine has no bridge; the repository is a local folder.
    network_mode: none
    volumes:
      - %[1]s:/var/run/docker.sock
      - %[2]s:/repo
    healthcheck:
      interval: 2s
      timeout: 15s
      start_period: 1s
      retries: 1
    stop_grace_period: 30s
secrets:
  restic-password:
    file: %[3]s
`, sock, repoDir, passwordFile), 0o644)

	cfgDir := t.TempDir()
	composeCmd := func(ctx context.Context, args ...string) *exec.Cmd {
		files := []string{"-f", filepath.Join(root, "deploy", "compose.yaml"), "-f", override}
		if len(args) > 1 && args[0] == "-f" { // another compose file alone
			files, args = args[:2], args[2:]
		}
		all := append([]string{"--ansi", "never", "--project-name", project, "--project-directory", dir}, files...)
		all = append(all, args...)
		cmd := exec.CommandContext(ctx, compose, all...)
		cmd.Dir = dir
		for _, kv := range os.Environ() {
			if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "DOCKER_") || strings.HasPrefix(k, "COMPOSE_") {
				continue
			}
			cmd.Env = append(cmd.Env, kv)
		}
		cmd.Env = append(cmd.Env, d.Env()...)
		cmd.Env = append(cmd.Env, "DOCKER_CONFIG="+cfgDir, "SCALR_BACKUP_IMAGE="+imageName, "DOCKER_GID="+socketGID)
		cmd.WaitDelay = 10 * time.Second
		return cmd
	}
	runCompose := func(name string, args ...string) string {
		t.Helper()
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Minute)
		defer ccancel()
		return runLogged(t, composeCmd(cctx, args...), filepath.Join(logDir, name+".log"))
	}
	t.Cleanup(func() {
		if t.Failed() {
			if out, err := d.Run(context.Background(), nil, "logs", "--tail", "60", serviceContainer); err == nil {
				t.Logf("the service's log (end):\n%s", out)
			}
		}
		cctx, ccancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer ccancel()
		if out, err := composeCmd(cctx, "down", "--remove-orphans").CombinedOutput(); err != nil {
			t.Logf("compose down: %v\n%s", err, out)
		}
	})

	runCompose("config", "config", "--quiet")
	// The socket-proxy variant parses too, with the same project files.
	runCompose("config-socket-proxy", "-f", filepath.Join(root, "deploy", "compose.socket-proxy.yaml"), "config", "--quiet")
	// So does the SFTP overlay on top of compose.yaml.
	runCompose("config-sftp", "-f", filepath.Join(root, "deploy", "compose.yaml"), "-f", filepath.Join(root, "deploy", "compose.sftp.yaml"), "config", "--quiet")
	runCompose("up", "up", "-d", "--no-build")
	step("compose up")

	// The daemon discovers both containers and a scheduled pass succeeds.
	var logs []logLine
	waitFor(t, 3*time.Minute, "a scheduled pass that backs up both containers", func() (bool, string) {
		logs = serviceLogs(t, d)
		for _, l := range logs {
			if l.Msg == "backup pass finished" && l.Level == "ERROR" {
				t.Fatalf("a pass failed: %s", l.raw)
			}
		}
		return findLog(logs, "backup pass finished") != nil, lastLines(logs, 5)
	})
	disc := findLog(logs, "discovered containers")
	if disc == nil {
		t.Fatalf("no 'discovered containers' line in the log:\n%s", lastLines(logs, 30))
	}
	for _, name := range databases {
		if !strings.Contains(disc.raw, `"`+name+`"`) {
			t.Errorf("the daemon did not discover %s: %s", name, disc.raw)
		}
		if findLogWith(logs, "backup done", name) == nil {
			t.Errorf("no 'backup done' line for %s", name)
		}
	}
	if findLog(logs, "daemon started") == nil {
		t.Errorf("no 'daemon started' line")
	}
	step("discovery and a scheduled pass")

	// The container's healthcheck (daemon healthcheck on /healthz) turns
	// healthy.
	waitFor(t, time.Minute, "the container to be healthy", func() (bool, string) {
		st := d.CLI(t, "inspect", "-f", "{{.State.Health.Status}}", serviceContainer)
		return st == "healthy", st
	})
	step("container healthy")

	// compose stop, as soon as a pass has started: the daemon abandons it
	// (or finishes it within the grace) and leaves no lock.
	starts := countLog(serviceLogs(t, d), "backup pass starting")
	waitFor(t, time.Minute, "the next pass to start", func() (bool, string) {
		return countLog(serviceLogs(t, d), "backup pass starting") > starts, ""
	})
	runCompose("stop", "stop")
	step("compose stop")
	state := d.CLI(t, "inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", serviceContainer)
	if state != "exited 0" {
		t.Errorf("after compose stop the service is %q, want exited 0", state)
	}
	logs = serviceLogs(t, d)
	if findLog(logs, "daemon stopped") == nil {
		t.Errorf("no 'daemon stopped' line:\n%s", lastLines(logs, 10))
	}
	locks, err := os.ReadDir(filepath.Join(repoDir, "locks"))
	if err != nil {
		t.Fatal(err)
	}
	if len(locks) != 0 {
		var names []string
		for _, l := range locks {
			names = append(names, l.Name())
		}
		t.Errorf("compose stop left locks in the repository: %v", names)
	}
	snaps, err := os.ReadDir(filepath.Join(repoDir, "snapshots"))
	if err != nil {
		t.Fatal(err)
	}
	if len(snaps) < len(databases) {
		t.Errorf("%d snapshot files in the repository, want at least %d", len(snaps), len(databases))
	}
	// restore and drill through compose run, the service stopped: they
	// take no repository lock, so beside the daemon a pass's forget and
	// prune could remove what they read (restic's restore and dump hold a
	// non-exclusive lock). A table dropped in scalr-app-db comes back.
	app := pgs["scalr-app-db"]
	app.Psql(t, "", "DROP TABLE items;")
	out := runCompose("restore", "run", "--rm", "-T", "backup", "restore", "scalr-app-db", "latest", "--yes")
	t.Logf("restore:\n%s", lastN(out, 15))
	if got := app.Psql(t, "", "SELECT count(*) FROM items;"); got != "500" {
		t.Fatalf("after the restore, items has %q rows, want 500", got)
	}
	step("compose run restore")

	out = runCompose("drill", "run", "--rm", "-T", "backup", "drill")
	t.Logf("drill:\n%s", lastN(out, 15))
	for _, name := range databases {
		if !strings.Contains(out, name) {
			t.Errorf("the drill's output does not name %s", name)
		}
	}
	step("compose run drill")

	t.Logf("image tier passed in %s", time.Since(start).Round(time.Second))
}

// dockerfileGoVersion is the Dockerfile's `ARG GO_VERSION=` default.
func dockerfileGoVersion(t *testing.T, dockerfile []byte) string {
	m := regexp.MustCompile(`(?m)^ARG GO_VERSION=(\S+)`).FindSubmatch(dockerfile)
	if m == nil {
		t.Fatal("no ARG GO_VERSION= default in the Dockerfile")
	}
	return string(m[1])
}

// importStandin loads a stand-in tarball into the engine under name, with
// the image config its .changes file lists.
func importStandin(ctx context.Context, t *testing.T, d *testenv.Docker, name, tarball string) {
	t.Helper()
	changes, err := os.ReadFile(tarball + ".changes")
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"import"}
	for _, c := range strings.Split(strings.TrimSpace(string(changes)), "\n") {
		if c = strings.TrimSpace(c); c != "" {
			args = append(args, "--change", c)
		}
	}
	args = append(args, tarball, name)
	if _, err := d.Run(ctx, nil, args...); err != nil {
		t.Fatalf("import the stand-in %s: %v", name, err)
	}
}

// runLogged runs cmd with its output in logPath and returns the output;
// on failure the test fails with the output's end.
func runLogged(t *testing.T, cmd *exec.Cmd, logPath string) string {
	t.Helper()
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	_ = os.WriteFile(logPath, buf.Bytes(), 0o600)
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, lastN(buf.String(), 40))
	}
	return buf.String()
}

type logLine struct {
	Level string `json:"level"`
	Msg   string `json:"msg"`
	raw   string
}

// serviceLogs reads the service container's log: JSON lines.
func serviceLogs(t *testing.T, d *testenv.Docker) []logLine {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := d.Command(ctx, "logs", serviceContainer).CombinedOutput()
	if err != nil {
		t.Fatalf("docker logs %s: %v: %s", serviceContainer, err, out)
	}
	var lines []logLine
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		l := logLine{raw: sc.Text()}
		_ = json.Unmarshal(sc.Bytes(), &l)
		lines = append(lines, l)
	}
	return lines
}

func findLog(lines []logLine, msg string) *logLine { return findLogWith(lines, msg, "") }

func findLogWith(lines []logLine, msg, substr string) *logLine {
	i := slices.IndexFunc(lines, func(l logLine) bool { return l.Msg == msg && strings.Contains(l.raw, substr) })
	if i < 0 {
		return nil
	}
	return &lines[i]
}

func countLog(lines []logLine, msg string) int {
	n := 0
	for _, l := range lines {
		if l.Msg == msg {
			n++
		}
	}
	return n
}

func lastLines(lines []logLine, n int) string {
	var b strings.Builder
	for _, l := range lines[max(0, len(lines)-n):] {
		b.WriteString(l.raw)
		b.WriteByte('\n')
	}
	return b.String()
}

func lastN(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// waitFor polls cond every second until it holds, failing the test after
// limit with what cond said last.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s; last: %s", limit, what, last)
		}
		time.Sleep(time.Second)
	}
}

func writeFile(t *testing.T, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func atoi(t *testing.T, s string) int {
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatal(err)
	}
	return n
}
