package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/scalr-platform/scalr-backup/repo"
)

// checkSummary is `check --json`'s output: restic's summary fields plus
// every finding.
type checkSummary struct {
	MessageType        string              `json:"message_type"` // "summary"
	NumErrors          int                 `json:"num_errors"`
	BrokenPacks        []string            `json:"broken_packs"`
	SuggestRepairIndex bool                `json:"suggest_repair_index"`
	SuggestPrune       bool                `json:"suggest_prune"`
	Errors             []repo.CheckProblem `json:"errors"`
	Hints              []repo.CheckProblem `json:"hints"`
	IndexFiles         int                 `json:"index_files"`
	Packs              int                 `json:"packs"`
	Snapshots          int                 `json:"snapshots"`
	Trees              int                 `json:"trees"`
	PacksRead          int                 `json:"packs_read"`
	BytesRead          int64               `json:"bytes_read"`
}

// checkQuietHint reports hints that restic only lists with --verbose and
// otherwise summarizes in one line.
func checkQuietHint(k repo.ProblemKind) bool {
	return k == repo.ProblemPackUnreferenced || k == repo.ProblemBlobDuplicate
}

// checkPrinter prints a running check as restic does: stage lines and
// non-critical findings on stdout, errors on stderr, in the order they come,
// and a progress line per stage.
type checkPrinter struct {
	a    *app
	text bool // false with --json: only the summary is printed
	bar  *progress

	stage                     repo.CheckStage
	stageStart                time.Time
	errs, unreferenced, dupes int
	multiIndex, mixed         bool
}

func (c *checkPrinter) say(format string, args ...any) {
	if c.text && !c.a.quiet {
		fmt.Fprintf(c.a.stdout, format, args...)
	}
}

// endStage prints the summary lines of the findings a stage collected.
func (c *checkPrinter) endStage(s repo.CheckStage) {
	switch s {
	case repo.StageLoadIndex:
		if c.multiIndex {
			c.say("Packs listed in several index files are non-critical; rebuilding the index (restic repair index) removes the duplicates.\n")
		}
		if c.mixed {
			c.say("Packs mixing tree and data blobs are non-critical; a prune repacks them.\n")
		}
		if c.dupes > 0 && c.errs == 0 && !c.a.verbose {
			c.say("%d %s stored more than once. This is non-critical; a prune removes the extra copies (--verbose lists them).\n", c.dupes, checkPlural(c.dupes, "blob is", "blobs are"))
		}
	case repo.StagePacks:
		if c.unreferenced > 0 && c.errs == 0 && !c.a.verbose {
			c.say("%d additional files were found in the repository, which likely contain duplicate data or data the index lost (see below).\n", c.unreferenced)
		}
	}
}

var checkUnits = map[repo.CheckStage]string{repo.StageLoadIndex: "index files", repo.StagePacks: "packs",
	repo.StageStructure: "trees", repo.StageReadData: "packs read"}

func (c *checkPrinter) progress(p repo.CheckProgress) {
	if p.Stage != c.stage {
		c.bar.done()
		c.endStage(c.stage)
		c.stage = p.Stage
		c.stageStart = time.Now()
		c.say("%s\n", p.Message)
	}
	unit := checkUnits[p.Stage]
	if p.Total > 0 {
		c.bar.set(fmt.Sprintf("%s %s  %d / %d %s", elapsed(c.stageStart), percent(float64(p.Done), float64(p.Total)), p.Done, p.Total, unit), p.Done == p.Total)
	} else if p.Done > 0 {
		c.bar.set(fmt.Sprintf("%s %d %s", elapsed(c.stageStart), p.Done, unit), false)
	}
}

func (c *checkPrinter) problem(p repo.CheckProblem) {
	switch p.Kind {
	case repo.ProblemPackUnreferenced:
		c.unreferenced++
	case repo.ProblemBlobDuplicate:
		c.dupes++
	case repo.ProblemPackMultiIndex:
		c.multiIndex = true
	case repo.ProblemPackMixed:
		c.mixed = true
	}
	switch {
	case !c.text:
	case !p.Kind.Hint():
		c.errs++
		fmt.Fprintf(c.a.stderr, "error: %s\n", p)
	case checkQuietHint(p.Kind):
		if c.a.verbose {
			c.say("%s\n", p)
		}
	default:
		c.say("%s\n", p)
	}
}

// newCheckSummary is check --json's one line.
func newCheckSummary(rep *repo.CheckReport) checkSummary {
	out := checkSummary{
		MessageType: "summary", NumErrors: len(rep.Errors), BrokenPacks: []string{},
		SuggestRepairIndex: rep.SuggestRepairIndex(), SuggestPrune: rep.SuggestPrune(),
		Errors: rep.Errors, Hints: rep.Hints,
		IndexFiles: rep.IndexFiles, Packs: rep.Packs, Snapshots: rep.Snapshots, Trees: rep.Trees,
		PacksRead: rep.PacksRead, BytesRead: rep.BytesRead,
	}
	for _, id := range rep.BrokenPacks {
		out.BrokenPacks = append(out.BrokenPacks, id.String())
	}
	return out
}

