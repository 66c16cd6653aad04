//go:build linux

package testenv

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
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The Postgres images: scripts/setup-docker.sh builds one tarball per major
// version, PostgresImageTarballFor (a root file system made by debootstrap
// from Debian's packages, no image config): 15 from bookworm, 17 from
// trixie. PostgresImageFor loads one into a daemon with `docker import`
// under PostgresImageNameFor and the config postgresImageChanges gives,
// which mirrors the official postgres image's.
const (
	// PostgresImageName is the default (15) image's name,
	// PostgresImageNameFor(DefaultPostgresMajor).
	PostgresImageName = "scalr-test/postgres:15"
	// DefaultPostgresMajor is the major version PostgresImage,
	// PostgresImageTarball and RunPostgres use, and PostgresOptions' zero
	// Major stands for.
	DefaultPostgresMajor = 15
)

// PostgresMajors lists the major versions scripts/setup-docker.sh builds an
// image of.
var PostgresMajors = []int{15, 17}

// PostgresImageNameFor is the name PostgresImageFor gives the image of a
// Postgres major version: "scalr-test/postgres:MAJOR".
func PostgresImageNameFor(major int) string {
	return "scalr-test/postgres:" + strconv.Itoa(major)
}

// postgresImageChanges is the image config `docker import --change` sets
// for a major version.
func postgresImageChanges(major int) []string {
	m := strconv.Itoa(major)
	return []string{
		`ENTRYPOINT ["docker-entrypoint.sh"]`,
		`CMD ["postgres"]`,
		"ENV PATH=/usr/lib/postgresql/" + m + "/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"ENV PGDATA=/var/lib/postgresql/data",
		"ENV PG_MAJOR=" + m,
		"ENV LANG=C.UTF-8",
		"VOLUME /var/lib/postgresql/data",
		"EXPOSE 5432",
		// No USER: like the official image, the entrypoint starts as
		// root, prepares the data directory and drops to the postgres
		// user (setpriv) before it starts postgres; docker exec runs as
		// root by default.
	}
}

// PostgresImageTarball is where scripts/setup-docker.sh writes the default
// (15) image: CACHE/images/scalr-postgres-15.tar.
func PostgresImageTarball() string {
	return PostgresImageTarballFor(DefaultPostgresMajor)
}

// PostgresImageTarballFor is where scripts/setup-docker.sh writes the image
// of a Postgres major version: CACHE/images/scalr-postgres-MAJOR.tar.
func PostgresImageTarballFor(major int) string {
	return filepath.Join(CacheDir(), "images", "scalr-postgres-"+strconv.Itoa(major)+".tar")
}

// DockerStorageDriverEnv names the variable that picks dockerd's storage
// driver. Unset, dockerd chooses (overlay2 where the kernel and the file
// system allow it) and, should that daemon not start, it is started again
// with vfs, which works everywhere (slower: every container copies its
// image).
const DockerStorageDriverEnv = "SCALR_BACKUP_DOCKER_STORAGE_DRIVER"

// Docker is a dockerd private to a test (StartDocker) or to a test process
// (SharedDocker): its own socket, data root, exec root, containerd and
// containerd namespace, in a temporary folder; no iptables rules, no bridge,
// so containers run with --network none.
type Docker struct {
	dir          string // the temporary folder holding everything below
	sock         string
	logPath      string
	cli          string // the docker CLI
	driver       string // the storage driver the daemon reports
	cgroupParent string
	cgroupPaths  []string
	proc         *dockerProc

	stopOnce sync.Once
	stopErr  error

	imageMu sync.Mutex
	images  map[int]error    // major version -> its import's outcome (nil: imported)
	shapes  map[string]error // "MAJOR-SHAPE" -> its build's outcome (shapes.go)
}

// Host is the DOCKER_HOST value for this daemon: "unix:///tmp/…/docker.sock".
func (d *Docker) Host() string { return "unix://" + d.sock }

// Env is the environment a client needs to reach this daemon: DOCKER_HOST.
func (d *Docker) Env() []string { return []string{"DOCKER_HOST=" + d.Host()} }

// Getenv looks up Env's variables, for code that takes a getenv function.
func (d *Docker) Getenv(name string) string {
	if name == "DOCKER_HOST" {
		return d.Host()
	}
	return ""
}

// StorageDriver is the storage driver the daemon runs with.
func (d *Docker) StorageDriver() string { return d.driver }

// LogPath is dockerd's log file.
func (d *Docker) LogPath() string { return d.logPath }

// StartDocker starts a dockerd for this test alone and stops it (by PID)
// when the test ends, removing everything it wrote. Starting a daemon and
// importing the Postgres image take seconds; tests that can share a daemon
// use SharedDocker. Without root or dockerd the test is skipped, or fails
// under SCALR_BACKUP_REQUIRE_INTEGRATION=1.
func StartDocker(t testing.TB) *Docker {
	t.Helper()
	dockerd, cli := dockerPrerequisites(t)
	d, err := startDocker(dockerd, cli)
	if err != nil {
		t.Fatalf("dockerd: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("dockerd on %s, end of its log:\n%s", d.sock, logTail(d.logPath))
		}
		if err := d.Stop(); err != nil {
			t.Errorf("stop dockerd: %v", err)
		}
	})
	return d
}

