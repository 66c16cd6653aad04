package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// dump into a pipe grows the pipe's buffer to 1 MiB and writes the file
// unchanged; growPipe leaves files and other writers alone.
func TestDumpGrowsPipe(t *testing.T) {
	env := newRepoEnv(t, 2)
	data := randomBytes(7, 5<<20)
	backupJSON(t, env, data, "--stdin-filename", "app.pgdump")

	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	before, err := unix.FcntlInt(pr.Fd(), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		t.Fatal(err)
	}
	var errb bytes.Buffer
	a := &app{stdin: strings.NewReader(""), stdout: pw, stderr: &errb, getenv: func(k string) string { return env[k] }}
	code := make(chan int, 1)
	go func() {
		code <- a.run(context.Background(), []string{"dump", "latest", "/app.pgdump"})
		pw.Close()
	}()
	got, err := io.ReadAll(pr)
	if err != nil {
		t.Fatal(err)
	}
	if c := <-code; c != 0 || !bytes.Equal(got, data) {
		t.Fatalf("dump into a pipe: exit %d, %d of %d bytes, same %v: %s", c, len(got), len(data), bytes.Equal(got, data), errb.String())
	}
	after, err := unix.FcntlInt(pr.Fd(), unix.F_GETPIPE_SZ, 0)
	if err != nil {
		t.Fatal(err)
	}
	if after != pipeSize {
		t.Fatalf("pipe buffer %d bytes before the dump, %d after; want %d", before, after, pipeSize)
	}

	f, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	growPipe(f)
	growPipe(&bytes.Buffer{})
	if _, err := f.WriteString("still a file"); err != nil {
		t.Fatal(err)
	}
}

// A dump whose reader goes away fails with EPIPE instead of being killed
// by SIGPIPE, so it says so and leaves no lock behind.
func TestDumpIntoClosedPipe(t *testing.T) {
	env := newRepoEnv(t, 2)
	backupJSON(t, env, randomBytes(8, 12<<20), "--stdin-filename", "app.pgdump")

	cmd := exec.Command(testBinary(t), "dump", "latest", "/app.pgdump")
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var errb strings.Builder
	cmd.Stderr = &errb
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(out, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	out.Close()
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitError {
		t.Fatalf("dump into a closed pipe: %v (want exit code %d, not a signal); stderr: %s", err, exitError, errb.String())
	}
	if !strings.Contains(errb.String(), "broken pipe") || !strings.Contains(errb.String(), "/app.pgdump") {
		t.Fatalf("stderr does not say what failed: %s", errb.String())
	}
	locks, err := os.ReadDir(filepath.Join(env["RESTIC_REPOSITORY"], "locks"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	if len(locks) != 0 {
		t.Fatalf("%d lock(s) left after the failed dump", len(locks))
	}
}
