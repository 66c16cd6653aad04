package repo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/scalr-platform/scalr-backup/backend"
)

// snapAt returns a snapshot at the RFC 3339 time ts (its offset is kept),
// with an ID derived from ts, host and tags.
func snapAt(t *testing.T, ts string, host string, tags ...string) *Snapshot {
	t.Helper()
	tm, err := time.Parse(time.RFC3339, ts)
	if err != nil {
		t.Fatal(err)
	}
	sn := &Snapshot{Time: tm, Hostname: host, Paths: []string{"/db"}, Tags: tags}
	sn.ID = Hash([]byte(ts + "|" + host + "|" + strings.Join(tags, ",")))
	return sn
}

// times lists the snapshots' times in their own zone, for messages.
func times(list []*Snapshot) []string {
	out := make([]string, len(list))
	for i, sn := range list {
		out[i] = sn.Time.Format(time.RFC3339)
	}
	return out
}

// dailyHistory returns one snapshot a day at 02:15 UTC, from first to last
// inclusive, oldest first.
func dailyHistory(t *testing.T, first, last string) []*Snapshot {
	t.Helper()
	a, _ := time.Parse(time.DateOnly, first)
	b, _ := time.Parse(time.DateOnly, last)
	var list []*Snapshot
	for d := a; !d.After(b); d = d.AddDate(0, 0, 1) {
		list = append(list, snapAt(t, d.Add(2*time.Hour+15*time.Minute).Format(time.RFC3339), "h"))
	}
	return list
}

func TestParseDuration(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Duration
		str  string
	}{
		{"", Duration{}, ""},
		{"  ", Duration{}, ""},
		{"1y5m7d2h", Duration{Years: 1, Months: 5, Days: 7, Hours: 2}, "1y5m7d2h"},
		{"2h1y", Duration{Years: 1, Hours: 2}, "1y2h"},
		{"36h", Duration{Hours: 36}, "36h"},
		{"0d", Duration{}, ""},
		{"3d5d", Duration{Days: 5}, "5d"},
		{" 30d ", Duration{Days: 30}, "30d"},
		{"-1y", Duration{Years: -1}, "-1y"},
		{"007m", Duration{Months: 7}, "7m"},
	} {
		got, err := ParseDuration(c.in)
		if err != nil || got != c.want || got.String() != c.str {
			t.Errorf("ParseDuration(%q) = %+v (%q), %v; want %+v (%q)", c.in, got, got.String(), err, c.want, c.str)
		}
		if got.Zero() != (c.want == Duration{}) {
			t.Errorf("%q: Zero() = %v", c.in, got.Zero())
		}
	}
	for _, in := range []string{"5", "d", "1d2", "1w", "1 d", "1d 2h", "-", "--1d", "1.5d", "99999999999999999999d"} {
		if d, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) = %+v, want an error", in, d)
		}
	}
}

func TestPolicyStringEmptyValidate(t *testing.T) {
	if !(ExpirePolicy{}).Empty() {
		t.Error("zero policy not empty")
	}
	for _, p := range []ExpirePolicy{{Last: 1}, {Yearly: -1}, {Within: Duration{Hours: 1}}, {WithinMonthly: Duration{Years: 1}}, {Tags: [][]string{{""}}}} {
		if p.Empty() {
			t.Errorf("%+v reported empty", p)
		}
	}
	for _, c := range []struct {
		p    ExpirePolicy
		want string
	}{
		{ExpirePolicy{}, "remove"},
		{ExpirePolicy{Daily: 30, Weekly: 4, Monthly: 6}, "keep 30 daily, 4 weekly, 6 monthly snapshots"},
		{ExpirePolicy{Last: -1, Yearly: 2}, "keep all latest, 2 yearly snapshots"},
		{ExpirePolicy{Daily: 7, WithinHourly: Duration{Days: 2}, WithinYearly: Duration{Years: 5}},
			"keep 7 daily snapshots, hourly snapshots within 2d, yearly snapshots within 5y"},
		{ExpirePolicy{Tags: [][]string{{"a", "b"}, {"c"}}, Within: Duration{Months: 1}},
			"keep all snapshots with tags [[a, b] [c]] and all snapshots within 1m of the newest"},
		{ExpirePolicy{Within: Duration{Days: 3, Hours: 4}}, "keep all snapshots within 3d4h of the newest"},
	} {
		if got := c.p.String(); got != c.want {
			t.Errorf("%+v: String() = %q, want %q", c.p, got, c.want)
		}
	}
	if err := (ExpirePolicy{Daily: -1, Within: Duration{Days: 1}}).Validate(); err != nil {
		t.Error(err)
	}
	if err := (ExpirePolicy{Weekly: -2}).Validate(); err == nil || !strings.Contains(err.Error(), "other than -1") {
		t.Errorf("-2: %v", err)
	}
	if err := (ExpirePolicy{WithinDaily: Duration{Days: 1, Hours: -1}}).Validate(); err == nil || !strings.Contains(err.Error(), "negative") {
		t.Errorf("negative duration: %v", err)
	}
}

