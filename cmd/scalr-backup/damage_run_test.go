package main

// Issue 17, acceptance 1 for the nightly pass: `run` through the real binary
// on a private Docker engine with two Postgres containers and a repository
// on versitygw. With one old snapshot file damaged, the pass backs up every
// container, forget works and names the file, prune stops naming it and the
// way out, restore and drill of an unaffected backup work, and both checks
// fail naming it; after `forget ID` the next pass is clean. With one index
// file damaged, the pass backs up every container and its prune rebuilds
// the index. The fixture (dockerd, containers, repository) is the nightly
// end-to-end test's.

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/backend/open"
	"github.com/scalr-platform/scalr-backup/internal/testenv"
	"github.com/scalr-platform/scalr-backup/repo"
)

// drunReport is the part of `run --json` these tests read.
type drunReport struct {
	OK      bool `json:"ok"`
	Targets []struct {
		Container  string `json:"container"`
		Status     string `json:"status"`
		SnapshotID string `json:"snapshot_id"`
		Error      string `json:"error"`
	} `json:"targets"`
	Forget *struct {
		Groups []struct {
			Container string   `json:"container"`
			Removed   []string `json:"removed"`
		} `json:"groups"`
	} `json:"forget"`
	Prune *struct {
		IndexFilesDamaged int `json:"index_files_damaged"`
		PacksRecovered    int `json:"packs_recovered"`
	} `json:"prune"`
	Errors []struct {
		Stage string `json:"stage"`
		Error string `json:"error"`
	} `json:"errors"`
}

// drunPass runs one pass and checks that both containers were backed up.
func drunPass(t *testing.T, r *e2eRepo) (e2eResult, drunReport) {
	t.Helper()
	res := r.run(t, "run", "--json")
	t.Logf("run: exit %d in %s", res.code, res.took.Round(time.Millisecond))
	var rep drunReport
	if err := json.Unmarshal(res.stdout, &rep); err != nil {
		t.Fatalf("run --json: %v\n%s", err, res)
	}
	done := map[string]bool{}
	for _, tr := range rep.Targets {
		if tr.Status == "ok" && len(tr.SnapshotID) == 64 {
			done[tr.Container] = true
		} else {
			t.Errorf("%s not backed up: %+v", tr.Container, tr)
		}
	}
	if !done[e2eA] || !done[e2eB] {
		t.Errorf("backed up %v, want %s and %s\n%s", done, e2eA, e2eB, res)
	}
	return res, rep
}

