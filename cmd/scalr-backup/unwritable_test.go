package main

// Issue 17, acceptance 2: init, backup and prune where they may not write,
// and on a full disk, fail within 5 s naming the cause, with the default
// retry budget (which would otherwise retry for minutes). Local: another
// user's folder (the binary runs as an unprivileged uid through setpriv,
// since root ignores permissions), a read-only bind mount, a full tmpfs.
// S3: a versitygw user whose bucket policy grants reading only, a bucket
// name S3 refuses, a versitygw whose disk is full. Helper names start with
// unw.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/scalr-platform/scalr-backup/internal/testenv"
)

// unwLimit is how fast a failure no retry can fix must be reported.
const unwLimit = 5 * time.Second

// unwCase is one command that must fail fast, naming the cause.
type unwCase struct {
	name  string
	args  []string
	stdin func() io.Reader
	want  string // in the error line
}

// unwCommands are backup and prune into an existing repository.
func unwCommands(want string) []unwCase {
	return []unwCase{
		{"backup", []string{"backup", "--stdin", "--stdin-filename", "db"}, func() io.Reader { return newMixedStream(7, 8<<20) }, want},
		{"prune", []string{"prune"}, nil, want},
	}
}

// unwRun runs the binary with env (nothing inherited but PATH) and
// checks it fails within unwLimit naming want; prefix runs it through
// another program (setpriv).
func unwRun(t *testing.T, bin string, prefix []string, env []string, c unwCase) {
	t.Helper()
	args := append(append(append([]string(nil), prefix...), bin), c.args...)
	cmd := exec.CommandContext(t.Context(), args[0], args[1:]...)
	cmd.Env = env
	if c.stdin != nil {
		cmd.Stdin = c.stdin()
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	var exitErr *exec.ExitError
	code := 0
	switch {
	case err == nil:
	case errors.As(err, &exitErr):
		code = exitErr.ExitCode()
	default:
		t.Fatalf("%s: %v", c.name, err)
	}
	res := cliRun{args: c.args, code: code, stdout: stdout.Bytes(), stderr: stderr.Bytes()}
	line := s3fErrorLine(t, res)
	t.Logf("%s: exit %d in %s: %s", c.name, code, took.Round(time.Millisecond), line)
	if code == 0 || took > unwLimit || !strings.Contains(line, c.want) {
		t.Errorf("%s: want a failure within %s naming %q, got exit %d after %s: %s", c.name, unwLimit, c.want, code, took, res)
	}
	if strings.Contains(stderr.String(), "storage retry") || strings.Contains(line, "attempts") {
		t.Errorf("%s: retried: %s", c.name, res)
	}
}

// unwEnv is a minimal environment for the binary: repository, password,
// a home, and extra entries.
func unwEnv(home, loc, password string, extra ...string) []string {
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"XDG_CACHE_HOME=" + filepath.Join(home, ".cache"),
		"RESTIC_REPOSITORY=" + loc,
		"RESTIC_PASSWORD=" + password,
	}
	return append(env, extra...)
}

// unwMount mounts src on dir with mount(8) options and undoes it when the
// test ends.
func unwMount(t *testing.T, src, dir string, args ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Missing(t, "mounting needs root")
	}
	if out, err := exec.Command("mount", append(args, src, dir)...).CombinedOutput(); err != nil {
		t.Fatalf("mount %v %s: %v %s", args, dir, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v %s", dir, err, out)
		}
	})
}

// unwFill fills the file system holding dir with a file until it is full.
func unwFill(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			break
		}
	}
	// Smaller writes take the last few bytes.
	for _, n := range []int{4096, 512, 1} {
		for {
			if _, err := f.Write(buf[:n]); err != nil {
				break
			}
		}
	}
}

// unwFree shrinks the filler unwFill made by n bytes.
func unwFree(t *testing.T, dir string, n int64) {
	t.Helper()
	p := filepath.Join(dir, "filler")
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, max(0, fi.Size()-n)); err != nil {
		t.Fatal(err)
	}
}

// unwPublicBinary copies the binary where an unprivileged user can run it.
func unwPublicBinary(t *testing.T) (bin, dir string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "scalr-backup-unw-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(testBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	bin = filepath.Join(dir, "scalr-backup")
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, dir
}

