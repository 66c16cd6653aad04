//go:build linux

package bench

// The targets table: issue 15's goals, each row pass or FAIL from this
// run's figures (or "not measured" with the reason). Nothing here times a
// test: it only reads what TestBenchTable measured.

import (
	"fmt"
	"strings"
)

// targetRow is one line of the table.
type targetRow struct {
	goal, measured, verdict string
}

func verdict(ok bool) string {
	if ok {
		return "pass"
	}
	return "FAIL"
}

// findCase returns the results of step si on target name.
func findCase(cases []benchCase, results map[benchCase]result, name string, si int) (benchCase, result, bool) {
	for _, c := range cases {
		if c.target == name && c.step == steps[si] {
			r := results[c]
			return c, r, r["restic"].ok && r["ours"].ok
		}
	}
	return benchCase{}, nil, false
}

func renderTargets(cases []benchCase, targets map[string]*target, results map[benchCase]result,
	repoSizes map[string]int64, mem []memRow, run runRow) string {
	var rows []targetRow
	missing := func(goal, why string) { rows = append(rows, targetRow{goal, "-", "not measured (" + why + ")"}) }

	// Peak RSS at or below restic's.
	for _, x := range []struct {
		name string
		si   int
	}{{"local", 0}, {"s3", 0}, {"local", 2}, {"s3", 2}, {"local", 3}, {"s3", 3}} {
		c, r, ok := findCase(cases, results, x.name, x.si)
		goal := fmt.Sprintf("peak RSS <= restic's: %s %s", x.name, steps[x.si])
		if !ok {
			missing(goal, "target not run or a run failed")
			continue
		}
		o, rs := r["ours"].rssKiB, r["restic"].rssKiB
		rows = append(rows, targetRow{goal + fmt.Sprintf(" (%s)", c.id),
			fmt.Sprintf("%s vs %s MiB", rssStr(r["ours"]), rssStr(r["restic"])), verdict(o <= rs)})
	}
	// Flat in stream size.
	{
		goal := "peak RSS flat in stream size (1 vs 4 GiB within 5%)"
		if len(mem) < 2 || !mem[0].runs["ours"].ok || !mem[len(mem)-1].runs["ours"].ok {
			missing(goal, "set SCALR_BENCH_MEMORY=1")
		} else {
			a, b := mem[0].runs["ours"], mem[len(mem)-1].runs["ours"]
			d := 100 * float64(b.rssKiB-a.rssKiB) / float64(a.rssKiB)
			rows = append(rows, targetRow{goal, fmt.Sprintf("%s -> %s MiB (%+.1f%%)", rssStr(a), rssStr(b), d), verdict(d <= 5 && d >= -5)})
		}
	}
	// CPU per byte on the first backup, and the compression outcome.
	if c, r, ok := findCase(cases, results, "local", 0); ok && r["restic"].cpu > 0 {
		x := r["ours"].cpu / r["restic"].cpu
		rows = append(rows, targetRow{fmt.Sprintf("CPU per byte <= 0.6x restic's: first backup (%s)", c.id),
			fmt.Sprintf("%.2f vs %.2f CPU s = %.2fx", r["ours"].cpu, r["restic"].cpu, x), verdict(x <= 0.6)})
	} else {
		missing("CPU per byte <= 0.6x restic's: first backup", "local target not run")
	}
	if o, rs := repoSizes["ours"], repoSizes["restic"]; o > 0 && rs > 0 {
		d := 100 * float64(o-rs) / float64(rs)
		rows = append(rows, targetRow{"repository size within 3% of restic's (auto), local after the dedup backup",
			fmt.Sprintf("%.1f vs %.1f MiB (%+.1f%%)", float64(o)/mib, float64(rs)/mib, d), verdict(d <= 3 && d >= -3)})
	} else {
		missing("repository size within 3% of restic's", "local target not run")
	}
	// Speed.
	speed := func(name string, si int, want float64) {
		c, r, ok := findCase(cases, results, name, si)
		goal := fmt.Sprintf("speed >= %.1fx restic's: %s %s", want, targets[name].labelOr(name), steps[si])
		if !ok {
			missing(goal, "target not run or a run failed")
			return
		}
		x := r["restic"].secs / r["ours"].secs
		rows = append(rows, targetRow{goal + fmt.Sprintf(" (%s)", c.id), fmt.Sprintf("%.2fx", x), verdict(x >= want)})
	}
	for _, si := range []int{0, 1} {
		for _, name := range []string{"local", "s3", "s3-latency"} {
			speed(name, si, 1.6)
		}
	}
	speed("s3-latency", 2, 2)
	// run against pg_dump alone.
	if run.notMeasured != "" {
		missing("`run` <= 1.15x `pg_dump -Fc -Z0 > /dev/null`", run.notMeasured)
	} else {
		x := run.run.secs / run.pgDump.secs
		rows = append(rows, targetRow{"`run` <= 1.15x `pg_dump -Fc -Z0 > /dev/null` alone",
			fmt.Sprintf("%.2f vs %.2f s = %.2fx (%.2fx the same dump through docker exec under stdbuf -o1M alone)", run.run.secs, run.pgDump.secs, x,
				run.run.secs/run.pgDumpBuf.secs), verdict(x <= 1.15)})
	}

	var b strings.Builder
	b.WriteString("Targets (issue 15), from this run:\n\n| target | measured (ours vs restic) | result |\n| --- | --- | --- |\n")
	pass := 0
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", r.goal, r.measured, r.verdict)
		if r.verdict == "pass" {
			pass++
		}
	}
	fmt.Fprintf(&b, "\n- %d of %d targets pass\n\n", pass, len(rows))
	return b.String()
}

// labelOr is the target's table label, or name when it was not run.
func (tg *target) labelOr(name string) string {
	if tg == nil {
		return name
	}
	return tg.label
}
