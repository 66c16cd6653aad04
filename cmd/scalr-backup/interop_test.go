package main

// Interoperability with the real restic CLIs ("Repository core" acceptance
// points 2, 3 and 4). Every test here runs the built scalr-backup binary as
// a subprocess with a controlled environment (repository and password file
// through RESTIC_REPOSITORY and RESTIC_PASSWORD_FILE, never argv; HOME and
// XDG folders private to the test), next to restic 0.14 and 0.18.1, against
// a local folder and an S3 bucket on versitygw.
//
// Large streams are generated on the fly by a seeded generator and compared
// by SHA-256 of the streamed output: nothing big is held in memory or
// written to disk by the test itself.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/internal/testenv"
)

// ---------------------------------------------------------------------------
// Repository targets: a local folder and an S3 bucket.

type interopTarget struct {
	name string
	s3   *testenv.S3Server // nil for the local target
	env  []string          // extra environment for both CLIs
}

var interopBucketSeq atomic.Int64

// newLocation returns the location of a repository that does not exist yet.
func (tg *interopTarget) newLocation(t *testing.T, label string) string {
	t.Helper()
	if tg.s3 == nil {
		return filepath.Join(t.TempDir(), label)
	}
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	bucket := fmt.Sprintf("interop-%s-%d-%x", label, interopBucketSeq.Add(1), b)
	return tg.s3.URL(strings.ToLower(bucket))
}

// eachTarget runs fn as the parallel subtests "local" and "s3"; the S3
// variant starts a versitygw server of its own.
func eachTarget(t *testing.T, fn func(t *testing.T, tg *interopTarget)) {
	t.Helper()
	t.Run("local", func(t *testing.T) {
		t.Parallel()
		fn(t, &interopTarget{name: "local"})
	})
	t.Run("s3", func(t *testing.T) {
		t.Parallel()
		srv := testenv.StartS3(t)
		fn(t, &interopTarget{name: "s3", s3: srv, env: srv.Env()})
	})
}

// ---------------------------------------------------------------------------
// Running scalr-backup.

type ourCLI struct {
	bin string
	env []string
}

type cliRun struct {
	args           []string
	code           int
	stdout, stderr []byte
}

func (r cliRun) String() string {
	return fmt.Sprintf("scalr-backup %q: exit %d\nstdout:\n%s\nstderr:\n%s", r.args, r.code, clip(r.stdout), clip(r.stderr))
}

func clip(b []byte) string {
	if len(b) > 4000 {
		return string(b[:2000]) + "\n…\n" + string(b[len(b)-2000:])
	}
	return string(b)
}

// newOurCLI runs the built binary against location with the password in a
// file, a private HOME and XDG folders, and the target's extra variables.
func newOurCLI(t *testing.T, tg *interopTarget, location, passwordFile string) *ourCLI {
	t.Helper()
	home := t.TempDir()
	env := append(cleanEnv(),
		"HOME="+home,
		"XDG_CACHE_HOME="+filepath.Join(home, ".cache"),
		"XDG_CONFIG_HOME="+filepath.Join(home, ".config"),
		"XDG_DATA_HOME="+filepath.Join(home, ".local", "share"),
		"XDG_RUNTIME_DIR="+filepath.Join(home, "run"),
		"RESTIC_REPOSITORY="+location,
		"RESTIC_PASSWORD_FILE="+passwordFile,
	)
	env = append(env, tg.env...)
	return &ourCLI{bin: testBinary(t), env: env}
}

func (c *ourCLI) command(ctx context.Context, args []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, c.bin, args...)
	cmd.Env = c.env
	return cmd
}

// run runs scalr-backup with stdin (nil: empty) and returns what happened.
func (c *ourCLI) run(t *testing.T, stdin io.Reader, args ...string) cliRun {
	t.Helper()
	cmd := c.command(t.Context(), args)
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := cliRun{args: args, stdout: stdout.Bytes(), stderr: stderr.Bytes()}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exitErr) && exitErr.ExitCode() >= 0:
		res.code = exitErr.ExitCode()
	default:
		t.Fatalf("scalr-backup %q: %v\nstderr:\n%s", args, err, stderr.Bytes())
	}
	return res
}

func (c *ourCLI) mustRun(t *testing.T, stdin io.Reader, args ...string) cliRun {
	t.Helper()
	res := c.run(t, stdin, args...)
	if res.code != 0 {
		t.Fatal(res)
	}
	return res
}

