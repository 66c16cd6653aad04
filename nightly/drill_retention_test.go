package nightly

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/repo"
)

// Drill records are read in both shapes: drill + drill-of:NAME (now) and
// drill + NAME (before drill-of: existed); neither is a container backup.
func TestDrillOfOldAndNewTags(t *testing.T) {
	id := func(b byte) repo.ID { var x repo.ID; x[0] = b; return x }
	t0 := time.Date(2026, 6, 1, 5, 0, 0, 0, time.UTC)
	rec := func(b byte, path string, at time.Time, tags ...string) *repo.Snapshot {
		return &repo.Snapshot{ID: id(b), Paths: []string{path}, Tags: tags, Time: at, Hostname: "h"}
	}
	for _, tc := range []struct {
		sn     *repo.Snapshot
		name   string
		passed bool
		ok     bool
	}{
		{rec(1, "/drill/a.json", t0, "drill", "drill-of:a", "drill-passed"), "a", true, true},
		{rec(2, "/drill/a.json", t0, "drill", "drill-of:a", "drill-failed"), "a", false, true},
		{rec(3, "/drill/a.json", t0, "drill", "a", "drill-passed"), "a", true, true},  // old shape
		{rec(4, "/drill/a.json", t0, "drill", "a", "drill-failed"), "a", false, true}, // old shape
		{rec(5, "/drill/a.json", t0, "drill", "drill-of:b", "drill-passed"), "", false, false},
		{rec(6, "/drill/a.json", t0, "drill", "drill-passed"), "", false, false},
		{rec(7, "/drill/a.json", t0, "drill-of:a", "drill-passed"), "", false, false}, // no drill tag
		{rec(8, "/drill/x/a.json", t0, "drill", "drill-of:x/a"), "", false, false},
		{rec(9, "/a", t0, "drill", "drill-of:a", "a"), "", false, false},
		{&repo.Snapshot{ID: id(10), Paths: []string{"/drill/a.json", "/b"}, Tags: []string{"drill", "drill-of:a"}}, "", false, false},
	} {
		name, passed, ok := drillOf(tc.sn)
		if name != tc.name || passed != tc.passed || ok != tc.ok {
			t.Errorf("drillOf(%q %q) = %q %v %v, want %q %v %v", tc.sn.Paths, tc.sn.Tags, name, passed, ok, tc.name, tc.passed, tc.ok)
		}
		if _, ok := ContainerOf(tc.sn); ok {
			t.Errorf("ContainerOf(%q %q): a drill-tagged snapshot passes for a backup", tc.sn.Paths, tc.sn.Tags)
		}
	}
	if DrillOfTag("scalr-app-db") != "drill-of:scalr-app-db" {
		t.Errorf("DrillOfTag: %q", DrillOfTag("scalr-app-db"))
	}

	// The newest record wins, whatever its shape.
	backup := &repo.Snapshot{ID: id(20), Paths: []string{"/a"}, Tags: []string{"a"}, Time: t0.Add(-time.Hour), Hostname: "h"}
	oldNewer := rec(21, "/drill/a.json", t0.Add(time.Hour), "drill", "a", "drill-failed")
	newOlder := rec(22, "/drill/a.json", t0, "drill", "drill-of:a", "drill-passed")
	inv := Inventory([]*repo.Snapshot{backup, newOlder, oldNewer}, "h")
	if len(inv) != 1 || inv[0].Container != "a" || inv[0].Snapshots != 1 || !inv[0].LastDrill.Equal(t0.Add(time.Hour)) || inv[0].LastDrillPassed {
		t.Errorf("old record newer: %+v", inv)
	}
	newNewer := rec(23, "/drill/a.json", t0.Add(2*time.Hour), "drill", "drill-of:a", "drill-passed")
	inv = Inventory([]*repo.Snapshot{backup, oldNewer, newNewer}, "h")
	if len(inv) != 1 || !inv[0].LastDrill.Equal(t0.Add(2*time.Hour)) || !inv[0].LastDrillPassed {
		t.Errorf("new record newer: %+v", inv)
	}
}

