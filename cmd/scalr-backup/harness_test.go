package main

// The one CLI test harness: the command in-process (runCLI), the built
// binary (testBinary, runBinaryEnv), a clean environment for children, and
// the small helpers every CLI test file shares.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// testBuild is the binary built once per test process.
var testBuild struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// TestMain removes the binary built for the tests that run it.
func TestMain(m *testing.M) {
	code := m.Run()
	if testBuild.dir != "" {
		os.RemoveAll(testBuild.dir)
	}
	os.Exit(code)
}

// testBinary builds cmd/scalr-backup once per test process and returns the
// binary's path.
func testBinary(t *testing.T) string {
	t.Helper()
	testBuild.once.Do(func() {
		goTool, err := exec.LookPath("go")
		if err != nil {
			testBuild.err = fmt.Errorf("the go tool is not on PATH: %w", err)
			return
		}
		dir, err := os.MkdirTemp("", "scalr-backup-test-")
		if err != nil {
			testBuild.err = err
			return
		}
		testBuild.dir = dir
		path := filepath.Join(dir, "scalr-backup")
		cmd := exec.Command(goTool, "build", "-o", path, ".")
		if out, err := cmd.CombinedOutput(); err != nil {
			testBuild.err = fmt.Errorf("go build: %v\n%s", err, out)
			return
		}
		testBuild.path = path
	})
	if testBuild.err != nil {
		t.Fatalf("build scalr-backup: %v", testBuild.err)
	}
	return testBuild.path
}

// result is one CLI invocation's outcome.
type result struct {
	code           int
	stdout, stderr string
}

// runCLI runs the command in-process with exactly env as its environment.
func runCLI(t *testing.T, env map[string]string, stdin io.Reader, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	if stdin == nil {
		stdin = strings.NewReader("")
	}
	a := &app{stdin: stdin, stdout: &out, stderr: &errb, getenv: func(k string) string { return env[k] }}
	code := a.run(context.Background(), args)
	return result{code, out.String(), errb.String()}
}

// runBinaryEnv runs the built binary with exactly env (plus PATH).
func runBinaryEnv(t *testing.T, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(testBinary(t), args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return result{code, out.String(), errb.String()}
}

// cleanEnv is the test process's environment without anything that could
// point a child at another repository, password, credentials or home.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "RESTIC_") || strings.HasPrefix(k, "AWS_") || strings.HasPrefix(k, "XDG_") ||
			strings.HasPrefix(k, "SCALR_BACKUP_") || k == "HOME" {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// writePasswordFile writes password to a fresh 0600 file and returns its path.
func writePasswordFile(t *testing.T, password string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(p, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// freeAddr is a loopback address nothing listens on (for a moment).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func randomBytes(seed int64, n int) []byte {
	b := make([]byte, n)
	rand.New(rand.NewSource(seed)).Read(b)
	return b
}
