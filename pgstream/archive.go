package pgstream

import (
	"bufio"
	"io"
	"regexp"
	"slices"
	"strings"
)

// archiveSchema is what a restore needs to know of a dump before it creates
// anything: read from `pg_restore --create --schema-only --file=-`, which
// prints the archive's table of contents as SQL without reading the data
// (in the custom format the TOC comes first, so only the first few hundred
// KiB of the stream are read).
type archiveSchema struct {
	// Extensions are the extensions the dump creates.
	Extensions []string
	// Roles are the roles its statements name (grantees, owners, FOR ROLE),
	// PUBLIC and the CURRENT_USER family left out.
	Roles []string
	// CreateDatabase is the dump's CREATE DATABASE statement: encoding,
	// locale provider, collation and ctype as the source had them.
	CreateDatabase string
	// DatabaseLevel are the statements about the database itself (owner,
	// ALTER DATABASE ... SET, comment, privileges, security labels, ALTER
	// ROLE ... IN DATABASE), which pg_restore only runs with --create.
	DatabaseLevel []string
}

// tocHeaderRE matches pg_dump's comment before each TOC entry:
// "-- Name: app; Type: DATABASE; Schema: -; Owner: postgres".
var tocHeaderRE = regexp.MustCompile(`^-- (?:Data for )?Name: (.*); Type: ([A-Z ]+); Schema: (.*?); Owner: ?(.*)$`)

