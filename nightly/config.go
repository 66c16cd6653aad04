package nightly

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/robfig/cron/v3"

	"github.com/scalr-platform/scalr-backup/repo"
)

// Defaults of Config.
const (
	DefaultSchedule      = "0 3 * * *" // 03:00 UTC every day
	DefaultDrillSchedule = "0 5 1 * *" // 05:00 UTC on the first of each month
	DefaultStaleAfter    = 26 * time.Hour
	// DefaultStaleReminder is how often a container that stays stale is
	// alerted again.
	DefaultStaleReminder = 24 * time.Hour
	// DefaultCheckInterval is how often the daemon checks the repository
	// and the Docker engine again, and runs the dead-man check.
	DefaultCheckInterval  = time.Hour
	DefaultMetricsAddr    = "127.0.0.1:9187"
	DefaultHookTimeout    = 2 * time.Minute
	DefaultWebhookTimeout = 10 * time.Second
	DefaultTargetTimeout  = 6 * time.Hour
	DefaultRetryLock      = 15 * time.Minute
	// DefaultDrillKeep is how many drill records the nightly forget keeps
	// per host and container: a year of monthly drills.
	DefaultDrillKeep = 12
)

// Config is the nightly service's configuration, read from the environment
// by LoadConfig. The repository itself (RESTIC_REPOSITORY, the password,
// AWS_*) is the CLI's business and not in here.
type Config struct {
	// Schedule and DrillSchedule are cron specs, read in UTC (see
	// ParseSchedule); DrillSchedule "" means no drills.
	Schedule      string
	DrillSchedule string
	// Policy is the retention per container.
	Policy repo.ExpirePolicy
	// DrillKeep is how many drill records (the newest) forget keeps per
	// host and container; -1 keeps all of them.
	DrillKeep int
	// Patterns select containers by name for discovery (nil: discovery's
	// defaults); Databases select the databases of each (nil: every one);
	// AllDatabases is SCALR_BACKUP_ALL_DATABASES as set, which Databases
	// already reflects. See LoadDiscovery.
	Patterns     []string
	Databases    []string
	AllDatabases bool
	// Host is recorded in the snapshots and limits forget to them.
	Host string
	// AllowEmpty makes a pass that finds no container a success.
	AllowEmpty bool
	// TargetTimeout bounds one container's backup (0: none).
	TargetTimeout time.Duration
	// RetryLock is how long to wait for a lock another process holds.
	RetryLock time.Duration
	// NoPrune leaves forget and prune out of the pass
	// (SCALR_BACKUP_PRUNE=off): a host whose storage key may not delete
	// backs up, and another machine with a key that may delete runs
	// forget --prune. The retention extension still runs.
	NoPrune bool
	// Init creates the repository when there is none.
	Init bool

	// OnFailure and OnSuccess are shell commands run for events (see
	// Alerter); HookTimeout bounds each run.
	OnFailure, OnSuccess string
	HookTimeout          time.Duration
	// WebhookURL receives a JSON POST per failure (and per pass with
	// WebhookOnSuccess).
	WebhookURL       string
	WebhookOnSuccess bool
	WebhookTimeout   time.Duration
	// HealthcheckURL is pinged healthchecks.io style: /start, success, /fail.
	HealthcheckURL string
	// StaleAfter is the dead-man threshold: a container whose newest backup
	// is older is reported stale.
	StaleAfter time.Duration
	// StaleReminder is how often a container that stays stale is alerted
	// again (0: only when it becomes stale).
	StaleReminder time.Duration
	// CheckInterval is how often the daemon checks the repository and
	// the Docker engine and runs the dead-man check (after a failed check:
	// sooner, backing off from a second up to this).
	CheckInterval time.Duration

	// MetricsAddr is where the daemon serves /metrics and /healthz (""
	// means not at all).
	MetricsAddr string
	// Textfile is where `run` writes its metrics for node_exporter's
	// textfile collector ("" means nowhere).
	Textfile string
	// LogFormat is auto (text on a terminal, else JSON), json or text.
	LogFormat string
}

// Env is one environment variable LoadConfig reads, for documentation.
type Env struct {
	Name, Default, Meaning string
}

