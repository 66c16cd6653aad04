package main

// Retention and repository health against the real restic CLIs: prune
// correctness in both directions, prune next to a running backup of the
// other tool, stale and live locks, and forget --prune.
//
// Every test runs the built scalr-backup binary as a subprocess (the binary
// interop_test.go builds once per test process) next to restic 0.14 and
// 0.18.1. Passwords go through RESTIC_PASSWORD_FILE, never argv.
// Repositories made by scalr-backup are created through the library with
// cheap scrypt parameters so that every open is fast. Streams come from a
// seeded generator (SCALR_RETENTION_SEED overrides the seed) and are
// compared by SHA-256.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/backend/local"
	"github.com/scalr-platform/scalr-backup/internal/testenv"
	"github.com/scalr-platform/scalr-backup/repo"
	"github.com/scalr-platform/scalr-backup/repo/repotest"
)

// ---------------------------------------------------------------------------
// Repositories and the two CLIs.

// retExitLocked is restic's exit code for "repository is already locked",
// which scalr-backup promises too.
const retExitLocked = 11

// retRepo is one local repository with its password in a file.
type retRepo struct {
	dir    string
	pw     string
	pwFile string
	home   string
	bin    string
}

// retNewOurRepo creates a version 2 repository through the library, with
// cheap KDF parameters.
func retNewOurRepo(t *testing.T, label string) *retRepo {
	t.Helper()
	pw := "retention " + label + " password"
	rp := &retRepo{dir: filepath.Join(t.TempDir(), label), pw: pw, pwFile: writePasswordFile(t, pw), home: t.TempDir(), bin: testBinary(t)}
	r, err := repo.Init(context.Background(), local.New(rp.dir), pw, repo.InitOptions{Version: 2, KDF: repotest.FastKDF()}, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	return rp
}

// retNewResticRepo lets restic init the repository.
func retNewResticRepo(t *testing.T, label string, rc *testenv.ResticCLI) *retRepo {
	t.Helper()
	pw := "retention " + label + " password"
	rp := &retRepo{dir: filepath.Join(t.TempDir(), label), pw: pw, pwFile: writePasswordFile(t, pw), home: t.TempDir(), bin: testBinary(t)}
	rp.restic(rc).MustRun(t, rp.dir, "", nil, "init")
	return rp
}

// retCopyRepo copies a repository (not in use) to a fresh folder.
func retCopyRepo(t *testing.T, src *retRepo, label string) *retRepo {
	t.Helper()
	dst := *src
	dst.dir = filepath.Join(t.TempDir(), label)
	dst.home = t.TempDir()
	if err := os.CopyFS(dst.dir, os.DirFS(src.dir)); err != nil {
		t.Fatal(err)
	}
	return &dst
}

func (rp *retRepo) restic(rc *testenv.ResticCLI) *testenv.ResticCLI {
	return rc.WithEnv("RESTIC_PASSWORD_FILE=" + rp.pwFile)
}

func (rp *retRepo) ourEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "RESTIC_") || strings.HasPrefix(k, "AWS_") || strings.HasPrefix(k, "XDG_") || k == "HOME" {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "HOME="+rp.home, "XDG_CACHE_HOME="+filepath.Join(rp.home, ".cache"),
		"RESTIC_REPOSITORY="+rp.dir, "RESTIC_PASSWORD_FILE="+rp.pwFile)
	return append(env, extra...)
}

func (rp *retRepo) ourCmd(ctx context.Context, extraEnv []string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, rp.bin, args...)
	cmd.Env = rp.ourEnv(extraEnv...)
	return cmd
}

type retRun struct {
	args           []string
	code           int
	stdout, stderr string
	took           time.Duration
}

func (r retRun) String() string {
	clipS := func(s string) string {
		if len(s) > 4000 {
			return s[:2000] + "\n…\n" + s[len(s)-2000:]
		}
		return s
	}
	return fmt.Sprintf("scalr-backup %q: exit %d after %s\nstdout:\n%s\nstderr:\n%s", r.args, r.code, r.took.Round(time.Millisecond), clipS(r.stdout), clipS(r.stderr))
}

// ours runs scalr-backup with stdin (nil: empty).
func (rp *retRepo) ours(t *testing.T, stdin io.Reader, args ...string) retRun {
	t.Helper()
	return rp.oursEnv(t, nil, stdin, args...)
}

func (rp *retRepo) oursEnv(t *testing.T, extraEnv []string, stdin io.Reader, args ...string) retRun {
	t.Helper()
	cmd := rp.ourCmd(t.Context(), extraEnv, args...)
	cmd.Stdin = stdin
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	res := retRun{args: args, stdout: stdout.String(), stderr: stderr.String(), took: time.Since(start)}
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

func (rp *retRepo) mustOurs(t *testing.T, stdin io.Reader, args ...string) retRun {
	t.Helper()
	res := rp.ours(t, stdin, args...)
	if res.code != 0 {
		t.Fatal(res)
	}
	return res
}

// retBackupSummary reads the snapshot ID from a `backup --json` summary
// (ours or restic's: both print a summary line with snapshot_id).
func retBackupSummary(t *testing.T, who string, stdout []byte) string {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(stdout))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var s struct {
			MessageType string `json:"message_type"`
			SnapshotID  string `json:"snapshot_id"`
		}
		if json.Unmarshal(sc.Bytes(), &s) == nil && s.MessageType == "summary" && len(s.SnapshotID) == 64 {
			return s.SnapshotID
		}
	}
	t.Fatalf("%s backup --json printed no summary with a snapshot ID:\n%s", who, stdout)
	return ""
}

// ---------------------------------------------------------------------------
// Seeded streams that share content with earlier ones.

// retSegment is a deterministic run of bytes: random (incompressible) or
// text rows. A shorter segment with the same seed is a prefix of a longer.
type retSegment struct {
	seed uint64
	size int
	text bool
}

var retWords = []string{"alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet"}

