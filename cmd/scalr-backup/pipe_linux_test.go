package main

import (
	"bytes"
	"context"
	"io"
	"os"
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
