package nightly

import (
	"sort"
	"sync"
	"time"
)

// expectation is the expected set and what the dead-man check needs: the
// containers this host has backed up (from the repository's snapshots of
// this host: Inventory) plus those discovered now, less the retired ones.
// Each expected container whose newest backup is older than the threshold
// is stale; one never backed up is stale once the threshold has passed
// since it was first discovered (a new app gets its first night). The
// Service and its Metrics share one, so /healthz, the stale gauges and the
// alerts always agree.
type expectation struct {
	mu         sync.Mutex
	inv        map[string]ContainerState // this host's, from the repository
	discovered []string                  // of the last discovery that worked
	firstSeen  map[string]time.Time      // when each was first discovered
}

func newExpectation() *expectation {
	return &expectation{inv: map[string]ContainerState{}, firstSeen: map[string]time.Time{}}
}

// setInventory replaces what the repository holds.
func (e *expectation) setInventory(inv []ContainerState) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.inv = make(map[string]ContainerState, len(inv))
	for _, st := range inv {
		e.inv[st.Container] = st
	}
}

// setDiscovered sets the containers discovery found at now.
func (e *expectation) setDiscovered(names []string, now time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.discovered = append([]string(nil), names...)
	for _, n := range names {
		if _, ok := e.firstSeen[n]; !ok {
			e.firstSeen[n] = now
		}
	}
}

// expected returns the expected set, sorted.
func (e *expectation) expected() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.expectedLocked()
}

func (e *expectation) expectedLocked() []string {
	set := map[string]bool{}
	for name, st := range e.inv {
		if !st.Newest.IsZero() && !st.IsRetired() {
			set[name] = true
		}
	}
	for _, name := range e.discovered {
		if st, ok := e.inv[name]; ok && st.IsRetired() {
			continue
		}
		set[name] = true
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// stale returns the stale containers of the expected set at now.
func (e *expectation) stale(now time.Time, threshold time.Duration) []StaleAlert {
	e.mu.Lock()
	defer e.mu.Unlock()
	newest := make(map[string]time.Time, len(e.inv))
	for name, st := range e.inv {
		newest[name] = st.Newest
	}
	return staleFromNewest(newest, e.firstSeen, e.expectedLocked(), now, threshold)
}
