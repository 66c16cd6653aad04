package main

import (
	"fmt"
	"os"
	"strings"
)

// hostIdentity is the host name every command records in the snapshots it
// writes and selects snapshots by: the --host flag, else SCALR_BACKUP_HOST,
// else RESTIC_HOST, else the operating system's host name. Several hosts
// sharing one repository tell their backups apart by it, so backup, restore,
// drill and the nightly pass must all agree on it (nightly.LoadConfig reads
// the same variables in the same order).
func (a *app) hostIdentity(flag string) (string, error) {
	host, from := flag, "--host"
	if host == "" {
		host, from = a.getenv("SCALR_BACKUP_HOST"), "SCALR_BACKUP_HOST"
	}
	if host == "" {
		host, from = a.getenv("RESTIC_HOST"), "RESTIC_HOST"
	}
	if host == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return "", fmt.Errorf("no host name: set SCALR_BACKUP_HOST or --host (os.Hostname: %v)", err)
		}
		host, from = h, "the operating system's host name"
	}
	if strings.ContainsAny(host, " \t\r\n") {
		return "", fmt.Errorf("host name %q (from %s) holds white space", host, from)
	}
	return host, nil
}
