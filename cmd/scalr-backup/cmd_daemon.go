package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/scalr-platform/scalr-backup/nightly"
)

// daemonOptions are the daemon's own flags.
type daemonOptions struct {
	schedule      string
	drillSchedule string
	metricsAddr   string
	runNow        bool
	shutdownGrace time.Duration
	// listening, for tests, gets the metrics address.
	listening func(net.Addr)
}

func (a *app) daemonCommand() *cobra.Command {
	var (
		f nightlyFlags
		o daemonOptions
	)
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Run backup passes on a schedule, with alerts, metrics and a health endpoint",
		Long: `Stay in the foreground and run a backup pass (see run) on a cron schedule,
03:00 UTC every day by default, and a restore drill of every container (see
drill) on its own schedule, 05:00 UTC on the first of each month by default.

One job runs at a time: a pass that comes due while the previous one still
runs is skipped and logged.

At start, and then every SCALR_BACKUP_CHECK_INTERVAL (1h), the daemon checks
the repository (open, password, index, snapshots) and the Docker engine; a
failed check is retried with backoff from 1s. The repository's history fills
the per-container metrics at once. After each check and each pass a
dead-man check alerts for every expected container (this host's backed-up
containers plus those discovered now, less retired ones) whose newest backup
is older than SCALR_BACKUP_STALE_AFTER (26h): once when it becomes stale,
again every SCALR_BACKUP_STALE_REMINDER (24h).

/metrics (Prometheus) and /healthz (200 when the checks work, the last pass
succeeded and no container is stale, else 503 with the reasons) are served
on --metrics-addr, loopback by default; "daemon healthcheck" queries
/healthz for a container healthcheck. Logs are JSON lines on standard error
(text on a terminal), storage retries included.

On SIGTERM or SIGINT no new job starts; a running pass gets
--shutdown-grace to finish, then it is abandoned cleanly: its lock is
removed and no snapshot is written for the container it was on. The exit
code is then 0.

Configuration (environment; flags win):
` + envTableOf(daemonEnvironment()),
		Example: `  # the service, as in deploy/compose.yaml
  scalr-backup daemon

  # every six hours, first pass right away, metrics for a Prometheus on the host
  scalr-backup daemon --schedule '0 */6 * * *' --run-now --metrics-addr 0.0.0.0:9187

  # container healthcheck
  scalr-backup daemon healthcheck`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			cfg, err := a.nightlyConfig(&f)
			if err != nil {
				return err
			}
			if err := o.fromEnv(a.getenv, cmd.Flags()); err != nil {
				return err
			}
			if err := o.apply(&cfg); err != nil {
				return err
			}
			log := a.nightlyLogger(cfg)
			a.setHangup(func() {
				log.Info("SIGHUP received and ignored (restic sends it to check that a lock's owner is alive)")
			})
			// A daemon never prompts: each pass would wait at the prompt.
			// The password comes from RESTIC_PASSWORD_FILE, _COMMAND or
			// RESTIC_PASSWORD, read afresh for each pass.
			a.stdin = strings.NewReader("")
			w, err := a.nightlyDeps(ctx, cfg, log)
			if err != nil {
				return err
			}
			defer w.close()
			return a.nightlyDaemon(ctx, cfg, w, log, o)
		},
	}
	f.add(cmd)
	fl := cmd.Flags()
	fl.StringVar(&o.schedule, "schedule", "", "cron `spec` of the backup passes, in UTC (default: $SCALR_BACKUP_SCHEDULE or '"+nightly.DefaultSchedule+"')")
	fl.StringVar(&o.drillSchedule, "drill-schedule", "", "cron `spec` of the restore drills, or off (default: $SCALR_BACKUP_DRILL_SCHEDULE or '"+nightly.DefaultDrillSchedule+"')")
	fl.StringVar(&o.metricsAddr, "metrics-addr", "", "`host:port` of /metrics and /healthz, or off (default: $SCALR_BACKUP_METRICS_ADDR or "+nightly.DefaultMetricsAddr+")")
	fl.BoolVar(&o.runNow, "run-now", false, "run a pass at once, then follow the schedule (default: $"+envRunNow+")")
	fl.DurationVar(&o.shutdownGrace, "shutdown-grace", 0, "on SIGTERM, let a running pass go on for this `duration` before abandoning it (keep it below the container's stop timeout; default: $"+envShutdownGrace+" or 0)")
	cmd.AddCommand(a.healthcheckCommand())
	return cmd
}

