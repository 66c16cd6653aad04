package repo

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/scalr-platform/scalr-backup/backend"
)

// DefaultLeftoverAge is how old a temporary file left by an interrupted
// write must be before prune removes it. A write in progress takes seconds
// to minutes (a pack is at most 128 MiB), and prune holds the exclusive
// lock, so no writer of this tool is active; the age covers writers that
// take no lock and clocks that disagree a little.
const DefaultLeftoverAge = time.Hour

// leftoverAge is the age prune uses for opts: DefaultLeftoverAge for 0.
func leftoverAge(d time.Duration) time.Duration {
	if d <= 0 {
		return DefaultLeftoverAge
	}
	return d
}

// Leftovers lists the temporary files interrupted writes left in the
// repository's folders (none for storage without temporary files, S3).
func (r *Repository) Leftovers(ctx context.Context) ([]backend.Leftover, error) {
	l, ok := backend.Leftovers(r.be)
	if !ok {
		return nil, nil
	}
	var out []backend.Leftover
	err := l.ListLeftovers(ctx, func(lo backend.Leftover) error {
		out = append(out, lo)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list temporary files: %w", err)
	}
	return out, nil
}

// pruneLeftovers removes (counts, when dryRun) the temporary files older
// than age at now, and counts the younger ones it leaves.
func (r *Repository) pruneLeftovers(ctx context.Context, age time.Duration, now time.Time, dryRun bool, stats *PruneStats) error {
	list, err := r.Leftovers(ctx)
	if err != nil || len(list) == 0 {
		return err
	}
	l, _ := backend.Leftovers(r.be)
	for _, lo := range list {
		if now.Sub(lo.ModTime) < age {
			stats.LeftoversKept++
			continue
		}
		if !dryRun {
			if err := l.RemoveLeftover(ctx, lo.Path); err != nil && !errors.Is(err, backend.ErrNotExist) {
				return fmt.Errorf("remove temporary file %s: %w", lo.Path, err)
			}
		}
		stats.LeftoversRemoved++
		stats.LeftoverSize += uint64(lo.Size)
	}
	return nil
}

// checkLeftovers reports each temporary file of an interrupted write as a
// hint: harmless, and removed by a prune once older than
// DefaultLeftoverAge.
func (c *checkRun) checkLeftovers(ctx context.Context) error {
	list, err := c.r.Leftovers(ctx)
	if err != nil {
		return err
	}
	now := time.Now()
	for _, lo := range list {
		when := "prune removes it"
		if age := now.Sub(lo.ModTime); age < DefaultLeftoverAge {
			when = fmt.Sprintf("prune removes it once it is %s old (in %s)", DefaultLeftoverAge, (DefaultLeftoverAge - age).Round(time.Second))
		}
		c.report(CheckProblem{Kind: ProblemLeftover, Object: lo.Path,
			Message: fmt.Sprintf("temporary file left by an interrupted write (%d bytes, last written %s); %s",
				lo.Size, lo.ModTime.UTC().Format(time.RFC3339), when)})
	}
	return nil
}
