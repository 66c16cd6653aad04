// Package nightly is the nightly backup service of a Docker host: one full
// pass (discover the containers, back up each, forget by the retention
// policy, prune), the cron schedule that runs passes and restore drills,
// alerts (hook commands, a JSON webhook, healthchecks.io pings, a dead-man
// check) and Prometheus metrics with a health endpoint.
//
// The package knows nothing of Docker or Postgres: the caller injects how
// targets are found (Discoverer), how one target is backed up (BackupFunc)
// and how one is drilled (DrillFunc). cmd/scalr-backup wires them to
// pgstream; tests wire them to fakes.
//
// The pieces, from small to large:
//
//   - Pass runs one pass on an opened repository and returns a Report.
//   - Service opens the repository for each pass (a fresh index every
//     time, so a prune by another process never leaves a stale index
//     behind), runs the pass, feeds Metrics and sends alerts (Alerter).
//   - Daemon runs the Service's passes and drills on cron schedules, one
//     job at a time, and stops cleanly when its context ends.
//
// Nothing here logs or returns a secret: the repository password never
// reaches this package, webhook and healthcheck URLs (which often embed a
// token) are never logged or put in errors, and hook commands get the event
// in environment variables, not arguments, with RESTIC_* and AWS_* removed
// from their environment.
package nightly