// TestUnwritableLocal: another user's folder, a read-only mount, a full
// disk.
func TestUnwritableLocal(t *testing.T) {
	testenv.Integration(t)
	if os.Geteuid() != 0 {
		testenv.Missing(t, "needs root to drop to another uid and to mount")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		testenv.Missing(t, "setpriv not found")
	}
	bin, pub := unwPublicBinary(t)
	const pw = "unwritable test"

	t.Run("another user's folder", func(t *testing.T) {
		// A repository root made and owns: nobody may read it, not
		// write it.
		base := filepath.Join(pub, "root-owned")
		if err := os.Mkdir(base, 0o755); err != nil {
			t.Fatal(err)
		}
		loc := filepath.Join(base, "repo")
		home := filepath.Join(pub, "home")
		os.Mkdir(home, 0o777)
		rootEnv := unwEnv(home, loc, pw)
		ours := &ourCLI{bin: bin, env: rootEnv}
		ours.mustRun(t, nil, "init")
		ours.mustRun(t, newMixedStream(1, 1<<20), "backup", "--stdin", "--stdin-filename", "db")
		if out, err := exec.Command("chmod", "-R", "go+rX", loc).CombinedOutput(); err != nil {
			t.Fatalf("chmod: %v %s", err, out)
		}
		nobody := []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"}
		env := unwEnv(home, loc, pw)
		// It can read...
		cmd := exec.Command(nobody[0], append(nobody[1:], bin, "snapshots")...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("the unprivileged user cannot read the repository: %v %s", err, out)
		}
		// ...but not write.
		unwRun(t, bin, nobody, unwEnv(home, filepath.Join(base, "new"), pw), unwCase{"init", []string{"init"}, nil, "permission denied"})
		for _, c := range unwCommands("permission denied") {
			unwRun(t, bin, nobody, env, c)
		}
	})

	t.Run("read-only mount", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "ro")
		os.Mkdir(dir, 0o700)
		loc := filepath.Join(dir, "repo")
		home := t.TempDir()
		ours := &ourCLI{bin: bin, env: unwEnv(home, loc, pw)}
		ours.mustRun(t, nil, "init")
		ours.mustRun(t, newMixedStream(1, 1<<20), "backup", "--stdin", "--stdin-filename", "db")
		unwMount(t, dir, dir, "--bind", "-o", "ro")
		if out, err := exec.Command("mount", "-o", "remount,bind,ro", dir).CombinedOutput(); err != nil {
			t.Fatalf("remount read-only: %v %s", err, out)
		}
		unwRun(t, bin, nil, unwEnv(home, filepath.Join(dir, "new"), pw), unwCase{"init", []string{"init"}, nil, "read-only file system"})
		for _, c := range unwCommands("read-only file system") {
			unwRun(t, bin, nil, unwEnv(home, loc, pw), c)
		}
	})

	t.Run("full disk", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "small")
		os.Mkdir(dir, 0o700)
		unwMount(t, "tmpfs", dir, "-t", "tmpfs", "-o", "size=4m")
		loc := filepath.Join(dir, "repo")
		home := t.TempDir()
		ours := &ourCLI{bin: bin, env: unwEnv(home, loc, pw)}
		ours.mustRun(t, nil, "init")
		ours.mustRun(t, newMixedStream(1, 1<<20), "backup", "--stdin", "--stdin-filename", "db")
		unwFill(t, dir)
		unwRun(t, bin, nil, unwEnv(home, filepath.Join(dir, "new"), pw), unwCase{"init", []string{"init"}, nil, "no space left on device"})
		for _, c := range unwCommands("no space left on device") {
			unwRun(t, bin, nil, unwEnv(home, loc, pw), c)
		}
		// Room for the lock but not for the data: the pack fails.
		unwFree(t, dir, 256<<10)
		unwRun(t, bin, nil, unwEnv(home, loc, pw), unwCase{"backup, disk full mid-way", []string{"backup", "--stdin", "--stdin-filename", "db2"},
			func() io.Reader { return newMixedStream(8, 32<<20) }, "no space left on device"})
		// With room again, the repository is intact for both CLIs.
		os.Remove(filepath.Join(dir, "filler"))
		ours.mustRun(t, nil, "check", "--read-data")
		testenv.Restic(t, testenv.Restic0181).WithEnv("RESTIC_PASSWORD="+pw).MustRun(t, loc, "", nil, "check", "--read-data")
	})
}