// drunRewrite replaces a stored file of r's repository by edit(its bytes).
func drunRewrite(t *testing.T, r *e2eRepo, h backend.Handle, edit func([]byte) []byte) {
	t.Helper()
	be, err := open.Open(t.Context(), r.loc, open.Options{Getenv: r.fx.s3.Getenv})
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
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

func TestDamageNightlyRun(t *testing.T) {
	testenv.Integration(t)
	begin := time.Now()
	fx := &e2eFixture{bin: testBinary(t)}
	fx.restic = testenv.Restic(t, testenv.Restic0181)
	fx.s3 = testenv.StartS3(t)
	fx.d = testenv.StartDocker(t)
	fx.a = fx.postgres(t, e2eA, 1000)
	fx.b = fx.postgres(t, e2eB, 2000)
	t.Logf("dockerd, versitygw and 2 containers ready in %s", time.Since(begin).Round(time.Millisecond))

	t.Run("damaged snapshot", func(t *testing.T) {
		r := fx.newRepo(t, "dmgsnap", true)
		// History: a backup of each container on each of the last days.
		lib := r.open(t)
		var history []repo.ID
		for day := 4; day >= 1; day-- {
			when := time.Now().Add(-time.Duration(day) * 24 * time.Hour)
			history = append(history, e2eBackupAt(t, lib, e2eA, when), e2eBackupAt(t, lib, e2eB, when))
		}
		bad := history[2].String() // scalr-e2ea-db, three days ago
		drunRewrite(t, r, backend.Handle{Type: backend.SnapshotFile, Name: bad}, dmgFlip)

		// The pass backs up both containers; forget runs and names the
		// damaged file; prune stops, naming it and the way out.
		res, rep := drunPass(t, r)
		if res.code == 0 || rep.OK || rep.Forget == nil {
			t.Errorf("run: want the forget done and the pass failed by prune: %s", res)
		}
		if e2eCount(e2eLog(t, res.stderr), "a snapshot file is damaged: left out of forget (check names it; forget ID removes it)", map[string]any{"snapshot": bad}) != 1 {
			t.Errorf("the pass does not name the damaged snapshot in its log:\n%s", clip(res.stderr))
		}
		if len(rep.Errors) != 1 || rep.Errors[0].Stage != "prune" || !strings.Contains(rep.Errors[0].Error, "snapshots/"+bad) ||
			!strings.Contains(rep.Errors[0].Error, "scalr-backup forget "+bad) || !strings.Contains(rep.Errors[0].Error, "changed nothing") {
			t.Errorf("run errors: %+v", rep.Errors)
		}

		// Both CLIs list the same readable snapshots, without the damaged
		// one.
		snaps := r.mustRun(t, "snapshots", "--json")
		ours := dmgIDs(t, "ours", snaps.stdout)
		theirs := dmgIDs(t, "restic 0.18.1", r.resticCLI().MustRun(t, r.loc, "", nil, "snapshots", "--json").Stdout)
		if !slices.Equal(ours, theirs) || slices.Contains(ours, bad) || !strings.Contains(string(snaps.stderr), bad) {
			t.Errorf("snapshots: ours %v, restic %v\n%s", ours, theirs, snaps.stderr)
		}

		// Restore and drill of an unaffected container's latest backup.
		fx.b.Psql(t, "", "DELETE FROM items WHERE id > 1000;")
		res = r.run(t, "restore", e2eB, "latest", "--yes")
		if res.code != 0 {
			t.Fatalf("restore: %s", res)
		}
		if n := fx.b.Psql(t, "", "SELECT count(*) FROM items;"); n != "2000" {
			t.Errorf("after the restore, %s has %s items, want 2000", e2eB, n)
		}
		res = r.run(t, "drill", e2eB)
		t.Logf("drill: exit %d in %s", res.code, res.took.Round(time.Millisecond))
		if res.code != 0 {
			t.Errorf("drill: %s", res)
		}

		// Both checks fail naming it; ours gives the repair.
		o := r.run(t, "check")
		if o.code != exitError || !strings.Contains(string(o.stderr), "snapshots/"+bad) || !strings.Contains(string(o.stderr), "scalr-backup forget "+bad) {
			t.Errorf("check: %s", o)
		}
		rr, err := r.resticCLI().Run(t.Context(), r.loc, "", nil, "check")
		if err != nil {
			t.Fatal(err)
		}
		if rr.ExitCode == 0 || !strings.Contains(string(rr.Stderr), bad[:8]) {
			t.Errorf("restic 0.18.1 check: exit %d\n%s", rr.ExitCode, rr.Stderr)
		}

		// The repair, then a clean pass and clean checks.
		r.mustRun(t, "forget", bad[:8])
		res, rep = drunPass(t, r)
		if res.code != 0 || !rep.OK {
			t.Errorf("run after the repair: %s", res)
		}
		r.mustRun(t, "check", "--read-data")
		r.resticCLI().MustRun(t, r.loc, "", nil, "check", "--read-data")
	})

	t.Run("damaged index", func(t *testing.T) {
		r := fx.newRepo(t, "dmgidx", true)
		drunPass(t, r)
		var files []string
		be, err := open.Open(t.Context(), r.loc, open.Options{Getenv: fx.s3.Getenv})
		if err != nil {
			t.Fatal(err)
		}
		be.List(t.Context(), backend.IndexFile, func(fi backend.FileInfo) error { files = append(files, fi.Name); return nil })
		be.Close()
		if len(files) == 0 {
			t.Fatal("no index file")
		}
		drunRewrite(t, r, backend.Handle{Type: backend.IndexFile, Name: files[0]}, dmgTruncate)

		// Both checks fail naming it.
		if o := r.run(t, "check"); o.code != exitError || !strings.Contains(string(o.stderr), "index/"+files[0]) || !strings.Contains(string(o.stderr), "repair index") {
			t.Errorf("check: %s", o)
		}
		if rr, _ := r.resticCLI().Run(t.Context(), r.loc, "", nil, "check"); rr.ExitCode == 0 || !strings.Contains(string(rr.Stderr), files[0][:8]) {
			t.Errorf("restic 0.18.1 check: exit %d\n%s", rr.ExitCode, rr.Stderr)
		}
		// The pass backs up both; its prune rebuilds the index from the
		// pack headers.
		res, rep := drunPass(t, r)
		if res.code != 0 || !rep.OK || rep.Prune == nil || rep.Prune.IndexFilesDamaged != 1 || rep.Prune.PacksRecovered == 0 {
			t.Errorf("run: %+v\n%s", rep.Prune, res)
		}
		r.mustRun(t, "check", "--read-data")
		r.resticCLI().MustRun(t, r.loc, "", nil, "check", "--read-data")
	})
	t.Logf("total %s", time.Since(begin).Round(time.Millisecond))
}