// dumpHash streams `scalr-backup dump SNAP PATH` into SHA-256 and fails
// the test if the dump fails.
func (c *ourCLI) dumpHash(t *testing.T, snap, path string) (string, int64) {
	t.Helper()
	sum, n, err := c.tryDumpHash(t, snap, path)
	if err != nil {
		t.Fatal(err)
	}
	return sum, n
}

// tryDumpHash is dumpHash that returns the failure.
func (c *ourCLI) tryDumpHash(t *testing.T, snap, path string) (string, int64, error) {
	t.Helper()
	cmd := c.command(t.Context(), []string{"dump", snap, path})
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sum, n, rerr := hashReader(out)
	if err := cmd.Wait(); err != nil {
		return "", 0, fmt.Errorf("scalr-backup dump %.8s %q: %v\nstderr:\n%s", snap, path, err, stderr.Bytes())
	}
	if rerr != nil {
		return "", 0, fmt.Errorf("scalr-backup dump %.8s %q: read: %v", snap, path, rerr)
	}
	return sum, n, nil
}

// ourSummary is the part of `scalr-backup backup --json` the tests read.
type ourSummary struct {
	MessageType string `json:"message_type"`
	DataBlobs   int    `json:"data_blobs"`
	TreeBlobs   int    `json:"tree_blobs"`
	DataAdded   uint64 `json:"data_added"`
	SnapshotID  string `json:"snapshot_id"`
	TotalBytes  uint64 `json:"total_bytes_processed"`
}

// backup runs `scalr-backup backup --stdin --json` and returns the summary.
func (c *ourCLI) backup(t *testing.T, stdin io.Reader, args ...string) ourSummary {
	t.Helper()
	res := c.mustRun(t, stdin, append([]string{"backup", "--stdin", "--json"}, args...)...)
	var s ourSummary
	if err := json.Unmarshal(lastJSONLine(res.stdout), &s); err != nil || s.MessageType != "summary" || len(s.SnapshotID) != 64 {
		t.Fatalf("backup summary (err %v): %s", err, res)
	}
	return s
}

// lastJSONLine is the last non-empty line of b.
func lastJSONLine(b []byte) []byte {
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	return lines[len(lines)-1]
}

// snapshots runs `scalr-backup snapshots --json`.
func (c *ourCLI) snapshots(t *testing.T) []byte {
	t.Helper()
	return c.mustRun(t, nil, "snapshots", "--json").stdout
}

// ---------------------------------------------------------------------------
// Running restic.

// resticFor derives a restic CLI that reaches the target with the password
// in passwordFile (RESTIC_PASSWORD_FILE, never argv).
func resticFor(r *testenv.ResticCLI, tg *interopTarget, passwordFile string) *testenv.ResticCLI {
	return r.WithEnv(append([]string{"RESTIC_PASSWORD_FILE=" + passwordFile}, tg.env...)...)
}

// resticDumpHash streams `restic dump SNAP PATH` into SHA-256.
func resticDumpHash(t *testing.T, r *testenv.ResticCLI, location, snap, path string) (string, int64) {
	t.Helper()
	rc, wait := r.Stream(t.Context(), location, "", "dump", snap, path)
	sum, n, err := hashReader(rc)
	rc.Close()
	if werr := wait(); werr != nil {
		t.Fatalf("restic %s: %v", r.Version, werr)
	}
	if err != nil {
		t.Fatalf("restic %s dump: %v", r.Version, err)
	}
	return sum, n
}

// resticCheckReadData runs `restic check --read-data` and fails unless it
// exits 0 and reports nothing, not even non-critical findings.
func resticCheckReadData(t *testing.T, r *testenv.ResticCLI, location string) {
	t.Helper()
	start := time.Now()
	res := r.MustRun(t, location, "", nil, "check", "--read-data")
	out := string(res.Stdout) + string(res.Stderr)
	if !strings.Contains(out, "no errors were found") {
		t.Errorf("restic %s check --read-data exited 0 without \"no errors were found\":\n%s", r.Version, out)
	}
	for _, bad := range []string{"additional files", "not referenced in any index", "unused blobs", "error"} {
		if strings.Contains(strings.ReplaceAll(out, "no errors were found", ""), bad) {
			t.Errorf("restic %s check --read-data mentions %q:\n%s", r.Version, bad, out)
		}
	}
	t.Logf("restic %s check --read-data: clean in %s", r.Version, time.Since(start).Round(time.Millisecond))
}

// resticSummary is the summary line of `restic backup --json`.
type resticSummary struct {
	MessageType string `json:"message_type"`
	DataBlobs   int    `json:"data_blobs"`
	TreeBlobs   int    `json:"tree_blobs"`
	DataAdded   uint64 `json:"data_added"`
	SnapshotID  string `json:"snapshot_id"`
}