// The nightly forget keeps the newest DrillKeep drill records per host and
// container (old and new shapes counted together), apart from the
// backups' own retention, which is unchanged; only Host's are touched.
func TestPassForgetsDrillRecords(t *testing.T) {
	tr := newTestRepo(t)
	ctx := context.Background()
	now := time.Date(2026, 6, 30, 3, 0, 0, 0, time.UTC)
	day := func(d int) time.Time { return now.AddDate(0, 0, d) }
	const a, b = "scalr-a-db", "scalr-b-db"

	// 60 daily backups of a and 3 of b on h1, before the pass.
	for d := -60; d < 0; d++ {
		fb := &fakeBackup{now: func() time.Time { return day(d) }, host: "h1", size: 256}
		if _, err := fb.fn(ctx, tr.r, Target{Name: a, Detail: "detail-" + a}); err != nil {
			t.Fatal(err)
		}
		if d >= -3 {
			if _, err := fb.fn(ctx, tr.r, Target{Name: b, Detail: "detail-" + b}); err != nil {
				t.Fatal(err)
			}
		}
	}
	// a on h1: 5 old-shape records (the oldest), then 10 new ones.
	var aOld, aNew []repo.ID
	for i := 0; i < 5; i++ {
		aOld = append(aOld, saveOldDrillRecord(t, tr.r, a, i%2 == 0, day(-40+i).Add(2*time.Hour), "h1"))
	}
	for i := 0; i < 10; i++ {
		aNew = append(aNew, saveDrillRecord(t, tr.r, a, i != 9, day(-30+i).Add(2*time.Hour), "h1"))
	}
	// b on h1: 3 records; a on h2: 14 records; a drill-tagged snapshot
	// that is no drill record.
	for i := 0; i < 3; i++ {
		saveDrillRecord(t, tr.r, b, true, day(-20+i), "h1")
	}
	for i := 0; i < 14; i++ {
		saveDrillRecord(t, tr.r, a, true, day(-50+i), "h2")
	}
	if _, err := tr.r.BackupStream(ctx, repo.Stream{Name: "notes.txt", Reader: strings.NewReader("about drills")},
		repo.BackupOptions{Tags: []string{DrillTag, "notes"}, Hostname: "h1", Time: day(-70)}); err != nil {
		t.Fatal(err)
	}

	before := tr.snapshots(t)
	fb := &fakeBackup{now: func() time.Time { return now }, host: "h1", size: 256}
	rep := Pass(ctx, tr.r, PassOptions{
		Discoverer: staticDiscoverer(a, b), Backup: fb.fn, Host: "h1", Now: func() time.Time { return now },
		SkipPrune: true, Logger: testLogger(t),
	})
	if !rep.OK() {
		t.Fatal(rep.Err())
	}
	f := rep.Forget
	if f.Policy != DefaultPolicy().String() || f.DrillPolicy != "keep 12 latest snapshots" {
		t.Errorf("policies %q, %q", f.Policy, f.DrillPolicy)
	}

	// The backups: exactly what restic's policy keeps, drills or not.
	var backups []*repo.Snapshot
	for _, sn := range before {
		if name, ok := ContainerOf(sn); ok && name == a {
			backups = append(backups, sn)
		}
	}
	for _, sn := range tr.snapshots(t) {
		if sn.ID.String() == rep.Targets[0].SnapshotID {
			backups = append(backups, sn)
		}
	}
	_, wantRemoved, _ := repo.ApplyPolicyAt(backups, DefaultPolicy(), now)
	var groupA *ForgetGroupReport
	for i, g := range f.Groups {
		if g.Container == a && g.Host == "h1" {
			groupA = &f.Groups[i]
		}
	}
	if groupA == nil || len(groupA.Removed) != len(wantRemoved) || len(wantRemoved) == 0 || groupA.Kept != len(backups)-len(wantRemoved) {
		t.Fatalf("backup groups %+v; want %d removed of %d", f.Groups, len(wantRemoved), len(backups))
	}
	for _, sn := range wantRemoved {
		if !slices.Contains(groupA.Removed, sn.ID.String()) {
			t.Errorf("backup %s (%s) not removed", sn.ID.Str(), sn.Time)
		}
	}

	// The drill records: a keeps its 12 newest (the 10 new, the 2 newest
	// old ones), b its 3; h2's are not this pass's business.
	if len(f.DrillGroups) != 2 {
		t.Fatalf("drill groups %+v", f.DrillGroups)
	}
	ga, gb := f.DrillGroups[0], f.DrillGroups[1]
	if ga.Container != a || ga.Host != "h1" || ga.Kept != 12 || len(ga.Removed) != 3 {
		t.Errorf("drill group a: %+v", ga)
	}
	for _, id := range aOld[:3] {
		if !slices.Contains(ga.Removed, id.String()) {
			t.Errorf("old record %s not removed: %v", id.Str(), ga.Removed)
		}
	}
	if gb.Container != b || gb.Host != "h1" || gb.Kept != 3 || len(gb.Removed) != 0 {
		t.Errorf("drill group b: %+v", gb)
	}
	if f.DrillsRemoved != 3 || f.Removed != len(wantRemoved)+3 {
		t.Errorf("removed %d, drill records %d; want %d and 3", f.Removed, f.DrillsRemoved, len(wantRemoved)+3)
	}
	left := map[string]int{}
	for _, sn := range tr.snapshots(t) {
		if name, _, ok := drillOf(sn); ok {
			left[sn.Hostname+" "+name]++
		} else if sn.HasTag("notes") {
			left["notes"]++
		}
	}
	if left["h1 "+a] != 12 || left["h1 "+b] != 3 || left["h2 "+a] != 14 || left["notes"] != 1 {
		t.Errorf("left: %v", left)
	}
	if st := rep.State(a); st == nil || !st.LastDrill.Equal(day(-21).Add(2*time.Hour)) || st.LastDrillPassed {
		t.Errorf("inventory of a: %+v", st)
	}
	js, err := json.Marshal(rep)
	if err != nil || !strings.Contains(string(js), `"drill_policy":"keep 12 latest snapshots"`) || !strings.Contains(string(js), `"drills_removed":3`) ||
		!strings.Contains(string(js), `"drill_groups":[{"container":"scalr-a-db","host":"h1","kept":12,"removed":[`) {
		t.Errorf("report JSON: %v %s", err, js)
	}
	if s := Summary(rep); !strings.Contains(s, "forget drill records: keep 12 latest snapshots, 3 removed") ||
		!strings.Contains(s, "forget: "+DefaultPolicy().String()+", "+itoa(len(wantRemoved))+" snapshots removed") {
		t.Errorf("summary:\n%s", s)
	}

	// All hosts, DrillKeep 4: grouped per host and container.
	rep = Pass(ctx, tr.r, PassOptions{
		Discoverer: staticDiscoverer(), AllowEmpty: true, Backup: fb.fn, DrillKeep: 4,
		Now: func() time.Time { return now }, SkipPrune: true,
	})
	if !rep.OK() {
		t.Fatal(rep.Err())
	}
	var got []string
	for _, g := range rep.Forget.DrillGroups {
		got = append(got, g.Host+" "+g.Container+" "+itoa(g.Kept)+" "+itoa(len(g.Removed)))
	}
	if want := []string{"h1 scalr-a-db 4 8", "h1 scalr-b-db 3 0", "h2 scalr-a-db 4 10"}; !slices.Equal(got, want) {
		t.Errorf("drill groups, keep 4, all hosts: %q, want %q", got, want)
	}
	for _, id := range aNew[6:] {
		if _, err := tr.r.FindSnapshot(ctx, id.String(), repo.SnapshotFilter{}); err != nil {
			t.Errorf("newest record %s gone: %v", id.Str(), err)
		}
	}

	// Unlimited keeps them all.
	rep = Pass(ctx, tr.r, PassOptions{
		Discoverer: staticDiscoverer(), AllowEmpty: true, Backup: fb.fn, DrillKeep: -1, Host: "h2",
		Now: func() time.Time { return now }, SkipPrune: true,
	})
	if !rep.OK() || rep.Forget.DrillsRemoved != 0 || rep.Forget.DrillPolicy != "keep all latest snapshots" ||
		len(rep.Forget.DrillGroups) != 1 || rep.Forget.DrillGroups[0].Kept != 4 {
		t.Errorf("unlimited: %v %+v", rep.Err(), rep.Forget)
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func TestLoadConfigDrillKeep(t *testing.T) {
	for _, tc := range []struct {
		v    string
		want int
		err  string
	}{
		{"", DefaultDrillKeep, ""},
		{"5", 5, ""},
		{" 24 ", 24, ""},
		{"unlimited", -1, ""},
		{"0", 0, `SCALR_BACKUP_DRILL_KEEP="0": 0 would forget every drill record`},
		{"-3", 0, `SCALR_BACKUP_DRILL_KEEP="-3": want a count (1 or more) or unlimited`},
		{"twelve", 0, `SCALR_BACKUP_DRILL_KEEP="twelve": want a count`},
	} {
		c, err := LoadConfig(envOf(map[string]string{"SCALR_BACKUP_HOST": "h", "SCALR_BACKUP_DRILL_KEEP": tc.v}))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.v, err, tc.err)
			}
			continue
		}
		if err != nil || c.DrillKeep != tc.want || c.PassOptions().DrillKeep != tc.want {
			t.Errorf("%q: %v, DrillKeep %d, want %d", tc.v, err, c.DrillKeep, tc.want)
		}
	}
	if drillPolicy(0).String() != "keep 12 latest snapshots" || drillPolicy(-1).Last != -1 || drillPolicy(3).Last != 3 {
		t.Errorf("drillPolicy: %v %v %v", drillPolicy(0), drillPolicy(-1), drillPolicy(3))
	}
}

