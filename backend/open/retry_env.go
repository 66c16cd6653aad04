package open

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/scalr-platform/scalr-backup/backend"
)

// The environment variables RetryFromEnv reads. Unset or empty variables
// keep backend.NewRetry's defaults (10 attempts, 5 minutes, 500ms doubling
// up to 30s).
const (
	// EnvRetryMaxAttempts is the most times one storage request is tried,
	// a whole number from 1 ("1" turns retries off).
	EnvRetryMaxAttempts = "SCALR_BACKUP_RETRY_MAX_ATTEMPTS"
	// EnvRetryMaxElapsed bounds the time one storage operation may spend
	// retrying, waits included, as a Go duration ("30s", "5m").
	EnvRetryMaxElapsed = "SCALR_BACKUP_RETRY_MAX_ELAPSED"
	// EnvRetryInitialDelay is the wait before the second attempt; each
	// further wait doubles up to EnvRetryMaxDelay.
	EnvRetryInitialDelay = "SCALR_BACKUP_RETRY_INITIAL_DELAY"
	// EnvRetryMaxDelay caps a single wait between attempts.
	EnvRetryMaxDelay = "SCALR_BACKUP_RETRY_MAX_DELAY"
)

// RetryFromEnv reads the retry bounds of the storage backend from the
// environment (EnvRetryMaxAttempts, EnvRetryMaxElapsed,
// EnvRetryInitialDelay, EnvRetryMaxDelay) through getenv, for
// Options.Retry. Variables that are unset or empty leave their field zero,
// which backend.NewRetry reads as its default. A value that does not parse,
// or is zero or negative, is an error naming the variable; so is a maximum
// delay below the initial delay.
//
// The budget bounds each operation on its own: with every request failing,
// a command fails after about MaxElapsed (or MaxAttempts attempts) per
// operation it needs, and a backup may need two (the failing upload, then
// removing its lock).
func RetryFromEnv(getenv func(string) string) (backend.RetryOptions, error) {
	var o backend.RetryOptions
	if v := strings.TrimSpace(getenv(EnvRetryMaxAttempts)); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return o, fmt.Errorf("%s=%q: want a whole number of attempts, 1 or more", EnvRetryMaxAttempts, v)
		}
		o.MaxAttempts = n
	}
	durations := []struct {
		name  string
		field *time.Duration
	}{
		{EnvRetryMaxElapsed, &o.MaxElapsed},
		{EnvRetryInitialDelay, &o.InitialDelay},
		{EnvRetryMaxDelay, &o.MaxDelay},
	}
	for _, d := range durations {
		v := strings.TrimSpace(getenv(d.name))
		if v == "" {
			continue
		}
		dur, err := time.ParseDuration(v)
		if err != nil || dur <= 0 {
			return o, fmt.Errorf("%s=%q: want a positive duration such as 500ms, 30s or 5m", d.name, v)
		}
		*d.field = dur
	}
	if o.InitialDelay > 0 && o.MaxDelay > 0 && o.MaxDelay < o.InitialDelay {
		return o, fmt.Errorf("%s=%v is below %s=%v", EnvRetryMaxDelay, o.MaxDelay, EnvRetryInitialDelay, o.InitialDelay)
	}
	return o, nil
}