// The services RunWithServices stops when the tests are done.
var services struct {
	mu     sync.Mutex
	active bool // RunWithServices is running the tests
	stops  []func() error

	docker     *Docker
	dockerErr  error
	dockerOnce sync.Once
}

// SharedDocker returns the test process's dockerd, started by the first
// call, stopped by RunWithServices after the last test. The package's
// TestMain must call RunWithServices:
//
//	func TestMain(m *testing.M) { os.Exit(testenv.RunWithServices(m)) }
//
// Tests sharing the daemon must use distinct container names.
func SharedDocker(t testing.TB) *Docker {
	t.Helper()
	dockerd, cli := dockerPrerequisites(t)
	services.mu.Lock()
	active := services.active
	services.mu.Unlock()
	if !active {
		t.Fatalf("testenv.SharedDocker needs the package's TestMain to call testenv.RunWithServices, " +
			"which stops the daemon when the tests are done")
	}
	services.dockerOnce.Do(func() {
		services.docker, services.dockerErr = startDocker(dockerd, cli)
		if services.dockerErr == nil {
			registerService(services.docker.Stop)
		}
	})
	if services.dockerErr != nil {
		t.Fatalf("shared dockerd: %v", services.dockerErr)
	}
	return services.docker
}

func registerService(stop func() error) {
	services.mu.Lock()
	defer services.mu.Unlock()
	services.stops = append(services.stops, stop)
}

// RunWithServices runs the tests and then stops every service that
// SharedDocker (or a later shared service) started, by PID, whatever the
// tests' outcome; it returns m.Run's exit code. On SIGINT or SIGTERM it
// stops them too and exits. Should the test process die without getting
// that far (a test's panic, a timeout), dockerd gets SIGTERM from the
// kernel (it was started with a parent-death signal) and the next start
// of any private dockerd removes the folders such a run left behind.
func RunWithServices(m *testing.M) (code int) {
	services.mu.Lock()
	services.active = true
	services.mu.Unlock()

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		select {
		case sig := <-sigs:
			fmt.Fprintf(os.Stderr, "testenv: %v: stopping test services\n", sig)
			stopServices()
			os.Exit(1)
		case <-done:
		}
	}()
	defer func() {
		signal.Stop(sigs)
		close(done)
		if stopServices() != nil && code == 0 {
			code = 1
		}
	}()
	return m.Run()
}

// stopServices stops the registered services, last started first.
func stopServices() error {
	services.mu.Lock()
	stops := services.stops
	services.stops = nil
	services.active = false
	services.mu.Unlock()
	var errs []error
	for _, stop := range slices.Backward(stops) {
		if err := stop(); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: stopping a service: %v\n", err)
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// dockerPrerequisites finds dockerd and the docker CLI, or reports them
// missing.
func dockerPrerequisites(t testing.TB) (dockerd, cli string) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "a private dockerd needs root (uid %d)", os.Geteuid())
	}
	dockerd = lookTool("dockerd", "/usr/sbin", "/usr/bin")
	if dockerd == "" {
		Missing(t, "dockerd not found: run scripts/setup-docker.sh (installs Debian's docker.io)")
	}
	// Prefer the CLI that came with dockerd (docker.io puts it in
	// /usr/bin) over another one earlier on PATH.
	cli = lookTool("docker", filepath.Dir(dockerd), "/usr/bin")
	if cli == "" {
		Missing(t, "the docker CLI was not found: run scripts/setup-docker.sh (installs Debian's docker.io)")
	}
	return dockerd, cli
}