// Environment lists the variables LoadConfig reads, in the order a README
// table would show them.
func Environment() []Env {
	return []Env{
		{"SCALR_BACKUP_SCHEDULE", DefaultSchedule, "when the daemon runs a pass: cron spec in UTC (5 fields, or 6 with seconds first, or @daily, @every 6h; CRON_TZ=Zone prefix allowed)"},
		{"SCALR_BACKUP_DRILL_SCHEDULE", DefaultDrillSchedule, "when the daemon runs a restore drill of every container; off disables"},
		{"SCALR_BACKUP_KEEP_DAILY", "30", "daily snapshots kept per container (a count, or unlimited)"},
		{"SCALR_BACKUP_KEEP_WEEKLY", "4", "weekly snapshots kept per container"},
		{"SCALR_BACKUP_KEEP_MONTHLY", "6", "monthly snapshots kept per container"},
		{"SCALR_BACKUP_DRILL_KEEP", "12", "drill records (snapshots tagged drill) kept per container and host, the newest ones; a count from 1, or unlimited. Backups keep their own retention above"},
		{"SCALR_BACKUP_PATTERNS", "scalr-*-db scalr-auth-postgres", "container name patterns to back up, separated by spaces or commas (labels scalr.backup=true/false still apply)"},
		{"SCALR_BACKUP_DATABASES", "all", "the databases of each container to back up, each its own file in the container's snapshot, separated by spaces or commas: all (every database that accepts connections, templates excepted), POSTGRES_DB (the container's), or database name patterns; the others are reported as left out. Labels scalr.backup.databases (same syntax) and scalr.backup.all-databases=true/false set it per container"},
		{"SCALR_BACKUP_ALL_DATABASES", "", "the older spelling: true is SCALR_BACKUP_DATABASES=all, false is SCALR_BACKUP_DATABASES=POSTGRES_DB"},
		{"SCALR_BACKUP_HOST", "$RESTIC_HOST, else the host name", "host name recorded in snapshots (by run, daemon, backup, pg-backup and drill alike; --host wins); forget only touches this host's snapshots. Set it (or a fixed container hostname): a container's host name changes with every re-creation"},
		{"SCALR_BACKUP_ALLOW_EMPTY", "false", "a pass that finds no container succeeds instead of failing"},
		{"SCALR_BACKUP_TARGET_TIMEOUT", "6h", "longest one container's backup may take; 0 for no limit"},
		{"SCALR_BACKUP_RETRY_LOCK", "15m", "how long to wait for a repository lock held by another process (--retry-lock wins)"},
		{"SCALR_BACKUP_PRUNE", "on", "off leaves forget and prune out of every pass, for a host whose storage key may not delete: run forget --prune elsewhere with a key that may (Object Lock retention is still extended)"},
		{"SCALR_BACKUP_INIT", "false", "create the repository when there is none (like --init)"},
		{"SCALR_BACKUP_ON_FAILURE", "", "shell command (/bin/sh -c) run for each failed container (one that cannot be backed up, or is missing, included), failed stage, stale container and failed drill; details in SCALR_BACKUP_EVENT, _CONTAINER, _ERROR, _HOST, _TIME, _LAST_SUCCESS, _STAGE, _REMINDER"},
		{"SCALR_BACKUP_ON_SUCCESS", "", "shell command run after a pass in which everything succeeded"},
		{"SCALR_BACKUP_HOOK_TIMEOUT", "2m", "longest a hook command may run"},
		{"SCALR_BACKUP_WEBHOOK_URL", "", "URL that gets a JSON POST per failure: event, host, container, stage, error, time, last_success; retried with backoff on errors and 5xx"},
		{"SCALR_BACKUP_WEBHOOK_ON_SUCCESS", "false", "also POST once per successful pass"},
		{"SCALR_BACKUP_WEBHOOK_TIMEOUT", "10s", "timeout of one webhook or healthcheck request"},
		{"SCALR_BACKUP_HEALTHCHECK_URL", "", "healthchecks.io-style ping URL: URL/start when a pass starts, URL when it succeeded, URL/fail when it failed"},
		{"SCALR_BACKUP_STALE_AFTER", "26h", "dead-man threshold: alert for an expected container whose newest backup is older (Go duration, or days like 2d). Expected: every container this host has backed up (its snapshots in the repository) plus those discovered now, less the retired ones (see retire)"},
		{"SCALR_BACKUP_STALE_REMINDER", "24h", "alert again every so often while a container stays stale; off alerts only when it becomes stale"},
		{"SCALR_BACKUP_CHECK_INTERVAL", "1h", "daemon: how often it checks the repository (open, password, index) and the Docker engine again and runs the dead-man check; a failed check is retried sooner, backing off from 1s"},
		{"SCALR_BACKUP_METRICS_ADDR", DefaultMetricsAddr, "daemon: address of /metrics and /healthz; off disables"},
		{"SCALR_BACKUP_TEXTFILE", "", "run: write metrics there for node_exporter's textfile collector (atomically)"},
		{"SCALR_BACKUP_LOG_FORMAT", "auto", "auto (text on a terminal, JSON otherwise), json or text"},
	}
}

