package main

// Issue 17, "degrade like restic on damage", end to end: the built binary
// beside restic 0.14 and 0.18.1, on a local folder and on versitygw.
//
//  1. TestDamageSnapshotFile, TestDamageIndexFile, TestDamagePackOneSnapshot:
//     one damaged snapshot file (flipped byte, truncated), index file or
//     pack: listings name and skip it, forget and prune keep working (prune
//     stops, naming the file, when it cannot tell what a damaged snapshot
//     references), dump of the other snapshots works, check exits non-zero
//     naming the object and the repair, restic's check agrees, and the
//     repair leaves a repository both checks pass. The nightly `run` on a
//     real Docker engine is in damage_run_test.go.
//  2. TestUnwritable*: init, backup and prune where they may not write
//     (another user's folder, a read-only mount, an S3 user with read-only
//     access) or on a full disk (tmpfs, versitygw on a tmpfs): non-zero
//     within 5 s, with the cause.
//  3. TestDamageKeyFile: a flipped, garbage or truncated key file is exit 1
//     naming keys/ID (restic 0.18.1 too), not 12; with two keys the intact
//     one still opens.
//  4. TestKillMidBackup: kill -9 mid-backup leaves nothing that check does
//     not mention or a later prune (after the safe age) does not remove.
//
// Helper names start with dmg.

import (
	"bytes"
	"encoding/json"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/open"
	"github.com/scalr-platform/scalr-backup/internal/testenv"
	"github.com/scalr-platform/scalr-backup/repo"
)

// dmgRepo is a repository made by our init, with the CLIs that reach it.
type dmgRepo struct {
	tg     *interopTarget
	loc    string
	pw     string
	pwFile string
	ours   *ourCLI
}

func dmgNew(t *testing.T, tg *interopTarget, label string) *dmgRepo {
	t.Helper()
	d := &dmgRepo{tg: tg, loc: tg.newLocation(t, label), pw: "damage " + label}
	d.pwFile = writePasswordFile(t, d.pw)
	d.ours = newOurCLI(t, tg, d.loc, d.pwFile)
	d.ours.mustRun(t, nil, "init")
	return d
}

// restic is the given restic version reaching this repository.
func (d *dmgRepo) restic(t *testing.T, version string) *testenv.ResticCLI {
	return resticFor(testenv.Restic(t, version), d.tg, d.pwFile)
}

// getenv reaches the S3 server's credentials (nil for local).
func (d *dmgRepo) getenv() func(string) string {
	if d.tg.s3 != nil {
		return d.tg.s3.Getenv
	}
	return func(string) string { return "" }
}

