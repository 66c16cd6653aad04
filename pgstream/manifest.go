package pgstream

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// ManifestFormat identifies the manifest's layout; a reader refuses a
// manifest whose format it does not know.
const ManifestFormat = "scalr-backup/pgstream-manifest/v1"

// ManifestFile, GlobalsFile: the names of a container snapshot's other
// files, next to the databases' dumps, under /CONTAINER/.
const (
	ManifestFile = "manifest.json"
	GlobalsFile  = "globals.sql"
)

// Manifest describes one container snapshot: where it came from and what
// each dump holds. It is stored as the snapshot's last file,
// /CONTAINER/manifest.json, so it can only exist once every dump before it
// succeeded.
type Manifest struct {
	Format           string    `json:"format"`
	Container        string    `json:"container"`
	ContainerID      string    `json:"container_id"`
	Image            string    `json:"image"`
	ImageID          string    `json:"image_id,omitempty"`
	PostgresMajor    int       `json:"postgres_major"`
	ServerVersion    string    `json:"server_version"`
	ServerVersionNum int       `json:"server_version_num"`
	User             string    `json:"user"`
	PgDumpArgs       []string  `json:"pg_dump_args"`
	Started          time.Time `json:"started"`
	Finished         time.Time `json:"finished"`
	// Databases are in the order their dumps are stored.
	Databases []DatabaseDump `json:"databases"`
	Globals   *GlobalsDump   `json:"globals,omitempty"`
	// LeftOut are the server's databases (templates excepted) this
	// snapshot does not hold, and why (not selected, closed to
	// connections, left by a restore); Selection is the database selection
	// that chose Databases.
	LeftOut   []LeftOutDatabase `json:"left_out,omitempty"`
	Selection []string          `json:"selection,omitempty"`
}

// DatabaseDump is one database's dump file and what it holds.
type DatabaseDump struct {
	Name string `json:"name"`
	// File is the dump's name inside the container's folder: the
	// database name (with '/' and '%' escaped) plus ".pgdump".
	File   string `json:"file"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
	// PGSnapshot is the exported MVCC snapshot both the row counts and
	// pg_dump ran in.
	PGSnapshot string `json:"pg_snapshot"`
	Encoding   string `json:"encoding"`
	Collate    string `json:"collate"`
	Ctype      string `json:"ctype"`
	// SizeOnServer is pg_database_size at dump time.
	SizeOnServer int64 `json:"size_on_server"`
	// Tables are the exact row counts of every ordinary table (extension
	// members, temporary tables and system schemas left out), in the dump's
	// snapshot, ordered by schema and name.
	Tables []TableCount `json:"tables"`
}

// TableCount is a table's row count (without rows of inheriting tables).
type TableCount struct {
	Schema string `json:"schema"`
	Name   string `json:"name"`
	Rows   int64  `json:"rows"`
}

// QualifiedName is schema.name, quoted where SQL would need it.
func (t TableCount) QualifiedName() string { return qualifiedName(t.Schema, t.Name) }

func qualifiedName(schema, name string) string {
	q := func(s string) string {
		if s != "" && strings.ToLower(s) == s && strings.IndexFunc(s, func(r rune) bool {
			return !(r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9')
		}) < 0 && (s[0] < '0' || s[0] > '9') {
			return s
		}
		return quoteIdent(s)
	}
	return q(schema) + "." + q(name)
}

// GlobalsDump is the pg_dumpall --globals-only output: roles (without
// their passwords unless RolePasswords), tablespaces, role settings.
type GlobalsDump struct {
	File          string `json:"file"`
	Size          int64  `json:"size"`
	SHA256        string `json:"sha256"`
	RolePasswords bool   `json:"role_passwords"`
}

// Database returns the manifest's entry for db, or nil.
func (m *Manifest) Database(db string) *DatabaseDump {
	for i := range m.Databases {
		if m.Databases[i].Name == db {
			return &m.Databases[i]
		}
	}
	return nil
}

// Marshal encodes the manifest, indented.
func (m *Manifest) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// ParseManifest decodes and checks a manifest.
func ParseManifest(b []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if m.Format != ManifestFormat {
		return nil, fmt.Errorf("manifest: format %q, want %q", m.Format, ManifestFormat)
	}
	if m.Container == "" || len(m.Databases) == 0 {
		return nil, fmt.Errorf("manifest: no container or no databases")
	}
	seen := map[string]bool{}
	for _, db := range m.Databases {
		if db.Name == "" || db.File == "" || strings.Contains(db.File, "/") || seen[db.File] {
			return nil, fmt.Errorf("manifest: bad database entry %q (file %q)", db.Name, db.File)
		}
		seen[db.File] = true
	}
	return &m, nil
}

// DumpFileName is the file name of database db's dump: '%' and '/' are
// escaped (%25, %2F) so that any database name makes one clean file name.
func DumpFileName(db string) string {
	return strings.NewReplacer("%", "%25", "/", "%2F").Replace(db) + ".pgdump"
}
