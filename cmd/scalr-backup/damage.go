package main

import (
	"fmt"
	"strings"
	"sync"

	"github.com/scalr-platform/scalr-backup/backend"
	"github.com/scalr-platform/scalr-backup/repo"
)

// skippedMu keeps the lines of concurrent reports whole.
var skippedMu sync.Mutex

// skippedFile names, on standard error, a file a read path left out
// because it is damaged, as restic does ("Ignoring "ID": …"), with what
// follows from it and what to run. It is printed with --quiet and --json
// too: a listing that leaves something out must say so.
func (a *app) skippedFile(s repo.SkippedFile) {
	var line string
	switch s.Handle.Type {
	case backend.SnapshotFile:
		line = fmt.Sprintf("Ignoring %q: %s (scalr-backup check lists every damaged file; scalr-backup forget %s removes it)",
			s.Handle.Name, s, s.Handle.Name[:min(8, len(s.Handle.Name))])
	case backend.IndexFile:
		line = fmt.Sprintf("warning: %s; left out: the blobs only it lists count as missing (scalr-backup repair index rebuilds the index from the packs)", s)
	case backend.KeyFile:
		line = fmt.Sprintf("warning: %s; skipped: another key opened the repository (scalr-backup key remove %s removes the damaged one)",
			s, s.Handle.Name[:min(8, len(s.Handle.Name))])
	default:
		line = fmt.Sprintf("warning: %s; left out", s)
	}
	skippedMu.Lock()
	defer skippedMu.Unlock()
	fmt.Fprintln(a.stderr, line)
}

// printDamageAdvice prints, after a text check, what to do about damaged
// snapshot and key files (pack and index damage have their own advice).
func (a *app) printDamageAdvice(rep *repo.CheckReport) {
	var snaps, keys []string
	for _, e := range rep.Errors {
		switch e.Kind {
		case repo.ProblemSnapshot:
			snaps = append(snaps, strings.TrimPrefix(e.Object, "snapshots/"))
		case repo.ProblemKey:
			keys = append(keys, strings.TrimPrefix(e.Object, "keys/"))
		}
	}
	if len(snaps) > 0 {
		fmt.Fprintf(a.stderr, "\nThe repository contains damaged snapshot files:\n  %s\n"+
			"They are left out of listings, forget and latest; prune refuses to run while they exist, since it cannot tell what they reference. "+
			"Remove them with `scalr-backup forget %s` (restic cannot read them to forget them: with restic alone, delete the files from snapshots/ by hand), then prune frees what only they used.\n",
			strings.Join(snaps, "\n  "), strings.Join(snaps, " "))
	}
	if len(keys) > 0 {
		fmt.Fprintf(a.stderr, "\nThe repository contains damaged key files:\n  %s\n"+
			"restic 0.16+ refuses to open the repository when it reads one of them before a good key. "+
			"Restore them from a copy, or remove them with `scalr-backup key remove ID` (opened with another key's password) and add a new key for their password with `scalr-backup key add`.\n",
			strings.Join(keys, "\n  "))
	}
}

// printPruneRepairs prints what prune repaired or tidied besides packs: a
// damaged index rebuilt from pack headers, temporary files of interrupted
// writes.
func (a *app) printPruneRepairs(st *repo.PruneStats, opts repo.PruneOptions) {
	verb := "replaced"
	if opts.DryRun {
		verb = "to replace"
	}
	if st.IndexFilesDamaged > 0 {
		fmt.Fprintf(a.stdout, "damaged index: %d files %s, from the headers of %d packs they listed\n", st.IndexFilesDamaged, verb, st.PacksRecovered)
	}
	if st.LeftoversRemoved > 0 || st.LeftoversKept > 0 {
		verb = "removed"
		if opts.DryRun {
			verb = "to remove"
		}
		age := opts.LeftoverAge
		if age <= 0 {
			age = repo.DefaultLeftoverAge
		}
		fmt.Fprintf(a.stdout, "temporary files of interrupted writes: %d %s (%s), %d younger than %s kept\n",
			st.LeftoversRemoved, verb, bytesHuman(st.LeftoverSize), st.LeftoversKept, age)
	}
}