// be opens the storage directly, for the test's own reads and damage.
func (d *dmgRepo) be(t *testing.T) backend.Backend {
	t.Helper()
	o, err := open.Open(t.Context(), d.loc, open.Options{Getenv: d.getenv()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { o.Close() })
	return o
}

// lib opens the repository through the library.
func (d *dmgRepo) lib(t *testing.T) *repo.Repository {
	t.Helper()
	r, err := repo.Open(t.Context(), d.be(t), d.pw, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// names lists the files of type ft.
func (d *dmgRepo) names(t *testing.T, ft backend.FileType) []string {
	t.Helper()
	var out []string
	if err := d.be(t).List(t.Context(), ft, func(fi backend.FileInfo) error {
		out = append(out, fi.Name)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// rewrite replaces the stored file h by edit(its bytes), on either storage.
func (d *dmgRepo) rewrite(t *testing.T, h backend.Handle, edit func([]byte) []byte) {
	t.Helper()
	be := d.be(t)
	b, err := backend.LoadAll(t.Context(), be, h)
	if err != nil {
		t.Fatal(err)
	}
	if err := be.Remove(t.Context(), h); err != nil {
		t.Fatal(err)
	}
	if err := be.Save(t.Context(), h, backend.BytesSource(edit(b))); err != nil {
		t.Fatal(err)
	}
}

// backup stores a seeded stream as /name and returns the snapshot ID.
func (d *dmgRepo) backup(t *testing.T, seed uint64, name string, size int64) string {
	t.Helper()
	return d.ours.backup(t, newMixedStream(seed, size), "--stdin-filename", name, "--tag", name).SnapshotID
}

// dmgTimed runs fn and logs how long it took.
func dmgTimed(t *testing.T, what string, fn func() cliRun) cliRun {
	t.Helper()
	start := time.Now()
	res := fn()
	t.Logf("%s: exit %d in %s", what, res.code, time.Since(start).Round(time.Millisecond))
	return res
}

// dmgIDs decodes `snapshots --json` (either CLI) into sorted IDs.
func dmgIDs(t *testing.T, who string, b []byte) []string {
	t.Helper()
	var list []struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatalf("%s snapshots --json: %v\n%s", who, err, b)
	}
	var ids []string
	for _, s := range list {
		ids = append(ids, s.ID)
	}
	sort.Strings(ids)
	return ids
}

// dmgFlip flips a byte in the middle; dmgTruncate keeps the first half.
func dmgFlip(b []byte) []byte     { b[len(b)/2] ^= 0x40; return b }
func dmgTruncate(b []byte) []byte { return b[:len(b)/2] }

// dmgCheckAgree runs both checks (ours and restic 0.18.1, with the same
// flags) and fails unless both exit non-zero and name every want; restic
// names objects by their first 8 hex digits.
func (d *dmgRepo) dmgCheckAgree(t *testing.T, flags []string, want ...string) (ours cliRun, restic testenv.Result) {
	t.Helper()
	ours = dmgTimed(t, "scalr-backup check "+strings.Join(flags, " "), func() cliRun { return d.ours.run(t, nil, append([]string{"check"}, flags...)...) })
	if ours.code != exitError {
		t.Errorf("our check: want exit 1: %s", ours)
	}
	r := d.restic(t, testenv.Restic0181)
	restic, err := r.Run(t.Context(), d.loc, "", nil, append([]string{"check"}, flags...)...)
	if err != nil {
		t.Fatal(err)
	}
	rout := string(restic.Stdout) + string(restic.Stderr)
	if restic.ExitCode == 0 {
		t.Errorf("restic 0.18.1 check passes where ours fails:\n%s", rout)
	}
	for _, w := range want {
		if !strings.Contains(string(ours.stderr), w) {
			t.Errorf("our check does not name %q: %s", w, ours)
		}
		if !strings.Contains(rout, dmgShort(w)) {
			t.Errorf("restic 0.18.1 check does not name %q:\n%s", dmgShort(w), rout)
		}
	}
	return ours, restic
}

// dmgShort is the first 8 hex digits of the ID in an object name.
func dmgShort(obj string) string {
	if m := regexp.MustCompile(`[0-9a-f]{64}`).FindString(obj); m != "" {
		return m[:8]
	}
	return obj
}

// dmgCheckClean runs both checks with --read-data: both must pass.
func (d *dmgRepo) dmgCheckClean(t *testing.T) {
	t.Helper()
	res := dmgTimed(t, "scalr-backup check --read-data", func() cliRun { return d.ours.run(t, nil, "check", "--read-data") })
	if res.code != 0 {
		t.Errorf("our check after the repair: %s", res)
	}
	d.restic(t, testenv.Restic0181).MustRun(t, d.loc, "", nil, "check", "--read-data")
}

// ---------------------------------------------------------------------------
// 1. One damaged snapshot file.

func TestDamageSnapshotFile(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg *interopTarget) {
		for _, dm := range []struct {
			name string
			edit func([]byte) []byte
		}{{"flipped", dmgFlip}, {"truncated", dmgTruncate}} {
			t.Run(dm.name, func(t *testing.T) { dmgSnapshotCase(t, tg, dm.edit) })
		}
	})
}

func dmgSnapshotCase(t *testing.T, tg *interopTarget, edit func([]byte) []byte) {
	d := dmgNew(t, tg, "snap")
	a := d.backup(t, 1, "a", 2<<20)
	b := d.backup(t, 2, "b", 2<<20)
	c := d.backup(t, 3, "c", 2<<20)
	// restic adds one of its own, which our listings must show too.
	rc := d.restic(t, testenv.Restic0181)
	rc.MustRun(t, d.loc, "", newMixedStream(4, 1<<20), "backup", "--stdin", "--stdin-filename", "r", "--tag", "r")
	d.rewrite(t, backend.Handle{Type: backend.SnapshotFile, Name: b}, edit)
	before := len(d.names(t, backend.PackFile))

	// Listing: the rest, and the damaged one named.
	res := dmgTimed(t, "snapshots", func() cliRun { return d.ours.run(t, nil, "snapshots", "--json") })
	if res.code != 0 || !strings.Contains(string(res.stderr), `Ignoring "`+b+`"`) || !strings.Contains(string(res.stderr), "snapshots/"+b) {
		t.Fatalf("snapshots: %s", res)
	}
	ours := dmgIDs(t, "ours", res.stdout)
	if len(ours) != 3 || slices.Contains(ours, b) || !slices.Contains(ours, a) || !slices.Contains(ours, c) {
		t.Fatalf("snapshots listed %v", ours)
	}
	for _, v := range testenv.ResticVersions() {
		rr, err := d.restic(t, v).Run(t.Context(), d.loc, "", nil, "snapshots", "--json")
		if err != nil {
			t.Fatal(err)
		}
		if rr.ExitCode != 0 || !strings.Contains(string(rr.Stderr), b[:8]) {
			t.Errorf("restic %s snapshots: exit %d\n%s", v, rr.ExitCode, rr.Stderr)
		}
		if theirs := dmgIDs(t, "restic "+v, rr.Stdout); !slices.Equal(theirs, ours) {
			t.Errorf("restic %s lists %v, we list %v", v, theirs, ours)
		}
	}

	// dump of the others, latest included; the damaged one fails naming it.
	if sum, _ := d.ours.dumpHash(t, "latest", "/r"); sum != streamHash(4, 1<<20) {
		t.Error("dump latest differs")
	}
	if sum, _ := d.ours.dumpHash(t, c, "/c"); sum != streamHash(3, 2<<20) {
		t.Error("dump of c differs")
	}
	if _, _, err := d.ours.tryDumpHash(t, b[:8], "/b"); err == nil || !strings.Contains(err.Error(), "snapshots/"+b) {
		t.Errorf("dump of the damaged snapshot: %v", err)
	}
	// restic's dump latest refuses while any snapshot is damaged (it must
	// load all to find the newest); ours chooses among the readable ones.
	if rr, err := rc.Run(t.Context(), d.loc, "", nil, "dump", "latest", "/r"); err == nil {
		t.Logf("restic 0.18.1 dump latest beside a damaged snapshot: exit %d %s", rr.ExitCode, bytes.TrimSpace(rr.Stderr))
	}

	// forget keeps working and names it.
	res = dmgTimed(t, "forget", func() cliRun {
		return d.ours.run(t, nil, "forget", "--keep-last", "2", "--group-by", "host")
	})
	if res.code != 0 || !strings.Contains(string(res.stderr), `Ignoring "`+b+`"`) {
		t.Fatalf("forget: %s", res)
	}
	// prune (and its dry run) cannot tell what b references: it stops with
	// a clear message, and restic's prune refuses too.
	for _, args := range [][]string{{"prune", "--dry-run"}, {"prune"}} {
		res = dmgTimed(t, strings.Join(args, " "), func() cliRun { return d.ours.run(t, nil, args...) })
		line := s3fErrorLine(t, res)
		if res.code != exitError || !strings.Contains(line, "snapshots/"+b) || !strings.Contains(line, "changed nothing") ||
			!strings.Contains(line, "scalr-backup forget "+b) {
			t.Errorf("%v: %s", args, res)
		}
	}
	if got := len(d.names(t, backend.PackFile)); got != before {
		t.Fatalf("prune changed the packs: %d, was %d", got, before)
	}
	if rr, _ := rc.Run(t.Context(), d.loc, "", nil, "prune", "--dry-run"); rr.ExitCode == 0 {
		t.Errorf("restic 0.18.1 prune --dry-run passes beside a damaged snapshot:\n%s", rr.Stdout)
	}

	// check: both fail, naming the file; ours says how to repair.
	o, _ := d.dmgCheckAgree(t, nil, "snapshots/"+b)
	if !strings.Contains(string(o.stderr), "scalr-backup forget "+b) {
		t.Errorf("check does not give the repair: %s", o)
	}

	// The repair: forget by ID removes the damaged file (restic cannot:
	// it has to read a snapshot to forget it), then prune works and both
	// checks pass.
	res = dmgTimed(t, "forget ID", func() cliRun { return d.ours.run(t, nil, "forget", b[:8]) })
	if res.code != 0 || slices.Contains(d.names(t, backend.SnapshotFile), b) {
		t.Fatalf("forget of the damaged snapshot: %s", res)
	}
	dmgTimed(t, "prune", func() cliRun { return d.ours.mustRun(t, nil, "prune") })
	d.dmgCheckClean(t)
	if sum, _ := d.ours.dumpHash(t, c, "/c"); sum != streamHash(3, 2<<20) {
		t.Error("dump of c differs after the repair")
	}
}

// ---------------------------------------------------------------------------
// 1. One damaged index file.

func TestDamageIndexFile(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg *interopTarget) {
		d := dmgNew(t, tg, "index")
		a := d.backup(t, 11, "a", 3<<20)
		d.backup(t, 12, "b", 3<<20)
		c := d.backup(t, 13, "c", 3<<20)
		// The index file listing a's tree.
		lib := d.lib(t)
		sa, err := lib.LoadSnapshot(t.Context(), dmgID(t, a))
		if err != nil {
			t.Fatal(err)
		}
		var bad string
		for _, name := range d.names(t, backend.IndexFile) {
			plain, err := lib.LoadRaw(t.Context(), backend.IndexFile, dmgID(t, name))
			if err != nil {
				t.Fatal(err)
			}
			ij, err := repo.DecodeIndex(plain)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range ij.Packs {
				for _, bl := range p.Blobs {
					if bl.ID == *sa.Tree {
						bad = name
					}
				}
			}
		}
		if bad == "" {
			t.Fatal("no index file lists a's tree")
		}
		d.rewrite(t, backend.Handle{Type: backend.IndexFile, Name: bad}, dmgFlip)

		// The listing needs no index.
		res := d.ours.mustRun(t, nil, "snapshots", "--json")
		if ids := dmgIDs(t, "ours", res.stdout); len(ids) != 3 {
			t.Fatalf("snapshots: %v", ids)
		}
		// A backup works, naming the file it left out.
		res = dmgTimed(t, "backup", func() cliRun {
			return d.ours.mustRun(t, newMixedStream(14, 1<<20), "backup", "--stdin", "--stdin-filename", "d")
		})
		if !strings.Contains(string(res.stderr), "index/"+bad) {
			t.Errorf("backup does not name the damaged index file: %s", res)
		}
		// Dumps of what other index files list work; a's fails naming the
		// damaged index file.
		if sum, _ := d.ours.dumpHash(t, c, "/c"); sum != streamHash(13, 3<<20) {
			t.Error("dump of c differs")
		}
		if _, _, err := d.ours.tryDumpHash(t, a, "/a"); err == nil || !strings.Contains(err.Error(), "index/"+bad) {
			t.Errorf("dump of a: %v", err)
		}
		// forget keeps working.
		dmgTimed(t, "forget", func() cliRun { return d.ours.mustRun(t, nil, "forget", "--keep-last", "10") })

		// check: both fail naming the file; ours gives the repair.
		o, _ := d.dmgCheckAgree(t, nil, "index/"+bad)
		if !strings.Contains(string(o.stderr), "repair index") {
			t.Errorf("check does not give the repair: %s", o)
		}

		// prune keeps working: it reads the headers of the packs the
		// damaged file listed, keeps what snapshots need and replaces the
		// damaged file.
		res = dmgTimed(t, "prune", func() cliRun { return d.ours.mustRun(t, nil, "prune") })
		if !strings.Contains(string(res.stdout), "damaged index: 1 files replaced") {
			t.Errorf("prune: %s", res)
		}
		if sum, _ := d.ours.dumpHash(t, a, "/a"); sum != streamHash(11, 3<<20) {
			t.Error("dump of a differs after prune")
		}
		d.dmgCheckClean(t)
	})
}

// ---------------------------------------------------------------------------
// 1. One damaged pack, holding data of one snapshot only.

func TestDamagePackOneSnapshot(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg *interopTarget) {
		d := dmgNew(t, tg, "pack")
		a := d.backup(t, 21, "a", 3<<20)
		d.backup(t, 22, "b", 3<<20)
		c := d.backup(t, 23, "c", 3<<20)
		// A data pack holding a's data only.
		lib := d.lib(t)
		sa, err := lib.LoadSnapshot(t.Context(), dmgID(t, a))
		if err != nil {
			t.Fatal(err)
		}
		node, err := lib.FindNode(t.Context(), sa, "/a")
		if err != nil {
			t.Fatal(err)
		}
		idx, err := lib.Index(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		pb, ok := idx.Lookup(repo.BlobHandle{ID: node.Content[0], Type: repo.DataBlob})
		if !ok {
			t.Fatal("a's first blob is not indexed")
		}
		pack := pb.PackID.String()
		for _, other := range []string{c} {
			so, _ := lib.LoadSnapshot(t.Context(), dmgID(t, other))
			n, _ := lib.FindNode(t.Context(), so, "/c")
			for _, id := range n.Content {
				if p, _ := idx.Lookup(repo.BlobHandle{ID: id, Type: repo.DataBlob}); p.PackID == pb.PackID {
					t.Fatal("the pack holds data of another snapshot")
				}
			}
		}
		obj := backend.Handle{Type: backend.PackFile, Name: pack}.String()
		d.rewrite(t, backend.Handle{Type: backend.PackFile, Name: pack}, func(b []byte) []byte { b[len(b)/3] ^= 0x20; return b })

		// Listing, backup, forget and the other dumps work.
		if ids := dmgIDs(t, "ours", d.ours.mustRun(t, nil, "snapshots", "--json").stdout); len(ids) != 3 {
			t.Fatalf("snapshots: %v", ids)
		}
		dmgTimed(t, "backup", func() cliRun {
			return d.ours.mustRun(t, newMixedStream(24, 1<<20), "backup", "--stdin", "--stdin-filename", "d")
		})
		if sum, _ := d.ours.dumpHash(t, c, "/c"); sum != streamHash(23, 3<<20) {
			t.Error("dump of c differs")
		}
		if _, _, err := d.ours.tryDumpHash(t, a, "/a"); err == nil || !strings.Contains(err.Error(), pack[:8]) {
			t.Errorf("dump of a: %v", err)
		}
		dmgTimed(t, "forget", func() cliRun { return d.ours.mustRun(t, nil, "forget", "--keep-last", "10") })
		// prune keeps working while the pack is still needed (it does not
		// need to read it).
		dmgTimed(t, "prune", func() cliRun { return d.ours.mustRun(t, nil, "prune") })

		// check --read-data: both fail naming the pack; ours gives the
		// repair.
		o, _ := d.dmgCheckAgree(t, []string{"--read-data"}, obj)
		if !strings.Contains(string(o.stderr), "repair packs") {
			t.Errorf("check does not give the repair: %s", o)
		}
		// The repair here: forget the one snapshot that used the pack;
		// prune removes the pack; both checks pass.
		d.ours.mustRun(t, nil, "forget", a)
		dmgTimed(t, "prune", func() cliRun { return d.ours.mustRun(t, nil, "prune") })
		if slices.Contains(d.names(t, backend.PackFile), pack) {
			t.Error("prune kept the damaged pack")
		}
		d.dmgCheckClean(t)
	})
}