func TestParseTagList(t *testing.T) {
	if got := ParseTagList(" a, b ,c"); !reflect.DeepEqual(got, []string{"a", "b", "c"}) {
		t.Errorf("got %q", got)
	}
	if got := ParseTagList(""); !reflect.DeepEqual(got, []string{""}) {
		t.Errorf("empty: got %q", got)
	}
}

// keptTimes applies p and returns the kept snapshots' times, newest first.
func keptTimes(list []*Snapshot, p ExpirePolicy, now time.Time) []string {
	keep, _, _ := ApplyPolicyAt(list, p, now)
	return times(keep)
}

var farFuture = time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)

func TestApplyPolicyBasics(t *testing.T) {
	// Two snapshots a day on 1, 2, 3, 5 and 9 March (none on 4 and 6-8).
	var list []*Snapshot
	for _, d := range []string{"01", "02", "03", "05", "09"} {
		list = append(list, snapAt(t, "2024-03-"+d+"T08:00:00Z", "h"), snapAt(t, "2024-03-"+d+"T20:00:00Z", "h"))
	}
	orig := append([]*Snapshot(nil), list...)
	cases := []struct {
		name string
		p    ExpirePolicy
		want []string
	}{
		{"last 3", ExpirePolicy{Last: 3},
			[]string{"2024-03-09T20:00:00Z", "2024-03-09T08:00:00Z", "2024-03-05T20:00:00Z"}},
		// Days without a snapshot use up nothing.
		{"daily 3 skips empty days", ExpirePolicy{Daily: 3},
			[]string{"2024-03-09T20:00:00Z", "2024-03-05T20:00:00Z", "2024-03-03T20:00:00Z"}},
		// Five days for a count of 10: the oldest snapshot is kept too,
		// though its day already has a kept one.
		{"daily 10 keeps the oldest", ExpirePolicy{Daily: 10},
			[]string{"2024-03-09T20:00:00Z", "2024-03-05T20:00:00Z", "2024-03-03T20:00:00Z", "2024-03-02T20:00:00Z", "2024-03-01T20:00:00Z", "2024-03-01T08:00:00Z"}},
		// Exactly five days: the count is used up at the oldest day's
		// newest snapshot, so the oldest is not kept.
		{"daily 5 exhausted", ExpirePolicy{Daily: 5},
			[]string{"2024-03-09T20:00:00Z", "2024-03-05T20:00:00Z", "2024-03-03T20:00:00Z", "2024-03-02T20:00:00Z", "2024-03-01T20:00:00Z"}},
		{"daily unlimited keeps the oldest", ExpirePolicy{Daily: -1},
			[]string{"2024-03-09T20:00:00Z", "2024-03-05T20:00:00Z", "2024-03-03T20:00:00Z", "2024-03-02T20:00:00Z", "2024-03-01T20:00:00Z", "2024-03-01T08:00:00Z"}},
		{"last unlimited keeps all", ExpirePolicy{Last: -1}, times(reversed(list))},
		{"hourly 4", ExpirePolicy{Hourly: 4},
			[]string{"2024-03-09T20:00:00Z", "2024-03-09T08:00:00Z", "2024-03-05T20:00:00Z", "2024-03-05T08:00:00Z"}},
		// 1 and 2 March are ISO week 9, 3 March (a Sunday) too; 5 and 9
		// March are week 10.
		{"weekly 2", ExpirePolicy{Weekly: 2}, []string{"2024-03-09T20:00:00Z", "2024-03-03T20:00:00Z"}},
		{"weekly 3 keeps the oldest", ExpirePolicy{Weekly: 3},
			[]string{"2024-03-09T20:00:00Z", "2024-03-03T20:00:00Z", "2024-03-01T08:00:00Z"}},
		{"monthly 1", ExpirePolicy{Monthly: 1}, []string{"2024-03-09T20:00:00Z"}},
		{"yearly 2 keeps the oldest", ExpirePolicy{Yearly: 2}, []string{"2024-03-09T20:00:00Z", "2024-03-01T08:00:00Z"}},
		{"last 1 daily 2", ExpirePolicy{Last: 1, Daily: 2}, []string{"2024-03-09T20:00:00Z", "2024-03-05T20:00:00Z"}},
		{"nothing", ExpirePolicy{}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			keep, remove, reasons := ApplyPolicyAt(list, c.p, farFuture)
			if got := times(keep); !reflect.DeepEqual(got, c.want) && !(len(got) == 0 && len(c.want) == 0) {
				t.Errorf("kept %v\nwant %v", got, c.want)
			}
			if len(keep)+len(remove) != len(list) || len(reasons) != len(keep) {
				t.Errorf("%d kept + %d removed of %d, %d reasons", len(keep), len(remove), len(list), len(reasons))
			}
			for i, r := range reasons {
				if r.Snapshot != keep[i] || len(r.Matches) == 0 {
					t.Errorf("reason %d: %+v", i, r)
				}
			}
			for i := 1; i < len(remove); i++ {
				if remove[i].Time.After(remove[i-1].Time) {
					t.Errorf("removed not newest first: %v", times(remove))
				}
			}
		})
	}
	if !reflect.DeepEqual(list, orig) {
		t.Error("ApplyPolicy reordered its input")
	}
}

