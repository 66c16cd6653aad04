package nightly_test

import (
	"context"
	"fmt"
	"log"
	"strings"

	"github.com/scalr-platform/scalr-backup/backend/mem"
	"github.com/scalr-platform/scalr-backup/nightly"
	"github.com/scalr-platform/scalr-backup/repo"
)

// A pass discovers the targets, backs each up into its own snapshot
// (tagged and pathed with its name, as ContainerOf reads them), forgets by
// the policy and prunes. The Discoverer and BackupFunc are the caller's:
// scalr-backup wires pgstream's Discover and BackupContainer there; this
// one stands in with two fixed dumps.
func ExamplePass() {
	ctx := context.Background()
	r, err := repo.Init(ctx, mem.New(), "correct horse", repo.InitOptions{}, repo.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()

	discover := nightly.DiscoverFunc(func(context.Context) ([]nightly.Target, error) {
		return []nightly.Target{{Name: "scalr-app-db"}, {Name: "scalr-auth-postgres"}}, nil
	})
	backup := func(ctx context.Context, r *repo.Repository, t nightly.Target) (nightly.BackupResult, error) {
		dump := strings.NewReader("-- dump of " + t.Name + "\n")
		res, err := r.BackupStreams(ctx, t.Name, []repo.Stream{{Name: "app.pgdump", Reader: dump}},
			repo.BackupOptions{Tags: []string{t.Name}, Hostname: "db-host"})
		if err != nil {
			return nightly.BackupResult{}, err
		}
		return nightly.BackupResult{SnapshotID: res.SnapshotID, BytesRead: res.Sizes[t.Name+"/app.pgdump"]}, nil
	}

	rep := nightly.Pass(ctx, r, nightly.PassOptions{Discoverer: discover, Backup: backup, Host: "db-host"})
	for _, t := range rep.Targets {
		fmt.Println(t.Name, t.Status, t.BytesRead, "bytes")
	}
	fmt.Println("ok:", rep.OK(), "forgot:", rep.Forget.Removed)
	// Output:
	// scalr-app-db ok 24 bytes
	// scalr-auth-postgres ok 31 bytes
	// ok: true forgot: 0
}
