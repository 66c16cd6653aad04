package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

// The restic versions the compatibility contract names.
const (
	// Restic014 is Debian bookworm's package (restic 0.14.0) at /usr/bin/restic.
	Restic014 = "0.14"
	// Restic0181 is built by scripts/test-setup.sh with go install into
	// ToolPath("restic", "0.18.1").
	Restic0181 = "0.18.1"
)

// debianRestic is where Debian's restic package puts the binary.
const debianRestic = "/usr/bin/restic"

// ResticVersions lists every restic version the integration tests run
// against, oldest first.
func ResticVersions() []string {
	return []string{Restic014, Restic0181}
}

// ResticPath is where the restic CLI of the given version is expected to be
// ("" for an unknown version). It does not check that the file exists.
func ResticPath(version string) string {
	switch version {
	case Restic014:
		return debianRestic
	case Restic0181:
		return ToolPath("restic", Restic0181)
	}
	return ""
}

// ResticCLI runs one real restic binary. Each value has its own cache
// folder, so tests never share restic's local cache. Passwords and the
// repository location go through the environment, never through argv.
type ResticCLI struct {
	// Version is the requested version, "0.14" or "0.18.1".
	Version string
	// Path is the binary.
	Path string
	// CacheDir is the RESTIC_CACHE_DIR given to every run.
	CacheDir string
	// Env holds extra KEY=VALUE entries for every run (AWS_ACCESS_KEY_ID,
	// RESTIC_PACK_SIZE, ...). They are applied after the defaults, so they
	// win. Use WithEnv to derive a CLI with more entries.
	Env []string
	// Args go before every run's own arguments (restic's global flags,
	// such as "-o", "sftp.command=…"). Use WithArgs to add some.
	Args []string
}

// Result is what one restic run produced.
type Result struct {
	Args     []string // the arguments after the binary
	Stdout   []byte
	Stderr   []byte
	ExitCode int
}

// Err is nil for exit code 0, else an error naming the command, the exit
// code and restic's stderr.
func (r Result) Err() error {
	if r.ExitCode == 0 {
		return nil
	}
	return fmt.Errorf("restic %s: exit code %d\nstderr:\n%s", strings.Join(r.Args, " "), r.ExitCode, r.Stderr)
}

var resticVersionCache sync.Map // binary path -> `restic version` output (string)

// Restic returns the restic CLI of the given version ("0.14" or "0.18.1"):
// Debian's /usr/bin/restic, whose `restic version` must start with
// "restic 0.14", or the binary scripts/test-setup.sh builds into the cache.
// A missing or wrong binary is reported through Missing (fails when
// SCALR_BACKUP_REQUIRE_INTEGRATION=1, skips otherwise). As with every test
// that runs a real tool, it skips under -short.
func Restic(t testing.TB, version string) *ResticCLI {
	t.Helper()
	Integration(t)
	path := ResticPath(version)
	if path == "" {
		t.Fatalf("testenv.Restic: unknown restic version %q (known: %v)", version, ResticVersions())
	}
	if _, err := os.Stat(path); err != nil {
		Missing(t, "restic %s not found at %s (%v): run scripts/test-setup.sh", version, path, err)
		return nil
	}
	out, err := resticVersion(path)
	if err != nil {
		Missing(t, "restic %s at %s does not run (%v): run scripts/test-setup.sh", version, path, err)
		return nil
	}
	if !strings.HasPrefix(out, "restic "+version+" ") && !strings.HasPrefix(out, "restic "+version+".") {
		Missing(t, "%s reports %q, want restic %s: run scripts/test-setup.sh", path, out, version)
		return nil
	}
	return &ResticCLI{Version: version, Path: path, CacheDir: t.TempDir()}
}

// resticVersion runs `restic version` once per binary and remembers it.
func resticVersion(path string) (string, error) {
	if v, ok := resticVersionCache.Load(path); ok {
		return v.(string), nil
	}
	cmd := exec.Command(path, "version")
	cmd.Env = resticBaseEnv()
	out, err := cmd.Output()
	if err != nil {
		return "", err
	}
	v := strings.TrimSpace(string(out))
	resticVersionCache.Store(path, v)
	return v, nil
}

// EachRestic runs fn as a subtest, named after the version, for every
// version in ResticVersions.
func EachRestic(t *testing.T, fn func(t *testing.T, r *ResticCLI)) {
	t.Helper()
	for _, v := range ResticVersions() {
		t.Run("restic-"+v, func(t *testing.T) {
			fn(t, Restic(t, v))
		})
	}
}

// WithEnv returns a copy of c whose runs also get the given KEY=VALUE
// entries (after c.Env, so they win over it).
func (c *ResticCLI) WithEnv(kv ...string) *ResticCLI {
	d := *c
	d.Env = append(append([]string(nil), c.Env...), kv...)
	return &d
}