func reversed(l []*Snapshot) []*Snapshot {
	out := make([]*Snapshot, len(l))
	for i, sn := range l {
		out[len(l)-1-i] = sn
	}
	return out
}

func TestApplyPolicyReasons(t *testing.T) {
	list := []*Snapshot{
		snapAt(t, "2024-03-09T20:00:00Z", "h", "x"),
		snapAt(t, "2024-03-09T08:00:00Z", "h"),
		snapAt(t, "2024-03-05T20:00:00Z", "h", "x", "y"),
		snapAt(t, "2024-03-05T08:00:00Z", "h"),
	}
	p := ExpirePolicy{Last: 1, Daily: 5, Monthly: 1, Tags: [][]string{{"x", "y"}, {""}}, Within: Duration{Days: 1}, WithinDaily: Duration{Days: 30}}
	keep, remove, reasons := ApplyPolicyAt(list, p, farFuture)
	if len(remove) != 0 {
		t.Fatalf("removed %v", times(remove))
	}
	want := [][]string{
		{"within 1d", "last snapshot", "daily snapshot", "monthly snapshot", "daily within 30d"},
		{"has tags []", "within 1d"},
		{"has tags [x, y]", "daily snapshot", "daily within 30d"},
		{"has tags []", "oldest daily snapshot", "oldest daily within 30d"},
	}
	wantCounters := []KeepCounters{{Daily: 4}, {Daily: 4}, {Daily: 3}, {Daily: 2}}
	for i, r := range reasons {
		if r.Snapshot != keep[i] || !reflect.DeepEqual(r.Matches, want[i]) || r.Counters != wantCounters[i] {
			t.Errorf("%s: %q %+v\nwant %q %+v", r.Snapshot.Time.Format(time.RFC3339), r.Matches, r.Counters, want[i], wantCounters[i])
		}
	}
	// restic's JSON names for the counters, zero ones left out.
	b, _ := json.Marshal(reasons[2].Counters)
	if string(b) != `{"daily":3}` {
		t.Errorf("counters JSON %s", b)
	}
	_, _, reasons = ApplyPolicyAt(list, ExpirePolicy{Daily: -1}, farFuture)
	if reasons[0].Counters.Daily != -1 {
		t.Errorf("unlimited counter %+v", reasons[0].Counters)
	}
}

// newestPerPeriod is a reference for count rules that run out before the
// oldest snapshot: the newest snapshot of each of the n newest periods.
func newestPerPeriod(list []*Snapshot, n int, period func(time.Time, int) int) map[*Snapshot]bool {
	newest := map[int]*Snapshot{}
	for _, sn := range list {
		k := period(sn.Time, 0)
		if cur := newest[k]; cur == nil || sn.Time.After(cur.Time) {
			newest[k] = sn
		}
	}
	var keys []int
	for k := range newest {
		keys = append(keys, k)
	}
	sort.Sort(sort.Reverse(sort.IntSlice(keys)))
	out := map[*Snapshot]bool{}
	for i := 0; i < n && i < len(keys); i++ {
		out[newest[keys[i]]] = true
	}
	return out
}

