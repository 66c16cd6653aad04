package repo

import (
	"encoding/json"
	"fmt"

	"github.com/scalr-platform/scalr-backup/chunker"
)

// Repository format versions.
const (
	// MinVersion is the original format: no compression.
	MinVersion = 1
	// MaxVersion adds zstd-compressed blobs and unpacked files.
	MaxVersion = 2
)

// Config is the repository's config file, sealed with the master key.
type Config struct {
	Version           uint        `json:"version"`
	ID                string      `json:"id"`
	ChunkerPolynomial chunker.Pol `json:"chunker_polynomial"`
}

func (c Config) validate() error {
	if c.Version < MinVersion || c.Version > MaxVersion {
		return fmt.Errorf("unsupported repository version %d (supported: %d to %d)", c.Version, MinVersion, MaxVersion)
	}
	if _, err := ParseID(c.ID); err != nil {
		return fmt.Errorf("repository id: %w", err)
	}
	if !c.ChunkerPolynomial.Irreducible() {
		return fmt.Errorf("chunker polynomial %v is not irreducible", c.ChunkerPolynomial)
	}
	return nil
}

func decodeConfig(plain []byte) (Config, error) {
	var c Config
	if err := json.Unmarshal(plain, &c); err != nil {
		return c, err
	}
	return c, c.validate()
}
