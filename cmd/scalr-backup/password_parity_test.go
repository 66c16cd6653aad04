package main

// Passwords are read exactly as restic reads them: the same password file or
// command opens the same repository with scalr-backup and with restic 0.14
// and 0.18.1, whichever created it.

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/scalr-platform/scalr-backup/internal/testenv"
	"github.com/scalr-platform/scalr-backup/repoenv"
)

// passwordFiles are password files restic reads in its own way: the whole
// file, a byte order mark dropped, white space trimmed at both ends.
var passwordFiles = []struct {
	name    string
	content []byte
	want    string
}{
	{"plain", []byte("pw-plain\n"), "pw-plain"},
	{"spaces", []byte("  pw spaced  \n"), "pw spaced"},
	{"tabs", []byte("\tpw-tabs\t\n\n"), "pw-tabs"},
	{"crlf", []byte("pw-crlf\r\n"), "pw-crlf"},
	{"utf8-bom", []byte("\xef\xbb\xbfpw-bom\n"), "pw-bom"},
	{"utf16le-bom", []byte("\xff\xfep\x00w\x00-\x001\x006\x00\n\x00"), "pw-16"},
	{"two-lines", []byte("first line\nsecond line\n"), "first line\nsecond line"},
	{"no-newline", []byte("pw-bare"), "pw-bare"},
}

// TestPasswordFileBytes reads each file through repoenv.ReadPasswordFile,
// as every command does.
func TestPasswordFileBytes(t *testing.T) {
	dir := t.TempDir()
	for _, c := range passwordFiles {
		file := filepath.Join(dir, c.name)
		if err := os.WriteFile(file, c.content, 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := repoenv.ReadPasswordFile(file)
		if err != nil || got != c.want {
			t.Errorf("%s: %q %v, want %q", c.name, got, err, c.want)
		}
	}
}

func TestPasswordParityWithRestic(t *testing.T) {
	testenv.Integration(t)
	testenv.EachRestic(t, func(t *testing.T, r *testenv.ResticCLI) {
		for _, c := range passwordFiles {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel() // scrypt-bound: both cores
				dir := t.TempDir()
				file := filepath.Join(dir, "pw")
				if err := os.WriteFile(file, c.content, 0o600); err != nil {
					t.Fatal(err)
				}
				rf := r.WithEnv("RESTIC_PASSWORD_FILE=" + file)
				// Ours creates, restic opens with the same file.
				ours := filepath.Join(dir, "ours")
				env := map[string]string{"RESTIC_REPOSITORY": ours, "RESTIC_PASSWORD_FILE": file}
				if res := runCLI(t, env, nil, "init"); res.code != 0 {
					t.Fatalf("init: %d %s", res.code, res.stderr)
				}
				rf.MustRun(t, ours, "", nil, "cat", "config")
				// And with the password given plainly (the trimmed one).
				r.MustRun(t, ours, c.want, nil, "cat", "config")
				// restic creates, ours opens with the same file.
				theirs := filepath.Join(dir, "theirs")
				rf.MustRun(t, theirs, "", nil, "init")
				env["RESTIC_REPOSITORY"] = theirs
				if res := runCLI(t, env, nil, "cat", "config"); res.code != 0 {
					t.Fatalf("scalr-backup cannot open restic's repository with the same file: %d %s", res.code, res.stderr)
				}
				// The same bytes as a password command's output: restic
				// trims it but keeps a byte order mark; ours must agree.
				delete(env, "RESTIC_PASSWORD_FILE")
				env["RESTIC_PASSWORD_COMMAND"] = "cat " + file
				ourRes := runCLI(t, env, nil, "cat", "config")
				theirRes, err := r.WithEnv("RESTIC_PASSWORD_COMMAND=cat "+file).Run(t.Context(), theirs, "", nil, "cat", "config")
				if err != nil {
					t.Fatal(err)
				}
				if (ourRes.code == 0) != (theirRes.ExitCode == 0) {
					t.Fatalf("password command: ours exits %d, restic %d (%s)", ourRes.code, theirRes.ExitCode, theirRes.Stderr)
				}
			})
		}
	})
}