// TestApplyPolicyADR is the ADR's policy (30 daily, 4 weekly, 6 monthly)
// on two years of nightly snapshots.
func TestApplyPolicyADR(t *testing.T) {
	list := dailyHistory(t, "2023-06-16", "2025-06-15") // 2025-06-15 is a Sunday
	if len(list) != 731 {
		t.Fatalf("%d snapshots", len(list))
	}
	p := ExpirePolicy{Daily: 30, Weekly: 4, Monthly: 6}
	keep, remove, reasons := ApplyPolicyAt(list, p, farFuture)

	want := map[*Snapshot]bool{}
	for _, part := range []map[*Snapshot]bool{
		newestPerPeriod(list, 30, periodDay), newestPerPeriod(list, 4, periodWeek), newestPerPeriod(list, 6, periodMonth),
	} {
		for sn := range part {
			want[sn] = true
		}
	}
	got := map[*Snapshot]bool{}
	for _, sn := range keep {
		got[sn] = true
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("kept %v", times(keep))
	}
	// By hand: the daily ones are 17 May to 15 June; the weekly ones (Sundays 15, 8, 1 June and 25 May) are among them; the
	// monthly ones are 15 June, 31 May, and the ends of April, March,
	// February and January.
	wantTimes := []string{}
	for d := 15; d >= 1; d-- {
		wantTimes = append(wantTimes, fmt.Sprintf("2025-06-%02dT02:15:00Z", d))
	}
	for d := 31; d >= 17; d-- {
		wantTimes = append(wantTimes, fmt.Sprintf("2025-05-%02dT02:15:00Z", d))
	}
	wantTimes = append(wantTimes, "2025-04-30T02:15:00Z", "2025-03-31T02:15:00Z", "2025-02-28T02:15:00Z", "2025-01-31T02:15:00Z")
	if g := times(keep); !reflect.DeepEqual(g, wantTimes) {
		t.Errorf("kept %v\nwant %v", g, wantTimes)
	}
	if len(remove) != len(list)-len(wantTimes) {
		t.Errorf("%d removed", len(remove))
	}
	last := reasons[len(reasons)-1]
	if !reflect.DeepEqual(last.Matches, []string{"monthly snapshot"}) || last.Counters != (KeepCounters{}) {
		t.Errorf("oldest kept: %+v", last)
	}
	if !reflect.DeepEqual(reasons[0].Matches, []string{"daily snapshot", "weekly snapshot", "monthly snapshot"}) {
		t.Errorf("newest kept: %+v", reasons[0].Matches)
	}

	// A young repository, 10 days: every day is kept, and nothing more.
	young := list[len(list)-10:]
	keep, remove, _ = ApplyPolicyAt(young, p, farFuture)
	if len(keep) != 10 || len(remove) != 0 {
		t.Errorf("young: kept %v", times(keep))
	}
}

func TestApplyPolicyUnlimited(t *testing.T) {
	list := dailyHistory(t, "2022-12-20", "2025-01-10")
	// All monthly: one per month (the month's last snapshot) plus the
	// oldest, which shares its month with a kept one.
	keep, _, reasons := ApplyPolicyAt(list, ExpirePolicy{Monthly: -1}, farFuture)
	if len(keep) != 26+1 {
		t.Errorf("monthly unlimited kept %d: %v", len(keep), times(keep))
	}
	if keep[len(keep)-1] != list[0] || !reflect.DeepEqual(reasons[len(reasons)-1].Matches, []string{"oldest monthly snapshot"}) {
		t.Errorf("oldest: %+v", reasons[len(reasons)-1])
	}
	// Yearly unlimited with 3 daily.
	keep, _, _ = ApplyPolicyAt(list, ExpirePolicy{Yearly: -1, Daily: 3}, farFuture)
	want := []string{"2025-01-10T02:15:00Z", "2025-01-09T02:15:00Z", "2025-01-08T02:15:00Z", "2024-12-31T02:15:00Z", "2023-12-31T02:15:00Z", "2022-12-31T02:15:00Z", "2022-12-20T02:15:00Z"}
	if g := times(keep); !reflect.DeepEqual(g, want) {
		t.Errorf("kept %v\nwant %v", g, want)
	}
}