// Discovery is what selects the containers and the databases to back up.
type Discovery struct {
	// Patterns are container name patterns (nil: discovery's defaults).
	Patterns []string
	// Databases is the database selection (nil: every database): "all",
	// "POSTGRES_DB", or database name patterns.
	Databases []string
	// AllDatabases is SCALR_BACKUP_ALL_DATABASES as set.
	AllDatabases bool
}

// LoadDiscovery reads the discovery settings from the environment, as
// LoadConfig does and as every command (discover, pg-backup, drill, run,
// daemon) does: SCALR_BACKUP_PATTERNS, SCALR_BACKUP_DATABASES and its older
// spelling SCALR_BACKUP_ALL_DATABASES (true: all, false: POSTGRES_DB; both
// set is an error). Lists are separated by commas or white space. The
// error lists every bad variable.
func LoadDiscovery(getenv func(string) string) (Discovery, error) {
	get := func(k string) string { return strings.TrimSpace(getenv(k)) }
	var errs []error
	bad := func(k, v, why string) { errs = append(errs, fmt.Errorf("%s=%q: %s", k, v, why)) }
	split := func(v string) []string {
		return strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
	}
	var d Discovery
	if v := get("SCALR_BACKUP_PATTERNS"); v != "" {
		for _, p := range split(v) {
			if _, err := path.Match(p, ""); err != nil {
				bad("SCALR_BACKUP_PATTERNS", p, "not a valid name pattern: "+err.Error())
				continue
			}
			d.Patterns = append(d.Patterns, p)
		}
	}
	if v := get("SCALR_BACKUP_DATABASES"); v != "" {
		for _, p := range split(v) {
			if _, err := path.Match(p, ""); err != nil {
				bad("SCALR_BACKUP_DATABASES", p, "not all, POSTGRES_DB or a valid database name pattern: "+err.Error())
				continue
			}
			d.Databases = append(d.Databases, p)
		}
	}
	if v := get("SCALR_BACKUP_ALL_DATABASES"); v != "" {
		b, err := strconv.ParseBool(v)
		switch {
		case err != nil:
			bad("SCALR_BACKUP_ALL_DATABASES", v, "want true or false")
		case get("SCALR_BACKUP_DATABASES") != "":
			errs = append(errs, errors.New("SCALR_BACKUP_ALL_DATABASES and SCALR_BACKUP_DATABASES are both set: SCALR_BACKUP_DATABASES alone says it (all, POSTGRES_DB or names)"))
		case b:
			d.AllDatabases, d.Databases = true, []string{"all"}
		default:
			d.Databases = []string{"POSTGRES_DB"}
		}
	}
	return d, errors.Join(errs...)
}