// The host name: SCALR_BACKUP_HOST, else RESTIC_HOST, else the OS's; taken
// as given, so white space is refused, naming the variable it came from
// (the CLI's hostIdentity does the same; cmd/scalr-backup tests that the
// two agree).
func TestLoadConfigHost(t *testing.T) {
	osName, err := os.Hostname()
	if err != nil {
		t.Skip(err)
	}
	for _, tc := range []struct {
		env  map[string]string
		want string
		err  string
	}{
		{map[string]string{"SCALR_BACKUP_HOST": "s", "RESTIC_HOST": "r"}, "s", ""},
		{map[string]string{"RESTIC_HOST": "r"}, "r", ""},
		{map[string]string{"SCALR_BACKUP_HOST": "", "RESTIC_HOST": ""}, osName, ""},
		{map[string]string{"SCALR_BACKUP_HOST": "prod-1 "}, "", `SCALR_BACKUP_HOST="prod-1 ": a host name has no white space`},
		{map[string]string{"SCALR_BACKUP_HOST": " "}, "", `SCALR_BACKUP_HOST=" "`},
		{map[string]string{"RESTIC_HOST": "a\tb"}, "", `RESTIC_HOST="a\tb"`},
		{map[string]string{"SCALR_BACKUP_HOST": "ok", "RESTIC_HOST": "a b"}, "ok", ""},
	} {
		c, err := LoadConfig(envOf(tc.env))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.env, err, tc.err)
			}
			continue
		}
		if err != nil || c.Host != tc.want || c.PassOptions().Host != tc.want || c.Alerter().Host != tc.want {
			t.Errorf("%q: %v, host %q, want %q", tc.env, err, c.Host, tc.want)
		}
	}
}