func resticBackupSummary(t *testing.T, res testenv.Result) resticSummary {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(res.Stdout))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var s resticSummary
		if json.Unmarshal(sc.Bytes(), &s) == nil && s.MessageType == "summary" {
			return s
		}
	}
	t.Fatalf("restic backup --json printed no summary line:\n%s\n%s", clip(res.Stdout), clip(res.Stderr))
	return resticSummary{}
}

// ---------------------------------------------------------------------------
// Snapshot lists.

// snapJSON is what both CLIs print per snapshot that the tests compare.
type snapJSON struct {
	ID       string    `json:"id"`
	ShortID  string    `json:"short_id"`
	Time     time.Time `json:"time"`
	Tree     string    `json:"tree"`
	Paths    []string  `json:"paths"`
	Hostname string    `json:"hostname"`
	Username string    `json:"username"`
	Tags     []string  `json:"tags"`
}

func decodeSnapshots(t *testing.T, who string, b []byte) map[string]snapJSON {
	t.Helper()
	var list []snapJSON
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatalf("%s snapshots --json: %v\n%s", who, err, clip(b))
	}
	out := make(map[string]snapJSON, len(list))
	for _, s := range list {
		out[s.ID] = s
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// normalizeJSON decodes b and replaces every string that is an RFC 3339
// time by the same instant in UTC, so two encodings of one time compare
// equal.
func normalizeJSON(t *testing.T, who string, b []byte) []any {
	t.Helper()
	var v []any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v\n%s", who, err, clip(b))
	}
	var norm func(any) any
	norm = func(x any) any {
		switch x := x.(type) {
		case string:
			if tm, err := time.Parse(time.RFC3339Nano, x); err == nil {
				return tm.UTC().Format(time.RFC3339Nano)
			}
			return x
		case map[string]any:
			for k, e := range x {
				x[k] = norm(e)
			}
			return x
		case []any:
			for i, e := range x {
				x[i] = norm(e)
			}
			return x
		}
		return x
	}
	for i := range v {
		v[i] = norm(v[i])
	}
	return v
}

// compareSnapshotLists requires `snapshots --json` of both CLIs to hold the
// same snapshots with the same fields (every field restic prints, with the
// same value; times compared as instants). With oursMayAdd, scalr-backup may
// print fields restic does not (restic 0.14 drops the program_version and
// summary that 0.17+ and scalr-backup write).
func compareSnapshotLists(t *testing.T, restic, ours []byte, oursMayAdd bool) {
	t.Helper()
	byID := func(list []any) map[string]map[string]any {
		m := map[string]map[string]any{}
		for _, e := range list {
			obj, _ := e.(map[string]any)
			id, _ := obj["id"].(string)
			m[id] = obj
		}
		return m
	}
	rm := byID(normalizeJSON(t, "restic snapshots --json", restic))
	om := byID(normalizeJSON(t, "scalr-backup snapshots --json", ours))
	if !slices.Equal(sortedKeys(rm), sortedKeys(om)) {
		t.Fatalf("snapshot IDs differ: restic %v, scalr-backup %v", sortedKeys(rm), sortedKeys(om))
	}
	for id, r := range rm {
		o := om[id]
		for _, k := range sortedKeys(r) {
			if !reflect.DeepEqual(r[k], o[k]) {
				t.Errorf("snapshot %.8s field %q: restic %v, scalr-backup %v", id, k, r[k], o[k])
			}
		}
		for _, k := range sortedKeys(o) {
			if _, ok := r[k]; !ok && !oursMayAdd {
				t.Errorf("snapshot %.8s: scalr-backup prints field %q = %v that restic does not", id, k, o[k])
			}
		}
	}
}

// ---------------------------------------------------------------------------
// Deterministic test data.

// mixedStream yields n bytes determined by seed: runs of 64 KiB to 1 MiB
// that are random bytes, tab-separated text rows (compressible, unique) or a
// short repeated pattern. Streams with the same seed share their prefix.
type mixedStream struct {
	rng  *mrand.ChaCha8
	left int64
	buf  []byte
	pos  int
	row  uint64
}

func newMixedStream(seed uint64, n int64) *mixedStream {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	copy(s[8:], "scalr-backup interop stream")
	return &mixedStream{rng: mrand.NewChaCha8(s), left: n, buf: make([]byte, 0, 1<<20+256)}
}

var mixedWords = []string{"alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"}