// parseArchiveSchema reads pg_restore's SQL output.
func parseArchiveSchema(r io.Reader) (*archiveSchema, error) {
	p := &tocParser{s: &archiveSchema{}, roles: map[string]bool{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		p.line(sc.Text())
	}
	p.flush()
	if err := sc.Err(); err != nil {
		return nil, err
	}
	for role := range p.roles {
		p.s.Roles = append(p.s.Roles, role)
	}
	slices.Sort(p.s.Roles)
	return p.s, nil
}

// tocParser collects statements line by line under the TOC entry header
// that precedes them.
type tocParser struct {
	s         *archiveSchema
	typ, name string // the current TOC entry
	stmt      strings.Builder
	// Inside a quoted literal ('...') or a quoted identifier ("..."),
	// either of which may hold the other's quote (a database named
	// "it's") or a ';' at the end of a line.
	inQuote, inIdent bool
	roles            map[string]bool
}

func (p *tocParser) line(line string) {
	if !p.inQuote && !p.inIdent {
		if m := tocHeaderRE.FindStringSubmatch(line); m != nil {
			p.flush()
			p.name, p.typ = m[1], m[2]
			return
		}
		if strings.HasPrefix(line, "--") || strings.HasPrefix(line, `\`) {
			return
		}
	}
	p.stmt.WriteString(line)
	p.stmt.WriteByte('\n')
	// A statement ends at a ';' that closes a line outside a quoted
	// literal or identifier. (A doubled quote closes and reopens.)
	for i := 0; i < len(line); i++ {
		switch c := line[i]; {
		case p.inQuote:
			p.inQuote = c != '\''
		case p.inIdent:
			p.inIdent = c != '"'
		case c == '\'':
			p.inQuote = true
		case c == '"':
			p.inIdent = true
		}
	}
	if !p.inQuote && !p.inIdent && strings.HasSuffix(strings.TrimRight(line, " \t"), ";") {
		p.flush()
	}
}

// flush files the statement collected so far under its TOC entry.
func (p *tocParser) flush() {
	text := strings.TrimSpace(p.stmt.String())
	p.stmt.Reset()
	if text == "" {
		return
	}
	for _, role := range statementRoles(text) {
		p.roles[role] = true
	}
	s := p.s
	dbLevel := false
	switch p.typ {
	case "EXTENSION":
		if strings.HasPrefix(text, "CREATE EXTENSION") && !slices.Contains(s.Extensions, p.name) {
			s.Extensions = append(s.Extensions, p.name)
		}
	case "DATABASE":
		if strings.HasPrefix(text, "CREATE DATABASE ") {
			s.CreateDatabase = text
		} else {
			dbLevel = true
		}
	case "DATABASE PROPERTIES":
		dbLevel = true
	case "COMMENT", "ACL", "SECURITY LABEL":
		dbLevel = strings.HasPrefix(p.name, "DATABASE ")
	}
	if dbLevel && !strings.HasPrefix(text, "SET ") && !strings.HasPrefix(text, "SELECT pg_catalog.set_config(") {
		s.DatabaseLevel = append(s.DatabaseLevel, text)
	}
}

var (
	grantToRE     = regexp.MustCompile(`(?is)^GRANT\s.*\sTO\s+(.+?);$`)
	revokeFromRE  = regexp.MustCompile(`(?is)^REVOKE\s.*\sFROM\s+(.+?);$`)
	ownerToRE     = regexp.MustCompile(`(?is)\sOWNER TO\s+(.+?);$`)
	forRoleRE     = regexp.MustCompile(`(?is)^ALTER DEFAULT PRIVILEGES FOR ROLE\s+(\S+)`)
	roleListEndRE = regexp.MustCompile(`(?is)\s+(WITH\s+GRANT\s+OPTION|WITH\s+ADMIN\s+OPTION|GRANTED\s+BY\s+.*|CASCADE|RESTRICT)$`)
)

// statementRoles lists the roles a GRANT, REVOKE, OWNER TO or ALTER DEFAULT
// PRIVILEGES FOR ROLE statement needs to exist.
func statementRoles(stmt string) []string {
	var lists []string
	for _, re := range []*regexp.Regexp{grantToRE, revokeFromRE, ownerToRE, forRoleRE} {
		if m := re.FindStringSubmatch(stmt); m != nil {
			lists = append(lists, m[1])
		}
	}
	var out []string
	for _, list := range lists {
		list = roleListEndRE.ReplaceAllString(strings.TrimSpace(list), "")
		for _, r := range splitIdents(list) {
			switch strings.ToUpper(r) {
			case "PUBLIC", "CURRENT_USER", "SESSION_USER", "CURRENT_ROLE":
				continue
			}
			if r != "" {
				out = append(out, r)
			}
		}
	}
	return out
}

// splitIdents splits "a, \"B c\", d" into names, unquoting quoted ones.
func splitIdents(list string) []string {
	var out []string
	var cur strings.Builder
	quoted, wasQuoted := false, false
	for i := 0; i < len(list); i++ {
		c := list[i]
		switch {
		case c == '"' && quoted && i+1 < len(list) && list[i+1] == '"':
			cur.WriteByte('"')
			i++
		case c == '"':
			if !quoted && strings.TrimSpace(cur.String()) == "" {
				cur.Reset() // the blank after a comma
			}
			quoted = !quoted
			wasQuoted = true
		case c == ',' && !quoted:
			out = append(out, identValue(cur.String(), wasQuoted))
			cur.Reset()
			wasQuoted = false
		default:
			cur.WriteByte(c)
		}
	}
	return append(out, identValue(cur.String(), wasQuoted))
}

func identValue(s string, quoted bool) string {
	if quoted {
		return s
	}
	return strings.ToLower(strings.TrimSpace(s))
}

// pgDumpIdent is how pg_dump writes a name (fmtId): bare when it is a plain
// lower-case identifier, else double-quoted. Keywords are quoted by pg_dump
// too; renameDatabaseIn accepts both spellings, so the keyword list is not
// needed here.
func pgDumpIdent(s string) string {
	if s != "" && (s[0] < '0' || s[0] > '9') && strings.IndexFunc(s, func(r rune) bool {
		return !(r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9')
	}) < 0 {
		return s
	}
	return quoteIdent(s)
}

// renameDatabaseIn rewrites a database-level statement of the dump so that
// it applies to the database named to instead of from: "DATABASE from" (also
// in "IN DATABASE from") and "datname = 'from'".
func renameDatabaseIn(stmt, from, to string) string {
	spellings := []string{quoteIdent(from)}
	if bare := pgDumpIdent(from); bare != quoteIdent(from) {
		spellings = append(spellings, bare)
	}
	var alts []string
	for _, sp := range spellings {
		alts = append(alts, regexp.QuoteMeta(sp))
	}
	re := regexp.MustCompile(`(\bDATABASE\s+)(?:` + strings.Join(alts, "|") + `)([\s;]|$)`)
	stmt = re.ReplaceAllString(stmt, "${1}"+strings.ReplaceAll(quoteIdent(to), "$", "$$")+"${2}")
	return strings.ReplaceAll(stmt, "datname = "+quoteLiteral(from), "datname = "+quoteLiteral(to))
}

// rolesCreatedBy lists the roles a globals.sql (pg_dumpall --globals-only)
// creates.
func rolesCreatedBy(globals string) []string {
	var out []string
	for _, line := range strings.Split(globals, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "CREATE ROLE ")
		if !ok {
			continue
		}
		if name := firstIdent(rest); name != "" {
			out = append(out, name)
		}
	}
	return out
}

// firstIdent reads the SQL identifier s starts with: a quoted one as it is
// (doubled quotes undone), a bare one folded to lower case.
func firstIdent(s string) string {
	if !strings.HasPrefix(s, `"`) {
		end := strings.IndexAny(s, " \t;")
		if end < 0 {
			end = len(s)
		}
		return strings.ToLower(s[:end])
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		if s[i] == '"' {
			if i+1 < len(s) && s[i+1] == '"' {
				b.WriteByte('"')
				i++
				continue
			}
			return b.String()
		}
		b.WriteByte(s[i])
	}
	return ""
}