// TestUnwritableS3: a read-only user, a refused bucket name, a full disk
// behind versitygw.
func TestUnwritableS3(t *testing.T) {
	testenv.Integration(t)
	bin := testBinary(t)
	const pw = "unwritable s3 test"

	t.Run("read-only user", func(t *testing.T) {
		srv := testenv.StartS3With(t, testenv.S3Options{IAM: true})
		loc := srv.URL("unw-ro")
		home := t.TempDir()
		root := &ourCLI{bin: bin, env: unwEnv(home, loc, pw, srv.Env()...)}
		root.mustRun(t, nil, "init")
		root.mustRun(t, newMixedStream(1, 1<<20), "backup", "--stdin", "--stdin-filename", "db")
		const user, secret = "unwreader", "unw-reader-secret-0123456789"
		srv.AddUser(t, user, secret)
		unwPolicy(t, srv, "unw-ro", user)
		readerEnv := []string{"AWS_ACCESS_KEY_ID=" + user, "AWS_SECRET_ACCESS_KEY=" + secret, "AWS_DEFAULT_REGION=" + testenv.S3Region}
		env := unwEnv(home, loc, pw, readerEnv...)
		if res := (&ourCLI{bin: bin, env: env}).run(t, nil, "snapshots"); res.code != 0 {
			t.Fatalf("the read-only user cannot read: %s", res)
		}
		unwRun(t, bin, nil, unwEnv(home, srv.URL("unw-new"), pw, readerEnv...), unwCase{"init", []string{"init"}, nil, "AccessDenied"})
		for _, c := range unwCommands("AccessDenied") {
			unwRun(t, bin, nil, env, c)
		}
		unwRun(t, bin, nil, unwEnv(home, srv.URL("Not_A_Bucket"), pw, srv.Env()...), unwCase{"init, bad bucket name", []string{"init"}, nil, "bucket name is not valid"})
	})

	t.Run("full disk", func(t *testing.T) {
		if os.Geteuid() != 0 {
			testenv.Missing(t, "mounting a tmpfs needs root")
		}
		dir := filepath.Join(t.TempDir(), "vgw")
		os.Mkdir(dir, 0o700)
		unwMount(t, "tmpfs", dir, "-t", "tmpfs", "-o", "size=6m")
		srv := testenv.StartS3With(t, testenv.S3Options{DataDir: dir})
		loc := srv.URL("unw-full")
		home := t.TempDir()
		ours := &ourCLI{bin: bin, env: unwEnv(home, loc, pw, srv.Env()...)}
		ours.mustRun(t, nil, "init")
		ours.mustRun(t, newMixedStream(1, 1<<20), "backup", "--stdin", "--stdin-filename", "db")
		// A second bucket before the disk fills, for init.
		unwMakeBucket(t, srv, "unw-later")
		unwFill(t, dir)
		unwRun(t, bin, nil, unwEnv(home, srv.URL("unw-later"), pw, srv.Env()...), unwCase{"init", []string{"init"}, nil, "InsufficientStorage"})
		for _, c := range unwCommands("InsufficientStorage") {
			unwRun(t, bin, nil, ours.env, c)
		}
		unwFree(t, dir, 256<<10)
		unwRun(t, bin, nil, ours.env, unwCase{"backup, disk full mid-way", []string{"backup", "--stdin", "--stdin-filename", "db2"},
			func() io.Reader { return newMixedStream(8, 32<<20) }, "InsufficientStorage"})
		os.Remove(filepath.Join(dir, "filler"))
		ours.mustRun(t, nil, "check", "--read-data")
		testenv.Restic(t, testenv.Restic0181).WithEnv(append(srv.Env(), "RESTIC_PASSWORD="+pw)...).MustRun(t, loc, "", nil, "check", "--read-data")
	})
}

// unwClient is a minio client with the server's root credentials.
func unwClient(t *testing.T, srv *testenv.S3Server) *minio.Client {
	t.Helper()
	c, err := minio.New(srv.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(srv.KeyID, srv.Secret, ""), Region: testenv.S3Region})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func unwMakeBucket(t *testing.T, srv *testenv.S3Server, bucket string) {
	t.Helper()
	if err := unwClient(t, srv).MakeBucket(context.Background(), bucket, minio.MakeBucketOptions{Region: testenv.S3Region}); err != nil {
		t.Fatal(err)
	}
}

// unwPolicy lets user read bucket and nothing else.
func unwPolicy(t *testing.T, srv *testenv.S3Server, bucket, user string) {
	t.Helper()
	policy := fmt.Sprintf(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":[%q]},`+
		`"Action":["s3:GetObject","s3:ListBucket","s3:GetBucketLocation"],"Resource":["arn:aws:s3:::%s","arn:aws:s3:::%s/*"]}]}`,
		user, bucket, bucket)
	if err := unwClient(t, srv).SetBucketPolicy(context.Background(), bucket, policy); err != nil {
		t.Fatalf("bucket policy: %v", err)
	}
}