func (m *mixedStream) fill() {
	size := 64<<10 + int(m.rng.Uint64()%(960<<10))
	m.buf, m.pos = m.buf[:0], 0
	switch m.rng.Uint64() % 8 {
	case 0, 1, 2: // incompressible
		m.buf = m.buf[:size]
		m.rng.Read(m.buf)
	case 3, 4, 5, 6: // text rows, like an uncompressed pg_dump
		for len(m.buf) < size {
			m.row++
			v := m.rng.Uint64()
			m.buf = fmt.Appendf(m.buf, "%d\tcustomer-%d\t%s %s\t%d.%02d\t2024-%02d-%02d\n", m.row, v%100000,
				mixedWords[(v>>17)%10], mixedWords[(v>>21)%10], (v>>25)%10000, (v>>40)%100, 1+(v>>48)%12, 1+(v>>56)%28)
		}
		m.buf = m.buf[:size]
	default: // a short pattern, repeated
		pat := make([]byte, 1+m.rng.Uint64()%64)
		m.rng.Read(pat)
		for len(m.buf) < size {
			m.buf = append(m.buf, pat...)
		}
		m.buf = m.buf[:size]
	}
}

func (m *mixedStream) Read(p []byte) (int, error) {
	if m.left <= 0 {
		return 0, io.EOF
	}
	if m.pos == len(m.buf) {
		m.fill()
	}
	if int64(len(p)) > m.left {
		p = p[:m.left]
	}
	n := copy(p, m.buf[m.pos:])
	m.pos += n
	m.left -= int64(n)
	return n, nil
}

func hashReader(r io.Reader) (string, int64, error) {
	h := sha256.New()
	n, err := io.Copy(h, r)
	return hex.EncodeToString(h.Sum(nil)), n, err
}

// streamHash is the SHA-256 of newMixedStream(seed, n).
func streamHash(seed uint64, n int64) string {
	sum, _, _ := hashReader(newMixedStream(seed, n))
	return sum
}