func TestApplyPolicyWithin(t *testing.T) {
	list := dailyHistory(t, "2020-01-01", "2020-03-31")
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	// Relative to the newest snapshot (31 March 02:15), not to now; the
	// boundary itself (24 March 02:15) is outside.
	got := keptTimes(list, ExpirePolicy{Within: Duration{Days: 7}}, now)
	if len(got) != 7 || got[6] != "2020-03-25T02:15:00Z" {
		t.Errorf("within 7d: %v", got)
	}
	got = keptTimes(list, ExpirePolicy{Within: Duration{Days: 6, Hours: 24}}, now)
	if len(got) != 7 {
		t.Errorf("within 6d24h: %v", got)
	}
	got = keptTimes(list, ExpirePolicy{Within: Duration{Days: 7, Hours: 1}}, now)
	if len(got) != 8 {
		t.Errorf("within 7d1h: %v", got)
	}
	// Calendar months: 31 March minus one month is 2 March (31 Feb
	// normalised), so 3 March onwards is inside.
	got = keptTimes(list, ExpirePolicy{Within: Duration{Months: 1}}, now)
	if got[len(got)-1] != "2020-03-03T02:15:00Z" {
		t.Errorf("within 1m ends at %v", got[len(got)-1])
	}
	// A snapshot in the future is kept, but the window still ends at the
	// newest snapshot that is not.
	future := snapAt(t, "2030-01-01T00:00:00Z", "h")
	got = keptTimes(append([]*Snapshot{future}, list...), ExpirePolicy{Within: Duration{Days: 2}}, now)
	if !reflect.DeepEqual(got, []string{"2030-01-01T00:00:00Z", "2020-03-31T02:15:00Z", "2020-03-30T02:15:00Z"}) {
		t.Errorf("with a future snapshot: %v", got)
	}
	// Only future snapshots: everything is inside.
	got = keptTimes([]*Snapshot{future, snapAt(t, "2031-01-01T00:00:00Z", "h")}, ExpirePolicy{Within: Duration{Hours: 1}}, now)
	if len(got) != 2 {
		t.Errorf("all in the future: %v", got)
	}

	// Within-daily keeps one per day inside the window, plus the oldest
	// snapshot when the window reaches it.
	two := []*Snapshot{
		snapAt(t, "2020-03-31T20:00:00Z", "h"), snapAt(t, "2020-03-31T08:00:00Z", "h"),
		snapAt(t, "2020-03-30T20:00:00Z", "h"), snapAt(t, "2020-03-30T08:00:00Z", "h"),
	}
	got = keptTimes(two, ExpirePolicy{WithinDaily: Duration{Days: 1}}, now)
	if !reflect.DeepEqual(got, []string{"2020-03-31T20:00:00Z"}) { // 30 March 20:00 is the boundary
		t.Errorf("within-daily 1d: %v", got)
	}
	got = keptTimes(two, ExpirePolicy{WithinDaily: Duration{Days: 1, Hours: 1}}, now)
	if !reflect.DeepEqual(got, []string{"2020-03-31T20:00:00Z", "2020-03-30T20:00:00Z"}) {
		t.Errorf("within-daily 1d1h: %v", got)
	}
	keep, _, reasons := ApplyPolicyAt(two, ExpirePolicy{WithinDaily: Duration{Days: 2}}, now)
	if len(keep) != 3 || !reflect.DeepEqual(reasons[2].Matches, []string{"oldest daily within 2d"}) {
		t.Errorf("within-daily 2d: %v %+v", times(keep), reasons)
	}
	got = keptTimes(list, ExpirePolicy{WithinWeekly: Duration{Months: 1}, WithinMonthly: Duration{Years: 1}}, now)
	// Weeks from 3 March on: 31 March, Sundays 29, 22, 15 and 8 March (3
	// March is in 8 March's week); months: 31 March, 29 February, 31
	// January and the oldest (1 January), inside the window.
	want := []string{"2020-03-31T02:15:00Z", "2020-03-29T02:15:00Z", "2020-03-22T02:15:00Z", "2020-03-15T02:15:00Z",
		"2020-03-08T02:15:00Z", "2020-02-29T02:15:00Z", "2020-01-31T02:15:00Z", "2020-01-01T02:15:00Z"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("within weekly/monthly: %v\nwant %v", got, want)
	}
}

