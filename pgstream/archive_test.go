package pgstream

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// schemaOutput is `pg_restore --create --schema-only --file=-` of a
// Postgres 15 dump, shortened.
const schemaOutput = `--
-- PostgreSQL database dump
--

\restrict eXrtNRJcZz8ONUWLTCb1h1MVsAXtwTgUnJNrz66DcU1ebmdYo5Dxq1HQzqpi69U

SET statement_timeout = 0;
SELECT pg_catalog.set_config('search_path', '', false);

--
-- Name: app; Type: DATABASE; Schema: -; Owner: app
--

CREATE DATABASE app WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = libc LOCALE = 'C.UTF-8';


ALTER DATABASE app OWNER TO app;

\unrestrict eXrtNRJcZz8ONUWLTCb1h1MVsAXtwTgUnJNrz66DcU1ebmdYo5Dxq1HQzqpi69U
\connect app
\restrict eXrtNRJcZz8ONUWLTCb1h1MVsAXtwTgUnJNrz66DcU1ebmdYo5Dxq1HQzqpi69U

SET statement_timeout = 0;
SELECT pg_catalog.set_config('search_path', '', false);

--
-- Name: DATABASE app; Type: COMMENT; Schema: -; Owner: app
--

COMMENT ON DATABASE app IS 'the app''s db;
two lines';


--
-- Name: app; Type: DATABASE PROPERTIES; Schema: -; Owner: app
--

ALTER DATABASE app SET work_mem TO '8MB';
ALTER ROLE "Reporting Role" IN DATABASE app SET search_path TO 'x';


\connect app

SET statement_timeout = 0;

--
-- Name: pgcrypto; Type: EXTENSION; Schema: -; Owner: -
--

CREATE EXTENSION IF NOT EXISTS pgcrypto WITH SCHEMA public;


--
-- Name: EXTENSION pgcrypto; Type: COMMENT; Schema: -; Owner: 
--

COMMENT ON EXTENSION pgcrypto IS 'cryptographic functions';


--
-- Name: big; Type: TABLE; Schema: public; Owner: app
--

CREATE TABLE public.big (
    id integer,
    p text
);


ALTER TABLE public.big OWNER TO app;

--
-- Name: DATABASE app; Type: ACL; Schema: -; Owner: app
--

GRANT CONNECT ON DATABASE app TO reporting;


--
-- Name: TABLE big; Type: ACL; Schema: public; Owner: app
--

REVOKE ALL ON TABLE public.big FROM PUBLIC;
GRANT SELECT ON TABLE public.big TO reporting, "Reporting Role" WITH GRANT OPTION;


--
-- Name: DEFAULT PRIVILEGES FOR TABLES; Type: DEFAULT ACL; Schema: public; Owner: owner2
--

ALTER DEFAULT PRIVILEGES FOR ROLE owner2 IN SCHEMA public GRANT SELECT ON TABLES TO reporting;


--
-- PostgreSQL database dump complete
--
`

func TestParseArchiveSchema(t *testing.T) {
	s, err := parseArchiveSchema(strings.NewReader(schemaOutput))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(s.Extensions, []string{"pgcrypto"}) {
		t.Errorf("extensions %q", s.Extensions)
	}
	if !slices.Equal(s.Roles, []string{"Reporting Role", "app", "owner2", "reporting"}) {
		t.Errorf("roles %q", s.Roles)
	}
	if s.CreateDatabase != "CREATE DATABASE app WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = libc LOCALE = 'C.UTF-8';" {
		t.Errorf("create %q", s.CreateDatabase)
	}
	want := []string{
		"ALTER DATABASE app OWNER TO app;",
		"COMMENT ON DATABASE app IS 'the app''s db;\ntwo lines';",
		"ALTER DATABASE app SET work_mem TO '8MB';",
		`ALTER ROLE "Reporting Role" IN DATABASE app SET search_path TO 'x';`,
		"GRANT CONNECT ON DATABASE app TO reporting;",
	}
	if !slices.Equal(s.DatabaseLevel, want) {
		t.Errorf("database level:\n%q\nwant\n%q", s.DatabaseLevel, want)
	}
}

