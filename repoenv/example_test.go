package repoenv_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/scalr-platform/scalr-backup/repo"
	"github.com/scalr-platform/scalr-backup/repoenv"
)

// Settings read restic's environment; here a map stands in for it. The
// first OpenOrInit creates the repository, the second opens it.
func ExampleSettings_OpenOrInit() {
	dir, err := os.MkdirTemp("", "repoenv-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	env := map[string]string{
		"RESTIC_REPOSITORY":  filepath.Join(dir, "repo"),
		"RESTIC_PASSWORD":    "correct horse",
		"RESTIC_COMPRESSION": "max",
	}
	settings := &repoenv.Settings{
		Getenv: func(k string) string { return env[k] },
		// A cheap key derivation for the example; leave Init empty for
		// real repositories.
		Init: repo.InitOptions{KDF: &repo.KDFParams{N: 1024, R: 8, P: 1}},
	}
	for i := 0; i < 2; i++ {
		o, err := settings.OpenOrInit(context.Background(), true)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println("created:", o.Created, "compression:", o.Repo.Options().Compression == repo.CompressionMax)
		o.Repo.Close()
	}
	// Output:
	// created: true compression: true
	// created: false compression: true
}