func TestApplyPolicyKeepTag(t *testing.T) {
	list := []*Snapshot{
		snapAt(t, "2024-01-05T00:00:00Z", "h", "a"),
		snapAt(t, "2024-01-04T00:00:00Z", "h", "a", "b"),
		snapAt(t, "2024-01-03T00:00:00Z", "h"),
		snapAt(t, "2024-01-02T00:00:00Z", "h", "c"),
		snapAt(t, "2024-01-01T00:00:00Z", "h", "b"),
	}
	for _, c := range []struct {
		tags [][]string
		want []string
	}{
		{[][]string{{"a"}}, []string{"2024-01-05T00:00:00Z", "2024-01-04T00:00:00Z"}},
		{[][]string{{"a", "b"}}, []string{"2024-01-04T00:00:00Z"}},
		{[][]string{{"b"}, {"c"}}, []string{"2024-01-04T00:00:00Z", "2024-01-02T00:00:00Z", "2024-01-01T00:00:00Z"}},
		{[][]string{{""}}, []string{"2024-01-03T00:00:00Z"}},
		{[][]string{{"", "zzz"}}, []string{"2024-01-03T00:00:00Z"}},
		{[][]string{{"zzz"}}, nil},
	} {
		got := keptTimes(list, ExpirePolicy{Tags: c.tags}, farFuture)
		if !reflect.DeepEqual(got, c.want) && !(len(got) == 0 && len(c.want) == 0) {
			t.Errorf("keep-tag %q: %v, want %v", c.tags, got, c.want)
		}
	}
	// Tags are not counted: with keep-last 1 the tagged ones stay too.
	got := keptTimes(list, ExpirePolicy{Last: 1, Tags: [][]string{{"c"}}}, farFuture)
	if !reflect.DeepEqual(got, []string{"2024-01-05T00:00:00Z", "2024-01-02T00:00:00Z"}) {
		t.Errorf("last 1 + tag c: %v", got)
	}
}

// TestApplyPolicyTimeZones: periods come from each snapshot's recorded
// offset, not from UTC nor the process's zone.
func TestApplyPolicyTimeZones(t *testing.T) {
	list := []*Snapshot{
		snapAt(t, "2024-03-11T00:30:00+01:00", "h"), // 10 March 23:30 UTC
		snapAt(t, "2024-03-10T22:00:00Z", "h"),
		snapAt(t, "2024-03-09T12:00:00Z", "h"),
	}
	got := keptTimes(list, ExpirePolicy{Daily: 2}, farFuture)
	if !reflect.DeepEqual(got, []string{"2024-03-11T00:30:00+01:00", "2024-03-10T22:00:00Z"}) {
		t.Errorf("own offsets: %v", got)
	}
	utc := make([]*Snapshot, len(list))
	for i, sn := range list {
		c := *sn
		c.Time = c.Time.UTC()
		utc[i] = &c
	}
	got = keptTimes(utc, ExpirePolicy{Daily: 2}, farFuture)
	if !reflect.DeepEqual(got, []string{"2024-03-10T23:30:00Z", "2024-03-09T12:00:00Z"}) {
		t.Errorf("all UTC: %v", got)
	}
	// The same instant parsed from JSON keeps its offset.
	var sn Snapshot
	if err := json.Unmarshal([]byte(`{"time":"2024-03-11T00:30:00.5+01:00","tree":null}`), &sn); err != nil {
		t.Fatal(err)
	}
	if sn.Time.Day() != 11 {
		t.Errorf("decoded day %d", sn.Time.Day())
	}

	// ISO weeks across the new year: 29 Dec 2024 is week 52 of 2024,
	// 30 Dec 2024 and 1 Jan 2025 are week 1 of 2025.
	weeks := []*Snapshot{
		snapAt(t, "2025-01-01T10:00:00Z", "h"), snapAt(t, "2024-12-30T10:00:00Z", "h"),
		snapAt(t, "2024-12-29T10:00:00Z", "h"), snapAt(t, "2024-12-20T10:00:00Z", "h"),
	}
	got = keptTimes(weeks, ExpirePolicy{Weekly: 2}, farFuture)
	if !reflect.DeepEqual(got, []string{"2025-01-01T10:00:00Z", "2024-12-29T10:00:00Z"}) {
		t.Errorf("ISO weeks: %v", got)
	}
	// Within-windows subtract calendar days in the newest snapshot's zone:
	// across the DST change in Berlin, 1 day before 31 March 12:00 CEST is
	// 30 March 12:00 CET, only 23 hours earlier.
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Skip("no Europe/Berlin zone data:", err)
	}
	newest := &Snapshot{Time: time.Date(2024, 3, 31, 12, 0, 0, 0, berlin), ID: Hash([]byte("n"))}
	older := &Snapshot{Time: newest.Time.Add(-23*time.Hour - 30*time.Minute), ID: Hash([]byte("o"))}
	keep, _, _ := ApplyPolicyAt([]*Snapshot{newest, older}, ExpirePolicy{Within: Duration{Days: 1}}, farFuture)
	if len(keep) != 1 {
		t.Errorf("DST: kept %v", times(keep))
	}
}