// lookTool finds name in dirs, else on PATH.
func lookTool(name string, dirs ...string) string {
	for _, dir := range dirs {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	return ""
}

// dockerState is written into the daemon's folder so that a later run can
// tell whether the process that owned it is gone.
type dockerState struct {
	OwnerPID     int    `json:"owner_pid"`
	OwnerStart   string `json:"owner_start"`
	CgroupParent string `json:"cgroup_parent"`
	// The owner's cgroup paths (those of /proc/self/cgroup), below which
	// dockerd, its child, made CgroupParent.
	CgroupPaths []string `json:"cgroup_paths"`
}

const dockerDirPrefix = "scalr-dockerd-"

// startDocker starts dockerd: with the storage driver DockerStorageDriverEnv
// names, else dockerd's own choice and, failing that, vfs.
func startDocker(dockerd, cli string) (*Docker, error) {
	sweepStaleDockerDirs()
	drivers := []string{""}
	if v := os.Getenv(DockerStorageDriverEnv); v != "" {
		drivers = []string{v}
	} else {
		drivers = append(drivers, "vfs")
	}
	var errs []error
	for _, driver := range drivers {
		d, err := startDockerWith(dockerd, cli, driver)
		if err == nil {
			return d, nil
		}
		name := driver
		if name == "" {
			name = "dockerd's choice"
		}
		errs = append(errs, fmt.Errorf("storage driver %s: %w", name, err))
	}
	return nil, errors.Join(errs...)
}

func startDockerWith(dockerd, cli, driver string) (_ *Docker, err error) {
	id, err := randHex(6)
	if err != nil {
		return nil, err
	}
	// A short path: unix socket paths (ours, containerd's) are limited to
	// 108 bytes.
	dir, err := os.MkdirTemp("", dockerDirPrefix)
	if err != nil {
		return nil, err
	}
	d := &Docker{
		dir:          dir,
		sock:         filepath.Join(dir, "docker.sock"),
		logPath:      filepath.Join(dir, "dockerd.log"),
		cli:          cli,
		cgroupParent: "scalr-backup-test-" + id,
		cgroupPaths:  ownCgroupPaths(),
	}
	defer func() {
		if err != nil {
			err = fmt.Errorf("%w\nend of dockerd's log:\n%s", err, logTail(d.logPath))
			if stopErr := d.Stop(); stopErr != nil {
				err = fmt.Errorf("%w\nstopping it: %v", err, stopErr)
			}
		}
	}()

	self, err := procStartTime(os.Getpid())
	if err != nil {
		return d, err
	}
	state, _ := json.Marshal(dockerState{OwnerPID: os.Getpid(), OwnerStart: self,
		CgroupParent: d.cgroupParent, CgroupPaths: d.cgroupPaths})
	if err := os.WriteFile(filepath.Join(dir, "state.json"), state, 0o600); err != nil {
		return d, err
	}
	// An empty configuration, so that /etc/docker/daemon.json plays no part.
	if err := os.WriteFile(filepath.Join(dir, "daemon.json"), []byte("{}\n"), 0o600); err != nil {
		return d, err
	}
	if err := os.Mkdir(filepath.Join(dir, "cli-config"), 0o700); err != nil {
		return d, err
	}

	args := []string{
		"--host", d.Host(),
		"--data-root", filepath.Join(dir, "data"),
		"--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "docker.pid"),
		"--config-file", filepath.Join(dir, "daemon.json"),
		// No networking: no iptables rules, no docker0 bridge; containers
		// run with --network none.
		"--iptables=false", "--ip6tables=false", "--ip-masq=false",
		"--bridge=none", "--userland-proxy=false",
		// Our own containerd namespaces: should dockerd find a system
		// containerd running and use it instead of starting its own, it
		// must still never see (and clean up) another daemon's containers.
		"--containerd-namespace", "scalr-test-" + id,
		"--containerd-plugins-namespace", "scalr-test-" + id + "-plugins",
		// Relative: the containers' cgroups go below dockerd's own, in a
		// folder no other daemon uses.
		"--cgroup-parent", d.cgroupParent,
		"--shutdown-timeout", "10",
	}
	if driver != "" {
		args = append(args, "--storage-driver", driver)
	}
	logFile, err := os.Create(d.logPath)
	if err != nil {
		return d, err
	}
	defer logFile.Close() // the child has its own copy
	cmd := exec.Command(dockerd, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.Env = dockerDaemonEnv()
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Our own process group: a Ctrl-C at the terminal reaches the test
		// process, which stops the daemon in order.
		Setpgid: true,
		// Should the test process die, the kernel sends dockerd SIGTERM
		// and it shuts down (its containers too).
		Pdeathsig: syscall.SIGTERM,
	}
	if d.proc, err = startDockerProc(cmd); err != nil {
		return d, fmt.Errorf("start %s: %w", dockerd, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := d.waitPing(ctx); err != nil {
		return d, err
	}
	var info struct{ Driver string }
	if err := d.apiGet(ctx, "/info", &info); err != nil {
		return d, err
	}
	d.driver = info.Driver
	return d, nil
}

// dockerProc is dockerd's process: started from a goroutine locked to its
// OS thread, because the parent-death signal fires when the thread that
// started the child exits, and the Go runtime may end idle threads.
type dockerProc struct {
	pid  int
	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, after done
}

func startDockerProc(cmd *exec.Cmd) (*dockerProc, error) {
	p := &dockerProc{done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		p.pid = cmd.Process.Pid
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return p, nil
}

func (p *dockerProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// dockerDaemonEnv is the test process's environment without the
// variables that point Docker clients elsewhere.
func dockerDaemonEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "DOCKER_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// httpClient talks HTTP to the daemon's socket.
func (d *Docker) httpClient() *http.Client {
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var dialer net.Dialer
				return dialer.DialContext(ctx, "unix", d.sock)
			},
			DisableKeepAlives: true,
		},
	}
}

// waitPing polls GET /_ping until the daemon answers OK, it exits, or ctx
// ends.
func (d *Docker) waitPing(ctx context.Context) error {
	client := d.httpClient()
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker/_ping", nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /_ping: %s: %s", resp.Status, body)
		}
		last = err
		select {
		case <-d.proc.done:
			return fmt.Errorf("dockerd exited before it answered: %v", d.proc.err)
		case <-ctx.Done():
			return fmt.Errorf("dockerd did not answer on %s: %v (last: %v)", d.sock, ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (d *Docker) apiGet(ctx context.Context, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://docker"+path, nil)
	if err != nil {
		return err
	}
	resp, err := d.httpClient().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("GET %s: %s: %s", path, resp.Status, body)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// Stop stops the daemon by PID (SIGTERM; SIGKILL after 30 seconds), ends
// whatever it left running (containerd, shims, containers: found by its
// folder and its cgroups), unmounts and removes its folder. Safe to call
// more than once.
func (d *Docker) Stop() error {
	d.stopOnce.Do(func() { d.stopErr = d.stop() })
	return d.stopErr
}

func (d *Docker) stop() error {
	var errs []error
	if d.proc != nil && !d.proc.exited() {
		_ = syscall.Kill(d.proc.pid, syscall.SIGTERM)
		select {
		case <-d.proc.done:
		case <-time.After(30 * time.Second):
			errs = append(errs, fmt.Errorf("dockerd (pid %d) did not stop within 30s of SIGTERM: killed", d.proc.pid))
			_ = syscall.Kill(d.proc.pid, syscall.SIGKILL)
			select {
			case <-d.proc.done:
			case <-time.After(10 * time.Second):
				errs = append(errs, fmt.Errorf("dockerd (pid %d) survived SIGKILL", d.proc.pid))
			}
		}
	}
	if err := cleanupDockerDir(d.dir, d.cgroupParent, d.cgroupPaths); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// cleanupDockerDir ends the processes a stopped dockerd left behind, removes
// its containers' cgroups, unmounts what is mounted under dir and removes dir.
func cleanupDockerDir(dir, cgroupParent string, cgroupPaths []string) error {
	if dir == "" || !strings.HasPrefix(filepath.Base(dir), dockerDirPrefix) {
		return fmt.Errorf("refusing to clean up %q", dir)
	}
	var errs []error
	// Containers still running (dockerd was killed): end them through
	// their cgroups, which name no other process.
	if cgroupParent != "" {
		if err := removeCgroups(cgroupParent, cgroupPaths); err != nil {
			errs = append(errs, err)
		}
	}
	// containerd and its shims name the folder on their command lines.
	killProcsMentioning(dir)

	unmountUnder(dir)
	if mounts := mountsUnder(dir); len(mounts) > 0 {
		// Removing now could reach through a mount: leave it.
		return errors.Join(append(errs, fmt.Errorf("still mounted, not removing %s: %s", dir, strings.Join(mounts, ", ")))...)
	}
	if err := os.RemoveAll(dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// sweepStaleDockerDirs cleans up the folders of private daemons whose test
// process is gone (it died before it could stop its daemon).
func sweepStaleDockerDirs() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), dockerDirPrefix+"*"))
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, "state.json"))
		if err != nil {
			continue // being set up right now, or not ours
		}
		var st dockerState
		if json.Unmarshal(b, &st) != nil || st.OwnerPID <= 0 {
			continue
		}
		if start, err := procStartTime(st.OwnerPID); err == nil && start == st.OwnerStart {
			continue // its owner still runs
		}
		// The daemon should have got SIGTERM when its owner died; if it
		// still runs (its command line names this folder), stop it.
		if b, err := os.ReadFile(filepath.Join(dir, "docker.pid")); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && procMentions(pid, dir) {
				_ = syscall.Kill(pid, syscall.SIGTERM)
				for i := 0; i < 300 && procMentions(pid, dir); i++ {
					time.Sleep(100 * time.Millisecond)
				}
				if procMentions(pid, dir) {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		if err := cleanupDockerDir(dir, st.CgroupParent, st.CgroupPaths); err != nil {
			fmt.Fprintf(os.Stderr, "testenv: cleaning up the stale %s: %v\n", dir, err)
		}
	}
}

// procStartTime is a process's start time in clock ticks since boot (field
// 22 of /proc/PID/stat), which tells a process from a later one that reused
// its PID.
func procStartTime(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	// The command name (field 2) may hold spaces; it ends at the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return "", fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 20 {
		return "", fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	return fields[19], nil // field 22 overall
}

// procMentions reports whether process pid runs and its command line
// contains s.
func procMentions(pid int, s string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	return err == nil && bytes.Contains(b, []byte(s))
}

// killProcsMentioning SIGKILLs the daemon's helpers (dockerd, containerd,
// containerd-shim*, runc) whose command line contains dir (a private
// daemon's unique folder), and waits a little for them to go.
func killProcsMentioning(dir string) {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err != nil {
			continue
		}
		name := strings.TrimSpace(string(comm))
		if name != "dockerd" && name != "runc" && !strings.HasPrefix(name, "containerd") {
			continue
		}
		if procMentions(pid, dir) {
			pids = append(pids, pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if !slices.ContainsFunc(pids, func(pid int) bool { return procMentions(pid, dir) }) {
			return
		}
	}
}

// removeCgroups removes the cgroup folders named parent that dockerd made
// below its own cgroups, paths (one per hierarchy), after ending any process
// still in them.
func removeCgroups(parent string, paths []string) error {
	if !strings.HasPrefix(parent, "scalr-backup-test-") {
		return fmt.Errorf("refusing to remove cgroups named %q", parent)
	}
	var errs []error
	for _, dir := range cgroupDirs(parent, paths) {
		// Deepest first: the containers' cgroups, then the parent.
		var all []string
		_ = filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				all = append(all, p)
			}
			return nil
		})
		for _, p := range slices.Backward(all) {
			if err := removeCgroup(p); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

func removeCgroup(dir string) error {
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if b, rerr := os.ReadFile(filepath.Join(dir, "cgroup.procs")); rerr == nil {
			for _, f := range strings.Fields(string(b)) {
				if pid, aerr := strconv.Atoi(f); aerr == nil && pid > 0 && pid != os.Getpid() {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		if err = syscall.Rmdir(dir); err == nil || errors.Is(err, syscall.ENOENT) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
	}
}

// ownCgroupPaths lists this process's cgroup paths, one per hierarchy
// (deduplicated), from /proc/self/cgroup.
func ownCgroupPaths() []string {
	var paths []string
	if f, err := os.Open("/proc/self/cgroup"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			// ID:CONTROLLERS:PATH
			if parts := strings.SplitN(sc.Text(), ":", 3); len(parts) == 3 && !slices.Contains(paths, parts[2]) {
				paths = append(paths, parts[2])
			}
		}
		f.Close()
	}
	return paths
}

// cgroupDirs lists the existing folders named parent directly below any of
// paths (a process's cgroups) in every mounted cgroup hierarchy: where
// dockerd, a child of that process, put its containers' cgroups for
// --cgroup-parent=parent.
func cgroupDirs(parent string, paths []string) []string {
	var dirs []string
	for _, m := range readMountInfo() {
		if m.fstype != "cgroup" && m.fstype != "cgroup2" {
			continue
		}
		for _, p := range paths {
			rel, ok := strings.CutPrefix(p, m.root)
			if !ok {
				continue
			}
			dir := filepath.Join(m.point, rel, parent)
			if fi, err := os.Stat(dir); err == nil && fi.IsDir() && !slices.Contains(dirs, dir) {
				dirs = append(dirs, dir)
			}
		}
	}
	return dirs
}

type mountInfo struct{ root, point, fstype string }

// readMountInfo parses /proc/self/mountinfo.
func readMountInfo() []mountInfo {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []mountInfo
	for line := range strings.Lines(string(b)) {
		// ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
		f := strings.Fields(line)
		sep := slices.Index(f, "-")
		if len(f) < 5 || sep < 0 || sep+1 >= len(f) {
			continue
		}
		out = append(out, mountInfo{root: unescapeMount(f[3]), point: unescapeMount(f[4]), fstype: f[sep+1]})
	}
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func mountsUnder(dir string) []string {
	var out []string
	for _, m := range readMountInfo() {
		if m.point == dir || strings.HasPrefix(m.point, dir+"/") {
			out = append(out, m.point)
		}
	}
	return out
}

// unmountUnder lazily unmounts every mount point under dir, deepest first
// (overlay2 layers, network namespaces, the data root's own bind mount).
func unmountUnder(dir string) {
	for range 3 { // a mount may hide another under the same point
		mounts := mountsUnder(dir)
		if len(mounts) == 0 {
			return
		}
		slices.SortFunc(mounts, func(a, b string) int { return len(b) - len(a) })
		for _, m := range mounts {
			_ = syscall.Unmount(m, syscall.MNT_DETACH)
		}
	}
}

func randHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// --- the docker CLI ------------------------------------------------------------

// Command is the docker CLI with args, talking to this daemon: DOCKER_HOST
// set, the caller's other DOCKER_* variables removed, an empty client
// configuration folder.
func (d *Docker) Command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, d.cli, args...)
	cmd.Env = append(dockerDaemonEnv(), "DOCKER_HOST="+d.Host(), "DOCKER_CONFIG="+filepath.Join(d.dir, "cli-config"))
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

// Run runs the docker CLI with args and stdin (may be nil) and returns its
// standard output; an error carries the standard error.
func (d *Docker) Run(ctx context.Context, stdin io.Reader, args ...string) ([]byte, error) {
	cmd := d.Command(ctx, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// cliTimeout bounds one CLI call made through CLI or Container.Exec.
const cliTimeout = 5 * time.Minute

// CLI runs the docker CLI with args against this daemon and returns its
// standard output, trimmed; any failure fails the test.
func (d *Docker) CLI(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	out, err := d.Run(ctx, nil, args...)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// PostgresImage loads the default (15) Postgres image scripts/setup-docker.sh
// built into this daemon and returns its name, PostgresImageName: see
// PostgresImageFor.
func (d *Docker) PostgresImage(t testing.TB) string {
	t.Helper()
	return d.PostgresImageFor(t, DefaultPostgresMajor)
}

// PostgresImageFor loads the image of Postgres major version major that
// scripts/setup-docker.sh built (PostgresImageTarballFor) into this daemon,
// once per daemon (`docker import` with the image config), and returns its
// name, PostgresImageNameFor(major). Without the tarball the test is
// skipped, or fails under SCALR_BACKUP_REQUIRE_INTEGRATION=1.
func (d *Docker) PostgresImageFor(t testing.TB, major int) string {
	t.Helper()
	if major <= 0 {
		t.Fatalf("PostgresImageFor: major version %d", major)
	}
	tarball := PostgresImageTarballFor(major)
	if _, err := os.Stat(tarball); err != nil {
		Missing(t, "Postgres %d image %s not found: run scripts/setup-docker.sh", major, tarball)
	}
	// One import at a time: a second caller for the same version waits for
	// the first, and a failed import is not retried.
	d.imageMu.Lock()
	defer d.imageMu.Unlock()
	err, done := d.images[major]
	if !done {
		err = d.importPostgres(tarball, major)
		if d.images == nil {
			d.images = map[int]error{}
		}
		d.images[major] = err
	}
	if err != nil {
		t.Fatalf("import the Postgres %d image: %v", major, err)
	}
	return PostgresImageNameFor(major)
}

func (d *Docker) importPostgres(tarball string, major int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	args := []string{"import"}
	for _, c := range postgresImageChanges(major) {
		args = append(args, "--change", c)
	}
	args = append(args, tarball, PostgresImageNameFor(major))
	_, err := d.Run(ctx, nil, args...)
	return err
}

// --- Postgres containers ---------------------------------------------------------

// Container is a Postgres container started by RunPostgres or
// RunPostgresWith.
type Container struct {
	Name     string
	ID       string
	Major    int    // the Postgres major version of its image
	Shape    string // the image's shape (ShapeDefault, ShapeOfficial...)
	User     string // POSTGRES_USER: the superuser
	DB       string // POSTGRES_DB: the database made on first start
	Password string // POSTGRES_PASSWORD, or the content of POSTGRES_PASSWORD_FILE
	Port     int    // the server's port when not 5432 (PostgresOptions.Port)
	d        *Docker
}

// PostgresOptions configures a container RunPostgresWith starts.
type PostgresOptions struct {
	// Major is the Postgres major version, whose image PostgresImageFor
	// loads; 0 means DefaultPostgresMajor (15).
	Major int
	// Env is the container's environment (POSTGRES_USER,
	// POSTGRES_PASSWORD, POSTGRES_DB... as the official image reads them).
	Env map[string]string
	// Labels are the container's labels.
	Labels map[string]string
	// Tmpfs mounts a tmpfs at each path, with the mount options given
	// (as `docker run --tmpfs PATH:OPTIONS`; "" for docker's defaults),
	// e.g. {"/var/lib/postgresql/data": "size=64m"}: the entrypoint makes
	// the postgres user own PGDATA, whatever mounts it.
	Tmpfs map[string]string
	// Volumes are `docker run --volume` specs, e.g.
	// "name:/var/lib/postgresql/data". Named volumes outlive the container
	// (its cleanup removes only anonymous ones): a test that wants a
	// named volume gone removes it itself.
	Volumes []string
	// Cmd is the container's command (arguments to the entrypoint, as
	// `docker run IMAGE CMD...`); nil means postgres -c fsync=off (for
	// ShapeNoCmd -c fsync=off, its entrypoint taking options only), empty
	// but not nil the image's CMD (postgres; none for ShapeNoCmd).
	Cmd []string
	// Shape picks the image's shape (see ShapeOfficial, ShapeNoCmd);
	// ShapeDefault is the default image.
	Shape string
	// Files are files the test provides, bind-mounted read-only: the path
	// in the container -> the content (such as a secret for
	// POSTGRES_PASSWORD_FILE, which then gives Container.Password).
	Files map[string]string
	// Port is the server's port when Cmd moves it (-c port=5433): the
	// test helpers' own psql connects there.
	Port int
}

// RunPostgres starts a container of the default (15) Postgres image named
// name with the environment env and the labels: RunPostgresWith with
// PostgresOptions{Env: env, Labels: labels}.
func (d *Docker) RunPostgres(t testing.TB, name string, env, labels map[string]string) *Container {
	t.Helper()
	return d.RunPostgresWith(t, name, PostgresOptions{Env: env, Labels: labels})
}

// RunPostgresWith starts a container of the Postgres image of o.Major named
// name with --network none and o's environment, labels, tmpfs mounts,
// volumes and command, waits until its database answers queries, and
// removes it (with its anonymous volumes) when the test ends.
//
// Defaults, for tests: a random POSTGRES_PASSWORD unless o.Env sets one (or
// POSTGRES_HOST_AUTH_METHOD); POSTGRES_INITDB_ARGS=--no-sync unless set;
// the server runs with -c fsync=off unless o.Cmd says otherwise (nothing
// here must survive a host crash). The environment reaches docker through
// an --env-file of mode 0600, never argv.
func (d *Docker) RunPostgresWith(t testing.TB, name string, o PostgresOptions) *Container {
	t.Helper()
	major := o.Major
	if major == 0 {
		major = DefaultPostgresMajor
	}
	image := d.PostgresImageShape(t, major, o.Shape)
	env := postgresTestEnv(t, o.Env)
	c := &Container{Name: name, Major: major, Shape: o.Shape, Port: o.Port, d: d}
	c.setCredentials(env, o.Files)

	args := []string{"run", "--detach", "--network", "none", "--name", name, "--env-file", writeEnvFile(t, env),
		// The official image's STOPSIGNAL (docker import cannot set one):
		// fast shutdown.
		"--stop-signal", "SIGINT"}
	for _, k := range slices.Sorted(maps.Keys(o.Labels)) {
		args = append(args, "--label", k+"="+o.Labels[k])
	}
	args = append(args, o.mountArgs(t)...)
	args = append(args, image)
	switch {
	case o.Cmd == nil && o.Shape == ShapeNoCmd:
		args = append(args, "-c", "fsync=off")
	case o.Cmd == nil:
		args = append(args, "postgres", "-c", "fsync=off")
	default:
		args = append(args, o.Cmd...)
	}
	c.ID = d.CLI(t, args...)
	t.Cleanup(func() {
		if t.Failed() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			logs, _ := d.Command(ctx, "logs", "--tail", "60", name).CombinedOutput()
			t.Logf("container %s, end of its log:\n%s", name, logs)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if _, err := d.Run(ctx, nil, "rm", "--force", "--volumes", name); err != nil {
			t.Errorf("remove container %s: %v", name, err)
		}
	})
	c.waitReady(t)
	return c
}

// postgresTestEnv is env with the test defaults: a random
// POSTGRES_PASSWORD unless a password (or an auth method) is set, and
// POSTGRES_INITDB_ARGS=--no-sync unless set.
func postgresTestEnv(t testing.TB, in map[string]string) map[string]string {
	env := maps.Clone(in)
	if env == nil {
		env = map[string]string{}
	}
	if env["POSTGRES_PASSWORD"] == "" && env["POSTGRES_PASSWORD_FILE"] == "" && env["POSTGRES_HOST_AUTH_METHOD"] == "" {
		env["POSTGRES_PASSWORD"] = randomHexString(t, 12)
	}
	if _, ok := env["POSTGRES_INITDB_ARGS"]; !ok {
		env["POSTGRES_INITDB_ARGS"] = "--no-sync"
	}
	return env
}

// setCredentials sets the superuser, database and password the container
// will have, from env or the *_FILE files.
func (c *Container) setCredentials(env, files map[string]string) {
	c.User, c.DB, c.Password = env["POSTGRES_USER"], env["POSTGRES_DB"], env["POSTGRES_PASSWORD"]
	if f := env["POSTGRES_PASSWORD_FILE"]; f != "" {
		c.Password = strings.TrimRight(files[f], "\n")
	}
	if f := env["POSTGRES_USER_FILE"]; f != "" {
		c.User = strings.TrimRight(files[f], "\n")
	}
	if f := env["POSTGRES_DB_FILE"]; f != "" {
		c.DB = strings.TrimRight(files[f], "\n")
	}
	if c.User == "" {
		c.User = "postgres"
	}
	if c.DB == "" {
		c.DB = c.User
	}
}

// writeEnvFile writes env as a docker --env-file of mode 0600 (values
// never go on argv) and returns its path.
func writeEnvFile(t testing.TB, env map[string]string) string {
	var envFile strings.Builder
	for _, k := range slices.Sorted(maps.Keys(env)) {
		v := env[k]
		if k == "" || strings.ContainsAny(k, "=\n") || strings.ContainsAny(v, "\n\r\x00") {
			t.Fatalf("RunPostgres: environment variable %q: names must not hold '=' or newlines, values no newlines", k)
		}
		fmt.Fprintf(&envFile, "%s=%s\n", k, v)
	}
	envPath := filepath.Join(t.TempDir(), "postgres.env")
	if err := os.WriteFile(envPath, []byte(envFile.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return envPath
}

// mountArgs are docker run's --tmpfs, --volume and --mount arguments for
// o's tmpfs mounts, volumes and files (each file written 0600 in a
// temporary directory and bind-mounted read-only).
func (o PostgresOptions) mountArgs(t testing.TB) []string {
	var args []string
	for _, p := range slices.Sorted(maps.Keys(o.Tmpfs)) {
		if !strings.HasPrefix(p, "/") || strings.Contains(p, ":") {
			t.Fatalf("RunPostgresWith: tmpfs path %q: must be absolute, without ':'", p)
		}
		spec := p
		if opts := o.Tmpfs[p]; opts != "" {
			spec += ":" + opts
		}
		args = append(args, "--tmpfs", spec)
	}
	for _, v := range o.Volumes {
		args = append(args, "--volume", v)
	}
	if len(o.Files) > 0 {
		dir := t.TempDir()
		for i, p := range slices.Sorted(maps.Keys(o.Files)) {
			if !strings.HasPrefix(p, "/") || strings.ContainsAny(p, ":,") {
				t.Fatalf("RunPostgresWith: file path %q: must be absolute, without ':' or ','", p)
			}
			host := filepath.Join(dir, strconv.Itoa(i)+"-"+filepath.Base(p))
			if err := os.WriteFile(host, []byte(o.Files[p]), 0o600); err != nil {
				t.Fatal(err)
			}
			args = append(args, "--mount", "type=bind,source="+host+",target="+p+",readonly")
		}
	}
	return args
}

// waitReady waits until psql can run a query in the container's database,
// as its superuser, over the unix socket, on the final server (an
// entrypoint's set-up server listens on no address).
func (c *Container) waitReady(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var last error
	for {
		out, err := c.run(ctx, nil, "psql", "-X", "-At", "-U", c.User, "-d", c.DB, "-c", "select current_setting('listen_addresses') <> ''")
		if err == nil && strings.TrimSpace(string(out)) == "t" {
			return
		}
		last = err
		state, ierr := c.d.Run(ctx, nil, "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", c.Name)
		if ierr == nil && !strings.HasPrefix(string(state), "running") {
			logs, _ := c.d.Command(ctx, "logs", "--tail", "40", c.Name).CombinedOutput()
			t.Fatalf("container %s stopped before Postgres was ready (%s); end of its log:\n%s",
				c.Name, strings.TrimSpace(string(state)), logs)
		}
		select {
		case <-ctx.Done():
			t.Fatalf("Postgres in container %s not ready: %v (last: %v)", c.Name, ctx.Err(), last)
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// Exec runs a command in the container (docker exec, as root unless args
// say otherwise) with stdin (may be nil) and returns its standard output;
// any failure fails the test.
func (c *Container) Exec(t testing.TB, stdin io.Reader, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	out, err := c.run(ctx, stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ExecCommand is the docker CLI running args in the container as Exec
// does: with PGPASSWORD (the container's password, through the CLI's
// environment, never its command line) and PGPORT (when the server is not
// on 5432) in the command's environment.
func (c *Container) ExecCommand(ctx context.Context, interactive bool, args ...string) *exec.Cmd {
	execArgs := []string{"exec"}
	if interactive {
		execArgs = append(execArgs, "--interactive")
	}
	var env []string
	if c.Password != "" {
		execArgs = append(execArgs, "--env", "PGPASSWORD")
		env = append(env, "PGPASSWORD="+c.Password)
	}
	if c.Port != 0 {
		execArgs = append(execArgs, "--env", "PGPORT="+strconv.Itoa(c.Port))
	}
	cmd := c.d.Command(ctx, append(append(execArgs, c.Name), args...)...)
	cmd.Env = append(cmd.Env, env...)
	return cmd
}

// run runs args in the container (see ExecCommand) with stdin (may be
// nil) and returns the standard output; an error carries the standard
// error.
func (c *Container) run(ctx context.Context, stdin io.Reader, args ...string) ([]byte, error) {
	cmd := c.ExecCommand(ctx, stdin != nil, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("docker exec %s %s: %w: %s", c.Name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// Psql runs sql with psql in the container, as the superuser, in database
// db (the container's POSTGRES_DB when empty), stopping at the first error
// (ON_ERROR_STOP), and returns the unaligned, tuples-only output, trimmed.
// The SQL goes through stdin.
func (c *Container) Psql(t testing.TB, db, sql string) string {
	t.Helper()
	if db == "" {
		db = c.DB
	}
	out := c.Exec(t, strings.NewReader(sql),
		"psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-U", c.User, "-d", db)
	return strings.TrimSpace(string(out))
}

// Logs returns the container's log (the entrypoint's and postgres's output,
// standard output and error interleaved).
func (c *Container) Logs(t testing.TB) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	out, err := c.d.Command(ctx, "logs", c.Name).CombinedOutput()
	if err != nil {
		t.Fatalf("docker logs %s: %v: %s", c.Name, err, out)
	}
	return string(out)
}
