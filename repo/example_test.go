package repo_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"strings"

	"github.com/scalr-platform/scalr-backup/backend/mem"
	"github.com/scalr-platform/scalr-backup/repo"
)

// A repository is created once with Init and opened with Open afterwards;
// the backend (here in memory, otherwise from backend/open) is where its
// files live.
func ExampleInit() {
	ctx := context.Background()
	be := mem.New()
	r, err := repo.Init(ctx, be, "correct horse", repo.InitOptions{}, repo.Options{})
	if err != nil {
		log.Fatal(err)
	}
	r.Close()

	r, err = repo.Open(ctx, be, "correct horse", repo.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	fmt.Println("format version", r.Config().Version)
	// Output: format version 2
}

// BackupStream stores what a reader yields (a pg_dump's output, say) as one
// file of a new snapshot, without staging it anywhere.
func ExampleRepository_BackupStream() {
	ctx := context.Background()
	r, err := repo.Init(ctx, mem.New(), "correct horse", repo.InitOptions{}, repo.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	dump := strings.NewReader(strings.Repeat("INSERT INTO t VALUES (1);\n", 1000))
	res, err := r.BackupStream(ctx, repo.Stream{Name: "app.sql", Reader: dump},
		repo.BackupOptions{Tags: []string{"scalr-app-db"}, Hostname: "db-host"})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Snapshot.Paths, res.Snapshot.Tags, res.Sizes["app.sql"], "bytes")
	// Output: [/app.sql] [scalr-app-db] 26000 bytes
}

// A file of a snapshot streams back through OpenFile: FindSnapshot takes
// "latest" or an ID prefix and a filter, FindNode the file's path.
func ExampleRepository_OpenFile() {
	ctx := context.Background()
	r, err := repo.Init(ctx, mem.New(), "correct horse", repo.InitOptions{}, repo.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	if _, err := r.BackupStream(ctx, repo.Stream{Name: "app.sql", Reader: strings.NewReader("CREATE TABLE t (id int);\n")},
		repo.BackupOptions{Tags: []string{"scalr-app-db"}}); err != nil {
		log.Fatal(err)
	}

	sn, err := r.FindSnapshot(ctx, "latest", repo.SnapshotFilter{Tags: []string{"scalr-app-db"}})
	if err != nil {
		log.Fatal(err)
	}
	node, err := r.FindNode(ctx, sn, "/app.sql")
	if err != nil {
		log.Fatal(err)
	}
	f, err := r.OpenFile(ctx, node)
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	var out strings.Builder
	if _, err := io.Copy(&out, f); err != nil {
		log.Fatal(err)
	}
	fmt.Print(out.String())
	// Output: CREATE TABLE t (id int);
}