// WithArgs returns a copy of c whose runs all start with the given
// arguments (after c.Args).
func (c *ResticCLI) WithArgs(args ...string) *ResticCLI {
	d := *c
	d.Args = append(append([]string(nil), c.Args...), args...)
	return &d
}

// resticBaseEnv is the process environment without anything that could point
// restic elsewhere: inherited RESTIC_* and AWS_* variables are dropped so a
// developer's shell cannot leak a repository, password or credentials into
// a test.
func resticBaseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "RESTIC_") || strings.HasPrefix(kv, "AWS_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// command builds the exec.Cmd for one run. repo "" sets no repository (for
// `version`, say); password "" sets no password (pass RESTIC_PASSWORD_FILE
// through Env instead, or run a command that needs none).
func (c *ResticCLI) command(ctx context.Context, repo, password string, args []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, c.Path, append(append([]string(nil), c.Args...), args...)...)
	env := resticBaseEnv()
	env = append(env, "RESTIC_CACHE_DIR="+c.CacheDir)
	if repo != "" {
		env = append(env, "RESTIC_REPOSITORY="+repo)
	}
	if password != "" {
		env = append(env, "RESTIC_PASSWORD="+password)
	}
	env = append(env, c.Env...)
	cmd.Env = env
	// No terminal: restic prints no progress bars and never prompts.
	cmd.Stdin = nil
	return cmd
}

// Run runs restic with args against repo (a path or "s3:…" location),
// password in RESTIC_PASSWORD and stdin (may be nil) on its standard input.
// It returns the run's output and exit code. The error is non-nil only when
// restic could not be started or ctx ended the run; a non-zero exit code is
// not an error here (use Result.Err or MustRun for that).
func (c *ResticCLI) Run(ctx context.Context, repo, password string, stdin io.Reader, args ...string) (Result, error) {
	cmd := c.command(ctx, repo, password, args)
	if stdin != nil {
		cmd.Stdin = stdin
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	res := Result{Args: args, Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		return res, nil
	case ctx.Err() != nil:
		res.ExitCode = -1
		return res, fmt.Errorf("restic %s: %w (stderr: %s)", strings.Join(args, " "), ctx.Err(), stderr.Bytes())
	case errors.As(err, &exitErr):
		res.ExitCode = exitErr.ExitCode()
		if res.ExitCode < 0 { // killed by a signal
			return res, fmt.Errorf("restic %s: %w (stderr: %s)", strings.Join(args, " "), err, stderr.Bytes())
		}
		return res, nil
	default:
		res.ExitCode = -1
		return res, fmt.Errorf("restic %s: %w", strings.Join(args, " "), err)
	}
}

// MustRun is Run with the test's context that fails the test unless restic
// exits 0. It returns the result for inspecting stdout.
func (c *ResticCLI) MustRun(t testing.TB, repo, password string, stdin io.Reader, args ...string) Result {
	t.Helper()
	res, err := c.Run(t.Context(), repo, password, stdin, args...)
	if err != nil {
		t.Fatalf("restic %s: %v", c.Version, err)
	}
	if err := res.Err(); err != nil {
		t.Fatalf("restic %s: %v", c.Version, err)
	}
	return res
}

// Stream starts restic with args and returns its standard output as a
// stream, for `restic dump` of files too large to hold in memory. Read the
// stream to its end (or close it early), then call wait: it returns nil when
// restic exited 0, else an error with restic's stderr. Closing the stream
// early makes restic fail with a broken pipe, which wait reports. When
// restic cannot be started, reading the stream and wait both return that
// error.
func (c *ResticCLI) Stream(ctx context.Context, repo, password string, args ...string) (io.ReadCloser, func() error) {
	cmd := c.command(ctx, repo, password, args)
	stderr := &TailBuffer{Max: 64 << 10}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err == nil {
		err = cmd.Start()
	}
	if err != nil {
		err = fmt.Errorf("restic %s: %w", strings.Join(args, " "), err)
		return io.NopCloser(resticErrReader{err}), func() error { return err }
	}
	var once sync.Once
	var waitErr error
	wait := func() error {
		once.Do(func() {
			err := cmd.Wait()
			switch {
			case err == nil:
			case ctx.Err() != nil:
				waitErr = fmt.Errorf("restic %s: %w (stderr: %s)", strings.Join(args, " "), ctx.Err(), stderr.Bytes())
			default:
				waitErr = fmt.Errorf("restic %s: %w\nstderr:\n%s", strings.Join(args, " "), err, stderr.Bytes())
			}
		})
		return waitErr
	}
	return stdout, wait
}

type resticErrReader struct{ err error }

func (r resticErrReader) Read([]byte) (int, error) { return 0, r.err }

// TailBuffer keeps the last Max bytes written to it (a tool's stderr can be
// long on a failure; the end is what matters). Safe for concurrent writes.
type TailBuffer struct {
	Max int
	mu  sync.Mutex
	buf []byte
}

func (b *TailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.Max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *TailBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]byte(nil), b.buf...)
}