// LoadConfig reads the configuration from the environment through getenv
// and checks all of it; the error lists every bad variable. Values that
// may hold a secret (URLs, commands) are never repeated in errors.
func LoadConfig(getenv func(string) string) (Config, error) {
	c := Config{
		Schedule:       DefaultSchedule,
		DrillSchedule:  DefaultDrillSchedule,
		Policy:         DefaultPolicy(),
		DrillKeep:      DefaultDrillKeep,
		TargetTimeout:  DefaultTargetTimeout,
		RetryLock:      DefaultRetryLock,
		HookTimeout:    DefaultHookTimeout,
		WebhookTimeout: DefaultWebhookTimeout,
		StaleAfter:     DefaultStaleAfter,
		StaleReminder:  DefaultStaleReminder,
		CheckInterval:  DefaultCheckInterval,
		MetricsAddr:    DefaultMetricsAddr,
		LogFormat:      "auto",
	}
	e := &envReader{getenv: getenv}
	e.schedules(&c)
	e.retention(&c)
	disc, err := LoadDiscovery(getenv)
	if err != nil {
		e.errs = append(e.errs, err)
	}
	c.Patterns, c.Databases, c.AllDatabases = disc.Patterns, disc.Databases, disc.AllDatabases
	e.switches(&c)
	e.host(&c)
	e.durVar("SCALR_BACKUP_TARGET_TIMEOUT", &c.TargetTimeout, true)
	e.durVar("SCALR_BACKUP_RETRY_LOCK", &c.RetryLock, true)
	e.durVar("SCALR_BACKUP_HOOK_TIMEOUT", &c.HookTimeout, false)
	e.durVar("SCALR_BACKUP_WEBHOOK_TIMEOUT", &c.WebhookTimeout, false)
	e.durVar("SCALR_BACKUP_STALE_AFTER", &c.StaleAfter, false)
	if v := e.get("SCALR_BACKUP_STALE_REMINDER"); v != "" && isOff(v) {
		c.StaleReminder = 0
	} else {
		e.durVar("SCALR_BACKUP_STALE_REMINDER", &c.StaleReminder, false)
	}
	e.durVar("SCALR_BACKUP_CHECK_INTERVAL", &c.CheckInterval, false)
	e.alerts(&c)
	e.outputs(&c)
	if len(e.errs) > 0 {
		return c, fmt.Errorf("configuration: %w", errors.Join(e.errs...))
	}
	return c, nil
}

// envReader reads variables and collects what is wrong with them.
type envReader struct {
	getenv func(string) string
	errs   []error
}

func (e *envReader) get(k string) string { return strings.TrimSpace(e.getenv(k)) }

func (e *envReader) bad(k, v, why string) {
	e.errs = append(e.errs, fmt.Errorf("%s=%q: %s", k, v, why))
}

// badSecret reports k without its value, which may hold a secret.
func (e *envReader) badSecret(k, why string) { e.errs = append(e.errs, fmt.Errorf("%s: %s", k, why)) }

func (e *envReader) boolVar(k string, dst *bool) {
	v := e.get(k)
	if v == "" {
		return
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		e.bad(k, v, "want true or false")
		return
	}
	*dst = b
}

func (e *envReader) durVar(k string, dst *time.Duration, zeroOK bool) {
	v := e.get(k)
	if v == "" {
		return
	}
	d, err := ParseDuration(v)
	if err != nil {
		e.bad(k, v, err.Error())
		return
	}
	if d < 0 || (d == 0 && !zeroOK) {
		e.bad(k, v, "want a positive duration")
		return
	}
	*dst = d
}

func (e *envReader) urlVar(k string, dst *string) {
	v := e.get(k)
	if v == "" {
		return
	}
	if err := checkURL(v); err != nil {
		e.badSecret(k, err.Error())
		return
	}
	*dst = v
}

// schedules reads the pass and drill schedules.
func (e *envReader) schedules(c *Config) {
	if v := e.get("SCALR_BACKUP_SCHEDULE"); v != "" {
		c.Schedule = v
	}
	if _, err := ParseSchedule(c.Schedule); err != nil {
		e.bad("SCALR_BACKUP_SCHEDULE", c.Schedule, err.Error())
	}
	if v := e.get("SCALR_BACKUP_DRILL_SCHEDULE"); v != "" {
		c.DrillSchedule = v
		if isOff(v) {
			c.DrillSchedule = ""
		}
	}
	if c.DrillSchedule != "" {
		if _, err := ParseSchedule(c.DrillSchedule); err != nil {
			e.bad("SCALR_BACKUP_DRILL_SCHEDULE", c.DrillSchedule, err.Error())
		}
	}
}

