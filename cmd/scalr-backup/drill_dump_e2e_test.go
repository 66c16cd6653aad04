//go:build linux

package main

// Issue 10 end to end, through the built binary, a private dockerd with
// the project's Postgres image, and the real restic CLIs (0.14.0 and
// 0.18.1):
//   - after a drill, the README's runbook `restic dump --tag CONTAINER
//     latest /CONTAINER/DB.pgdump` (and ours) still gives the newest
//     backup's dump, byte for byte, because drill records are tagged
//     drill-of:CONTAINER, not CONTAINER;
//   - backup --stdin, pg-backup and drill record SCALR_BACKUP_HOST, else
//     RESTIC_HOST, as the snapshot's host name.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/backend/local"
	"github.com/scalr-platform/scalr-backup/internal/testenv"
	"github.com/scalr-platform/scalr-backup/pgstream"
	"github.com/scalr-platform/scalr-backup/repo"
	"github.com/scalr-platform/scalr-backup/repo/repotest"
)

func TestDrillLeavesDumpLatestAndHostIdentity(t *testing.T) {
	testenv.Integration(t)
	begin := time.Now()
	bin := testBinary(t)
	restics := []*testenv.ResticCLI{testenv.Restic(t, testenv.Restic014), testenv.Restic(t, testenv.Restic0181)}
	d := testenv.StartDocker(t)
	const (
		name       = "scalr-dd-db"
		dumpPath   = "/" + name + "/dd.pgdump"
		scalrHost  = "scalr-host"
		resticHost = "restic-host"
	)
	c := d.RunPostgres(t, name, map[string]string{"POSTGRES_USER": "dd", "POSTGRES_DB": "dd"}, nil)
	c.Psql(t, "", `CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);
INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 20000) i;`)
	t.Logf("binary, dockerd and container ready in %s", time.Since(begin).Round(time.Millisecond))

	ctx := context.Background()
	var runBoth func(t *testing.T, env []string, stdin io.Reader, args ...string) (stdout, stderr []byte)
	dir := filepath.Join(t.TempDir(), "repo")
	pw := "drill dump " + e2eRandHex(t, 8)
	r, err := repo.Init(ctx, local.New(dir), pw, repo.InitOptions{KDF: repotest.FastKDF()}, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	pwFile := writePasswordFile(t, pw)
	home := t.TempDir()
	var base []string
	for _, kv := range cleanEnv() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "SCALR_BACKUP_") || strings.HasPrefix(k, "DOCKER_") {
			continue
		}
		base = append(base, kv)
	}
	base = append(base, "HOME="+home, "XDG_CACHE_HOME="+filepath.Join(home, ".cache"),
		"RESTIC_REPOSITORY="+dir, "RESTIC_PASSWORD_FILE="+pwFile, "DOCKER_HOST="+d.Host())
	// Both set: SCALR_BACKUP_HOST wins. Only RESTIC_HOST: it is the host.
	envScalr := append(slices.Clone(base), "SCALR_BACKUP_HOST="+scalrHost, "RESTIC_HOST="+resticHost)
	envRestic := append(slices.Clone(base), "RESTIC_HOST="+resticHost)

	run := func(t *testing.T, env []string, stdin io.Reader, args ...string) []byte {
		t.Helper()
		out, _ := runBoth(t, env, stdin, args...)
		return out
	}
	runBoth = func(t *testing.T, env []string, stdin io.Reader, args ...string) ([]byte, []byte) {
		t.Helper()
		cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(cctx, bin, args...)
		cmd.Env = env
		cmd.Stdin = stdin
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("scalr-backup %q: %v", args, err)
			}
			t.Fatalf("scalr-backup %q: exit %d\nstdout:\n%s\nstderr:\n%s", args, ee.ExitCode(), clip(stdout.Bytes()), clip(stderr.Bytes()))
		}
		if slices.Contains(args, "--json") {
			checkJSONConvention(t, strings.Join(args, " "), stdout.String())
		}
		return stdout.Bytes(), stderr.Bytes()
	}
	pgBackup := func(t *testing.T, env []string) string {
		t.Helper()
		var res []pgBackupResult
		out := run(t, env, nil, "pg-backup", "--json", name)
		if err := json.Unmarshal(out, &res); err != nil || len(res) != 1 || !res[0].OK || len(res[0].SnapshotID) != 64 {
			t.Fatalf("pg-backup --json: %v %s", err, out)
		}
		return res[0].SnapshotID
	}
	drill := func(t *testing.T, env []string) {
		t.Helper()
		var res []*pgstream.DrillResult
		out := run(t, env, nil, "drill", "--json", name)
		if err := json.Unmarshal(out, &res); err != nil || len(res) != 1 || !res[0].Passed || res[0].Container != name {
			t.Fatalf("drill --json: %v %s", err, out)
		}
	}

	// Backup, drill, backup, drill: the newest snapshot of the repository
	// is a drill record, made after the newest backup.
	idScalr := pgBackup(t, envScalr)
	drill(t, envScalr)
	idRestic := pgBackup(t, envRestic)
	drill(t, envRestic)
	stdinScalr := backupStdin(t, run, envScalr, "stdin-scalr")
	stdinRestic := backupStdin(t, run, envRestic, "stdin-restic")
	t.Logf("two backups, two drills in %s", time.Since(begin).Round(time.Millisecond))

	resticOf := func(rc *testenv.ResticCLI) *testenv.ResticCLI { return rc.WithEnv("RESTIC_PASSWORD_FILE=" + pwFile) }
	newest := resticOf(restics[1])

	// Every snapshot as restic 0.18.1 lists it.
	snaps := e2eDecodeSnaps(t, "restic snapshots --json", newest.MustRun(t, dir, "", nil, "snapshots", "--json").Stdout)
	byID := map[string]e2eSnap{}
	var records []e2eSnap
	for _, s := range snaps {
		byID[s.ID] = s
		if slices.Contains(s.Tags, "drill") {
			records = append(records, s)
		}
	}
	for _, w := range []struct{ id, host string }{{idScalr, scalrHost}, {idRestic, resticHost}, {stdinScalr, scalrHost}, {stdinRestic, resticHost}} {
		if s, ok := byID[w.id]; !ok || s.Hostname != w.host {
			t.Errorf("snapshot %.8s: %+v, want host %s", w.id, s, w.host)
		}
	}
	for _, id := range []string{idScalr, idRestic} {
		if s := byID[id]; !slices.Equal(s.Tags, []string{name}) || !slices.Equal(s.Paths, []string{"/" + name}) {
			t.Errorf("backup %.8s: tags %q, paths %q", id, s.Tags, s.Paths)
		}
	}
	slices.SortFunc(records, func(a, b e2eSnap) int { return a.Time.Compare(b.Time) })
	if len(records) != 2 {
		t.Fatalf("drill records: %+v", records)
	}
	for i, host := range []string{scalrHost, resticHost} {
		s := records[i]
		tags := slices.Sorted(slices.Values(s.Tags))
		if !slices.Equal(tags, []string{"drill", "drill-of:" + name, "drill-passed"}) || !slices.Equal(s.Paths, []string{"/drill/" + name + ".json"}) || s.Hostname != host {
			t.Errorf("drill record %d: tags %q, paths %q, host %q; want drill, drill-of:%s, drill-passed, /drill/%s.json, %s", i, s.Tags, s.Paths, s.Hostname, name, name, host)
		}
	}
	// What made the runbook fail: a drill record newer than the backup.
	if !records[1].Time.After(byID[idRestic].Time) {
		t.Fatalf("drill record %s not newer than backup %s", records[1].Time, byID[idRestic].Time)
	}

	// The expected bytes: the manifest's size and SHA-256 of dd.pgdump in
	// each backup, and restic's own dump of it by snapshot ID.
	type sum struct {
		size int64
		sha  string
	}
	sumOf := func(b []byte) sum { h := sha256.Sum256(b); return sum{int64(len(b)), hex.EncodeToString(h[:])} }
	want := map[string]sum{}
	for _, id := range []string{idScalr, idRestic} {
		var m pgstream.Manifest
		raw := newest.MustRun(t, dir, "", nil, "dump", id, "/"+name+"/"+pgstream.ManifestFile).Stdout
		// Every database of the container (its own, postgres); dd's dump
		// is the one the runbook fetches.
		if err := json.Unmarshal(raw, &m); err != nil || len(m.Databases) != 2 || m.Database("postgres") == nil ||
			m.Database("dd") == nil || "/"+name+"/"+m.Database("dd").File != dumpPath {
			t.Fatalf("manifest of %.8s: %v %s", id, err, clip(raw))
		}
		want[id] = sum{m.Database("dd").Size, m.Database("dd").SHA256}
		if got := sumOf(newest.MustRun(t, dir, "", nil, "dump", id, dumpPath).Stdout); got != want[id] {
			t.Fatalf("restic dump %.8s %s: %+v, manifest says %+v", id, dumpPath, got, want[id])
		}
	}
	if want[idScalr].size < 256<<10 {
		t.Fatalf("dump of %d bytes: too small to mean anything", want[idScalr].size)
	}

	// The runbook, with both restic versions: latest by the container's tag
	// is the newest backup, not the drill record after it.
	for _, rc := range restics {
		rc := resticOf(rc)
		res, err := rc.Run(ctx, dir, "", nil, "dump", "--tag", name, "latest", dumpPath)
		if err != nil || res.ExitCode != 0 {
			t.Errorf("restic %s dump --tag %s latest %s: %v %v", rc.Version, name, dumpPath, err, res.Err())
		} else if got := sumOf(res.Stdout); got != want[idRestic] {
			t.Errorf("restic %s dump --tag %s latest: %+v, want %+v (backup %.8s)", rc.Version, name, got, want[idRestic], idRestic)
		}
		// restic takes drill-of:NAME in --tag as it is.
		recs := e2eDecodeSnaps(t, "restic snapshots", rc.MustRun(t, dir, "", nil, "snapshots", "--json", "--tag", "drill,drill-of:"+name+",drill-passed").Stdout)
		var ids []string
		for _, r := range recs {
			ids = append(ids, r.ID)
		}
		if len(ids) != 2 || !slices.Contains(ids, records[0].ID) || !slices.Contains(ids, records[1].ID) {
			t.Errorf("restic %s snapshots --tag drill,drill-of:%s,drill-passed: %+v", rc.Version, name, recs)
		}
		// And per host, as two hosts sharing the repository would.
		res, err = rc.Run(ctx, dir, "", nil, "dump", "--host", scalrHost, "--tag", name, "latest", dumpPath)
		if err != nil || res.ExitCode != 0 || sumOf(res.Stdout) != want[idScalr] {
			t.Errorf("restic %s dump --host %s --tag %s latest: %v %v", rc.Version, scalrHost, name, err, res.Err())
		}
	}

	// Ours, the same ways.
	if got := sumOf(run(t, envRestic, nil, "dump", "--tag", name, "latest", dumpPath)); got != want[idRestic] {
		t.Errorf("scalr-backup dump --tag %s latest: %+v, want %+v", name, got, want[idRestic])
	}
	if got := sumOf(run(t, envScalr, nil, "dump", "--host", scalrHost, "--tag", name, "latest", dumpPath)); got != want[idScalr] {
		t.Errorf("scalr-backup dump --host %s --tag %s latest: %+v, want %+v", scalrHost, name, got, want[idScalr])
	}
	recs := e2eDecodeSnaps(t, "scalr-backup snapshots", run(t, envScalr, nil, "snapshots", "--json", "--tag", "drill,drill-of:"+name+",drill-passed"))
	if len(recs) != 2 {
		t.Errorf("scalr-backup snapshots --tag drill,drill-of:%s,drill-passed: %+v", name, recs)
	}
	t.Logf("dumps checked at %s", time.Since(begin).Round(time.Millisecond))

	// Issue 13: every --json output of the Postgres commands follows the
	// one convention (runBoth checks each; pg-backup and drill above too),
	// and progress shows without a terminal under RESTIC_PROGRESS_FPS.
	fps := append(slices.Clone(envScalr), "RESTIC_PROGRESS_FPS=50")
	_, stderr := runBoth(t, fps, nil, "pg-backup", name)
	if !regexp.MustCompile(`(?m)^\[0:\d\d\] ` + name + `: (starting|dd\.pgdump|postgres\.pgdump|globals\.sql|manifest\.json), [0-9.]+ [KMG]?i?B read, `).Match(stderr) {
		t.Errorf("pg-backup under RESTIC_PROGRESS_FPS=50 without a terminal: no progress line\n%s", clip(stderr))
	}
	_, stderr = runBoth(t, fps, nil, "run", "--json")
	progressLines := 0
	for _, l := range e2eLog(t, stderr) {
		if l["msg"] == "backup progress" {
			progressLines++
			if l["container"] != name || l["total_bytes_processed"] == nil || l["data_added"] == nil {
				t.Errorf("progress log line %v", l)
			}
		}
	}
	if progressLines == 0 {
		t.Errorf("run under RESTIC_PROGRESS_FPS=50 logged no \"backup progress\" line:\n%s", clip(stderr))
	}
	run(t, envScalr, nil, "discover", "--json")
	run(t, envScalr, nil, "restore", "--json", "--yes", name, "latest", "--db", "dd")
	var replaced []pgstream.ReplacedDatabase
	if err := json.Unmarshal(run(t, envScalr, nil, "previous", "--json", name), &replaced); err != nil || len(replaced) != 1 {
		t.Fatalf("previous --json: %v %+v", err, replaced)
	}
	run(t, envScalr, nil, "previous", "--json", name, "drop", replaced[0].Name, "--yes")
	run(t, envScalr, nil, "retire", "--json", "scalr-gone-db", "--reason", "test")
	run(t, envScalr, nil, "retire", "--json", "--list")
	run(t, envScalr, nil, "retire", "--json", "--undo", "scalr-gone-db")
	t.Logf("total %s", time.Since(begin).Round(time.Millisecond))
}

// backupStdin stores a small stream with backup --stdin under env and
// returns its snapshot ID.
func backupStdin(t *testing.T, run func(*testing.T, []string, io.Reader, ...string) []byte, env []string, tag string) string {
	t.Helper()
	out := run(t, env, strings.NewReader(fmt.Sprintf("stream of %s\n", tag)), "backup", "--stdin", "--json", "--stdin-filename", tag+".txt", "--tag", tag)
	var sum struct {
		SnapshotID string `json:"snapshot_id"`
	}
	if err := json.Unmarshal(out, &sum); err != nil || len(sum.SnapshotID) != 64 {
		t.Fatalf("backup --stdin --json: %v %s", err, out)
	}
	return sum.SnapshotID
}