func (s retSegment) bytes() []byte {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], s.seed)
	copy(key[8:], "scalr-backup retention")
	rng := mrand.NewChaCha8(key)
	if !s.text {
		b := make([]byte, s.size)
		rng.Read(b)
		return b
	}
	b := make([]byte, 0, s.size+128)
	for row := 1; len(b) < s.size; row++ {
		v := rng.Uint64()
		b = fmt.Appendf(b, "%d\t%d\t%s %s\t%d.%02d\t2024-%02d-%02d\n", row, v%100000, retWords[(v>>17)%10], retWords[(v>>21)%10],
			(v>>25)%10000, (v>>40)%100, 1+(v>>48)%12, 1+(v>>56)%28)
	}
	return b[:s.size]
}

// retStream is one generated stream: its segments in order.
type retStream struct {
	name string
	segs []retSegment
	size int64
}

func (s *retStream) reader() io.Reader {
	rs := make([]io.Reader, len(s.segs))
	for i, seg := range s.segs {
		rs[i] = &retLazy{seg: seg}
	}
	return io.MultiReader(rs...)
}

// hash is the stream's SHA-256.
func (s *retStream) hash() string {
	h := sha256.New()
	if _, err := io.Copy(h, s.reader()); err != nil {
		panic(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// retLazy generates its segment on first read.
type retLazy struct {
	seg retSegment
	r   *bytes.Reader
}

func (l *retLazy) Read(p []byte) (int, error) {
	if l.r == nil {
		l.r = bytes.NewReader(l.seg.bytes())
	}
	return l.r.Read(p)
}

// retGen draws streams: each is 1 to maxMiB MiB of 1–4 MiB segments, about
// half of which repeat a segment an earlier stream had, so packs end up
// partly used once some snapshots are forgotten.
type retGen struct {
	rng  *mrand.Rand
	pool []retSegment
	next uint64
}

func newRetGen(seed uint64) *retGen {
	return &retGen{rng: mrand.New(mrand.NewPCG(seed, 0x5ca1ab1e)), next: seed << 20}
}

func (g *retGen) stream(name string, maxMiB int) *retStream {
	size := 1<<20 + g.rng.Int64N(int64(maxMiB-1)<<20+1)
	s := &retStream{name: name, size: size}
	var total int64
	for total < size {
		var seg retSegment
		if len(g.pool) > 0 && g.rng.IntN(2) == 0 {
			seg = g.pool[g.rng.IntN(len(g.pool))]
		} else {
			g.next++
			seg = retSegment{seed: g.next, size: 1<<20 + g.rng.IntN(3<<20), text: g.rng.IntN(3) == 0}
			g.pool = append(g.pool, seg)
		}
		if rest := size - total; int64(seg.size) > rest {
			seg.size = int(rest)
		}
		s.segs = append(s.segs, seg)
		total += int64(seg.size)
	}
	return s
}

// prefixPair returns two streams of one group that share their first
// 8 MiB and then differ. The chunker cuts at most 8 MiB into a stream, so
// the first chunk is shared for certain while the rest of the first stream
// is not: once the first is forgotten, the pack it wrote is partly used.
func (g *retGen) prefixPair(name string) (first, second *retStream) {
	seg := func(size int) retSegment {
		g.next++
		return retSegment{seed: g.next, size: size}
	}
	shared := seg(8 << 20)
	first = &retStream{name: name, segs: []retSegment{shared, seg(4 << 20)}, size: 12 << 20}
	second = &retStream{name: name, segs: []retSegment{shared, seg(3 << 20)}, size: 11 << 20}
	return first, second
}

// retSingle is a stream of one fresh random segment.
func retSingle(name string, seed uint64, size int) *retStream {
	return &retStream{name: name, segs: []retSegment{{seed: seed, size: size}}, size: int64(size)}
}

// retSeed is the base seed: SCALR_RETENTION_SEED or a fixed default.
func retSeed(t *testing.T, def uint64) uint64 {
	t.Helper()
	if s := os.Getenv("SCALR_RETENTION_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("SCALR_RETENTION_SEED=%q: %v", s, err)
		}
		def = v
	}
	t.Logf("seed %d (set SCALR_RETENTION_SEED to change)", def)
	return def
}

// ---------------------------------------------------------------------------
// The model: which snapshots exist and what they hold.

type retSnap struct {
	id   string
	name string
	hash string
	size int64
}

// retModel follows the snapshots of one repository in creation order.
type retModel struct {
	snaps []*retSnap
	byID  map[string]*retSnap
}

func newRetModel() *retModel { return &retModel{byID: map[string]*retSnap{}} }

func (m *retModel) add(s *retSnap) {
	m.snaps = append(m.snaps, s)
	m.byID[s.id] = s
}

// keepLast applies keep-last n per group (one group per stream name: the
// host is the same for all).
func (m *retModel) keepLast(n int) {
	count := map[string]int{}
	var kept []*retSnap
	for i := len(m.snaps) - 1; i >= 0; i-- {
		s := m.snaps[i]
		if count[s.name] < n {
			count[s.name]++
			kept = append(kept, s)
		} else {
			delete(m.byID, s.id)
		}
	}
	slices.Reverse(kept)
	m.snaps = kept
}

func (m *retModel) ids() []string {
	var ids []string
	for _, s := range m.snaps {
		ids = append(ids, s.id)
	}
	slices.Sort(ids)
	return ids
}

// retSnapIDs parses `snapshots --json` (either CLI) into sorted IDs.
func retSnapIDs(t *testing.T, who string, out []byte) []string {
	t.Helper()
	var list []struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		t.Fatalf("%s snapshots --json: %v\n%s", who, err, out)
	}
	var ids []string
	for _, s := range list {
		ids = append(ids, s.ID)
	}
	slices.Sort(ids)
	return ids
}

func retShort(ids []string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = id[:min(8, len(id))]
	}
	return out
}

// ourBackup stores st with our binary and records it in m.
func (rp *retRepo) ourBackup(t *testing.T, m *retModel, st *retStream) *retSnap {
	t.Helper()
	h := sha256.New()
	res := rp.ours(t, io.TeeReader(st.reader(), h), "backup", "--stdin", "--stdin-filename", st.name, "--host", "retention-host", "--json")
	if res.code != 0 {
		t.Fatal(res)
	}
	s := &retSnap{id: retBackupSummary(t, "scalr-backup", []byte(res.stdout)), name: st.name, hash: hex.EncodeToString(h.Sum(nil)), size: st.size}
	m.add(s)
	t.Logf("scalr-backup backup %s: %.1f MiB, %d segments, snapshot %.8s, %s", st.name, float64(st.size)/(1<<20), len(st.segs), s.id, res.took.Round(time.Millisecond))
	return s
}