// retention reads the keep policy and the drill records kept.
func (e *envReader) retention(c *Config) {
	for _, k := range []struct {
		name string
		dst  *int
	}{
		{"SCALR_BACKUP_KEEP_DAILY", &c.Policy.Daily},
		{"SCALR_BACKUP_KEEP_WEEKLY", &c.Policy.Weekly},
		{"SCALR_BACKUP_KEEP_MONTHLY", &c.Policy.Monthly},
	} {
		v := e.get(k.name)
		if v == "" {
			continue
		}
		n, err := parseKeep(v)
		if err != nil {
			e.bad(k.name, v, err.Error())
			continue
		}
		*k.dst = n
	}
	if c.Policy.Empty() {
		e.errs = append(e.errs, errors.New("SCALR_BACKUP_KEEP_DAILY, _WEEKLY and _MONTHLY are all 0: the retention policy would keep nothing"))
	}
	if v := e.get("SCALR_BACKUP_DRILL_KEEP"); v != "" {
		n, err := parseKeep(v)
		switch {
		case err != nil:
			e.bad("SCALR_BACKUP_DRILL_KEEP", v, "want a count (1 or more) or unlimited")
		case n == 0:
			e.bad("SCALR_BACKUP_DRILL_KEEP", v, "0 would forget every drill record, the last drill's outcome too: want 1 or more, or unlimited")
		default:
			c.DrillKeep = n
		}
	}
}

// switches reads the on/off settings.
func (e *envReader) switches(c *Config) {
	if v := e.get("SCALR_BACKUP_PRUNE"); v != "" {
		switch {
		case isOff(v):
			c.NoPrune = true
		case strings.EqualFold(v, "on") || strings.EqualFold(v, "true"):
		default:
			e.bad("SCALR_BACKUP_PRUNE", v, "want on or off")
		}
	}
	e.boolVar("SCALR_BACKUP_ALLOW_EMPTY", &c.AllowEmpty)
	e.boolVar("SCALR_BACKUP_INIT", &c.Init)
	e.boolVar("SCALR_BACKUP_WEBHOOK_ON_SUCCESS", &c.WebhookOnSuccess)
}

// host reads the host identity (see hostIdentity).
func (e *envReader) host(c *Config) {
	h, from, err := hostIdentity(e.getenv)
	switch {
	case err != nil:
		e.errs = append(e.errs, err)
	case strings.ContainsAny(h, hostSpace) && from == hostFromOS:
		e.errs = append(e.errs, fmt.Errorf("%s %q holds white space: set SCALR_BACKUP_HOST", from, h))
	case strings.ContainsAny(h, hostSpace):
		e.bad(from, h, "a host name has no white space")
	default:
		c.Host = h
	}
}

// alerts reads the hook commands and the URLs (never repeated in errors).
func (e *envReader) alerts(c *Config) {
	c.OnFailure = e.getenv("SCALR_BACKUP_ON_FAILURE")
	c.OnSuccess = e.getenv("SCALR_BACKUP_ON_SUCCESS")
	if strings.TrimSpace(c.OnFailure) == "" {
		c.OnFailure = ""
	}
	if strings.TrimSpace(c.OnSuccess) == "" {
		c.OnSuccess = ""
	}
	e.urlVar("SCALR_BACKUP_WEBHOOK_URL", &c.WebhookURL)
	e.urlVar("SCALR_BACKUP_HEALTHCHECK_URL", &c.HealthcheckURL)
}

// outputs reads where metrics and logs go.
func (e *envReader) outputs(c *Config) {
	if v := e.get("SCALR_BACKUP_METRICS_ADDR"); v != "" {
		if isOff(v) {
			c.MetricsAddr = ""
		} else if _, port, err := net.SplitHostPort(v); err != nil {
			e.bad("SCALR_BACKUP_METRICS_ADDR", v, "want host:port, like 127.0.0.1:9187, or off")
		} else if n, err := strconv.ParseUint(port, 10, 16); err != nil || (n == 0 && port != "0") {
			e.bad("SCALR_BACKUP_METRICS_ADDR", v, "bad port")
		} else {
			c.MetricsAddr = v
		}
	}
	if v := e.get("SCALR_BACKUP_TEXTFILE"); v != "" {
		if !strings.HasSuffix(v, ".prom") {
			e.bad("SCALR_BACKUP_TEXTFILE", v, "node_exporter's textfile collector reads only files ending in .prom")
		} else {
			c.Textfile = v
		}
	}
	if v := e.get("SCALR_BACKUP_LOG_FORMAT"); v != "" {
		switch strings.ToLower(v) {
		case "auto", "json", "text":
			c.LogFormat = strings.ToLower(v)
		default:
			e.bad("SCALR_BACKUP_LOG_FORMAT", v, "want auto, json or text")
		}
	}
}