// apply puts the flags into cfg, checking them as LoadConfig would.
func (o *daemonOptions) apply(cfg *nightly.Config) error {
	if o.schedule != "" {
		if _, err := nightly.ParseSchedule(o.schedule); err != nil {
			return fmt.Errorf("--schedule %q: %w", o.schedule, err)
		}
		cfg.Schedule = o.schedule
	}
	switch o.drillSchedule {
	case "":
	case "off", "none":
		cfg.DrillSchedule = ""
	default:
		if _, err := nightly.ParseSchedule(o.drillSchedule); err != nil {
			return fmt.Errorf("--drill-schedule %q: %w", o.drillSchedule, err)
		}
		cfg.DrillSchedule = o.drillSchedule
	}
	switch o.metricsAddr {
	case "":
	case "off", "none":
		cfg.MetricsAddr = ""
	default:
		if _, _, err := net.SplitHostPort(o.metricsAddr); err != nil {
			return fmt.Errorf("--metrics-addr %q: want host:port, like 127.0.0.1:9187, or off", o.metricsAddr)
		}
		cfg.MetricsAddr = o.metricsAddr
	}
	if o.shutdownGrace < 0 {
		return fmt.Errorf("--shutdown-grace %s: want a positive duration", o.shutdownGrace)
	}
	return nil
}

// nightlyDaemon runs the daemon until ctx ends.
func (a *app) nightlyDaemon(ctx context.Context, cfg nightly.Config, w nightlyWiring, log *slog.Logger, o daemonOptions) error {
	m := nightly.NewMetrics(cfg.StaleAfter, nil)
	m.SetBuildInfo(version(), revision())
	m.RegisterProcess()
	a.logRetries(log, m)
	d := &nightly.Daemon{
		Service:       a.nightlyService(cfg, w, log, m),
		RunNow:        o.runNow,
		ShutdownGrace: o.shutdownGrace,
		Listening:     o.listening,
	}
	log.Info("scalr-backup daemon", "version", version(), "host", cfg.Host, "policy", cfg.Policy.String())
	return d.Run(ctx)
}

func (a *app) healthcheckCommand() *cobra.Command {
	var addr string
	cmd := &cobra.Command{
		Use:   "healthcheck",
		Short: "Ask a running daemon's /healthz; exit 0 when healthy",
		Long: `GET /healthz from the daemon at --metrics-addr (default: $SCALR_BACKUP_METRICS_ADDR
or 127.0.0.1:9187; an unspecified address like 0.0.0.0 is asked on loopback)
and print its answer. Exits 0 when the checks of the repository and the
Docker engine work, the last pass succeeded and no container is stale, 1
otherwise (also while the daemon's first checks have not worked yet). Made for container healthchecks: the image needs no curl.

With the metrics address off (SCALR_BACKUP_METRICS_ADDR=off) the daemon
serves no /healthz and its health is unknown: the command says so and exits
0, so that the container's healthcheck does not fail forever (the container
still stops when the daemon does). Watch such a daemon through
SCALR_BACKUP_HEALTHCHECK_URL or the alerts instead.`,
		Example: `  scalr-backup daemon healthcheck
  scalr-backup daemon healthcheck --metrics-addr 127.0.0.1:9187`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if addr == "" {
				addr = a.getenv("SCALR_BACKUP_METRICS_ADDR")
			}
			if addr == "" {
				addr = nightly.DefaultMetricsAddr
			}
			if addr == "off" || addr == "none" {
				if !a.quiet {
					fmt.Fprintln(a.stdout, "health unknown: the metrics address is off, so the daemon serves no /healthz (reported as healthy)")
				}
				return nil
			}
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return fmt.Errorf("metrics address %q: want host:port", addr)
			}
			if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
				host = "127.0.0.1"
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(host, port)+"/healthz", nil)
			if err != nil {
				return err
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("the daemon does not answer on %s: %w", net.JoinHostPort(host, port), err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			if !a.quiet {
				fmt.Fprint(a.stdout, string(body))
			}
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("unhealthy (HTTP %d)", resp.StatusCode)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&addr, "metrics-addr", "", "`host:port` the daemon serves /healthz on")
	return cmd
}
