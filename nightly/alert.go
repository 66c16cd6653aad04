package nightly

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/scalr-platform/scalr-backup/repo"
)

// EventKind says what an Event reports.
type EventKind string

// Event kinds.
const (
	// EventFailure: a container's backup, or a stage of the pass (open,
	// discover, forget, prune), failed.
	EventFailure EventKind = "failure"
	// EventSuccess: a pass in which everything succeeded.
	EventSuccess EventKind = "success"
	// EventStale: the dead-man check found a container whose newest backup
	// is older than the threshold (or that has none).
	EventStale EventKind = "stale"
	// EventDrillFailure: a restore drill failed.
	EventDrillFailure EventKind = "drill-failure"
)

// Event is one thing to tell the operator about. It is the webhook's JSON
// body, and the hook command's environment (see Alerter).
type Event struct {
	Kind EventKind `json:"event"`
	Host string    `json:"host"`
	// Container is the container concerned ("" for a stage failure).
	Container string `json:"container,omitempty"`
	// Stage is where it failed: backup, open, discover, forget, prune,
	// drill or stale.
	Stage string    `json:"stage,omitempty"`
	Error string    `json:"error,omitempty"`
	Time  time.Time `json:"time"`
	// LastSuccess is the time of the container's newest backup (nil: none
	// or unknown).
	LastSuccess *time.Time `json:"last_success"`
	// SnapshotID is the snapshot a drill restored.
	SnapshotID string `json:"snapshot_id,omitempty"`
	// Reminder marks a stale event repeated for a container still stale
	// (the first one is sent when it becomes stale).
	Reminder bool `json:"reminder,omitempty"`
	// Containers lists, for a success, the containers backed up.
	Containers []string `json:"containers,omitempty"`
}

func (e Event) failure() bool { return e.Kind != EventSuccess }

// Alerter tells the operator about events: it runs a shell command (the
// event in environment variables, never in arguments) and/or POSTs JSON to
// a webhook, and pings a healthchecks.io-style URL around each pass. Each
// channel is optional; the zero value does nothing. Failures to alert are
// logged and returned, never fatal.
type Alerter struct {
	Host string
	// OnFailure runs for every failure, stale and drill-failure event;
	// OnSuccess once per pass in which everything succeeded. Both run as
	// Shell -c COMMAND with HookTimeout.
	OnFailure, OnSuccess string
	HookTimeout          time.Duration
	// Shell runs the hooks (default /bin/sh).
	Shell string
	// Environ is the hooks' base environment (nil: os.Environ()); RESTIC_*,
	// AWS_* and SCALR_BACKUP_* variables are always removed from it, so a
	// hook never sees the repository password, the storage keys or a URL
	// with a token.
	Environ func() []string

	// WebhookURL gets one POST per failure event (and per success with
	// WebhookOnSuccess). Attempts that fail with a network error, 408, 429
	// or 5xx are retried WebhookRetries times (default 3) with backoff
	// doubling from WebhookBackoff (default 2s); each attempt times out
	// after WebhookTimeout (default 10s).
	WebhookURL       string
	WebhookOnSuccess bool
	WebhookTimeout   time.Duration
	WebhookRetries   int
	WebhookBackoff   time.Duration

	// HealthcheckURL is pinged (POST, with a short summary as the body) at
	// URL/start when a pass starts, URL when it succeeded and URL/fail when
	// it failed, healthchecks.io's convention.
	HealthcheckURL string

	// Client makes the HTTP requests (nil: a default client).
	Client *http.Client
	Logger *slog.Logger
	// Now is the clock for event times (nil: time.Now).
	Now func() time.Time
}