// hostSpace is what a host name must not hold.
const hostSpace = " \t\r\n"

// hostIdentity is the host name recorded in snapshots and from where it
// came: SCALR_BACKUP_HOST, else RESTIC_HOST, else the operating system's
// host name. It is exactly the resolution of cmd/scalr-backup (its
// hostIdentity, without a --host flag), so run, daemon, backup, pg-backup
// and drill record one host name and forget selects by it: values are taken
// as they are (not trimmed), so a name with white space is refused by both.
func hostIdentity(getenv func(string) string) (host, from string, err error) {
	if h := getenv("SCALR_BACKUP_HOST"); h != "" {
		return h, "SCALR_BACKUP_HOST", nil
	}
	if h := getenv("RESTIC_HOST"); h != "" {
		return h, "RESTIC_HOST", nil
	}
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "", "", fmt.Errorf("no host name: set SCALR_BACKUP_HOST (os.Hostname: %v)", err)
	}
	return h, hostFromOS, nil
}

const hostFromOS = "the operating system's host name"

// PassOptions returns the options of a pass as c configures them; the
// caller adds the Discoverer and BackupFunc.
func (c Config) PassOptions() PassOptions {
	return PassOptions{
		Policy: c.Policy, DrillKeep: c.DrillKeep, Host: c.Host, AllowEmpty: c.AllowEmpty,
		TargetTimeout: c.TargetTimeout, RemoveStaleLocks: true,
		SkipForget: c.NoPrune, SkipPrune: c.NoPrune,
	}
}

// Alerter returns an Alerter as c configures it.
func (c Config) Alerter() *Alerter {
	return &Alerter{
		Host: c.Host, OnFailure: c.OnFailure, OnSuccess: c.OnSuccess, HookTimeout: c.HookTimeout,
		WebhookURL: c.WebhookURL, WebhookOnSuccess: c.WebhookOnSuccess, WebhookTimeout: c.WebhookTimeout,
		HealthcheckURL: c.HealthcheckURL,
	}
}

func isOff(v string) bool {
	switch strings.ToLower(v) {
	case "off", "none", "false", "disabled", "0":
		return true
	}
	return false
}

// parseKeep reads a count: a number from 0, or unlimited (-1 as restic 0.14
// wrote it works too).
func parseKeep(v string) (int, error) {
	if v == "unlimited" {
		return -1, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < -1 {
		return 0, errors.New("want a count (0 or more) or unlimited")
	}
	return n, nil
}

// ParseDuration reads a Go duration (26h, 90m) or whole days (2d).
func ParseDuration(v string) (time.Duration, error) {
	if d, ok := strings.CutSuffix(v, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil {
			return 0, errors.New("want a duration like 26h, 90m or 2d")
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, errors.New("want a duration like 26h, 90m or 2d")
	}
	return d, nil
}

// checkURL accepts absolute http and https URLs. The error does not repeat
// the URL: it may carry a token.
func checkURL(v string) error {
	u, err := url.Parse(v)
	if err != nil {
		return errors.New("not a valid URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return errors.New("want an http:// or https:// URL")
	}
	if u.Host == "" {
		return errors.New("the URL has no host")
	}
	return nil
}

// ParseSchedule reads a cron spec: five fields (minute hour day-of-month
// month day-of-week), or six with seconds first, or a descriptor (@daily,
// @hourly, @every 1h30m), optionally after CRON_TZ=Zone. Without CRON_TZ the
// spec is read in the daemon's zone, UTC.
func ParseSchedule(spec string) (cron.Schedule, error) {
	p := cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor)
	s, err := p.Parse(spec)
	if err != nil {
		return nil, fmt.Errorf("not a cron schedule: %v", err)
	}
	if next := s.Next(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)); next.IsZero() {
		return nil, errors.New("this schedule never fires")
	}
	return s, nil
}
