package main

// Issue 17, acceptance 4: kill -9 in the middle of a backup leaves no file
// that check does not mention or that a later prune (after the safe age of
// temporary files) does not remove; restic 0.18.1's check agrees at every
// step. Helper names start with kill.

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/internal/testenv"
	"github.com/scalr-platform/scalr-backup/repo"
)

func TestKillMidBackup(t *testing.T) {
	eachTarget(t, func(t *testing.T, tg *interopTarget) {
		d := dmgNew(t, tg, "kill")
		d.backup(t, 41, "a", 4<<20)

		// Kill -9 while packs are being written: on a local folder at a
		// moment when a temporary file exists (tried again when the kill
		// came just after its rename), on S3 once two packs are stored but
		// before the index.
		var leftovers []string
		for attempt := 1; ; attempt++ {
			leftovers = killBackup(t, d, tg, uint64(42+attempt))
			t.Logf("attempt %d left behind: %v", attempt, leftovers)
			if tg.s3 != nil || len(killTemps(t, d.loc)) > 0 {
				break
			}
			if attempt == 8 {
				t.Fatal("8 kills left no temporary file")
			}
		}
		var lock string
		for _, l := range leftovers {
			if strings.HasPrefix(l, "locks/") {
				lock = l
			}
		}
		if lock == "" {
			t.Fatal("no lock left by the killed backup")
		}

		// The stale lock: both checks refuse, naming it; ours says how to
		// remove it.
		res := dmgTimed(t, "check", func() cliRun { return d.ours.run(t, nil, "check") })
		if res.code != exitLocked || !strings.Contains(string(res.stderr), dmgShort(lock)) || !strings.Contains(string(res.stderr), "unlock") {
			t.Errorf("check beside the stale lock: %s", res)
		}
		rr, err := d.restic(t, testenv.Restic0181).Run(t.Context(), d.loc, "", nil, "check")
		if err != nil {
			t.Fatal(err)
		}
		if rr.ExitCode == 0 || !strings.Contains(string(rr.Stderr), "locked") {
			t.Errorf("restic 0.18.1 check beside the stale lock: exit %d\n%s", rr.ExitCode, rr.Stderr)
		}
		d.ours.mustRun(t, nil, "unlock")

		// check mentions every other leftover (as a hint: exit 0), and
		// restic's check passes too.
		res = dmgTimed(t, "check --verbose", func() cliRun { return d.ours.run(t, nil, "check", "--verbose") })
		if res.code != 0 {
			t.Fatalf("check after unlock: %s", res)
		}
		out := string(res.stdout) + string(res.stderr)
		var temps []string
		for _, l := range leftovers {
			if l == lock {
				continue
			}
			if !strings.Contains(out, l) {
				t.Errorf("check does not mention %s: %s", l, res)
			}
			if strings.Contains(l, "/.tmp-") || strings.HasPrefix(l, ".tmp-") {
				temps = append(temps, l)
			}
		}
		d.restic(t, testenv.Restic0181).MustRun(t, d.loc, "", nil, "check")

		// prune removes the leftovers: the packs no index names at once,
		// the temporary files once older than the safe age.
		res = dmgTimed(t, "prune", func() cliRun { return d.ours.mustRun(t, nil, "prune") })
		if len(temps) > 0 {
			if !strings.Contains(string(res.stdout), "younger than 1h0m0s kept") {
				t.Errorf("prune says nothing of the young temporary files: %s", res)
			}
			old := time.Now().Add(-2 * repo.DefaultLeftoverAge)
			for _, p := range temps {
				if err := os.Chtimes(filepath.Join(d.loc, filepath.FromSlash(p)), old, old); err != nil {
					t.Fatal(err)
				}
			}
			res = dmgTimed(t, "prune after the safe age", func() cliRun { return d.ours.mustRun(t, nil, "prune") })
			if !strings.Contains(string(res.stdout), "temporary files of interrupted writes: ") {
				t.Errorf("prune does not report the temporary files it removed: %s", res)
			}
		}
		if left := killLeftovers(t, d); len(left) > 0 {
			t.Errorf("left after prune: %v", left)
		}
		res = d.ours.run(t, nil, "check", "--verbose", "--read-data")
		if res.code != 0 || strings.Contains(string(res.stdout), "additional files") || strings.Contains(string(res.stdout), "interrupted write") {
			t.Errorf("check after prune: %s", res)
		}
		d.restic(t, testenv.Restic0181).MustRun(t, d.loc, "", nil, "check", "--read-data")
	})
}

// killBackup starts a large backup, kills it with SIGKILL in the middle of
// writing packs and returns what the repository holds and does not use.
func killBackup(t *testing.T, d *dmgRepo, tg *interopTarget, seed uint64) []string {
	t.Helper()
	c := s3fWithEnv(d.ours, "RESTIC_PACK_SIZE=64")
	cmd := c.command(context.Background(), []string{"backup", "--stdin", "--stdin-filename", "big"})
	cmd.Stdin = newMixedStream(seed, 4<<30)
	packsBefore := len(d.names(t, backend.PackFile))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatal("no moment to kill came within 2 minutes")
		}
		if len(d.names(t, backend.PackFile)) >= packsBefore+2 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if tg.s3 == nil {
		for len(killTemps(t, d.loc)) == 0 && time.Now().Before(deadline) {
		}
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	return killLeftovers(t, d)
}

// killTemps lists the temporary files in a local repository.
func killTemps(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() && strings.HasPrefix(e.Name(), ".tmp-") {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// killLeftovers lists every stored file that the repository does not use:
// anything but the config, key, snapshot and index files and the packs an
// index file names. Locks count as left over.
func killLeftovers(t *testing.T, d *dmgRepo) []string {
	t.Helper()
	lib := d.lib(t)
	idx, err := lib.Index(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{"config": true}
	for _, id := range idx.Packs() {
		used[backend.Handle{Type: backend.PackFile, Name: id.String()}.String()] = true
	}
	for _, ft := range []backend.FileType{backend.KeyFile, backend.SnapshotFile, backend.IndexFile} {
		for _, n := range d.names(t, ft) {
			used[backend.Handle{Type: ft, Name: n}.String()] = true
		}
	}
	var all []string
	if d.tg.s3 == nil {
		filepath.WalkDir(d.loc, func(p string, e fs.DirEntry, err error) error {
			if err == nil && !e.IsDir() {
				rel, _ := filepath.Rel(d.loc, p)
				all = append(all, filepath.ToSlash(rel))
			}
			return nil
		})
	} else {
		bucket := d.loc[strings.LastIndex(d.loc, "/")+1:]
		for obj := range unwClient(t, d.tg.s3).ListObjectsIter(t.Context(), bucket, minio.ListObjectsOptions{Recursive: true}) {
			if obj.Err != nil {
				t.Fatal(obj.Err)
			}
			all = append(all, obj.Key)
		}
		// Uploads begun and never completed are stored too.
		for u := range unwClient(t, d.tg.s3).ListIncompleteUploads(t.Context(), bucket, "", true) {
			if u.Err != nil {
				t.Fatal(u.Err)
			}
			all = append(all, "incomplete upload "+u.Key)
		}
	}
	var left []string
	for _, p := range all {
		if !used[p] {
			left = append(left, p)
		}
	}
	sort.Strings(left)
	return slices.Compact(left)
}