func TestApplyPolicyEqualTimes(t *testing.T) {
	a := snapAt(t, "2024-01-01T00:00:00Z", "a")
	b := snapAt(t, "2024-01-01T00:00:00Z", "b")
	first := a
	if string(b.ID[:]) < string(a.ID[:]) {
		first = b
	}
	for _, l := range [][]*Snapshot{{a, b}, {b, a}} {
		keep, _, _ := ApplyPolicyAt(l, ExpirePolicy{Last: 1}, farFuture)
		if keep[0] != first {
			t.Error("equal times not ordered by ID")
		}
	}
}

func TestGroupSnapshots(t *testing.T) {
	mk := func(host string, paths, tags []string) *Snapshot {
		return &Snapshot{Hostname: host, Paths: paths, Tags: tags, Time: time.Unix(0, 0)}
	}
	list := []*Snapshot{
		mk("h1", []string{"/b", "/a"}, []string{"y", "x"}),
		mk("h1", []string{"/a", "/b"}, []string{"x", "y"}),
		mk("h1", []string{"/a"}, nil),
		mk("h2", []string{"/a"}, []string{"x"}),
		mk("h2", []string{"/a"}, []string{}),
	}
	keys := func(gs []SnapshotGroup) []string {
		var out []string
		for _, g := range gs {
			b, _ := json.Marshal(g.Key)
			out = append(out, fmt.Sprintf("%s=%d", b, len(g.Snapshots)))
		}
		return out
	}
	for _, c := range []struct {
		by   string
		want []string
	}{
		{"host,paths", []string{
			`{"hostname":"h1","paths":["/a","/b"],"tags":null}=2`,
			`{"hostname":"h1","paths":["/a"],"tags":null}=1`,
			`{"hostname":"h2","paths":["/a"],"tags":null}=2`,
		}},
		{"host", []string{`{"hostname":"h1","paths":null,"tags":null}=3`, `{"hostname":"h2","paths":null,"tags":null}=2`}},
		{"", []string{`{"hostname":"","paths":null,"tags":null}=5`}},
		{"tags", []string{
			`{"hostname":"","paths":null,"tags":["x","y"]}=2`,
			`{"hostname":"","paths":null,"tags":["x"]}=1`,
			`{"hostname":"","paths":null,"tags":[]}=1`,
			`{"hostname":"","paths":null,"tags":null}=1`,
		}},
		{"hosts,path,tag", []string{
			`{"hostname":"h1","paths":["/a","/b"],"tags":["x","y"]}=2`,
			`{"hostname":"h1","paths":["/a"],"tags":null}=1`,
			`{"hostname":"h2","paths":["/a"],"tags":["x"]}=1`,
			`{"hostname":"h2","paths":["/a"],"tags":[]}=1`,
		}},
	} {
		by, err := ParseGroupBy(c.by)
		if err != nil {
			t.Fatal(err)
		}
		gs, err := GroupSnapshots(list, by)
		if err != nil {
			t.Fatal(err)
		}
		if got := keys(gs); !reflect.DeepEqual(got, c.want) {
			t.Errorf("group by %q:\n%s\nwant\n%s", c.by, strings.Join(got, "\n"), strings.Join(c.want, "\n"))
		}
	}
	if !reflect.DeepEqual(list[0].Paths, []string{"/b", "/a"}) || !reflect.DeepEqual(list[0].Tags, []string{"y", "x"}) {
		t.Error("GroupSnapshots modified a snapshot")
	}
	if _, err := ParseGroupBy("host,time"); err == nil || !strings.Contains(err.Error(), `"time"`) {
		t.Errorf("bad option: %v", err)
	}
	if g, _ := ParseGroupBy("paths,host"); g != DefaultGroupBy || g.String() != "host,paths" {
		t.Errorf("%+v %q", g, g.String())
	}
	k := SnapshotGroupKey{Hostname: "h", Paths: []string{"/a", "/b"}, Tags: []string{"x"}}
	if k.String() != "host h, path [/a /b], tags [x]" {
		t.Errorf("key string %q", k.String())
	}
}

