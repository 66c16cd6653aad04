package repo

import (
	"context"
	"sync"
)

// forEachParallel runs fn for every item on at most n goroutines and returns
// the first error; the others are cancelled through ctx.
func forEachParallel[T any](ctx context.Context, items []T, n int, fn func(context.Context, T) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan T)
	var (
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
	)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range work {
				if err := fn(ctx, it); err != nil {
					once.Do(func() { firstErr = err; cancel() })
				}
			}
		}()
	}
feed:
	for _, it := range items {
		select {
		case work <- it:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if firstErr == nil {
		// Only the caller's context can have ended: ours is cancelled on
		// error (which set firstErr) or after return.
		firstErr = ctx.Err()
	}
	return firstErr
}