// ---------------------------------------------------------------------------
// 3. A damaged key file.

func TestDamageKeyFile(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg *interopTarget) {
		d := dmgNew(t, tg, "key")
		d.backup(t, 31, "a", 1<<20)
		// A wrong password with intact keys is 12, for both CLIs.
		wrong := newOurCLI(t, tg, d.loc, writePasswordFile(t, "not the password"))
		if res := wrong.run(t, nil, "snapshots"); res.code != exitWrongPass {
			t.Errorf("wrong password: %s", res)
		}
		key := d.names(t, backend.KeyFile)[0]
		h := backend.Handle{Type: backend.KeyFile, Name: key}
		be := d.be(t)
		good, err := backend.LoadAll(t.Context(), be, h)
		if err != nil {
			t.Fatal(err)
		}
		restore := func() {
			t.Helper()
			if err := be.Remove(t.Context(), h); err != nil {
				t.Fatal(err)
			}
			if err := be.Save(t.Context(), h, backend.BytesSource(good)); err != nil {
				t.Fatal(err)
			}
		}
		for _, dm := range []struct {
			name string
			edit func([]byte) []byte
		}{
			{"flipped", dmgFlip},
			{"garbage", func([]byte) []byte { return []byte("this is not a key file\n") }},
			{"truncated", dmgTruncate},
		} {
			t.Run(dm.name, func(t *testing.T) {
				d.rewrite(t, h, dm.edit)
				defer restore()
				for _, c := range []*ourCLI{d.ours, wrong} {
					res := dmgTimed(t, "snapshots", func() cliRun { return c.run(t, nil, "snapshots") })
					if res.code != exitError || !strings.Contains(s3fErrorLine(t, res), "keys/"+key) || strings.Contains(string(res.stderr), "wrong password") {
						t.Errorf("want exit 1 naming keys/%s: %s", key[:8], res)
					}
				}
				rr, err := d.restic(t, testenv.Restic0181).Run(t.Context(), d.loc, "", nil, "snapshots")
				if err != nil {
					t.Fatal(err)
				}
				if rr.ExitCode != 1 || !strings.Contains(string(rr.Stderr), "key/"+key[:10]) {
					t.Errorf("restic 0.18.1: exit %d\n%s", rr.ExitCode, rr.Stderr)
				}
			})
		}

		// Two keys, one damaged: the intact one opens, naming the damaged
		// one; the damaged key's password is exit 1 naming it.
		second := writePasswordFile(t, "second password")
		res := d.ours.mustRun(t, nil, "key", "add", "--new-password-file", second)
		var added string
		for _, k := range d.names(t, backend.KeyFile) {
			if k != key {
				added = k
			}
		}
		if !strings.Contains(string(res.stdout), added[:8]) {
			t.Fatalf("key add: %s", res)
		}
		for _, damaged := range []string{key, added} {
			t.Run("two keys, "+map[bool]string{true: "first", false: "added"}[damaged == key]+" damaged", func(t *testing.T) {
				dh := backend.Handle{Type: backend.KeyFile, Name: damaged}
				orig, err := backend.LoadAll(t.Context(), be, dh)
				if err != nil {
					t.Fatal(err)
				}
				d.rewrite(t, dh, dmgFlip)
				defer func() {
					be.Remove(t.Context(), dh)
					if err := be.Save(t.Context(), dh, backend.BytesSource(orig)); err != nil {
						t.Fatal(err)
					}
				}()
				// d.ours has the first key's password.
				intact, broken := d.ours, newOurCLI(t, tg, d.loc, second)
				if damaged == key {
					intact, broken = broken, intact
				}
				res := intact.run(t, nil, "snapshots", "--json")
				if res.code != 0 || len(dmgIDs(t, "ours", res.stdout)) != 1 {
					t.Errorf("the intact key does not open: %s", res)
				}
				res = broken.run(t, nil, "snapshots")
				if res.code != exitError || !strings.Contains(s3fErrorLine(t, res), "keys/"+damaged) {
					t.Errorf("the damaged key's password: %s", res)
				}
				// check, opened with the intact key, names the damaged key.
				res = dmgTimed(t, "check", func() cliRun { return intact.run(t, nil, "check") })
				if res.code != exitError || !strings.Contains(string(res.stderr), "keys/"+damaged) || !strings.Contains(string(res.stderr), "key remove") {
					t.Errorf("check: %s", res)
				}
				// restic 0.18.1 fails naming the key when it reads the
				// damaged key first; its check does not look at keys, so
				// when it reads the intact one first it passes.
				pw := d.pwFile
				if damaged == key {
					pw = second
				}
				rr, err := resticFor(testenv.Restic(t, testenv.Restic0181), tg, pw).Run(t.Context(), d.loc, "", nil, "check")
				if err != nil {
					t.Fatal(err)
				}
				out := string(rr.Stdout) + string(rr.Stderr)
				switch {
				case rr.ExitCode == 1 && strings.Contains(out, "key/"+damaged[:10]):
					t.Logf("restic 0.18.1 check: exit 1 naming key/%s (it read the damaged key first): agrees", damaged[:10])
				case rr.ExitCode == 0:
					t.Logf("restic 0.18.1 check: exit 0 (it read the intact key first and does not check keys)")
				default:
					t.Errorf("restic 0.18.1 check: exit %d\n%s", rr.ExitCode, out)
				}
			})
		}
	})
}

// dmgID parses a full ID.
func dmgID(t *testing.T, s string) repo.ID {
	t.Helper()
	id, err := repo.ParseID(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}
