package pgstream

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
)

// ChecksumSQL prints, run in a database with psql -At, every table the
// manifest counts (ordinary tables outside the system schemas, not
// temporary, not an extension's member) with "ROWS:SUM": its row count and
// the sum of the first 64 bits (as a signed integer) of the MD5 of each
// row's text form, an order-free checksum of its content, as JSON
// [{"schema", "name", "checksum"}]. The session's settings that change how
// values print are fixed first, so two servers of the same major version
// holding the same rows print the same checksums. A drill records them for
// the restored tables; anyone can run it against the live database to
// compare.
const ChecksumSQL = `SET statement_timeout = 0;
SET TimeZone = 'UTC';
SET DateStyle = 'ISO, YMD';
SET IntervalStyle = 'postgres';
SET extra_float_digits = 1;
SET bytea_output = 'hex';
SELECT coalesce(json_agg(json_build_object(
    'schema', n.nspname, 'name', c.relname,
    'checksum', (xpath('/row/s/text()', query_to_xml(
        format('SELECT count(*) || '':'' || coalesce(sum((''x'' || substr(md5(t::text), 1, 16))::bit(64)::bigint::numeric), 0) AS s FROM ONLY %I.%I t', n.nspname, c.relname),
        false, true, '')))[1]::text)
  ORDER BY n.nspname, c.relname), '[]')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND c.relpersistence <> 't'
  AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend e
                  WHERE e.classid = 'pg_class'::regclass AND e.objid = c.oid AND e.deptype = 'e');
`

// TableChecksum is one table's line of ChecksumSQL's output.
type TableChecksum struct {
	Schema   string `json:"schema"`
	Name     string `json:"name"`
	Checksum string `json:"checksum"`
}

// ParseChecksums reads ChecksumSQL's output into checksums by qualified
// table name (TableCount.QualifiedName's spelling).
func ParseChecksums(out string) (map[string]string, error) {
	var list []TableChecksum
	if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &list); err != nil {
		return nil, fmt.Errorf("checksums %q: %w", out, err)
	}
	sums := make(map[string]string, len(list))
	for _, t := range list {
		sums[qualifiedName(t.Schema, t.Name)] = t.Checksum
	}
	return sums, nil
}

// tableChecksums runs ChecksumSQL in database db over the connection c.
func tableChecksums(ctx context.Context, d Docker, c Conn, db string) (map[string]string, error) {
	out, _, err := runPsql(ctx, d, c, db, strings.NewReader(ChecksumSQL), true)
	if err != nil {
		return nil, err
	}
	return ParseChecksums(out)
}