func hashBytes(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// ---------------------------------------------------------------------------
// Acceptance 2: what scalr-backup writes, restic reads, checks and prunes.

type interopStream struct {
	label string
	name  string
	seed  uint64
	size  int64
	hash  string // filled when backed up
	snap  string // snapshot ID
}

func TestInteropOursToRestic(t *testing.T) {
	testenv.Integration(t)
	testBinary(t)
	eachTarget(t, func(t *testing.T, tg *interopTarget) {
		for _, format := range []string{"1", "2"} {
			t.Run("format-v"+format, func(t *testing.T) {
				interopOursToRestic(t, tg, format)
			})
			t.Run("format-v"+format+"-prune-restic-0.14", func(t *testing.T) {
				interopPrune014(t, tg, format)
			})
		}
	})
}

func interopOursToRestic(t *testing.T, tg *interopTarget, format string) {
	pw := writePasswordFile(t, "interop ours->restic v"+format)
	loc := tg.newLocation(t, "ours-v"+format)
	ours := newOurCLI(t, tg, loc, pw)
	host := "interop-host-v" + format
	tags := []string{"interop", "format-v" + format}
	tagArgs := []string{"--tag", tags[0], "--tag", tags[1]}

	must := func(ok bool) {
		if !ok {
			t.FailNow()
		}
	}

	must(t.Run("init", func(t *testing.T) {
		ours.mustRun(t, nil, "init", "--repository-version", format)
	}))

	must(t.Run("empty-stream-refused", func(t *testing.T) {
		res := ours.run(t, strings.NewReader(""), append([]string{"backup", "--stdin", "--stdin-filename", "empty.dump", "--host", host, "--json"}, tagArgs...)...)
		if res.code == 0 {
			t.Errorf("a 0-byte stream was accepted: %s", res)
		}
		if got := decodeSnapshots(t, "scalr-backup", ours.snapshots(t)); len(got) != 0 {
			t.Errorf("after a refused empty stream the repository lists snapshots %v", sortedKeys(got))
		}
	}))

	// The 7 MiB and 300 MiB streams share a seed, so the big one starts with
	// the small one's bytes: the prune below then has to repack the small
	// one's pack (all but its last chunk stay in use).
	streams := []*interopStream{
		{label: "1B", name: "one.bin", seed: 11, size: 1},
		{label: "7MiB", name: "seven.dump", seed: 22, size: 7 << 20},
		{label: "300MiB", name: "big.dump", seed: 22, size: 300 << 20},
	}
	for _, s := range streams {
		must(t.Run("backup-"+s.label, func(t *testing.T) {
			h := sha256.New()
			start := time.Now()
			sum := ours.backup(t, io.TeeReader(newMixedStream(s.seed, s.size), h),
				append([]string{"--stdin-filename", s.name, "--host", host}, tagArgs...)...)
			s.hash, s.snap = hex.EncodeToString(h.Sum(nil)), sum.SnapshotID
			if sum.TotalBytes != uint64(s.size) {
				t.Errorf("summary says %d bytes processed, the stream had %d", sum.TotalBytes, s.size)
			}
			t.Logf("%s: snapshot %.8s, %d data blobs, %d bytes added, in %s", s.name, s.snap, sum.DataBlobs, sum.DataAdded, time.Since(start).Round(time.Millisecond))
		}))
	}

	testenv.EachRestic(t, func(t *testing.T, rc *testenv.ResticCLI) {
		r := resticFor(rc, tg, pw)
		t.Run("check-read-data", func(t *testing.T) { resticCheckReadData(t, r, loc) })
		t.Run("snapshots", func(t *testing.T) {
			out := r.MustRun(t, loc, "", nil, "snapshots", "--json").Stdout
			compareSnapshotLists(t, out, ours.snapshots(t), r.Version == testenv.Restic014)
			got := decodeSnapshots(t, "restic", out)
			if len(got) != len(streams) {
				t.Errorf("restic lists %d snapshots, want %d: %v", len(got), len(streams), sortedKeys(got))
			}
			for _, s := range streams {
				sn, ok := got[s.snap]
				if !ok {
					t.Errorf("restic does not list snapshot %.8s of %s", s.snap, s.name)
					continue
				}
				if want := []string{"/" + s.name}; !slices.Equal(sn.Paths, want) {
					t.Errorf("%s: paths %q, want %q", s.name, sn.Paths, want)
				}
				if !slices.Equal(sn.Tags, tags) {
					t.Errorf("%s: tags %q, want %q", s.name, sn.Tags, tags)
				}
				if sn.Hostname != host {
					t.Errorf("%s: hostname %q, want %q", s.name, sn.Hostname, host)
				}
			}
		})
		for _, s := range streams {
			t.Run("dump-"+s.label, func(t *testing.T) {
				start := time.Now()
				sum, n := resticDumpHash(t, r, loc, s.snap, "/"+s.name)
				if sum != s.hash || n != s.size {
					t.Errorf("restic dump of %s: %d bytes, sha256 %s; backed up %d bytes, sha256 %s", s.name, n, sum, s.size, s.hash)
				}
				t.Logf("dump %s: %s", s.name, time.Since(start).Round(time.Millisecond))
			})
		}
	})

	big := streams[len(streams)-1]
	t.Run("forget-prune-restic-0.18.1", func(t *testing.T) {
		r := resticFor(testenv.Restic(t, testenv.Restic0181), tg, pw)
		start := time.Now()
		// --group-by '' so that the three paths form one group;
		// --max-unused 0 so that partly used packs are repacked.
		res := r.MustRun(t, loc, "", nil, "forget", "--keep-last", "1", "--group-by", "", "--prune", "--max-unused", "0")
		t.Logf("forget --prune: %s\n%s", time.Since(start).Round(time.Millisecond), res.Stdout)
		interopAfterPrune(t, tg, ours, loc, pw, big)
	})
}

// interopAfterPrune checks a repository where only keep is left, with
// both restic versions and scalr-backup.
func interopAfterPrune(t *testing.T, tg *interopTarget, ours *ourCLI, loc, pw string, keep *interopStream) {
	t.Helper()
	testenv.EachRestic(t, func(t *testing.T, rc *testenv.ResticCLI) {
		r := resticFor(rc, tg, pw)
		resticCheckReadData(t, r, loc)
		got := decodeSnapshots(t, "restic", r.MustRun(t, loc, "", nil, "snapshots", "--json").Stdout)
		if keys := sortedKeys(got); !slices.Equal(keys, []string{keep.snap}) {
			t.Errorf("after forget --keep-last 1 restic lists %v, want only %s", keys, keep.snap)
		}
		if sum, n := resticDumpHash(t, r, loc, keep.snap, "/"+keep.name); sum != keep.hash || n != keep.size {
			t.Errorf("restic dump of kept %s: %d bytes, sha256 %s; want %d bytes, %s", keep.name, n, sum, keep.size, keep.hash)
		}
	})
	t.Run("scalr-backup", func(t *testing.T) {
		got := decodeSnapshots(t, "scalr-backup", ours.snapshots(t))
		if keys := sortedKeys(got); !slices.Equal(keys, []string{keep.snap}) {
			t.Errorf("after forget --keep-last 1 scalr-backup lists %v, want only %s", keys, keep.snap)
		}
		if sum, n := ours.dumpHash(t, keep.snap, "/"+keep.name); sum != keep.hash || n != keep.size {
			t.Errorf("scalr-backup dump of kept %s: %d bytes, sha256 %s; want %d bytes, %s", keep.name, n, sum, keep.size, keep.hash)
		}
	})
}

// interopPrune014 is the forget/prune round with restic 0.14, on a smaller
// repository of its own.
func interopPrune014(t *testing.T, tg *interopTarget, format string) {
	r014 := testenv.Restic(t, testenv.Restic014)
	pw := writePasswordFile(t, "interop prune 0.14 v"+format)
	loc := tg.newLocation(t, "prune014-v"+format)
	ours := newOurCLI(t, tg, loc, pw)
	ours.mustRun(t, nil, "init", "--repository-version", format)
	streams := []*interopStream{
		{name: "one.bin", seed: 31, size: 1},
		{name: "a.dump", seed: 32, size: 6 << 20},
		{name: "b.dump", seed: 32, size: 12 << 20}, // starts with a.dump's bytes
	}
	for _, s := range streams {
		h := sha256.New()
		sum := ours.backup(t, io.TeeReader(newMixedStream(s.seed, s.size), h), "--stdin-filename", s.name, "--host", "prune-host", "--tag", "prune")
		s.hash, s.snap = hex.EncodeToString(h.Sum(nil)), sum.SnapshotID
	}
	r := resticFor(r014, tg, pw)
	start := time.Now()
	res := r.MustRun(t, loc, "", nil, "forget", "--keep-last", "1", "--group-by", "", "--prune", "--max-unused", "0")
	t.Logf("restic 0.14 forget --prune: %s\n%s", time.Since(start).Round(time.Millisecond), res.Stdout)
	interopAfterPrune(t, tg, ours, loc, pw, streams[len(streams)-1])
}

// ---------------------------------------------------------------------------
// Acceptance 3 (i): the committed fixture repositories.

const interopFixtureDir = "../../testdata"

type interopFixtures struct {
	Password string `json:"password"`
	Repos    []struct {
		Name         string `json:"name"`
		PasswordFile string `json:"password_file"`
		Snapshots    []struct {
			snapJSON
			Nodes []struct {
				Path    string `json:"path"`
				PathHex string `json:"path_hex"`
				Type    string `json:"type"`
				Size    int64  `json:"size"`
				SHA256  string `json:"sha256"`
			} `json:"nodes"`
		} `json:"snapshots"`
	} `json:"repos"`
}

func TestInteropFixtures(t *testing.T) {
	testenv.Integration(t)
	b, err := os.ReadFile(filepath.Join(interopFixtureDir, "fixtures.json"))
	if err != nil {
		t.Fatal(err)
	}
	var fx interopFixtures
	if err := json.Unmarshal(b, &fx); err != nil {
		t.Fatal(err)
	}
	if len(fx.Repos) == 0 {
		t.Fatal("fixtures.json lists no repositories")
	}
	local := &interopTarget{name: "local"}
	for _, fr := range fx.Repos {
		t.Run(fr.Name, func(t *testing.T) {
			t.Parallel()
			// Work on a copy: opening a repository may write locks.
			loc := filepath.Join(t.TempDir(), fr.Name)
			if err := os.CopyFS(loc, os.DirFS(filepath.Join(interopFixtureDir, fr.Name))); err != nil {
				t.Fatal(err)
			}
			pwb, err := os.ReadFile(filepath.Join(interopFixtureDir, fr.PasswordFile))
			if err != nil {
				t.Fatal(err)
			}
			ours := newOurCLI(t, local, loc, writePasswordFile(t, strings.TrimRight(string(pwb), "\n")))

			got := decodeSnapshots(t, "scalr-backup", ours.snapshots(t))
			var want []string
			for _, s := range fr.Snapshots {
				want = append(want, s.ID)
				g, ok := got[s.ID]
				if !ok {
					t.Errorf("snapshot %s missing from scalr-backup snapshots", s.ShortID)
					continue
				}
				if !g.Time.Equal(s.Time) || g.Tree != s.Tree || g.ShortID != s.ShortID || g.Hostname != s.Hostname ||
					g.Username != s.Username || !slices.Equal(g.Paths, s.Paths) || !slices.Equal(g.Tags, s.Tags) {
					t.Errorf("snapshot %s:\nscalr-backup %+v\nfixtures.json %+v", s.ShortID, g, s.snapJSON)
				}
			}
			slices.Sort(want)
			if keys := sortedKeys(got); !slices.Equal(keys, want) {
				t.Errorf("scalr-backup lists %v, fixtures.json %v", keys, want)
			}

			files := 0
			for _, s := range fr.Snapshots {
				for _, n := range s.Nodes {
					if n.Type != "file" {
						continue
					}
					p := n.Path
					if n.PathHex != "" {
						raw, err := hex.DecodeString(n.PathHex)
						if err != nil {
							t.Fatal(err)
						}
						p = string(raw)
					}
					files++
					sum, size := ours.dumpHash(t, s.ID, p)
					if sum != n.SHA256 || size != n.Size {
						t.Errorf("snapshot %s %q: dump gives %d bytes, sha256 %s; fixtures.json says %d bytes, %s", s.ShortID, p, size, sum, n.Size, n.SHA256)
					}
				}
			}
			t.Logf("%d snapshots, %d files dumped", len(fr.Snapshots), files)
		})
	}
}

// ---------------------------------------------------------------------------
// Acceptance 3 (ii): repositories restic makes live, read by scalr-backup.

// oddTree is a file tree with nested folders, an empty file, an empty
// folder and names that need quoting; paths relative, "/" separated.
func oddTree() map[string][]byte {
	deep, _ := io.ReadAll(io.LimitReader(newMixedStream(77, 3<<20), 3<<20)) // several chunks
	return map[string][]byte{
		"README.txt":                    []byte("a tree with odd names\n"),
		"empty":                         {},
		"with space.txt":                []byte("space\n"),
		"ünïcødé.txt":                   []byte("unicode ✓\n"),
		`quote"and\back\slash.txt`:      []byte("quote and backslash\n"),
		"new\nline.txt":                 []byte("newline in the name\n"),
		"tab\there.txt":                 []byte("tab in the name\n"),
		"nested/a/sibling.txt":          []byte("sibling\n"),
		"nested/a/b/c/deep.bin":         deep,
		"nested/a/b/c/ ' leading space": []byte("x"),
		"dup-of-deep.bin":               deep,
	}
}

func writeTree(t *testing.T, root string, files map[string][]byte) {
	t.Helper()
	for rel, data := range files {
		p := filepath.Join(root, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(root, "nested", "empty-dir"), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestInteropResticToOurs(t *testing.T) {
	testenv.Integration(t)
	testBinary(t)
	src := filepath.Join(t.TempDir(), "src")
	files := oddTree()
	writeTree(t, src, files)
	const streamSeed, streamSize = 5, 20 << 20
	wantStream := streamHash(streamSeed, streamSize)

	eachTarget(t, func(t *testing.T, tg *interopTarget) {
		testenv.EachRestic(t, func(t *testing.T, rc *testenv.ResticCLI) {
			pw := writePasswordFile(t, "interop restic->ours "+rc.Version)
			loc := tg.newLocation(t, "restic-"+strings.ReplaceAll(rc.Version, ".", "-"))
			r := resticFor(rc, tg, pw)
			r.MustRun(t, loc, "", nil, "init")
			res := r.MustRun(t, loc, "", newMixedStream(streamSeed, streamSize), "backup", "--json",
				"--stdin", "--stdin-filename", "stream.dump", "--host", "restic-host", "--tag", "stream")
			streamSnap := resticBackupSummary(t, res).SnapshotID
			res = r.MustRun(t, loc, "", nil, "backup", "--json", "--host", "restic-files-host", "--tag", "files", "--tag", "odd", src)
			treeSnap := resticBackupSummary(t, res).SnapshotID
			if streamSnap == "" || treeSnap == "" {
				t.Fatalf("restic %s did not report snapshot IDs (%q, %q)", rc.Version, streamSnap, treeSnap)
			}

			ours := newOurCLI(t, tg, loc, pw)
			t.Run("snapshots", func(t *testing.T) {
				compareSnapshotLists(t, r.MustRun(t, loc, "", nil, "snapshots", "--json").Stdout, ours.snapshots(t), false)
			})
			t.Run("dump-stream", func(t *testing.T) {
				if sum, n := ours.dumpHash(t, streamSnap, "/stream.dump"); sum != wantStream || n != streamSize {
					t.Errorf("dump /stream.dump: %d bytes, sha256 %s; want %d bytes, %s", n, sum, streamSize, wantStream)
				}
			})
			t.Run("dump-tree", func(t *testing.T) {
				// restic stores an absolute directory argument under its
				// full path.
				for _, rel := range sortedKeys(files) {
					p := filepath.ToSlash(src) + "/" + rel
					sum, n, err := ours.tryDumpHash(t, treeSnap, p)
					if err != nil {
						t.Error(err)
						continue
					}
					if want := hashBytes(files[rel]); sum != want || n != int64(len(files[rel])) {
						t.Errorf("dump %q: %d bytes, sha256 %s; want %d bytes, %s", p, n, sum, len(files[rel]), want)
					}
				}
				// A directory is not a file: dump must refuse it.
				if res := ours.run(t, nil, "dump", treeSnap, filepath.ToSlash(src)+"/nested/empty-dir"); res.code == 0 {
					t.Errorf("dump of a directory succeeded: %s", res)
				}
			})
		})
	})
}

// ---------------------------------------------------------------------------
// Acceptance 4: deduplication with restic, in both orders.

func TestInteropDedup(t *testing.T) {
	testenv.Integration(t)
	testBinary(t)
	const seed, size = 50, 50 << 20
	want := streamHash(seed, size)
	const limit = size / 100

	eachTarget(t, func(t *testing.T, tg *interopTarget) {
		t.Run("restic-first", func(t *testing.T) {
			pw := writePasswordFile(t, "dedup restic first")
			r := resticFor(testenv.Restic(t, testenv.Restic0181), tg, pw)
			loc := tg.newLocation(t, "dedup-restic-first")
			r.MustRun(t, loc, "", nil, "init", "--repository-version", "2")
			first := resticBackupSummary(t, r.MustRun(t, loc, "", newMixedStream(seed, size), "backup", "--json",
				"--stdin", "--stdin-filename", "same.dump", "--host", "dedup-host", "--tag", "restic"))
			ours := newOurCLI(t, tg, loc, pw)
			second := ours.backup(t, newMixedStream(seed, size), "--stdin-filename", "same.dump", "--host", "dedup-host", "--tag", "ours")
			t.Logf("restic 0.18.1 first: %d data blobs, %d bytes added; scalr-backup second: %d data blobs, %d bytes added",
				first.DataBlobs, first.DataAdded, second.DataBlobs, second.DataAdded)
			if first.DataAdded < size/4 {
				t.Errorf("restic's first backup added only %d bytes of a %d-byte stream", first.DataAdded, size)
			}
			if second.DataAdded >= limit {
				t.Errorf("scalr-backup's second backup of the same stream added %d bytes (%d data blobs), want < %d", second.DataAdded, second.DataBlobs, limit)
			}
			interopDedupVerify(t, r, ours, loc, want, size, first.SnapshotID, second.SnapshotID)
		})
		t.Run("ours-first", func(t *testing.T) {
			pw := writePasswordFile(t, "dedup ours first")
			loc := tg.newLocation(t, "dedup-ours-first")
			ours := newOurCLI(t, tg, loc, pw)
			ours.mustRun(t, nil, "init", "--repository-version", "2")
			first := ours.backup(t, newMixedStream(seed, size), "--stdin-filename", "same.dump", "--host", "dedup-host", "--tag", "ours")
			r := resticFor(testenv.Restic(t, testenv.Restic0181), tg, pw)
			second := resticBackupSummary(t, r.MustRun(t, loc, "", newMixedStream(seed, size), "backup", "--json",
				"--stdin", "--stdin-filename", "same.dump", "--host", "dedup-host", "--tag", "restic"))
			t.Logf("scalr-backup first: %d data blobs, %d bytes added; restic 0.18.1 second: %d data blobs, %d bytes added",
				first.DataBlobs, first.DataAdded, second.DataBlobs, second.DataAdded)
			if first.DataAdded < size/4 {
				t.Errorf("scalr-backup's first backup added only %d bytes of a %d-byte stream", first.DataAdded, size)
			}
			if second.DataAdded >= limit {
				t.Errorf("restic's second backup of the same stream added %d bytes (%d data blobs), want < %d", second.DataAdded, second.DataBlobs, limit)
			}
			interopDedupVerify(t, r, ours, loc, want, size, first.SnapshotID, second.SnapshotID)
		})
	})
}

// interopDedupVerify checks the shared repository and that both snapshots
// dump the stream with either CLI.
func interopDedupVerify(t *testing.T, r *testenv.ResticCLI, ours *ourCLI, loc, want string, size int64, snaps ...string) {
	t.Helper()
	resticCheckReadData(t, r, loc)
	for _, sn := range snaps {
		if sum, n := ours.dumpHash(t, sn, "/same.dump"); sum != want || n != size {
			t.Errorf("scalr-backup dump %.8s: %d bytes, sha256 %s; want %d bytes, %s", sn, n, sum, size, want)
		}
		if sum, n := resticDumpHash(t, r, loc, sn, "/same.dump"); sum != want || n != size {
			t.Errorf("restic dump %.8s: %d bytes, sha256 %s; want %d bytes, %s", sn, n, sum, size, want)
		}
	}
}
