package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/scalr-platform/scalr-backup/backend/local"
	"github.com/scalr-platform/scalr-backup/internal/testenv"
	"github.com/scalr-platform/scalr-backup/repo"
)

// chkErrorsFound is how a failed check's error message counts errors.
var chkErrorsFound = regexp.MustCompile(`repository contains errors: \d+ errors? (was|were) found`)

// chkCopy copies the repository at dir into a fresh folder and returns it.
func chkCopy(t *testing.T, dir string) string {
	t.Helper()
	cp := filepath.Join(t.TempDir(), "repo")
	if err := os.CopyFS(cp, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	return cp
}

// chkFiles lists the files below dir/sub, largest first.
func chkFiles(t *testing.T, dir, sub string) []string {
	t.Helper()
	type file struct {
		path string
		size int64
	}
	var files []file
	err := filepath.WalkDir(filepath.Join(dir, sub), func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			files = append(files, file{p, fi.Size()})
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(files, func(i, j int) bool { return files[i].size > files[j].size })
	out := make([]string, len(files))
	for i, f := range files {
		out[i] = f.path
	}
	return out
}

// chkRewrite applies edit to the file at p (repositories store read-only files).
func chkRewrite(t *testing.T, p string, edit func([]byte) []byte) {
	t.Helper()
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, edit(b), 0o600); err != nil {
		t.Fatal(err)
	}
}

// chkDamage is one of the corruptions of acceptance point 4: it damages the
// repository at dir and returns the name of the damaged object as check
// must report it.
type chkDamage struct {
	name string
	// found: whether check without --read-data reports it (with
	// --read-data, every damage is reported).
	found bool
	apply func(t *testing.T, dir string) string
}

var chkDamages = []chkDamage{
	{"flip a byte in a data pack", false, func(t *testing.T, dir string) string {
		p := chkFiles(t, dir, "data")[0] // the data pack is the largest
		chkRewrite(t, p, func(b []byte) []byte { b[len(b)/3] ^= 0x20; return b })
		return filepath.Base(p)
	}},
	{"truncate a data pack", true, func(t *testing.T, dir string) string {
		p := chkFiles(t, dir, "data")[0]
		chkRewrite(t, p, func(b []byte) []byte { return b[:len(b)/2] })
		return filepath.Base(p)
	}},
	{"delete a data pack", true, func(t *testing.T, dir string) string {
		p := chkFiles(t, dir, "data")[0]
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		return filepath.Base(p)
	}},
	{"delete an index file", true, func(t *testing.T, dir string) string {
		p := chkFiles(t, dir, "index")[0]
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
		// What is named is the snapshot's tree that no index lists now.
		return "not found in index"
	}},
}

func TestCheckCLIClean(t *testing.T) {
	env := newRepoEnv(t, 2)
	backupJSON(t, env, randomBytes(10, 2<<20), "--stdin-filename", "a")
	backupJSON(t, env, []byte("small"), "--stdin-filename", "b")
	for _, args := range [][]string{{"check"}, {"check", "--read-data"}, {"check", "--read-data-subset", "1/3"}, {"check", "--read-data-subset", "50%"}, {"check", "--no-lock"}} {
		res := runCLI(t, env, nil, args...)
		if res.code != 0 {
			t.Fatalf("%v: exit %d\n%s\n%s", args, res.code, res.stdout, res.stderr)
		}
		want := []string{"load indexes\n", "check all packs\n", "check snapshots, trees and blobs\n", "no errors were found\n"}
		if args[len(args)-1] == "--read-data" {
			want = append(want, "read all data\n")
		}
		for _, w := range want {
			if !strings.Contains(res.stdout, w) {
				t.Errorf("%v: output lacks %q:\n%s", args, w, res.stdout)
			}
		}
		if res.stderr != "" {
			t.Errorf("%v: stderr %q", args, res.stderr)
		}
	}
	res := runCLI(t, env, nil, "check", "--read-data", "--json")
	var sum checkSummary
	if err := json.Unmarshal([]byte(res.stdout), &sum); err != nil || res.code != 0 {
		t.Fatalf("--json: exit %d, %v: %q", res.code, err, res.stdout)
	}
	if sum.MessageType != "summary" || sum.NumErrors != 0 || sum.Snapshots != 2 || sum.PacksRead != sum.Packs || sum.Packs == 0 || len(sum.Errors) != 0 {
		t.Fatalf("--json summary %+v", sum)
	}
	if res := runCLI(t, env, nil, "check", "--quiet"); res.code != 0 || res.stdout != "" {
		t.Fatalf("--quiet: exit %d, %q", res.code, res.stdout)
	}
	for _, bad := range [][]string{
		{"check", "--read-data", "--read-data-subset", "1/2"},
		{"check", "--read-data-subset", "0/2"},
		{"check", "--read-data-subset", "3/2"},
		{"check", "--read-data-subset", "1/300"},
		{"check", "--read-data-subset", "0%"},
		{"check", "--read-data-subset", "x"},
		{"check", "extra-arg"},
	} {
		if res := runCLI(t, env, nil, bad...); res.code != exitError {
			t.Errorf("%v: exit %d: %s", bad, res.code, res.stderr)
		}
	}
}

func TestCheckCLILocked(t *testing.T) {
	env := newRepoEnv(t, 2)
	backupJSON(t, env, []byte("data"), "--stdin-filename", "a")
	ctx := context.Background()
	be, err := local.Open(env["RESTIC_REPOSITORY"])
	if err != nil {
		t.Fatal(err)
	}
	r, err := repo.Open(ctx, be, testPassword, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	l, err := r.Lock(ctx, false) // a backup in progress
	if err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(ctx)
	if res := runCLI(t, env, nil, "check"); res.code != exitLocked || !strings.Contains(res.stderr, "locked") || !strings.Contains(res.stderr, "--retry-lock") {
		t.Fatalf("check while locked: exit %d: %s", res.code, res.stderr)
	}
	if res := runCLI(t, env, nil, "check", "--no-lock"); res.code != 0 {
		t.Fatalf("check --no-lock: exit %d: %s", res.code, res.stderr)
	}
}

// TestCheckCLIDamage is acceptance point 4: each corruption is reported by
// `check --read-data`, naming the object, with a non-zero exit; `check`
// alone reports those it can see; and `dump` of the affected file fails
// instead of writing wrong bytes.
func TestCheckCLIDamage(t *testing.T) {
	env := newRepoEnv(t, 2)
	data := randomBytes(11, 3<<20)
	snap := backupJSON(t, env, data, "--stdin-filename", "app.pgdump")
	base := env["RESTIC_REPOSITORY"]
	for _, d := range chkDamages {
		t.Run(d.name, func(t *testing.T) {
			dir := chkCopy(t, base)
			env := map[string]string{"RESTIC_REPOSITORY": dir, "RESTIC_PASSWORD": testPassword}
			object := d.apply(t, dir)

			res := runCLI(t, env, nil, "check", "--read-data")
			t.Logf("check --read-data: exit %d\n%s%s", res.code, res.stdout, res.stderr)
			if res.code != exitError || !strings.Contains(res.stderr, object) || !chkErrorsFound.MatchString(res.stderr) {
				t.Errorf("check --read-data: exit %d, want %d and %q named:\n%s", res.code, exitError, object, res.stderr)
			}
			if strings.Contains(res.stdout, "no errors were found") {
				t.Errorf("check --read-data claims no errors:\n%s", res.stdout)
			}
			if d.name == "delete an index file" && !strings.Contains(res.stderr, "in snapshot "+snap[:8]) {
				t.Errorf("the snapshot whose tree is no longer indexed is not named:\n%s", res.stderr)
			}

			res = runCLI(t, env, nil, "check")
			t.Logf("check: exit %d\n%s%s", res.code, res.stdout, res.stderr)
			if d.found {
				if res.code != exitError || !strings.Contains(res.stderr, object) || !chkErrorsFound.MatchString(res.stderr) {
					t.Errorf("check: exit %d, want %d and %q named:\n%s", res.code, exitError, object, res.stderr)
				}
			} else if res.code != 0 || !strings.Contains(res.stdout, "no errors were found") {
				t.Errorf("check without --read-data: exit %d, want 0 (only reading finds this):\n%s%s", res.code, res.stdout, res.stderr)
			}

			res = runCLI(t, env, nil, "check", "--read-data", "--json")
			var sum checkSummary
			if err := json.Unmarshal([]byte(res.stdout), &sum); err != nil || res.code != exitError || sum.NumErrors == 0 || sum.NumErrors != len(sum.Errors) {
				t.Errorf("check --json: exit %d, %v, %+v", res.code, err, sum)
			}

			res = runCLI(t, env, nil, "dump", snap[:8], "/app.pgdump")
			if res.code == 0 || bytes.Equal([]byte(res.stdout), data) {
				t.Errorf("dump of the damaged file: exit %d, %d bytes", res.code, len(res.stdout))
			}
			if !bytes.HasPrefix(data, []byte(res.stdout)) {
				t.Errorf("dump wrote %d bytes that are not a prefix of the file", len(res.stdout))
			}
			if !strings.Contains(res.stderr, "scalr-backup: ") {
				t.Errorf("dump printed no error: %q", res.stderr)
			}
		})
	}
}

// TestCheckCLIDamagedJSON checks the JSON summary names broken packs.
func TestCheckCLIDamagedJSON(t *testing.T) {
	env := newRepoEnv(t, 1)
	backupJSON(t, env, randomBytes(12, 1<<20), "--stdin-filename", "a")
	pack := chkDamages[0].apply(t, env["RESTIC_REPOSITORY"])
	res := runCLI(t, env, nil, "--json", "check", "--read-data")
	var sum checkSummary
	if err := json.Unmarshal([]byte(res.stdout), &sum); err != nil {
		t.Fatalf("%v: %q", err, res.stdout)
	}
	if res.code != exitError || len(sum.BrokenPacks) != 1 || sum.BrokenPacks[0] != pack || sum.NumErrors < 1 {
		t.Fatalf("exit %d, summary %+v", res.code, sum)
	}
	for _, e := range sum.Errors {
		if e.Kind != repo.ProblemPackData || !strings.Contains(e.Object, pack) {
			t.Errorf("error %+v", e)
		}
	}
}

// TestCheckAgreesWithRestic runs restic 0.18.1's check and ours on a
// repository restic wrote, clean and after each corruption, with and
// without --read-data: both must say error, or both ok.
func TestCheckAgreesWithRestic(t *testing.T) {
	testenv.Integration(t)
	rc := testenv.Restic(t, testenv.Restic0181)
	const pw = "check agreement"
	base := filepath.Join(t.TempDir(), "restic-repo")
	rc.MustRun(t, base, pw, nil, "init")
	rc.MustRun(t, base, pw, bytes.NewReader(randomBytes(20, 4<<20)), "backup", "--stdin", "--stdin-filename", "first.dump")
	before := map[string]bool{}
	for _, sub := range []string{"index", "snapshots"} {
		for _, p := range chkFiles(t, base, sub) {
			before[p] = true
		}
	}
	rc.MustRun(t, base, pw, bytes.NewReader(randomBytes(21, 1<<20)), "backup", "--stdin", "--stdin-filename", "second.dump")

	cases := []chkDamage{{"clean", false, func(t *testing.T, dir string) string { return "" }}}
	cases = append(cases, chkDamages...)
	cases = append(cases, chkDamage{"unreferenced packs only", false, func(t *testing.T, dir string) string {
		// Forget the second backup's index and snapshot: its packs stay,
		// named by no index. restic calls that non-critical.
		for _, sub := range []string{"index", "snapshots"} {
			for _, p := range chkFiles(t, dir, sub) {
				rel, _ := filepath.Rel(dir, p)
				if !before[filepath.Join(base, rel)] {
					if err := os.Remove(p); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
		return ""
	}})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := chkCopy(t, base)
			c.apply(t, dir)
			env := map[string]string{"RESTIC_REPOSITORY": dir, "RESTIC_PASSWORD": pw}
			for _, readData := range []bool{false, true} {
				args := []string{"check"}
				if readData {
					args = append(args, "--read-data")
				}
				theirs, err := rc.Run(t.Context(), dir, pw, nil, args...)
				if err != nil {
					t.Fatal(err)
				}
				ours := runCLI(t, env, nil, args...)
				t.Logf("%v: restic exit %d, ours exit %d\nrestic:\n%s%s\nours:\n%s%s", args, theirs.ExitCode, ours.code,
					theirs.Stdout, theirs.Stderr, ours.stdout, ours.stderr)
				if (theirs.ExitCode == 0) != (ours.code == 0) {
					t.Errorf("%v disagree: restic exit %d, ours exit %d", args, theirs.ExitCode, ours.code)
				}
				wantOK := c.name == "clean" || c.name == "unreferenced packs only" || (!readData && !c.found)
				if (ours.code == 0) != wantOK {
					t.Errorf("%v: exit %d, want ok=%v", args, ours.code, wantOK)
				}
			}
		})
	}
}

// TestCheckCLIUnreferenced: packs no index names are non-critical, as in
// restic: exit 0, one summary line, the list with --verbose.
func TestCheckCLIUnreferenced(t *testing.T) {
	env := newRepoEnv(t, 2)
	dir := env["RESTIC_REPOSITORY"]
	backupJSON(t, env, randomBytes(13, 1<<20), "--stdin-filename", "a")
	keep := map[string]bool{}
	for _, sub := range []string{"index", "snapshots"} {
		for _, p := range chkFiles(t, dir, sub) {
			keep[p] = true
		}
	}
	backupJSON(t, env, randomBytes(14, 1<<20), "--stdin-filename", "b")
	for _, sub := range []string{"index", "snapshots"} {
		for _, p := range chkFiles(t, dir, sub) {
			if !keep[p] {
				if err := os.Remove(p); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	res := runCLI(t, env, nil, "check", "--read-data")
	if res.code != 0 || !strings.Contains(res.stdout, "2 additional files were found") || !strings.Contains(res.stdout, "no errors were found") {
		t.Fatalf("exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	res = runCLI(t, env, nil, "check", "--verbose")
	if res.code != 0 || strings.Count(res.stdout, "not referenced in any index") != 2 {
		t.Fatalf("--verbose: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	res = runCLI(t, env, nil, "check", "--json")
	var sum checkSummary
	if err := json.Unmarshal([]byte(res.stdout), &sum); err != nil || res.code != 0 || len(sum.Hints) != 2 || !sum.SuggestPrune || sum.NumErrors != 0 {
		t.Fatalf("--json: exit %d, %v, %+v", res.code, err, sum)
	}
}