func TestForget(t *testing.T) {
	ctx := context.Background()
	r, be := newTestRepo(t, 2, Options{})
	tree := Hash([]byte("tree")) // the policy never reads trees
	save := func(ts, host string, tags ...string) ID {
		sn := snapAt(t, ts, host, tags...)
		sn.Tree = &tree
		sn.Paths = []string{"/" + host}
		id, err := r.SaveSnapshot(ctx, sn)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	h1 := []ID{save("2024-01-03T00:00:00Z", "h1"), save("2024-01-02T00:00:00Z", "h1"), save("2024-01-01T00:00:00Z", "h1", "keep")}
	h2 := []ID{save("2024-01-03T00:00:00Z", "h2"), save("2024-01-02T00:00:00Z", "h2")}
	count := func() int {
		n := 0
		be.List(ctx, backend.SnapshotFile, func(backend.FileInfo) error { n++; return nil })
		return n
	}

	if _, err := r.Forget(ctx, SnapshotFilter{}, DefaultGroupBy, ExpirePolicy{}, false); !errors.Is(err, ErrNoPolicy) {
		t.Fatalf("empty policy: %v", err)
	}
	if _, err := r.ForgetWithOptions(ctx, ForgetOptions{GroupBy: DefaultGroupBy, UnsafeAllowRemoveAll: true}); err == nil || !strings.Contains(err.Error(), "snapshot filter") {
		t.Fatalf("remove all without a filter: %v", err)
	}
	var ge *ForgetGroupError
	if _, err := r.Forget(ctx, SnapshotFilter{}, DefaultGroupBy, ExpirePolicy{Tags: [][]string{{"keep"}}}, false); !errors.As(err, &ge) ||
		err.Error() != `refusing to delete last snapshot of snapshot group "host h2, path [/h2]"` {
		t.Fatalf("keep-tag that keeps nothing of h2: %v", err)
	}
	if count() != 5 {
		t.Fatal("a refused forget removed snapshots")
	}

	res, err := r.Forget(ctx, SnapshotFilter{}, DefaultGroupBy, ExpirePolicy{Last: 1}, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Groups) != 2 || len(res.Remove) != 3 || len(res.Removed) != 0 || count() != 5 {
		t.Fatalf("dry run: %+v, %d files", res, count())
	}
	if res.Groups[0].Key.Hostname != "h1" || res.Groups[0].Keep[0].ID != h1[0] {
		t.Fatalf("groups %+v", res.Groups)
	}

	// A held lock blocks a real run (but not a dry run).
	l, err := r.Lock(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	var le *LockedError
	if _, err := r.Forget(ctx, SnapshotFilter{}, DefaultGroupBy, ExpirePolicy{Last: 1}, false); !errors.As(err, &le) {
		t.Fatalf("forget under a lock: %v", err)
	}
	l.Unlock(ctx)

	res, err = r.Forget(ctx, SnapshotFilter{Hosts: []string{"h1"}}, DefaultGroupBy, ExpirePolicy{Last: 1, Tags: [][]string{{"keep"}}}, false)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(res.Removed, []ID{h1[1]}) || count() != 4 {
		t.Fatalf("removed %v, %d left", res.Removed, count())
	}
	if locks, _ := r.ListLocks(ctx); len(locks) != 0 {
		t.Fatalf("%d locks left", len(locks))
	}

	res, err = r.ForgetWithOptions(ctx, ForgetOptions{Filter: SnapshotFilter{Hosts: []string{"h2"}}, GroupBy: DefaultGroupBy, UnsafeAllowRemoveAll: true})
	if err != nil {
		t.Fatal(err)
	}
	want := append([]ID(nil), h2...)
	sortIDs(want)
	if !reflect.DeepEqual(res.Removed, want) || count() != 2 {
		t.Fatalf("remove all of h2: %v, %d left", res.Removed, count())
	}
}
