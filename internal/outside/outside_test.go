// Package outside holds one test: a program in a module of its own, which
// reaches this module only through a replace directive, builds against the
// exported API and does the library's main jobs on a real S3 server,
// checked afterwards by the restic CLI. It is what keeps internal types
// out of the API another SCALR tool needs.
package outside

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/internal/testenv"
)

// moduleRoot is the scalr-backup module's folder (two above this file's).
func moduleRoot(t *testing.T) string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("no caller information")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// buildOutside writes a module around testdata/prog/main.go that requires
// scalr-backup through a replace directive and builds it. Its go.mod
// requires what this module's go.mod requires, at the same versions, and
// its go.sum is this module's: the module graph is this module's own, and
// every module the build fetches (from the module cache, else the
// configured proxy) is checked against this module's go.sum.
func buildOutside(t *testing.T) string {
	t.Helper()
	root := moduleRoot(t)
	dir := t.TempDir()
	src, err := os.ReadFile(filepath.Join("testdata", "prog", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	sum, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	ours, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	gomod := "module example.com/outside\n\n" + goDirective(string(ours)) + "\n" +
		"require github.com/scalr-platform/scalr-backup v0.0.0\n\n" + requireBlocks(string(ours)) +
		"\nreplace github.com/scalr-platform/scalr-backup => " + root + "\n"
	for name, data := range map[string][]byte{"go.mod": []byte(gomod), "go.sum": sum, "main.go": src} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "outside")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build in %s: %v\n%s\ngo.mod:\n%s", dir, err, out, gomod)
	}
	return bin
}

// goDirective is a go.mod's go line.
func goDirective(gomod string) string {
	for _, line := range strings.Split(gomod, "\n") {
		if strings.HasPrefix(line, "go ") {
			return line + "\n"
		}
	}
	return ""
}

// requireBlocks are the require directives of a go.mod, as written.
func requireBlocks(gomod string) string {
	var b strings.Builder
	in := false
	for _, line := range strings.Split(gomod, "\n") {
		switch {
		case strings.HasPrefix(line, "require ("):
			in = true
		case in && strings.TrimSpace(line) == ")":
			in = false
			b.WriteString(")\n")
			continue
		case !in && !strings.HasPrefix(line, "require "):
			continue
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}

type summary struct {
	Created      bool     `json:"created"`
	SnapshotID   string   `json:"snapshot_id"`
	Written      string   `json:"written_sha256"`
	Read         string   `json:"read_sha256"`
	PassOK       bool     `json:"pass_ok"`
	PassTargets  []string `json:"pass_targets"`
	PassSnapshot []string `json:"pass_snapshots"`
}

func TestOutsideModuleProgram(t *testing.T) {
	testenv.Integration(t)
	restic := testenv.Restic(t, testenv.Restic0181)
	s3 := testenv.StartS3(t)
	bin := buildOutside(t)
	loc := s3.URL("outside")
	const pw = "outside password"

	run := func() summary {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin)
		cmd.Env = append(scrubbed(), append(s3.Env(), "RESTIC_REPOSITORY="+loc, "RESTIC_PASSWORD="+pw)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("the outside program: %v\n%s", err, stderr.String())
		}
		var s summary
		if err := json.Unmarshal(stdout.Bytes(), &s); err != nil {
			t.Fatalf("its output %q: %v", stdout.String(), err)
		}
		return s
	}

	first := run()
	if !first.Created || first.Written != first.Read || len(first.Written) != 64 {
		t.Fatalf("first run: %+v; want a created repository and the stream back unchanged", first)
	}
	if !first.PassOK || strings.Join(first.PassTargets, ",") != "outside-a:ok,outside-b:ok" {
		t.Fatalf("first pass: %+v", first)
	}
	second := run()
	if second.Created || second.Written != first.Written || second.Read != second.Written || !second.PassOK {
		t.Fatalf("second run: %+v; want the same repository opened, not created", second)
	}

	// restic reads everything the outside program wrote.
	ctx := context.Background()
	rc := restic.WithEnv(s3.Env()...)
	res, err := rc.Run(ctx, loc, pw, nil, "check", "--read-data")
	if err != nil || res.Err() != nil {
		t.Fatalf("restic check --read-data: %v %v\n%s", err, res.Err(), res.Stderr)
	}
	res, err = rc.Run(ctx, loc, pw, nil, "snapshots", "--json")
	if err != nil || res.Err() != nil {
		t.Fatalf("restic snapshots: %v %v", err, res.Err())
	}
	var snaps []struct {
		ID   string   `json:"id"`
		Tags []string `json:"tags"`
	}
	if err := json.Unmarshal(res.Stdout, &snaps); err != nil {
		t.Fatal(err)
	}
	byTag := map[string]int{}
	ids := map[string]bool{}
	for _, s := range snaps {
		ids[s.ID] = true
		for _, tag := range s.Tags {
			byTag[tag]++
		}
	}
	// Two runs: two stream snapshots and two per pass target (the pass's
	// 30/4/6 keeps both, as restic's forget does: the newest fills a day,
	// the oldest is kept while the policy has periods left).
	if byTag["outside"] != 2 || byTag["outside-a"] != 2 || byTag["outside-b"] != 2 {
		t.Errorf("snapshots per tag %v; want 2 each", byTag)
	}
	for _, id := range append([]string{first.SnapshotID, second.SnapshotID}, second.PassSnapshot...) {
		if !ids[id] {
			t.Errorf("snapshot %s is not among restic's", id)
		}
	}
	res, err = rc.Run(ctx, loc, pw, nil, "dump", second.SnapshotID, "/outside.bin")
	if err != nil || res.Err() != nil {
		t.Fatalf("restic dump: %v %v", err, res.Err())
	}
	if got := sha256Hex(res.Stdout); got != first.Written {
		t.Errorf("restic dump gives %s, want %s", got, first.Written)
	}
}

// scrubbed is this process's environment without restic's, AWS's and
// scalr-backup's variables, so that only what the test sets is read.
func scrubbed() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "RESTIC_") || strings.HasPrefix(kv, "AWS_") || strings.HasPrefix(kv, "SCALR_BACKUP_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