// TestParseArchiveSchemaQuotedName: a database name holding a single quote
// (in a quoted identifier) and a quoted identifier holding ';' at the end of
// a line do not swallow the statements after them.
func TestParseArchiveSchemaQuotedName(t *testing.T) {
	const out = `\restrict KEY

--
-- Name: Kunden "Ärger" 100%/ü'x; Type: DATABASE; Schema: -; Owner: app
--

CREATE DATABASE "Kunden ""Ärger"" 100%/ü'x" WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = libc LOCALE = 'C.UTF-8';


ALTER DATABASE "Kunden ""Ärger"" 100%/ü'x" OWNER TO app;

\unrestrict KEY
\connect -reuse-previous=on "dbname='Kunden \"Ärger\" 100%/ü''x'"
\restrict KEY

--
-- Name: t; Type: TABLE; Schema: public; Owner: app
--

CREATE TABLE public."odd;
name" (id integer);

--
-- Name: TABLE "odd;
-- name"; Type: ACL; Schema: public; Owner: app
--

GRANT SELECT ON TABLE public."odd;
name" TO reporting;
`
	s, err := parseArchiveSchema(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	if s.CreateDatabase != `CREATE DATABASE "Kunden ""Ärger"" 100%/ü'x" WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = libc LOCALE = 'C.UTF-8';` {
		t.Errorf("create %q", s.CreateDatabase)
	}
	if !slices.Equal(s.DatabaseLevel, []string{`ALTER DATABASE "Kunden ""Ärger"" 100%/ü'x" OWNER TO app;`}) {
		t.Errorf("database level %q", s.DatabaseLevel)
	}
	if !slices.Equal(s.Roles, []string{"app", "reporting"}) {
		t.Errorf("roles %q", s.Roles)
	}
	side := renameDatabaseIn(s.CreateDatabase, `Kunden "Ärger" 100%/ü'x`, "scalr_restore_x")
	if side != `CREATE DATABASE "scalr_restore_x" WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = libc LOCALE = 'C.UTF-8';` {
		t.Errorf("renamed %q", side)
	}
}

func TestRenameDatabaseIn(t *testing.T) {
	for _, c := range []struct{ stmt, from, to, want string }{
		{"CREATE DATABASE app WITH TEMPLATE = template0;", "app", "side_1", `CREATE DATABASE "side_1" WITH TEMPLATE = template0;`},
		{"ALTER DATABASE app SET x TO 'app';", "app", "s", `ALTER DATABASE "s" SET x TO 'app';`},
		{"ALTER ROLE r IN DATABASE app SET y TO 1;", "app", "s", `ALTER ROLE r IN DATABASE "s" SET y TO 1;`},
		{"GRANT CONNECT ON DATABASE app TO reporting;", "app", "s", `GRANT CONNECT ON DATABASE "s" TO reporting;`},
		{"GRANT CONNECT ON DATABASE application TO r;", "app", "s", "GRANT CONNECT ON DATABASE application TO r;"},
		{`COMMENT ON DATABASE "Über ""x""" IS 'c';`, `Über "x"`, "s", `COMMENT ON DATABASE "s" IS 'c';`},
		{`ALTER DATABASE "user" SET z TO 1;`, "user", "s", `ALTER DATABASE "s" SET z TO 1;`},
		{"UPDATE pg_catalog.pg_database SET datistemplate = false WHERE datname = 'app';", "app", "s$1", "UPDATE pg_catalog.pg_database SET datistemplate = false WHERE datname = 's$1';"},
		{"ALTER DATABASE app RENAME TO x;", "app", "a$1b", `ALTER DATABASE "a$1b" RENAME TO x;`},
	} {
		if got := renameDatabaseIn(c.stmt, c.from, c.to); got != c.want {
			t.Errorf("renameDatabaseIn(%q, %q, %q) = %q, want %q", c.stmt, c.from, c.to, got, c.want)
		}
	}
}

func TestStatementRoles(t *testing.T) {
	for _, c := range []struct {
		stmt string
		want []string
	}{
		{"GRANT SELECT ON TABLE public.t TO a, \"B c\", PUBLIC;", []string{"a", "B c"}},
		{"REVOKE ALL ON SCHEMA public FROM PUBLIC;", nil},
		{"GRANT ALL ON SCHEMA s TO CURRENT_USER WITH GRANT OPTION;", nil},
		{"ALTER TABLE public.t OWNER TO \"Owner\";", []string{"Owner"}},
		{"CREATE TABLE t (a int);", nil},
	} {
		if got := statementRoles(c.stmt); !slices.Equal(got, c.want) {
			t.Errorf("statementRoles(%q) = %q, want %q", c.stmt, got, c.want)
		}
	}
	if got := rolesCreatedBy("CREATE ROLE app;\nALTER ROLE app WITH SUPERUSER;\nCREATE ROLE \"Mixed \"\"Case\";\nCREATE ROLE Upper;\n"); !slices.Equal(got, []string{"app", `Mixed "Case`, "upper"}) {
		t.Errorf("rolesCreatedBy %q", got)
	}
}

func TestRestoreNames(t *testing.T) {
	at := time.Date(2026, 11, 27, 3, 12, 0, 0, time.UTC)
	s := &ServerFacts{databases: map[string]int64{"app": 1, "app__replaced_20261127T031200Z": 2}}
	if got := sideDatabaseName("app", at, s); got != "scalr_restore_20261127T031200Z_app" {
		t.Errorf("side %q", got)
	}
	if got := replacedDatabaseName("app", at, s); got != "app__replaced_20261127T031200Z_2" {
		t.Errorf("replaced %q", got)
	}
	long := strings.Repeat("ü", 40) // 80 bytes
	for _, n := range []string{sideDatabaseName(long, at, s), replacedDatabaseName(long, at, s)} {
		if len(n) > maxIdentBytes || !strings.HasPrefix(n, "scalr_restore_") && !strings.HasPrefix(n, "üü") || strings.ContainsRune(n, '\uFFFD') {
			t.Errorf("long name %q (%d bytes)", n, len(n))
		}
	}
	rd, ok := parseReplaced("app__replaced_20261127T031200Z_2", 5)
	if !ok || rd.Of != "app" || !rd.Replaced.Equal(at) || rd.Bytes != 5 {
		t.Errorf("parse %+v %v", rd, ok)
	}
	cut, ok := parseReplaced(replacedDatabaseName(long, at, s), 0)
	if !ok || cut.Of != "" {
		t.Errorf("a cut name must not claim a database: %+v %v", cut, ok)
	}
	if _, ok := parseReplaced("app", 0); ok {
		t.Error("app parsed as a replaced database")
	}
	if got := humanBytes(3 << 20); got != "3.0 MiB" {
		t.Errorf("humanBytes %q", got)
	}
}