func (a *Alerter) log() *slog.Logger {
	if a.Logger == nil {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return a.Logger
}

func (a *Alerter) now() time.Time {
	if a.Now != nil {
		return a.Now().UTC()
	}
	return time.Now().UTC()
}

// PassStarted pings HealthcheckURL/start.
func (a *Alerter) PassStarted(ctx context.Context) error {
	if a.HealthcheckURL == "" {
		return nil
	}
	return a.ping(ctx, "/start", "pass started on "+a.Host)
}

// PassFinished sends the events of rep (see EventsForReport) and pings the
// healthcheck with the outcome. A cancelled pass (the service is stopping)
// sends nothing.
func (a *Alerter) PassFinished(ctx context.Context, rep *Report) error {
	if rep.Cancelled {
		return nil
	}
	var errs []error
	for _, ev := range EventsForReport(rep, a.Host, a.now()) {
		if err := a.Notify(ctx, ev); err != nil {
			errs = append(errs, err)
		}
	}
	if a.HealthcheckURL != "" {
		suffix := ""
		if !rep.OK() {
			suffix = "/fail"
		}
		if err := a.ping(ctx, suffix, Summary(rep)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Stale sends one stale event per alert.
func (a *Alerter) Stale(ctx context.Context, alerts []StaleAlert) error {
	var errs []error
	for _, s := range alerts {
		ev := Event{Kind: EventStale, Host: a.Host, Container: s.Container, Stage: "stale", Error: s.String(), Time: a.now(), Reminder: s.Reminder}
		if !s.Newest.IsZero() {
			t := s.Newest.UTC()
			ev.LastSuccess = &t
		}
		if err := a.Notify(ctx, ev); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Notify sends one event through the hook command and the webhook.
func (a *Alerter) Notify(ctx context.Context, ev Event) error {
	if ev.Host == "" {
		ev.Host = a.Host
	}
	if ev.Time.IsZero() {
		ev.Time = a.now()
	}
	var errs []error
	cmd := a.OnSuccess
	if ev.failure() {
		cmd = a.OnFailure
	}
	if cmd != "" {
		if err := a.runHook(ctx, cmd, ev); err != nil {
			errs = append(errs, err)
		}
	}
	if a.WebhookURL != "" && (ev.failure() || a.WebhookOnSuccess) {
		if err := a.postWebhook(ctx, ev); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// EventsForReport turns a finished pass into events: one failure per failed
// container (with its newest backup as last_success) and per failed stage,
// or one success naming the containers backed up.
func EventsForReport(rep *Report, host string, now time.Time) []Event {
	if host == "" {
		host = rep.Host
	}
	if rep.OK() {
		ev := Event{Kind: EventSuccess, Host: host, Time: now}
		for _, t := range rep.Targets {
			if t.Status == StatusOK {
				ev.Containers = append(ev.Containers, t.Name)
			}
		}
		return []Event{ev}
	}
	var out []Event
	for _, t := range rep.Failed() {
		stage := "backup"
		if t.Missing {
			stage = "missing"
		}
		ev := Event{Kind: EventFailure, Host: host, Container: t.Name, Stage: stage, Error: t.Error, Time: now}
		if st := rep.State(t.Name); st != nil && !st.Newest.IsZero() {
			n := st.Newest.UTC()
			ev.LastSuccess = &n
		}
		out = append(out, ev)
	}
	for _, e := range rep.Errors {
		out = append(out, Event{Kind: EventFailure, Host: host, Stage: e.Stage, Error: e.Err.Error(), Time: now})
	}
	return out
}

// Summary is a short text account of a pass, for logs and healthcheck
// bodies.
func Summary(rep *Report) string {
	var b strings.Builder
	status := "OK"
	if !rep.OK() {
		status = "FAILED"
	}
	if rep.Cancelled {
		status = "CANCELLED"
	}
	fmt.Fprintf(&b, "backup pass on %s %s in %s\n", rep.Host, status, rep.Duration.Round(time.Second))
	for _, t := range rep.Targets {
		switch t.Status {
		case StatusRetired:
			fmt.Fprintf(&b, "%s: retired, not backed up\n", t.Name)
		case StatusOK:
			fmt.Fprintf(&b, "%s: ok, snapshot %s, %d bytes read, %d added\n", t.Name, short(t.SnapshotID), t.BytesRead, t.BytesAdded)
		default:
			fmt.Fprintf(&b, "%s: %s: %s\n", t.Name, t.Status, t.Error)
		}
	}
	for _, e := range rep.Errors {
		fmt.Fprintf(&b, "%s\n", e.Error())
	}
	if rep.Forget != nil {
		f := rep.Forget
		fmt.Fprintf(&b, "forget: %s, %d snapshots removed\n", f.Policy, f.Removed-f.DrillsRemoved)
		if f.DrillPolicy != "" {
			fmt.Fprintf(&b, "forget drill records: %s, %d removed\n", f.DrillPolicy, f.DrillsRemoved)
		}
	}
	if rep.Prune != nil {
		fmt.Fprintf(&b, "prune: %d packs removed, %d repacked\n", rep.Prune.PacksRemove+rep.Prune.PacksUnreferenced, rep.Prune.PacksRepack)
	}
	if rep.Forget != nil && rep.Forget.Deferred.Files > 0 {
		fmt.Fprintf(&b, "forget: %s\n", &rep.Forget.Deferred)
	}
	if rep.Prune != nil && rep.Prune.Deferred.Files > 0 {
		fmt.Fprintf(&b, "prune: %s\n", &rep.Prune.Deferred)
	}
	return b.String()
}

func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// hookEnv is the environment of a hook: the base less secrets, plus the
// event.
func hookEnv(base []string, ev Event) []string {
	env := make([]string, 0, len(base)+10)
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "RESTIC_") || strings.HasPrefix(k, "AWS_") || strings.HasPrefix(k, "SCALR_BACKUP_") {
			continue
		}
		env = append(env, kv)
	}
	last := ""
	if ev.LastSuccess != nil {
		last = ev.LastSuccess.UTC().Format(time.RFC3339)
	}
	return append(env,
		"SCALR_BACKUP_EVENT="+string(ev.Kind),
		"SCALR_BACKUP_HOST="+ev.Host,
		"SCALR_BACKUP_CONTAINER="+ev.Container,
		"SCALR_BACKUP_STAGE="+ev.Stage,
		"SCALR_BACKUP_ERROR="+clip(ev.Error, 32<<10),
		"SCALR_BACKUP_TIME="+ev.Time.UTC().Format(time.RFC3339),
		"SCALR_BACKUP_LAST_SUCCESS="+last,
		"SCALR_BACKUP_SNAPSHOT="+ev.SnapshotID,
		"SCALR_BACKUP_REMINDER="+strconv.FormatBool(ev.Reminder),
		"SCALR_BACKUP_CONTAINERS="+strings.Join(ev.Containers, " "),
	)
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// runHook runs cmd through the shell with the event in its environment. It
// runs in its own process group, which is killed when the timeout or ctx
// ends.
func (a *Alerter) runHook(ctx context.Context, cmdline string, ev Event) error {
	timeout := a.HookTimeout
	if timeout <= 0 {
		timeout = DefaultHookTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	shell := a.Shell
	if shell == "" {
		shell = "/bin/sh"
	}
	base := os.Environ()
	if a.Environ != nil {
		base = a.Environ()
	}
	cmd := exec.CommandContext(ctx, shell, "-c", cmdline)
	cmd.Env = hookEnv(base, ev)
	var out limitedBuffer
	out.max = 8 << 10
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	start := time.Now()
	err := cmd.Run()
	log := a.log().With("event", string(ev.Kind), "container", ev.Container, "duration", time.Since(start).Round(time.Millisecond).String())
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%v)", err, ctx.Err())
		}
		log.Error("hook command failed", "error", err, "output", out.String())
		return fmt.Errorf("%s hook: %w", hookName(ev), err)
	}
	log.Info("hook command ran", "output", out.String())
	return nil
}

func hookName(ev Event) string {
	if ev.failure() {
		return "on-failure"
	}
	return "on-success"
}

// limitedBuffer keeps the first max bytes written to it.
type limitedBuffer struct {
	mu        sync.Mutex
	buf       bytes.Buffer
	max       int
	truncated bool
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - b.buf.Len(); room < len(p) {
		if room > 0 {
			b.buf.Write(p[:room])
		}
		b.truncated = true
		return len(p), nil
	}
	b.buf.Write(p)
	return len(p), nil
}

func (b *limitedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := strings.TrimSpace(b.buf.String())
	if b.truncated {
		s += " ..."
	}
	return s
}

func (a *Alerter) client() *http.Client {
	if a.Client != nil {
		return a.Client
	}
	return http.DefaultClient
}

// postWebhook POSTs ev as JSON, retrying.
func (a *Alerter) postWebhook(ctx context.Context, ev Event) error {
	body, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	err = a.send(ctx, a.WebhookURL, "application/json", body)
	log := a.log().With("event", string(ev.Kind), "container", ev.Container, "webhook", redactURL(a.WebhookURL))
	if err != nil {
		log.Error("webhook failed", "error", err)
		return fmt.Errorf("webhook: %w", err)
	}
	log.Info("webhook sent")
	return nil
}

// ping POSTs body to HealthcheckURL + suffix, retrying.
func (a *Alerter) ping(ctx context.Context, suffix, body string) error {
	u, err := url.Parse(a.HealthcheckURL)
	if err != nil {
		return errors.New("healthcheck: the URL does not parse")
	}
	u.Path = strings.TrimRight(u.Path, "/") + suffix
	if u.RawPath != "" {
		u.RawPath = strings.TrimRight(u.RawPath, "/") + suffix
	}
	err = a.send(ctx, u.String(), "text/plain; charset=utf-8", []byte(clip(body, 10<<10)))
	what := "success"
	switch suffix {
	case "/start":
		what = "start"
	case "/fail":
		what = "fail"
	}
	log := a.log().With("ping", what, "healthcheck", redactURL(a.HealthcheckURL))
	if err != nil {
		log.Error("healthcheck ping failed", "error", err)
		return fmt.Errorf("healthcheck ping (%s): %w", what, err)
	}
	log.Debug("healthcheck pinged")
	return nil
}

// send POSTs body to target until it is accepted (2xx), the answer says
// retrying is pointless (other 4xx), the attempts are used up, or ctx ends.
// Errors never contain the URL.
func (a *Alerter) send(ctx context.Context, target, contentType string, body []byte) error {
	retries := a.WebhookRetries
	if retries == 0 {
		retries = 3
	}
	if retries < 0 {
		retries = 0
	}
	pause := a.WebhookBackoff
	if pause <= 0 {
		pause = 2 * time.Second
	}
	timeout := a.WebhookTimeout
	if timeout <= 0 {
		timeout = DefaultWebhookTimeout
	}
	var last error
	for attempt := 0; attempt <= retries; attempt++ {
		if attempt > 0 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("%w (after %d attempts; last: %v)", ctx.Err(), attempt, last)
			case <-time.After(pause):
			}
			pause *= 2
		}
		retry, err := a.sendOnce(ctx, target, contentType, body, timeout)
		if err == nil {
			return nil
		}
		last = err
		if !retry {
			return err
		}
	}
	return fmt.Errorf("gave up after %d attempts: %w", retries+1, last)
}

func (a *Alerter) sendOnce(ctx context.Context, target, contentType string, body []byte, timeout time.Duration) (retry bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return false, errors.New("bad URL")
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("User-Agent", "scalr-backup")
	resp, err := a.client().Do(req)
	if err != nil {
		// *url.Error repeats the URL, which may hold a token: keep only
		// the cause.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return true, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return false, nil
	case resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode >= 500:
		return true, fmt.Errorf("HTTP %d", resp.StatusCode)
	default:
		return false, fmt.Errorf("HTTP %d", resp.StatusCode)
	}
}

// redactURL keeps a URL's scheme and host: its path and query often hold a
// token.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return "(unparsable URL)"
	}
	return u.Scheme + "://" + u.Host + "/..."
}

// StaleAlert is a container whose newest backup is too old.
type StaleAlert struct {
	Container string `json:"container"`
	// Newest is the newest backup's time; zero when there is none.
	Newest time.Time `json:"newest,omitzero"`
	// Age is now minus Newest (zero when there is none).
	Age time.Duration `json:"-"`
	// Reminder marks an alert repeated for a container that has stayed
	// stale (see Config.StaleReminder).
	Reminder bool `json:"-"`
}

func (s StaleAlert) String() string {
	if s.Newest.IsZero() {
		return fmt.Sprintf("container %s has no backup at all", s.Container)
	}
	return fmt.Sprintf("newest backup of container %s is %s old (from %s)", s.Container,
		s.Age.Round(time.Minute), s.Newest.UTC().Format(time.RFC3339))
}

// CheckStale is the dead-man check over the expected set: every container
// with a backup in snapshots (see ContainerOf; pass only the snapshots of
// this host when several share the repository) that is not retired (see
// RetiredTag), plus every target, must have a backup at most threshold old
// at now. It returns an alert per container where it has not, sorted by
// name: a container that stopped, or was removed or renamed, stays expected
// until it is backed up again or retired.
func CheckStale(snapshots []*repo.Snapshot, targets []Target, now time.Time, threshold time.Duration) []StaleAlert {
	e := newExpectation()
	e.setInventory(Inventory(snapshots, ""))
	e.discovered = targetNames(targets)
	return e.stale(now, threshold)
}

func targetNames(targets []Target) []string {
	names := make([]string, 0, len(targets))
	for _, t := range targets {
		names = append(names, t.Name)
	}
	return names
}

// staleFromNewest checks each name's newest backup. A container without any
// is stale at once, unless firstSeen says when it was first discovered:
// then only once that is threshold ago (a new app gets its first night).
func staleFromNewest(newest, firstSeen map[string]time.Time, names []string, now time.Time, threshold time.Duration) []StaleAlert {
	var out []StaleAlert
	seen := map[string]bool{}
	for _, name := range names {
		if seen[name] {
			continue
		}
		seen[name] = true
		n := newest[name]
		if n.IsZero() {
			if fs, ok := firstSeen[name]; ok && now.Sub(fs) <= threshold {
				continue
			}
			out = append(out, StaleAlert{Container: name})
			continue
		}
		if age := now.Sub(n); age > threshold {
			out = append(out, StaleAlert{Container: name, Newest: n, Age: age})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Container < out[j].Container })
	return out
}

// DrillEvent is the failure event of a drill.
func DrillEvent(host, container string, res DrillResult, err error, now time.Time) Event {
	return Event{Kind: EventDrillFailure, Host: host, Container: container, Stage: "drill",
		Error: err.Error(), Time: now, SnapshotID: res.Snapshot}
}