func (a *app) checkCommand() *cobra.Command {
	var (
		readData bool
		subset   string
		noLock   bool
		workers  int
	)
	cmd := &cobra.Command{
		Use:   "check [flags]",
		Short: "Check the repository for errors",
		Long: `Check the repository for errors, as restic's check does, reading from the
repository itself (no cache):

  load indexes                      every index file loads
  check all packs                   every indexed pack is stored with the size
                                    its index entries imply
  check snapshots, trees and blobs  every snapshot loads and every tree it
                                    reaches loads and names only indexed blobs
  read all data (--read-data)       every pack is downloaded, hashed against
                                    its name, its header compared with the
                                    index, and every blob decrypted and hashed

Packs no index names, blobs stored twice and packs in several index files are
reported as non-critical. The exit status is 0 when no errors were found, 1
when there were, 11 when another process holds a lock (check takes an
exclusive lock unless --no-lock).`,
		Example: `  scalr-backup check
  scalr-backup check --read-data
  scalr-backup check --read-data-subset 1/7   # a seventh of the packs; 1/7 to 7/7 cover all
  scalr-backup check --read-data-subset 10%`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if readData && subset != "" {
				return errors.New("check flags --read-data and --read-data-subset cannot be used together")
			}
			if subset != "" {
				if _, err := repo.ParseDataSubset(subset); err != nil {
					return err
				}
			}
			r, err := a.openRepo(ctx)
			if err != nil {
				return err
			}
			defer r.Close()

			cp := &checkPrinter{a: a, text: !a.jsonOutput, bar: a.newProgress(), stageStart: time.Now()}
			if !noLock {
				cp.say("create exclusive lock for repository\n")
			}
			rep, err := r.Check(ctx, repo.CheckOptions{
				ReadData:       readData,
				ReadDataSubset: subset,
				NoLock:         noLock,
				Workers:        workers,
				Progress:       cp.progress,
				Problem:        cp.problem,
			})
			cp.bar.done()
			if err != nil {
				return err
			}
			cp.endStage(cp.stage)

			if a.jsonOutput {
				if err := a.emitJSON(newCheckSummary(rep)); err != nil {
					return err
				}
			} else {
				a.printCheckAdvice(rep)
			}
			if !rep.Ok() {
				return fmt.Errorf("repository contains errors: %d %s found", len(rep.Errors), checkPlural(len(rep.Errors), "error was", "errors were"))
			}
			cp.say("no errors were found\n")
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&readData, "read-data", false, "read all data packs and verify every blob")
	f.StringVar(&subset, "read-data-subset", "", "read a `subset` of the data packs: n/t (group n of t), x% (random share) or a size such as 500M (random packs of about that size)")
	f.BoolVar(&noLock, "no-lock", false, "do not take the exclusive lock (the result may report packs a concurrent backup or prune is writing)")
	f.IntVar(&workers, "read-workers", 0, "packs read at once with --read-data (default 4)")
	return cmd
}

func checkPlural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// printCheckAdvice prints the closing remarks of a text check: what to run
// about what it found.
func (a *app) printCheckAdvice(rep *repo.CheckReport) {
	a.printDamageAdvice(rep)
	if rep.IndexDamaged {
		fmt.Fprintf(a.stderr, "\nThe repository index is damaged; the later checks were skipped. Rebuild the index (scalr-backup repair index, or restic repair index) and check again.\n")
		return
	}
	switch {
	case rep.IndexIncomplete():
		fmt.Fprintf(a.stderr, "\nThe index is incomplete: packs that no index file names hold data that snapshots need. Rebuild the index from the packs (scalr-backup repair index, or restic repair index) and check again; prune refuses until then.\n")
	case rep.SuggestPrune() && !a.quiet && !a.jsonOutput:
		fmt.Fprintf(a.stdout, "The additional files are non-critical; a prune removes them (check --verbose lists them).\n")
	}
	if len(rep.BrokenPacks) > 0 {
		ids := make([]string, len(rep.BrokenPacks))
		for i, id := range rep.BrokenPacks {
			ids[i] = id.String()
		}
		fmt.Fprintf(a.stderr, "\nThe repository contains damaged pack files:\n  %s\nSnapshots that use them cannot be fully restored. With the restic CLI, `restic repair packs %s` followed by `restic repair snapshots --forget` salvages what is intact.\n",
			strings.Join(ids, "\n  "), strings.Join(ids, " "))
	}
}
