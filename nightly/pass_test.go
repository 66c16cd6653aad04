package nightly

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/repo"
)

func TestPassOneTargetFailsOthersBackedUp(t *testing.T) {
	tr := newTestRepo(t)
	ctx := context.Background()
	fb := &fakeBackup{host: "h1", fail: func(name string, _ int) error {
		if name == "scalr-b-db" {
			return errDumpFailed
		}
		return nil
	}}
	counting := backend.NewCounting(tr.be)
	r, err := repo.Open(ctx, counting, testPassword, repo.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rep := Pass(ctx, r, PassOptions{
		Discoverer: staticDiscoverer("scalr-a-db", "scalr-b-db", "scalr-auth-postgres"),
		Backup:     fb.fn, Host: "h1", Logger: testLogger(t),
	})
	if rep.OK() {
		t.Fatal("report OK although a target failed")
	}
	if got := len(rep.Targets); got != 3 {
		t.Fatalf("%d target rows", got)
	}
	for _, row := range rep.Targets {
		switch row.Name {
		case "scalr-b-db":
			if row.Status != StatusFailed || !errors.Is(row.Err, errDumpFailed) || !strings.Contains(row.Error, "connection refused") || row.SnapshotID != "" {
				t.Errorf("failed row: %+v", row)
			}
		default:
			if row.Status != StatusOK || len(row.SnapshotID) != 64 || row.BytesRead != 4<<10 || row.BytesAdded == 0 || row.BytesStored == 0 || row.Duration <= 0 {
				t.Errorf("ok row: %+v", row)
			}
		}
	}
	if len(rep.Errors) != 0 {
		t.Errorf("stage errors: %v", rep.Errors)
	}
	if rep.Forget == nil || rep.Prune == nil {
		t.Errorf("forget %v, prune %v: both must run after a target failed", rep.Forget, rep.Prune)
	}
	if rep.Requests.Saves == 0 || rep.Requests.Lists == 0 {
		t.Errorf("requests not counted: %+v", rep.Requests)
	}
	byName := map[string]int{}
	for _, sn := range tr.snapshots(t) {
		name, ok := ContainerOf(sn)
		if !ok {
			t.Errorf("snapshot %v is not a container backup", sn.Paths)
		}
		byName[name]++
	}
	if byName["scalr-a-db"] != 1 || byName["scalr-auth-postgres"] != 1 || byName["scalr-b-db"] != 0 {
		t.Errorf("snapshots by container: %v", byName)
	}
	if len(rep.Inventory) != 2 || rep.State("scalr-a-db") == nil || rep.State("scalr-b-db") != nil {
		t.Errorf("inventory: %+v", rep.Inventory)
	}
	err = rep.Err()
	if err == nil || !strings.Contains(err.Error(), "1 of 3 container backups failed: scalr-b-db") {
		t.Errorf("Err: %v", err)
	}
	if l := tr.locks(t); len(l) != 0 {
		t.Errorf("locks left: %v", l)
	}

	// The JSON has the fields the CLI prints.
	buf, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(buf, &m); err != nil {
		t.Fatal(err)
	}
	if m["ok"] != false || m["targets"] == nil || m["duration_seconds"] == nil {
		t.Errorf("json: %s", buf)
	}
	row := m["targets"].([]any)[0].(map[string]any)
	for _, k := range []string{"container", "status", "duration_seconds", "total_bytes_processed", "data_added", "snapshot_id"} {
		if _, ok := row[k]; !ok {
			t.Errorf("target json lacks %s: %v", k, row)
		}
	}
}

func TestPassDiscoveryProblems(t *testing.T) {
	tr := newTestRepo(t)
	ctx := context.Background()
	fb := &fakeBackup{}

	rep := Pass(ctx, tr.r, PassOptions{Discoverer: DiscoverFunc(func(context.Context) ([]Target, error) {
		return nil, errors.New("docker: permission denied")
	}), Backup: fb.fn})
	if rep.OK() || len(rep.Errors) != 1 || rep.Errors[0].Stage != "discover" {
		t.Errorf("failed discovery: %+v", rep.Errors)
	}

	rep = Pass(ctx, tr.r, PassOptions{Discoverer: staticDiscoverer(), Backup: fb.fn})
	if rep.OK() || len(rep.Errors) != 1 || !errors.Is(rep.Errors[0], ErrNoTargets) {
		t.Errorf("empty discovery: %+v", rep.Errors)
	}
	rep = Pass(ctx, tr.r, PassOptions{Discoverer: staticDiscoverer(), Backup: fb.fn, AllowEmpty: true})
	if !rep.OK() {
		t.Errorf("empty discovery allowed: %v", rep.Err())
	}

	rep = Pass(ctx, tr.r, PassOptions{Discoverer: staticDiscoverer("x", "x", "a/b"), Backup: fb.fn, SkipPrune: true})
	if rep.OK() || rep.Targets[0].Status != StatusOK || rep.Targets[1].Status != StatusFailed || rep.Targets[2].Status != StatusFailed {
		t.Errorf("duplicate and bad names: %+v", rep.Targets)
	}
}

func TestPassPanicAndTimeout(t *testing.T) {
	tr := newTestRepo(t)
	ctx := context.Background()
	fb := &fakeBackup{block: func(name string, _ int) bool { return name == "slow" }}
	rep := Pass(ctx, tr.r, PassOptions{
		Discoverer: staticDiscoverer("boom", "slow", "fine"),
		Backup: func(ctx context.Context, r *repo.Repository, t Target) (BackupResult, error) {
			if t.Name == "boom" {
				panic("nil map")
			}
			return fb.fn(ctx, r, t)
		},
		// Long enough for "fine" on a loaded machine (300 ms was not): the
		// timeout applies to every target, and "slow" waits it out.
		TargetTimeout: 3 * time.Second, SkipPrune: true,
	})
	got := map[string]TargetReport{}
	for _, row := range rep.Targets {
		got[row.Name] = row
	}
	if got["boom"].Status != StatusFailed || !strings.Contains(got["boom"].Error, "panicked: nil map") {
		t.Errorf("panic: %+v", got["boom"])
	}
	if got["slow"].Status != StatusFailed || !strings.Contains(got["slow"].Error, "took longer than 3s") {
		t.Errorf("timeout: %+v", got["slow"])
	}
	if got["fine"].Status != StatusOK {
		t.Errorf("fine: %+v", got["fine"])
	}
	if l := tr.locks(t); len(l) != 0 {
		t.Errorf("locks left after a timed-out backup: %d", len(l))
	}
}

func TestPassCancelledMidBackupLeavesNoLock(t *testing.T) {
	tr := newTestRepo(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	started := make(chan string, 1)
	fb := &fakeBackup{size: 1 << 20, started: started, block: func(name string, _ int) bool { return name == "scalr-b-db" }}
	done := make(chan *Report)
	go func() {
		done <- Pass(ctx, tr.r, PassOptions{Discoverer: staticDiscoverer("scalr-a-db", "scalr-b-db", "scalr-c-db"), Backup: fb.fn, Logger: testLogger(t)})
	}()
	select {
	case <-started:
	case <-time.After(20 * time.Second):
		t.Fatal("the backup never started")
	}
	// The backup holds its lock now.
	if l := tr.locks(t); len(l) != 1 || l[0].Exclusive {
		t.Fatalf("locks during the backup: %v", l)
	}
	cancel()
	var rep *Report
	select {
	case rep = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the pass did not return after cancel")
	}
	if !rep.Cancelled || rep.OK() {
		t.Errorf("cancelled %v ok %v", rep.Cancelled, rep.OK())
	}
	want := []Status{StatusOK, StatusFailed, StatusSkipped}
	for i, row := range rep.Targets {
		if row.Status != want[i] {
			t.Errorf("%s: %s, want %s", row.Name, row.Status, want[i])
		}
	}
	if rep.Forget != nil || rep.Prune != nil {
		t.Error("forget or prune ran after cancel")
	}
	if l := tr.locks(t); len(l) != 0 {
		t.Errorf("locks left after cancel: %v", l)
	}
	if n := len(tr.snapshots(t)); n != 1 {
		t.Errorf("%d snapshots, want only scalr-a-db's", n)
	}
}

// TestForgetOverSimulatedDays runs a pass every day at 03:00 UTC for 120
// days and checks that each container keeps exactly its 30 daily, 4 weekly
// and 6 monthly snapshots (restic's rules, with the oldest kept while the
// monthly count is not used up), and that drill records, other snapshots
// and another host's backups are never forgotten.
func TestForgetOverSimulatedDays(t *testing.T) {
	if testing.Short() {
		t.Skip("120 passes")
	}
	tr := newTestRepo(t)
	ctx := context.Background()
	start := time.Date(2026, 1, 1, 3, 0, 0, 0, time.UTC)
	clk := newClock(start)
	fb := &fakeBackup{now: clk.Now, host: "h1", size: 512}
	names := []string{"scalr-a-db", "scalr-auth-postgres"}

	// Not container backups of h1: must survive every forget.
	other := &fakeBackup{now: func() time.Time { return start.Add(-48 * time.Hour) }, host: "h2", size: 512}
	if _, err := other.fn(ctx, tr.r, Target{Name: "scalr-a-db", Detail: "detail-scalr-a-db"}); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.r.BackupStream(ctx, repo.Stream{Name: "notes.txt", Reader: strings.NewReader("hello")}, repo.BackupOptions{Tags: []string{"manual"}, Hostname: "h1", Time: start.Add(-72 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	drills := 0
	days := 120
	for day := 0; day < days; day++ {
		clk.Set(start.AddDate(0, 0, day))
		rep := Pass(ctx, tr.r, PassOptions{
			Discoverer: staticDiscoverer(names...), Backup: fb.fn, Host: "h1", Now: clk.Now,
			SkipPrune: day%30 != 29,
		})
		if !rep.OK() {
			t.Fatalf("day %d: %v", day, rep.Err())
		}
		if clk.Now().Day() == 1 {
			saveDrillRecord(t, tr.r, "scalr-a-db", true, clk.Now().Add(2*time.Hour), "h1")
			drills++
		}
	}
	last := start.AddDate(0, 0, days-1) // 2026-04-30
	if last.Format("2006-01-02") != "2026-04-30" {
		t.Fatalf("last day %s", last)
	}
	want := map[string]bool{}
	for d := 1; d <= 30; d++ {
		want[time.Date(2026, 4, d, 3, 0, 0, 0, time.UTC).Format("2006-01-02")] = true
	}
	for _, d := range []string{"2026-03-31", "2026-02-28", "2026-01-31", "2026-01-01"} {
		want[d] = true
	}
	kept := map[string][]string{}
	var others, drillRecords int
	var groupList []*repo.Snapshot
	for _, sn := range tr.snapshots(t) {
		if name, ok := ContainerOf(sn); ok && sn.Hostname == "h1" {
			kept[name] = append(kept[name], sn.Time.UTC().Format("2006-01-02"))
			if name == names[0] {
				groupList = append(groupList, sn)
			}
			continue
		}
		if _, _, ok := drillOf(sn); ok {
			drillRecords++
			continue
		}
		others++
	}
	for _, name := range names {
		got := kept[name]
		sort.Strings(got)
		var wantList []string
		for d := range want {
			wantList = append(wantList, d)
		}
		sort.Strings(wantList)
		if strings.Join(got, " ") != strings.Join(wantList, " ") {
			t.Errorf("%s keeps %d snapshots:\n got %v\nwant %v", name, len(got), got, wantList)
		}
	}
	if drillRecords != drills || others != 2 {
		t.Errorf("drill records %d (want %d), others %d (want 2)", drillRecords, drills, others)
	}
	// What is left is a fixed point of restic's policy.
	keep, remove, _ := repo.ApplyPolicyAt(groupList, DefaultPolicy(), last)
	if len(remove) != 0 || len(keep) != len(groupList) {
		t.Errorf("policy on what is left removes %d", len(remove))
	}
	if l := tr.locks(t); len(l) != 0 {
		t.Errorf("locks left: %v", l)
	}
}

func TestContainerOfAndInventory(t *testing.T) {
	id := func(b byte) repo.ID { var x repo.ID; x[0] = b; return x }
	t0 := time.Date(2026, 5, 1, 3, 0, 0, 0, time.UTC)
	snaps := []*repo.Snapshot{
		{ID: id(1), Paths: []string{"/a"}, Tags: []string{"a"}, Time: t0, Hostname: "h"},
		{ID: id(2), Paths: []string{"/a"}, Tags: []string{"a", "extra"}, Time: t0.Add(24 * time.Hour), Hostname: "h"},
		{ID: id(3), Paths: []string{"/a"}, Tags: []string{"other"}, Time: t0, Hostname: "h"},   // not tagged a
		{ID: id(4), Paths: []string{"/a", "/b"}, Tags: []string{"a"}, Time: t0, Hostname: "h"}, // two paths
		{ID: id(5), Paths: []string{"/x/y"}, Tags: []string{"x/y"}, Time: t0, Hostname: "h"},   // nested
		{ID: id(6), Paths: []string{"/drill/a.json"}, Tags: []string{"drill", "a", "drill-failed"}, Time: t0.Add(48 * time.Hour), Hostname: "h"},
		{ID: id(7), Paths: []string{"/drill/a.json"}, Tags: []string{"drill", "a", "drill-passed"}, Time: t0.Add(24 * time.Hour), Hostname: "h"},
		{ID: id(8), Paths: []string{"/a"}, Tags: []string{"a", "drill"}, Time: t0, Hostname: "h"}, // drill-tagged: not a backup
		{ID: id(9), Paths: []string{"/b"}, Tags: []string{"b"}, Time: t0, Hostname: "other"},
	}
	inv := Inventory(snaps, "h")
	if len(inv) != 1 {
		t.Fatalf("inventory %+v", inv)
	}
	a := inv[0]
	if a.Container != "a" || a.Snapshots != 2 || !a.Newest.Equal(t0.Add(24*time.Hour)) || a.NewestID != id(2).String() ||
		!a.LastDrill.Equal(t0.Add(48*time.Hour)) || a.LastDrillPassed {
		t.Errorf("a: %+v", a)
	}
	if inv := Inventory(snaps, ""); len(inv) != 2 {
		t.Errorf("all hosts: %+v", inv)
	}
}

func TestCountingOf(t *testing.T) {
	tr := newTestRepo(t)
	c := backend.NewCounting(tr.be)
	if CountingOf(c) != c {
		t.Error("direct")
	}
	if CountingOf(backend.NewRetry(c, backend.RetryOptions{})) != c {
		t.Error("under retry")
	}
	if CountingOf(tr.be) != nil {
		t.Error("none")
	}
}

func TestSummaryAndEvents(t *testing.T) {
	now := time.Date(2026, 5, 2, 3, 10, 0, 0, time.UTC)
	newest := time.Date(2026, 5, 1, 3, 0, 0, 0, time.UTC)
	rep := &Report{Host: "h1", Duration: 90 * time.Second, Targets: []TargetReport{
		{Name: "a", Status: StatusOK, SnapshotID: strings.Repeat("ab", 32), BytesRead: 10, BytesAdded: 5},
		{Name: "b", Status: StatusFailed, Error: "pg_dump: boom"},
	}, Inventory: []ContainerState{{Container: "b", Snapshots: 3, Newest: newest}}}
	rep.fail("prune", errors.New("locked"))
	s := Summary(rep)
	for _, want := range []string{"FAILED", "a: ok, snapshot abababab", "b: failed: pg_dump: boom", "prune: locked"} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
	evs := EventsForReport(rep, "", now)
	if len(evs) != 2 {
		t.Fatalf("events %+v", evs)
	}
	if evs[0].Kind != EventFailure || evs[0].Container != "b" || evs[0].Stage != "backup" || evs[0].LastSuccess == nil || !evs[0].LastSuccess.Equal(newest) || evs[0].Host != "h1" {
		t.Errorf("container event %+v", evs[0])
	}
	if evs[1].Container != "" || evs[1].Stage != "prune" || evs[1].Error != "locked" {
		t.Errorf("stage event %+v", evs[1])
	}
	ok := &Report{Host: "h1", Targets: []TargetReport{{Name: "a", Status: StatusOK}}}
	if evs := EventsForReport(ok, "h1", now); len(evs) != 1 || evs[0].Kind != EventSuccess || evs[0].Containers[0] != "a" {
		t.Errorf("success events %+v", evs)
	}
}

func TestHookEnvDropsSecrets(t *testing.T) {
	env := hookEnv([]string{"PATH=/bin", "RESTIC_PASSWORD=pw", "RESTIC_PASSWORD_FILE=/x", "AWS_SECRET_ACCESS_KEY=k",
		"SCALR_BACKUP_WEBHOOK_URL=https://x/secret", "HOME=/root"}, Event{Kind: EventFailure, Container: "c", Error: "e", Host: "h"})
	joined := strings.Join(env, "\n")
	for _, bad := range []string{"pw", "/x", "=k", "secret"} {
		if strings.Contains(joined, bad) {
			t.Errorf("hook env holds %q:\n%s", bad, joined)
		}
	}
	for _, want := range []string{"PATH=/bin", "HOME=/root", "SCALR_BACKUP_CONTAINER=c", "SCALR_BACKUP_ERROR=e", "SCALR_BACKUP_EVENT=failure", "SCALR_BACKUP_LAST_SUCCESS="} {
		if !strings.Contains(joined, want) {
			t.Errorf("hook env lacks %q", want)
		}
	}
}

// writeFile is a helper for hook outputs.
func readLines(t *testing.T, p string) []string {
	t.Helper()
	buf, err := os.ReadFile(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSpace(string(bytes.TrimSpace(buf))), "\n")
}

func hookFile(t *testing.T) (path, cmd string) {
	p := filepath.Join(t.TempDir(), "hook.log")
	return p, fmt.Sprintf(`printf '%%s|%%s|%%s|%%s|%%s\n' "$SCALR_BACKUP_EVENT" "$SCALR_BACKUP_CONTAINER" "$SCALR_BACKUP_HOST" "$SCALR_BACKUP_ERROR" "${RESTIC_PASSWORD:-nopw}" >> %q`, p)
}

// TestPassRemovesAbandonedLocks: a lock left by a holder that stopped
// refreshing it blocks forget until it is an hour old; then the pass
// removes it. Live locks (younger) are never touched.
func TestPassRemovesAbandonedLocks(t *testing.T) {
	tr := newTestRepo(t)
	ctx := context.Background()
	other, err := tr.open(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.Lock(ctx, true); err != nil { // never unlocked: a crashed prune
		t.Fatal(err)
	}
	fb := &fakeBackup{}
	o := PassOptions{Discoverer: staticDiscoverer("a"), Backup: fb.fn, RemoveStaleLocks: true, SkipPrune: true, Logger: testLogger(t)}
	rep := Pass(ctx, tr.r, o)
	var locked *repo.LockedError
	if rep.OK() || rep.Targets[0].Status != StatusFailed || !errors.As(rep.Targets[0].Err, &locked) {
		t.Errorf("with a fresh exclusive lock: %+v", rep.Targets)
	}
	if len(tr.locks(t)) != 1 {
		t.Fatal("a live lock was removed")
	}
	o.Now = func() time.Time { return time.Now().Add(61 * time.Minute) }
	rep = Pass(ctx, tr.r, o)
	if !rep.OK() {
		t.Fatalf("after an hour: %v", rep.Err())
	}
	if l := tr.locks(t); len(l) != 0 {
		t.Errorf("locks left: %v", l)
	}
}