// resticBackup stores st with restic and records it in m.
func (rp *retRepo) resticBackup(t *testing.T, rc *testenv.ResticCLI, m *retModel, st *retStream) *retSnap {
	t.Helper()
	h := sha256.New()
	start := time.Now()
	res := rp.restic(rc).MustRun(t, rp.dir, "", io.TeeReader(st.reader(), h), "backup", "--stdin", "--stdin-filename", st.name, "--host", "retention-host", "--json")
	s := &retSnap{id: retBackupSummary(t, "restic", res.Stdout), name: st.name, hash: hex.EncodeToString(h.Sum(nil)), size: st.size}
	m.add(s)
	t.Logf("restic %s backup %s: %.1f MiB, snapshot %.8s, %s", rc.Version, st.name, float64(st.size)/(1<<20), s.id, time.Since(start).Round(time.Millisecond))
	return s
}

// ---------------------------------------------------------------------------
// Verification.

// retOurDump streams our dump of one snapshot into SHA-256.
func (rp *retRepo) retOurDump(t *testing.T, s *retSnap) (string, int64, error) {
	t.Helper()
	cmd := rp.ourCmd(t.Context(), nil, "dump", s.id, "/"+s.name)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, rerr := io.Copy(h, out)
	if err := cmd.Wait(); err != nil {
		return "", n, fmt.Errorf("scalr-backup dump %.8s: %v\n%s", s.id, err, stderr.Bytes())
	}
	if rerr != nil {
		return "", n, rerr
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// verifyOurs: our snapshot list equals the model and every snapshot dumps
// byte-identical with our binary.
func (rp *retRepo) verifyOurs(t *testing.T, m *retModel) {
	t.Helper()
	got := retSnapIDs(t, "scalr-backup", []byte(rp.mustOurs(t, nil, "snapshots", "--json").stdout))
	if want := m.ids(); !slices.Equal(got, want) {
		t.Errorf("scalr-backup lists snapshots %v, want %v", retShort(got), retShort(want))
	}
	for _, s := range m.snaps {
		sum, n, err := rp.retOurDump(t, s)
		if err != nil {
			t.Errorf("dump %.8s %s: %v", s.id, s.name, err)
			continue
		}
		if sum != s.hash || n != s.size {
			t.Errorf("scalr-backup dump %.8s %s: %d bytes sha256 %s, want %d bytes %s", s.id, s.name, n, sum, s.size, s.hash)
		}
	}
}

// verifyRestic: restic's snapshot list equals the model and every snapshot
// dumps byte-identical with restic.
func (rp *retRepo) verifyRestic(t *testing.T, rc *testenv.ResticCLI, m *retModel) {
	t.Helper()
	r := rp.restic(rc)
	got := retSnapIDs(t, "restic "+rc.Version, r.MustRun(t, rp.dir, "", nil, "snapshots", "--json").Stdout)
	if want := m.ids(); !slices.Equal(got, want) {
		t.Errorf("restic %s lists snapshots %v, want %v", rc.Version, retShort(got), retShort(want))
	}
	for _, s := range m.snaps {
		rd, wait := r.Stream(t.Context(), rp.dir, "", "dump", s.id, "/"+s.name)
		h := sha256.New()
		n, rerr := io.Copy(h, rd)
		rd.Close()
		if err := wait(); err != nil {
			t.Errorf("restic %s dump %.8s: %v", rc.Version, s.id, err)
			continue
		}
		if rerr != nil {
			t.Errorf("restic %s dump %.8s: %v", rc.Version, s.id, rerr)
			continue
		}
		if sum := hex.EncodeToString(h.Sum(nil)); sum != s.hash || n != s.size {
			t.Errorf("restic %s dump %.8s %s: %d bytes sha256 %s, want %d bytes %s", rc.Version, s.id, s.name, n, sum, s.size, s.hash)
		}
	}
}

// resticCheck runs `restic check --read-data` and requires a clean result:
// exit 0, "no errors were found" and no non-critical findings either.
func (rp *retRepo) resticCheck(t *testing.T, rc *testenv.ResticCLI) {
	t.Helper()
	start := time.Now()
	res, err := rp.restic(rc).Run(t.Context(), rp.dir, "", nil, "check", "--read-data")
	if err != nil {
		t.Fatalf("restic %s check: %v", rc.Version, err)
	}
	out := string(res.Stdout) + string(res.Stderr)
	if res.ExitCode != 0 || !strings.Contains(out, "no errors were found") {
		t.Errorf("restic %s check --read-data: exit %d\n%s", rc.Version, res.ExitCode, out)
		return
	}
	rest := strings.ReplaceAll(out, "no errors were found", "")
	for _, bad := range []string{"additional files", "not referenced in any index", "unused", "error", "Fatal", "duplicate"} {
		if strings.Contains(rest, bad) {
			t.Errorf("restic %s check --read-data mentions %q:\n%s", rc.Version, bad, out)
		}
	}
	t.Logf("restic %s check --read-data: clean in %s", rc.Version, time.Since(start).Round(time.Millisecond))
}

// ourCheck runs our `check --read-data` and requires a clean result.
func (rp *retRepo) ourCheck(t *testing.T) {
	t.Helper()
	res := rp.ours(t, nil, "check", "--read-data")
	if res.code != 0 || !strings.Contains(res.stdout, "no errors were found") {
		t.Errorf("scalr-backup check --read-data is not clean: %s", res)
		return
	}
	for _, bad := range []string{"additional files", "error", "more than once", "several index"} {
		if strings.Contains(strings.ReplaceAll(res.stdout, "no errors were found", ""), bad) || strings.Contains(res.stderr, bad) {
			t.Errorf("scalr-backup check --read-data mentions %q: %s", bad, res)
		}
	}
	t.Logf("scalr-backup check --read-data: clean in %s", res.took.Round(time.Millisecond))
}

// retPruneStats is our `prune --json` output (its snake_case fields are
// repo.PruneStats's JSON tags).
type retPruneStats = repo.PruneStats

func (rp *retRepo) ourPrune(t *testing.T, args ...string) retPruneStats {
	t.Helper()
	res := rp.mustOurs(t, nil, append([]string{"prune", "--json"}, args...)...)
	var st retPruneStats
	if err := json.Unmarshal([]byte(res.stdout), &st); err != nil {
		t.Fatalf("prune --json output: %v\n%s", err, res)
	}
	t.Logf("scalr-backup prune %v in %s: %d packs, %d kept, %d repacked, %d removed, %d unreferenced; used %d B, unused %d B, dup %d B; remaining %d B of which unused %d B (limit %d B)",
		args, res.took.Round(time.Millisecond), st.PacksTotal, st.PacksKeep, st.PacksRepack, st.PacksRemove, st.PacksUnreferenced,
		st.UsedSize, st.UnusedSize, st.DuplicateSize, st.RemainingSize, st.RemainingUnusedSize, st.MaxUnusedBytesAllowed)
	return st
}

// ---------------------------------------------------------------------------
// Repository files.

// retFiles lists the repository's files (relative paths) under sub ("" for
// all), without locks and temporary files.
func retFiles(t *testing.T, dir, sub string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	err := filepath.WalkDir(filepath.Join(dir, sub), func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		if strings.HasPrefix(rel, "locks"+string(filepath.Separator)) {
			return nil
		}
		// Only repository files: temporary files of a running writer
		// come and go.
		if _, err := repo.ParseID(d.Name()); err == nil || rel == "config" {
			out[rel] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func retPackCount(t *testing.T, dir string) int {
	t.Helper()
	return len(retFiles(t, dir, "data"))
}

func retLockNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, "locks"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		if _, err := repo.ParseID(e.Name()); err == nil {
			names = append(names, e.Name())
		}
	}
	return names
}

// retWaitNewLock waits until a lock file not in before appears and returns
// its name.
func retWaitNewLock(t *testing.T, dir string, before []string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, n := range retLockNames(t, dir) {
			if !slices.Contains(before, n) {
				return n
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no new lock file appeared in %s within %s", filepath.Join(dir, "locks"), timeout)
	return ""
}

// retWaitPacks waits up to 10 s for more than before packs: a running
// backup that has chunked more than the pack size must have uploaded one.
func retWaitPacks(t *testing.T, dir string, before int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for retPackCount(t, dir) <= before {
		if time.Now().After(deadline) {
			t.Errorf("the running backup uploaded no pack within 10 s of being fed 14 MiB with RESTIC_PACK_SIZE=4")
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// retLockInfo reads one lock file through the library.
func (rp *retRepo) retLockInfo(t *testing.T, name string) *repo.LockInfo {
	t.Helper()
	r, err := repo.Open(t.Context(), local.New(rp.dir), rp.pw, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	locks, err := r.ListLocks(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range locks {
		if l.ID.String() == name {
			return l
		}
	}
	t.Fatalf("lock %s not found (locks: %v)", name, locks)
	return nil
}

// retMentionsHolder requires msg to name the lock's holder: PID and host.
func retMentionsHolder(t *testing.T, who, msg string, li *repo.LockInfo) {
	t.Helper()
	pid := regexp.MustCompile(`\bPID ` + strconv.Itoa(li.PID) + `\b`)
	host := regexp.MustCompile(`\b` + regexp.QuoteMeta(li.Hostname) + `\b`)
	if !pid.MatchString(msg) || !host.MatchString(msg) {
		t.Errorf("%s does not name the lock holder (PID %d on %s):\n%s", who, li.PID, li.Hostname, msg)
	}
}

// retPipeBackup is one of our backups reading a stream through a pipe, fed
// by the test.
type retPipeBackup struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stdout bytes.Buffer
	stderr bytes.Buffer
}

func (rp *retRepo) startOurPipeBackup(t *testing.T, st *retStream, extraEnv ...string) *retPipeBackup {
	t.Helper()
	cmd := rp.ourCmd(t.Context(), extraEnv, "backup", "--stdin", "--stdin-filename", st.name, "--host", "retention-host", "--json")
	b := &retPipeBackup{cmd: cmd}
	cmd.Stdout, cmd.Stderr = &b.stdout, &b.stderr
	w, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	b.stdin = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return b
}

// retFeed copies n bytes of src to w in pieces with a pause after each.
func retFeed(w io.Writer, src io.Reader, n int64, piece int, pause time.Duration) error {
	buf := make([]byte, piece)
	for n > 0 {
		k := min(int64(piece), n)
		if _, err := io.ReadFull(src, buf[:k]); err != nil {
			return err
		}
		if _, err := w.Write(buf[:k]); err != nil {
			return err
		}
		n -= k
		if pause > 0 {
			time.Sleep(pause)
		}
	}
	return nil
}

// ---------------------------------------------------------------------------
// Acceptance 2: prune correctness.

// TestRetentionPruneInterop: (a) our prune on our repository, checked by
// both restic versions; (b) restic's prune on our repository, checked by
// us; (c) our prune on a repository restic wrote.
func TestRetentionPruneInterop(t *testing.T) {
	testenv.Integration(t)
	r14 := testenv.Restic(t, testenv.Restic014)
	r18 := testenv.Restic(t, testenv.Restic0181)
	seed := retSeed(t, 20240611)

	// The base: ~10 stream backups into two groups, interleaved with
	// forget --keep-last N, all by scalr-backup. Each subtest prunes a copy.
	base := retNewOurRepo(t, "base")
	model := newRetModel()
	gen := newRetGen(seed)
	rng := mrand.New(mrand.NewPCG(seed, 1))
	start := time.Now()
	forgets := 0
	const backups = 10
	for i := range backups {
		name := []string{"app-a.dump", "app-b.dump"}[rng.IntN(2)]
		base.ourBackup(t, model, gen.stream(name, 20))
		last := i == backups-1
		if (i >= 1 && rng.IntN(3) == 0) || (last && forgets < 2) || (i == backups-3 && forgets == 0) {
			n := 1 + rng.IntN(3)
			res := base.mustOurs(t, nil, "forget", "--keep-last", strconv.Itoa(n))
			model.keepLast(n)
			forgets++
			t.Logf("forget --keep-last %d after backup %d: %d snapshots left (%s)", n, i+1, len(model.snaps), res.took.Round(time.Millisecond))
			got := retSnapIDs(t, "scalr-backup", []byte(base.mustOurs(t, nil, "snapshots", "--json").stdout))
			if !slices.Equal(got, model.ids()) {
				t.Fatalf("after forget --keep-last %d: snapshots %v, want %v", n, retShort(got), retShort(model.ids()))
			}
		}
	}
	t.Logf("base repository: %d backups, %d forgets, %d snapshots left, %d packs, in %s", backups, forgets, len(model.snaps), retPackCount(t, base.dir), time.Since(start).Round(time.Millisecond))

	t.Run("ours-prune-our-repo", func(t *testing.T) {
		rp := retCopyRepo(t, base, "ours-prune")
		m := &retModel{snaps: slices.Clone(model.snaps), byID: maps.Clone(model.byID)}
		packs := retPackCount(t, rp.dir)
		st := rp.ourPrune(t)
		if st.PacksRemove+st.PacksRepack == 0 {
			t.Errorf("prune with forgotten snapshots removed and repacked nothing: %+v", st)
		}
		if st.RemainingUnusedSize > st.MaxUnusedBytesAllowed {
			t.Errorf("prune left %d unused bytes, more than the %d allowed", st.RemainingUnusedSize, st.MaxUnusedBytesAllowed)
		}
		t.Logf("packs: %d before, %d after", packs, retPackCount(t, rp.dir))
		rp.resticCheck(t, r14)
		rp.resticCheck(t, r18)
		rp.verifyOurs(t, m)
		rp.verifyRestic(t, r18, m)

		// More history that leaves a pack partly used, then prune to
		// zero unused space.
		x, y := gen.prefixPair("app-a.dump")
		rp.ourBackup(t, m, x)
		rp.ourBackup(t, m, y)
		rp.mustOurs(t, nil, "forget", "--keep-last", "1")
		m.keepLast(1)
		st = rp.ourPrune(t, "--max-unused", "0%")
		if st.RemainingUnusedSize != 0 || st.PacksRepack == 0 {
			t.Errorf("prune --max-unused 0%%: %d packs repacked (want some), %d unused bytes left (want 0)", st.PacksRepack, st.RemainingUnusedSize)
		}
		dry := rp.ourPrune(t, "--dry-run")
		if dry.UnusedSize+dry.DuplicateSize != 0 || dry.PacksRemove+dry.PacksRepack+dry.PacksUnreferenced != 0 {
			t.Errorf("after prune --max-unused 0%%, a dry run still finds unused data: %+v", dry)
		}
		rp.resticCheck(t, r14)
		rp.resticCheck(t, r18)
		rp.verifyOurs(t, m)
		rp.verifyRestic(t, r18, m)
	})

	for _, c := range []struct {
		rc   *testenv.ResticCLI
		args []string
	}{{r18, nil}, {r14, []string{"--max-unused", "0%"}}} {
		t.Run("restic-"+c.rc.Version+"-prune-our-repo", func(t *testing.T) {
			rp := retCopyRepo(t, base, "restic-prune")
			packs := retPackCount(t, rp.dir)
			s := time.Now()
			res := rp.restic(c.rc).MustRun(t, rp.dir, "", nil, append([]string{"prune"}, c.args...)...)
			t.Logf("restic %s prune %v in %s (packs %d -> %d):\n%s", c.rc.Version, c.args, time.Since(s).Round(time.Millisecond), packs, retPackCount(t, rp.dir), res.Stdout)
			rp.ourCheck(t)
			rp.verifyOurs(t, model)
		})
	}

	t.Run("ours-prune-restic-repo", func(t *testing.T) {
		rp := retNewResticRepo(t, "restic-written", r18)
		m := newRetModel()
		gen := newRetGen(seed + 1)
		rng := mrand.New(mrand.NewPCG(seed+1, 1))
		for i := range 7 {
			name := []string{"app-a.dump", "app-b.dump"}[rng.IntN(2)]
			rp.resticBackup(t, r18, m, gen.stream(name, 12))
			if i == 3 || i == 6 || (i >= 1 && rng.IntN(4) == 0) {
				n := 1 + rng.IntN(2)
				rp.restic(r18).MustRun(t, rp.dir, "", nil, "forget", "--keep-last", strconv.Itoa(n))
				m.keepLast(n)
				t.Logf("restic forget --keep-last %d: %d snapshots left", n, len(m.snaps))
			}
		}
		st := rp.ourPrune(t)
		if st.PacksRemove+st.PacksRepack == 0 {
			t.Errorf("prune with forgotten snapshots removed and repacked nothing: %+v", st)
		}
		rp.resticCheck(t, r18)
		rp.verifyRestic(t, r18, m)

		x, y := gen.prefixPair("app-b.dump")
		rp.resticBackup(t, r18, m, x)
		rp.resticBackup(t, r18, m, y)
		rp.restic(r18).MustRun(t, rp.dir, "", nil, "forget", "--keep-last", "1")
		m.keepLast(1)
		st = rp.ourPrune(t, "--max-unused", "0%")
		if st.RemainingUnusedSize != 0 || st.PacksRepack == 0 {
			t.Errorf("prune --max-unused 0%%: %d packs repacked (want some), %d unused bytes left (want 0)", st.PacksRepack, st.RemainingUnusedSize)
		}
		dry := rp.ourPrune(t, "--dry-run")
		if dry.UnusedSize+dry.DuplicateSize != 0 || dry.PacksRemove+dry.PacksRepack+dry.PacksUnreferenced != 0 {
			t.Errorf("after prune --max-unused 0%%, a dry run still finds unused data: %+v", dry)
		}
		rp.resticCheck(t, r14)
		rp.resticCheck(t, r18)
		rp.verifyRestic(t, r18, m)
		rp.verifyRestic(t, r14, m)
	})
}

// ---------------------------------------------------------------------------
// Acceptance 3: prune next to a running backup of the other tool.

// retGarbage makes a repository with something to prune: two snapshots of
// which one is forgotten.
func retGarbage(t *testing.T, rp *retRepo, m *retModel, gen *retGen) {
	t.Helper()
	rp.ourBackup(t, m, gen.stream("pre.dump", 3))
	rp.ourBackup(t, m, gen.stream("pre.dump", 3))
	rp.mustOurs(t, nil, "forget", "--keep-last", "1")
	m.keepLast(1)
}

// TestRetentionPruneWhileOurBackup: restic prune must refuse while our
// backup holds its lock, and delete nothing.
func TestRetentionPruneWhileOurBackup(t *testing.T) {
	testenv.Integration(t)
	r14 := testenv.Restic(t, testenv.Restic014)
	r18 := testenv.Restic(t, testenv.Restic0181)
	seed := retSeed(t, 31)
	rp := retNewOurRepo(t, "concurrent-ours")
	m := newRetModel()
	gen := newRetGen(seed)
	retGarbage(t, rp, m, gen)

	// 16 MiB with 4 MiB packs, 14 MiB fed before the prune attempts: as a
	// chunk is at most 8 MiB, at least 6 MiB are chunked by then, so a pack
	// is uploaded but not yet indexed while restic tries to prune.
	const fed = 14 << 20
	st := retSingle("live.dump", seed<<32|7, 16<<20)
	want := st.hash()
	packsBefore := len(retFiles(t, rp.dir, "data"))
	locksBefore := retLockNames(t, rp.dir)

	b := rp.startOurPipeBackup(t, st, "RESTIC_PACK_SIZE=4")
	src := st.reader()
	lockName := retWaitNewLock(t, rp.dir, locksBefore, 30*time.Second)
	if err := retFeed(b.stdin, src, fed, 512<<10, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	// Wait for the first pack of the running backup to land.
	retWaitPacks(t, rp.dir, packsBefore)
	packsMid := retPackCount(t, rp.dir)
	t.Logf("our backup holds lock %.8s; packs %d before, %d while running", lockName, packsBefore, packsMid)
	filesMid := retFiles(t, rp.dir, "")

	for _, rc := range []*testenv.ResticCLI{r18, r14} {
		res, err := rp.restic(rc).Run(t.Context(), rp.dir, "", nil, "prune")
		if err != nil {
			t.Fatal(err)
		}
		out := string(res.Stdout) + string(res.Stderr)
		t.Logf("restic %s prune while our backup runs: exit %d\n%s", rc.Version, res.ExitCode, out)
		if res.ExitCode == 0 || !strings.Contains(strings.ToLower(out), "lock") {
			t.Errorf("restic %s prune did not refuse on our lock: exit %d\n%s", rc.Version, res.ExitCode, out)
		}
	}
	// Our own prune must refuse too.
	li := rp.retLockInfo(t, lockName)
	if li.PID != b.cmd.Process.Pid {
		t.Errorf("lock records PID %d, our backup is PID %d", li.PID, b.cmd.Process.Pid)
	}
	if res := rp.ours(t, nil, "prune"); res.code != retExitLocked {
		t.Errorf("our prune next to our running backup: exit %d, want %d: %s", res.code, retExitLocked, res)
	} else {
		retMentionsHolder(t, "our prune's error", res.stderr, li)
	}
	for f := range filesMid {
		if _, err := os.Stat(filepath.Join(rp.dir, f)); err != nil {
			t.Errorf("a refused prune deleted %s while our backup held its lock: %v", f, err)
		}
	}
	if n := retPackCount(t, rp.dir); n < packsMid {
		t.Errorf("pack count went down from %d to %d", packsMid, n)
	}
	if !slices.Contains(retLockNames(t, rp.dir), lockName) {
		t.Errorf("our backup's lock %s is gone after restic's prune attempt", lockName)
	}

	if err := retFeed(b.stdin, src, st.size-fed, 1<<20, 0); err != nil {
		t.Fatal(err)
	}
	b.stdin.Close()
	if err := b.cmd.Wait(); err != nil {
		t.Fatalf("our backup after restic's prune attempt: %v\n%s", err, b.stderr.String())
	}
	m.add(&retSnap{id: retBackupSummary(t, "scalr-backup", b.stdout.Bytes()), name: st.name, hash: want, size: st.size})
	if l := retLockNames(t, rp.dir); len(l) != 0 {
		t.Errorf("locks left after the backup: %v", l)
	}

	rp.resticCheck(t, r18)
	rp.verifyOurs(t, m)
	rp.verifyRestic(t, r18, m)
	// Now restic may prune; everything must survive it.
	rp.restic(r18).MustRun(t, rp.dir, "", nil, "prune")
	rp.resticCheck(t, r18)
	rp.verifyOurs(t, m)
}

// TestRetentionOurPruneWhileResticBackup: our prune must refuse with exit
// 11 naming restic's lock, and with --retry-lock wait for it.
func TestRetentionOurPruneWhileResticBackup(t *testing.T) {
	testenv.Integration(t)
	r18 := testenv.Restic(t, testenv.Restic0181)
	seed := retSeed(t, 47)
	rp := retNewOurRepo(t, "concurrent-restic")
	m := newRetModel()
	gen := newRetGen(seed)
	retGarbage(t, rp, m, gen)

	st := retSingle("restic-live.dump", seed<<32|9, 6<<20)
	want := st.hash()
	locksBefore := retLockNames(t, rp.dir)

	pr, pw := io.Pipe()
	type done struct {
		res testenv.Result
		err error
	}
	resticDone := make(chan done, 1)
	go func() {
		res, err := rp.restic(r18).Run(t.Context(), rp.dir, "", pr, "backup", "--stdin", "--stdin-filename", st.name, "--host", "retention-host", "--json")
		pr.CloseWithError(errors.New("restic backup exited")) // unblock the feeder
		resticDone <- done{res, err}
	}()
	defer pw.CloseWithError(errors.New("test ended"))
	src := st.reader()
	if err := retFeed(pw, src, 1<<20, 256<<10, 20*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	lockName := retWaitNewLock(t, rp.dir, locksBefore, 30*time.Second)
	li := rp.retLockInfo(t, lockName)
	if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", li.PID)); err == nil && exe != r18.Path {
		t.Logf("note: lock PID %d runs %s, restic is %s", li.PID, exe, r18.Path)
	}
	t.Logf("restic backup holds lock %.8s: %+v", lockName, *li)

	packs := retPackCount(t, rp.dir)
	res := rp.ours(t, nil, "prune")
	t.Logf("our prune while restic backs up: %s", res)
	if res.code != retExitLocked {
		t.Errorf("our prune next to restic's backup: exit %d, want %d", res.code, retExitLocked)
	}
	retMentionsHolder(t, "our prune's error", res.stderr, li)
	if n := retPackCount(t, rp.dir); n < packs {
		t.Errorf("our refused prune removed packs: %d -> %d", packs, n)
	}

	// With --retry-lock our prune waits for the backup to end.
	pruneDone := make(chan retRun, 1)
	pruneStart := time.Now()
	go func() {
		cmd := rp.ourCmd(t.Context(), nil, "--retry-lock", "30s", "prune")
		var so, se bytes.Buffer
		cmd.Stdout, cmd.Stderr = &so, &se
		err := cmd.Run()
		r := retRun{args: cmd.Args[1:], stdout: so.String(), stderr: se.String(), took: time.Since(pruneStart)}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			r.code = ee.ExitCode()
		} else if err != nil {
			r.code, r.stderr = -1, r.stderr+err.Error()
		}
		pruneDone <- r
	}()
	const hold = 3 * time.Second
	select {
	case r := <-pruneDone:
		t.Fatalf("prune --retry-lock 30s returned while restic's backup still held its lock: %s", r)
	case <-time.After(hold):
	}
	if err := retFeed(pw, src, st.size-1<<20, 1<<20, 0); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	d := <-resticDone
	if d.err != nil || d.res.ExitCode != 0 {
		t.Fatalf("restic backup: %v %v", d.err, d.res.Err())
	}
	m.add(&retSnap{id: retBackupSummary(t, "restic", d.res.Stdout), name: st.name, hash: want, size: st.size})
	var pr2 retRun
	select {
	case pr2 = <-pruneDone:
	case <-time.After(60 * time.Second):
		t.Fatal("prune --retry-lock 30s did not end within 60 s")
	}
	t.Logf("prune --retry-lock 30s: %s", pr2)
	if pr2.code != 0 {
		t.Errorf("prune --retry-lock 30s failed after restic's backup ended: %s", pr2)
	}
	if pr2.took < hold {
		t.Errorf("prune --retry-lock ended after %s, before restic's backup finished", pr2.took)
	}
	rp.resticCheck(t, r18)
	rp.ourCheck(t)
	rp.verifyOurs(t, m)
	rp.verifyRestic(t, r18, m)
}

// ---------------------------------------------------------------------------
// Acceptance 5: stale and live locks.

// TestRetentionStaleLock: a lock left by a killed backup blocks both
// prunes; our unlock removes it; prune then succeeds.
func TestRetentionStaleLock(t *testing.T) {
	testenv.Integration(t)
	r14 := testenv.Restic(t, testenv.Restic014)
	r18 := testenv.Restic(t, testenv.Restic0181)
	seed := retSeed(t, 53)
	rp := retNewOurRepo(t, "stale")
	m := newRetModel()
	gen := newRetGen(seed)
	retGarbage(t, rp, m, gen)

	st := retSingle("killed.dump", seed<<32|11, 16<<20)
	packs := retPackCount(t, rp.dir)
	b := rp.startOurPipeBackup(t, st, "RESTIC_PACK_SIZE=4")
	lockName := retWaitNewLock(t, rp.dir, nil, 30*time.Second)
	// 14 MiB fed: at least 6 MiB chunked, so a 4 MiB pack is uploaded
	// (and never indexed) before the kill.
	if err := retFeed(b.stdin, st.reader(), 14<<20, 512<<10, 10*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	retWaitPacks(t, rp.dir, packs)
	time.Sleep(300 * time.Millisecond)
	pid := b.cmd.Process.Pid
	if err := b.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	b.cmd.Wait() // reap: a zombie would still count as a live process
	b.stdin.Close()
	t.Logf("killed our backup (PID %d) holding lock %.8s; packs %d -> %d", pid, lockName, packs, retPackCount(t, rp.dir))
	li := rp.retLockInfo(t, lockName)
	if li.PID != pid {
		t.Errorf("lock records PID %d, the backup was PID %d", li.PID, pid)
	}
	host, _ := os.Hostname()
	if li.Hostname != host {
		t.Errorf("lock records host %q, this host is %q", li.Hostname, host)
	}

	res := rp.ours(t, nil, "prune")
	t.Logf("our prune on the stale lock: %s", res)
	if res.code != retExitLocked {
		t.Errorf("our prune on a stale lock: exit %d, want %d", res.code, retExitLocked)
	}
	retMentionsHolder(t, "our prune's error", res.stderr, li)
	if !strings.Contains(res.stderr, lockName[:8]) {
		t.Errorf("our prune's error does not name the lock file %.8s: %s", lockName, res.stderr)
	}
	if !strings.Contains(res.stderr, "unlock") {
		// restic says "the `unlock` command can be used to remove stale
		// locks"; a hint is not required, so this is only noted.
		t.Logf("note: our prune's lock error does not point at `unlock`: %s", strings.TrimSpace(res.stderr))
	}
	for _, rc := range []*testenv.ResticCLI{r18, r14} {
		rr, err := rp.restic(rc).Run(t.Context(), rp.dir, "", nil, "prune")
		if err != nil {
			t.Fatal(err)
		}
		out := string(rr.Stdout) + string(rr.Stderr)
		t.Logf("restic %s prune on the stale lock: exit %d\n%s", rc.Version, rr.ExitCode, out)
		if rr.ExitCode == 0 || !strings.Contains(strings.ToLower(out), "lock") {
			t.Errorf("restic %s prune did not refuse on the stale lock: exit %d\n%s", rc.Version, rr.ExitCode, out)
		}
	}
	if !slices.Contains(retLockNames(t, rp.dir), lockName) {
		t.Fatalf("the stale lock vanished before unlock")
	}

	un := rp.mustOurs(t, nil, "unlock")
	t.Logf("unlock: %s", strings.TrimSpace(un.stdout))
	if !strings.Contains(un.stdout, "removed 1 lock") {
		t.Errorf("unlock output %q, want it to report 1 removed lock", un.stdout)
	}
	if l := retLockNames(t, rp.dir); len(l) != 0 {
		t.Errorf("locks left after unlock: %v", l)
	}
	pst := rp.ourPrune(t)
	if pst.PacksUnreferenced == 0 {
		t.Errorf("prune did not remove the killed backup's unindexed packs: %+v", pst)
	}
	rp.resticCheck(t, r18)
	rp.verifyOurs(t, m)
}

// TestRetentionLiveLock: our unlock leaves the lock of a running process
// alone; --remove-all removes it.
func TestRetentionLiveLock(t *testing.T) {
	testenv.Integration(t)
	r18 := testenv.Restic(t, testenv.Restic0181)
	seed := retSeed(t, 59)
	rp := retNewOurRepo(t, "live")
	m := newRetModel()
	gen := newRetGen(seed)
	rp.ourBackup(t, m, gen.stream("pre.dump", 3))

	t.Run("restic-backup-running", func(t *testing.T) {
		st := retSingle("restic-live.dump", seed<<32|13, 4<<20)
		want := st.hash()
		pr, pw := io.Pipe()
		defer pw.CloseWithError(errors.New("test ended"))
		type done struct {
			res testenv.Result
			err error
		}
		resticDone := make(chan done, 1)
		go func() {
			res, err := rp.restic(r18).Run(t.Context(), rp.dir, "", pr, "backup", "--stdin", "--stdin-filename", st.name, "--host", "retention-host", "--json")
			pr.CloseWithError(errors.New("restic backup exited")) // unblock the feeder
			resticDone <- done{res, err}
		}()
		src := st.reader()
		if err := retFeed(pw, src, 1<<20, 256<<10, 20*time.Millisecond); err != nil {
			t.Fatal(err)
		}
		lockName := retWaitNewLock(t, rp.dir, nil, 30*time.Second)
		un := rp.mustOurs(t, nil, "unlock")
		t.Logf("unlock next to restic's backup: %s", strings.TrimSpace(un.stdout))
		if !slices.Contains(retLockNames(t, rp.dir), lockName) {
			t.Errorf("our unlock removed the live lock %.8s of a running restic backup", lockName)
		}
		if !strings.Contains(un.stdout, "removed 0 locks") {
			t.Errorf("unlock output %q, want 0 removed locks", un.stdout)
		}
		if err := retFeed(pw, src, st.size-1<<20, 1<<20, 0); err != nil {
			t.Fatal(err)
		}
		pw.Close()
		d := <-resticDone
		if d.err != nil || d.res.ExitCode != 0 {
			t.Fatalf("restic backup after our unlock: %v %v", d.err, d.res.Err())
		}
		m.add(&retSnap{id: retBackupSummary(t, "restic", d.res.Stdout), name: st.name, hash: want, size: st.size})
	})

	t.Run("in-process-lock", func(t *testing.T) {
		r, err := repo.Open(t.Context(), local.New(rp.dir), rp.pw, repo.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		l, err := r.Lock(t.Context(), false)
		if err != nil {
			t.Fatal(err)
		}
		names := retLockNames(t, rp.dir)
		if len(names) != 1 {
			t.Fatalf("locks %v, want exactly the test's own", names)
		}
		un := rp.mustOurs(t, nil, "unlock")
		if !slices.Equal(retLockNames(t, rp.dir), names) || !strings.Contains(un.stdout, "removed 0 locks") {
			t.Errorf("unlock removed the live lock of PID %d: %q, locks now %v", os.Getpid(), un.stdout, retLockNames(t, rp.dir))
		}
		un = rp.mustOurs(t, nil, "unlock", "--remove-all")
		t.Logf("unlock --remove-all: %s", strings.TrimSpace(un.stdout))
		if l := retLockNames(t, rp.dir); len(l) != 0 || !strings.Contains(un.stdout, "removed 1 lock") {
			t.Errorf("unlock --remove-all: %q, locks left %v", un.stdout, l)
		}
		if err := l.Unlock(t.Context()); err != nil {
			t.Errorf("releasing a lock that --remove-all deleted: %v", err)
		}
	})

	rp.resticCheck(t, r18)
	rp.verifyOurs(t, m)
	rp.verifyRestic(t, r18, m)
}

// ---------------------------------------------------------------------------
// forget --keep-last 1 --prune.

func TestRetentionForgetPrune(t *testing.T) {
	testenv.Integration(t)
	r14 := testenv.Restic(t, testenv.Restic014)
	r18 := testenv.Restic(t, testenv.Restic0181)
	seed := retSeed(t, 61)
	rp := retNewOurRepo(t, "forget-prune")
	m := newRetModel()
	gen := newRetGen(seed)
	for i := range 5 {
		rp.ourBackup(t, m, gen.stream([]string{"a.dump", "b.dump"}[i%2], 6))
	}
	packs := retPackCount(t, rp.dir)
	res := rp.mustOurs(t, nil, "forget", "--keep-last", "1", "--prune")
	t.Logf("forget --keep-last 1 --prune: %s", res)
	m.keepLast(1)
	got := retSnapIDs(t, "scalr-backup", []byte(rp.mustOurs(t, nil, "snapshots", "--json").stdout))
	if !slices.Equal(got, m.ids()) || len(got) != 2 {
		t.Errorf("after forget --keep-last 1 --prune: snapshots %v, want %v", retShort(got), retShort(m.ids()))
	}
	for _, s := range []string{"used:", "unused:", "to delete:", "remaining:", "replaced "} {
		if !strings.Contains(res.stdout, s) {
			t.Errorf("forget --prune printed no prune statistics (%q missing):\n%s", s, res.stdout)
		}
	}
	after := retPackCount(t, rp.dir)
	t.Logf("packs %d -> %d", packs, after)
	if after >= packs {
		t.Errorf("forget --prune did not remove packs: %d before, %d after", packs, after)
	}
	rp.resticCheck(t, r14)
	rp.resticCheck(t, r18)
	rp.verifyOurs(t, m)
	rp.verifyRestic(t, r18, m)
}
