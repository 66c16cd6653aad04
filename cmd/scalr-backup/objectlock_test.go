package main

// Issue 14 (S3 Object Lock retention, prune that respects it, rewind),
// end to end on versitygw started with --versioning-dir: the built binary
// next to restic 0.14 and 0.18.1, with retentions of seconds so that locks
// expire within the test.
//
//  2. TestObjectLockForgetPrune: forget --keep-last 1 --prune under
//     retention exits 0 and reports the deferred deletions and until when;
//     restic check stays clean; once the locks end a later prune deletes
//     them. It also covers a deletion deferred because an index file
//     written by the previous prune is still locked (the packs it lists
//     stay, and are not indexed twice).
//  5. (same test) restic 0.14 and 0.18.1 list, check --read-data and dump
//     the repository on the locked, versioned bucket.
//
// Helper names start with ol.

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/scalr-platform/scalr-backup/internal/testenv"
	"github.com/scalr-platform/scalr-backup/repo"
)

// olSetup is one versitygw server with versioning, a repository location
// on it, our CLI with a retention, and both restic CLIs.
type olSetup struct {
	srv      *testenv.S3Server
	tg       *interopTarget
	bucket   string
	loc      string
	pwFile   string
	ours     *ourCLI
	mc       *minio.Client // root credentials: inspection and attacks
	r14, r18 *testenv.ResticCLI
}

// olStart starts versitygw with versioning; retention is the
// SCALR_BACKUP_RETENTION_LOCK of our runs ("" for none).
func olStart(t *testing.T, retention string, opts testenv.S3Options) *olSetup {
	t.Helper()
	r14 := testenv.Restic(t, testenv.Restic014)
	r18 := testenv.Restic(t, testenv.Restic0181)
	opts.Versioning = true
	srv := testenv.StartS3With(t, opts)
	tg := &interopTarget{name: "s3", s3: srv, env: srv.Env()}
	s := &olSetup{srv: srv, tg: tg, pwFile: writePasswordFile(t, "object lock test password")}
	s.loc = tg.newLocation(t, "lock")
	s.bucket = s.loc[strings.LastIndex(s.loc, "/")+1:]
	s.ours = newOurCLI(t, tg, s.loc, s.pwFile)
	if retention != "" {
		s.ours = s3fWithEnv(s.ours, "SCALR_BACKUP_RETENTION_LOCK="+retention)
	}
	mc, err := minio.New(srv.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(srv.KeyID, srv.Secret, ""), Region: testenv.S3Region})
	if err != nil {
		t.Fatal(err)
	}
	s.mc = mc
	s.r14, s.r18 = resticFor(r14, tg, s.pwFile), resticFor(r18, tg, s.pwFile)
	return s
}

// olRetainUntil is the retention end of key's current version (zero: none).
func (s *olSetup) olRetainUntil(t *testing.T, key string) time.Time {
	t.Helper()
	oi, err := s.mc.StatObject(t.Context(), s.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		t.Fatalf("HEAD %s: %v", key, err)
	}
	v := oi.Headers.Get("X-Amz-Object-Lock-Retain-Until-Date")
	if v == "" {
		return time.Time{}
	}
	until, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		t.Fatalf("HEAD %s: retain-until %q: %v", key, v, err)
	}
	return until
}

// olKeys lists the bucket's current keys under prefix.
func (s *olSetup) olKeys(t *testing.T, prefix string) []string {
	t.Helper()
	var keys []string
	for o := range s.mc.ListObjects(t.Context(), s.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			t.Fatalf("list %s: %v", prefix, o.Err)
		}
		keys = append(keys, o.Key)
	}
	return keys
}

// olSleepUntil waits until the storage's clock is past until (whole
// seconds, plus a margin for a loaded machine).
func olSleepUntil(t *testing.T, until time.Time) {
	t.Helper()
	if d := time.Until(until.Add(1500 * time.Millisecond)); d > 0 {
		t.Logf("waiting %s for retention to end at %s", d.Round(time.Millisecond), until.Format(time.TimeOnly))
		time.Sleep(d)
	}
}

// olForgetPrune runs forget --keep-last 1 --prune --json and returns its
// forget deferral (nil: none) and the prune statistics (nil: no prune).
func olForgetPrune(t *testing.T, c *ourCLI) (*repo.Deferred, *repo.PruneStats) {
	t.Helper()
	res := c.mustRun(t, nil, "forget", "--keep-last", "1", "--prune", "--json")
	t.Logf("forget --prune --json:\n%s\nstderr:\n%s", res.stdout, res.stderr)
	checkJSONConvention(t, "forget --prune --json", string(res.stdout))
	var fd *repo.Deferred
	var ps *repo.PruneStats
	for _, line := range bytes.Split(bytes.TrimSpace(res.stdout), []byte("\n")) {
		var probe map[string]json.RawMessage
		if json.Unmarshal(line, &probe) != nil {
			continue // restic's array of groups
		}
		switch {
		case string(probe["message_type"]) == `"forget_deferred"`:
			var m forgetDeferredJSON
			if err := json.Unmarshal(line, &m); err != nil {
				t.Fatal(err)
			}
			fd = m.Deferred
		case probe["packs_total"] != nil:
			ps = &repo.PruneStats{}
			if err := json.Unmarshal(line, ps); err != nil {
				t.Fatal(err)
			}
		}
	}
	return fd, ps
}

// olBackup backs up a generated stream as /db.pgdump (one forget group)
// and returns the snapshot ID and the stream's SHA-256.
func olBackup(t *testing.T, c *ourCLI, seed uint64, size int64) (string, string) {
	t.Helper()
	s := c.backup(t, newMixedStream(seed, size), "--stdin-filename", "db.pgdump", "--host", "lockhost")
	return s.SnapshotID, streamHash(seed, size)
}

func TestObjectLockForgetPrune(t *testing.T) {
	start := time.Now()
	s := olStart(t, "10s", testenv.S3Options{})
	ctx := t.Context()

	s.ours.mustRun(t, nil, "init")
	status, _, _, _, err := s.mc.GetObjectLockConfig(ctx, s.bucket)
	if err != nil || status != "Enabled" {
		t.Fatalf("init with retention: bucket Object Lock %q, %v; want Enabled", status, err)
	}
	const size = 3 << 20
	idA, sumA := olBackup(t, s.ours, 1, size)
	idB, sumB := olBackup(t, s.ours, 2, size)

	// Every object but locks carries a retention ahead of now.
	for _, key := range append(append(s.olKeys(t, "snapshots/"), s.olKeys(t, "index/")...), append(s.olKeys(t, "data/"), s.olKeys(t, "keys/")...)...) {
		if until := s.olRetainUntil(t, key); !until.After(time.Now()) {
			t.Errorf("%s: retain-until %v, want a time after now", key, until)
		}
	}
	if until := s.olRetainUntil(t, "config"); until.IsZero() {
		t.Error("config has no retention")
	}
	if locks := s.olKeys(t, "locks/"); len(locks) != 0 {
		t.Errorf("locks left behind: %v", locks)
	}

	// Acceptance 2: snapshot A's file is locked: forget defers it.
	fd, ps := olForgetPrune(t, s.ours)
	if fd == nil || fd.Files != 1 || fd.List[0].Object != "snapshots/"+idA || fd.Until.IsZero() {
		t.Fatalf("forget under retention: deferred %+v, want snapshots/%s with an end", fd, idA)
	}
	if ps == nil {
		t.Fatal("forget --prune ran no prune")
	}
	t.Logf("forget deferred: %s", fd)
	if got := s.olKeys(t, "snapshots/"); len(got) != 2 {
		t.Errorf("snapshots after a deferred forget: %v, want both", got)
	}
	// The text output says it too.
	res := s.ours.mustRun(t, nil, "forget", "--keep-last", "1")
	if !bytes.Contains(res.stdout, []byte("deferred snapshots/"+idA)) || !bytes.Contains(res.stdout, []byte("until ")) {
		t.Errorf("forget text output does not name the deferred snapshot and its end:\n%s", res.stdout)
	}

	// Acceptance 5: both restic versions read, check and dump as usual.
	want := map[string]string{idA: sumA, idB: sumB}
	for _, r := range []*testenv.ResticCLI{s.r14, s.r18} {
		olResticDumps(t, r, s.loc, want)
	}

	// Once A's lock ends, a later forget --prune removes A and its data.
	olSleepUntil(t, fd.Until)
	fd, ps = olForgetPrune(t, s.ours)
	if fd != nil {
		t.Errorf("forget after the lock ended still defers: %s", fd)
	}
	if ps == nil || ps.PacksRemove == 0 || ps.Deferred.Files != 0 {
		t.Fatalf("prune after the lock ended: %+v, want packs removed and nothing deferred", ps)
	}
	if got := s.olKeys(t, "snapshots/"); len(got) != 1 || !strings.HasSuffix(got[0], idB) {
		t.Errorf("snapshots after the lock ended: %v, want only %s", got, idB)
	}
	// The index file that prune wrote, and its lock's end.
	var indexUntil time.Time
	for _, key := range s.olKeys(t, "index/") {
		if u := s.olRetainUntil(t, key); u.After(indexUntil) {
			indexUntil = u
		}
	}

	// B's packs are now listed by that index file, locked for 10 s more:
	// after a new backup C, forget removes B and prune defers B's packs
	// (and that index file), writes nothing and leaves check clean: no
	// pack in two index files, none unreferenced.
	olSleepUntil(t, s.olRetainUntil(t, "snapshots/"+idB))
	idC, sumC := olBackup(t, s.ours, 3, size)
	fd, ps = olForgetPrune(t, s.ours)
	if fd != nil {
		t.Errorf("forget of B (lock ended) defers: %s", fd)
	}
	if time.Now().After(indexUntil.Add(-time.Second)) {
		// Too slow a machine: the prune may have run after the lock
		// ended, and then rightly deferred nothing.
		t.Fatalf("the prune-written index's lock (until %s) ended before the prune that should find it locked; the machine is too slow for this 10 s retention", indexUntil.Format(time.TimeOnly))
	}
	if ps == nil || ps.Deferred.Files == 0 {
		t.Fatalf("prune while the prune-written index is locked: %+v, want deferred packs", ps)
	}
	var deferredPacks int
	for _, f := range ps.Deferred.List {
		if strings.HasPrefix(f.Object, "data/") {
			deferredPacks++
		}
		if f.Until.IsZero() {
			t.Errorf("deferred %s without an end on an Object Lock bucket", f.Object)
		}
	}
	if deferredPacks == 0 {
		t.Errorf("no pack deferred: %+v", ps.Deferred)
	}
	t.Logf("prune deferred: %s", &ps.Deferred)
	olCheck(t, s.r18, s.loc)

	olSleepUntil(t, ps.Deferred.Until)
	res = s.ours.mustRun(t, nil, "prune", "--json")
	var after repo.PruneStats
	if err := json.Unmarshal(lastJSONLine(res.stdout), &after); err != nil {
		t.Fatal(err)
	}
	if after.Deferred.Files != 0 || after.PacksRemove < deferredPacks {
		t.Errorf("prune after the locks ended: removed %d packs, deferred %d; want the %d deferred packs removed", after.PacksRemove, after.Deferred.Files, deferredPacks)
	}
	for _, r := range []*testenv.ResticCLI{s.r14, s.r18} {
		olResticDumps(t, r, s.loc, map[string]string{idC: sumC})
	}
	t.Logf("acceptance 2 and 5 in %s", time.Since(start).Round(time.Millisecond))
}

// olResticDumps is acceptance point 5 for one restic: it lists the
// snapshots, checks --read-data clean and dumps each one byte-identical.
func olResticDumps(t *testing.T, r *testenv.ResticCLI, loc string, want map[string]string) {
	t.Helper()
	res := r.MustRun(t, loc, "", nil, "snapshots", "--json")
	snaps := decodeSnapshots(t, "restic "+r.Version, res.Stdout)
	if len(snaps) != len(want) {
		t.Errorf("restic %s lists %d snapshots, want %d", r.Version, len(snaps), len(want))
	}
	olCheck(t, r, loc)
	for id, sum := range want {
		if got, _ := resticDumpHash(t, r, loc, id, "/db.pgdump"); got != sum {
			t.Errorf("restic %s dump %.8s: SHA-256 %s, want %s", r.Version, id, got, sum)
		}
	}
}

// olHostPolicy lets key read and write the bucket and delete only under
// locks/: the host's credentials in a split setup.
func olHostPolicy(bucket, key string) string {
	return `{"Version":"2012-10-17","Statement":[` +
		`{"Effect":"Allow","Principal":{"AWS":["` + key + `"]},"Action":["s3:GetObject","s3:PutObject","s3:ListBucket","s3:GetBucketLocation",` +
		`"s3:GetBucketObjectLockConfiguration","s3:GetObjectRetention","s3:PutObjectRetention"],` +
		`"Resource":["arn:aws:s3:::` + bucket + `","arn:aws:s3:::` + bucket + `/*"]},` +
		`{"Effect":"Allow","Principal":{"AWS":["` + key + `"]},"Action":["s3:DeleteObject","s3:DeleteObjectVersion"],` +
		`"Resource":["arn:aws:s3:::` + bucket + `/locks/*"]}]}`
}

// Acceptance 4: credentials that may not delete (a versitygw user whose
// bucket policy allows deleting only under locks/): backups succeed,
// forget and prune defer with an unknown end and exit 0, restic check
// stays clean, and a prune with the owner's key later deletes it all.
// Also: init with a retention refuses an existing bucket without Object
// Lock.
func TestObjectLockNoDeleteCredentials(t *testing.T) {
	start := time.Now()
	s := olStart(t, "", testenv.S3Options{IAM: true})
	ctx := t.Context()
	if err := s.mc.MakeBucket(ctx, s.bucket, minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	const hostKey, hostSecret = "scalrhostkey", "scalr-host-secret-0123456789"
	s.srv.AddUser(t, hostKey, hostSecret)
	if err := s.mc.SetBucketPolicy(ctx, s.bucket, olHostPolicy(s.bucket, hostKey)); err != nil {
		t.Fatal(err)
	}
	host := s3fWithEnv(s.ours, "AWS_ACCESS_KEY_ID="+hostKey, "AWS_SECRET_ACCESS_KEY="+hostSecret)

	// init with a retention on a bucket without Object Lock: refused,
	// saying why, nothing written.
	res := s3fWithEnv(host, "SCALR_BACKUP_RETENTION_LOCK=1h").run(t, nil, "init")
	if res.code == 0 || !bytes.Contains(res.stderr, []byte("without Object Lock")) {
		t.Fatalf("init with retention on a bucket without Object Lock: %s", res)
	}
	if keys := s.olKeys(t, ""); len(keys) != 0 {
		t.Fatalf("refused init wrote %v", keys)
	}

	host.mustRun(t, nil, "init")
	idA, _ := olBackup(t, host, 1, 2<<20)
	idB, sumB := olBackup(t, host, 2, 2<<20)
	if locks := s.olKeys(t, "locks/"); len(locks) != 0 {
		t.Errorf("locks left behind by the host's key: %v", locks)
	}
	fd, ps := olForgetPrune(t, host)
	if fd == nil || fd.Files != 1 || fd.List[0].Object != "snapshots/"+idA || fd.UnknownUntil != 1 {
		t.Fatalf("forget with a key that may not delete: deferred %+v, want snapshots/%s with an unknown end", fd, idA)
	}
	if ps == nil {
		t.Fatal("forget --prune ran no prune")
	}
	// Forget elsewhere (the owner's key), prune with the host's key: the
	// prune defers everything and writes nothing.
	s.ours.mustRun(t, nil, "forget", idA)
	res = host.mustRun(t, nil, "prune", "--json")
	var st repo.PruneStats
	if err := json.Unmarshal(lastJSONLine(res.stdout), &st); err != nil {
		t.Fatal(err)
	}
	if st.Deferred.Files == 0 || st.Deferred.UnknownUntil != st.Deferred.Files || st.IndexFilesWritten != 0 || st.PacksDeleted != 0 {
		t.Fatalf("prune with a key that may not delete: %+v", st)
	}
	t.Logf("host prune: %s", &st.Deferred)
	olCheck(t, s.r18, s.loc)
	// Nothing broke: the host backs up again, and the owner's prune
	// deletes what the host's deferred.
	idC, sumC := olBackup(t, host, 3, 2<<20)
	res = s.ours.mustRun(t, nil, "prune", "--json")
	if err := json.Unmarshal(lastJSONLine(res.stdout), &st); err != nil {
		t.Fatal(err)
	}
	if st.Deferred.Files != 0 || st.PacksDeleted == 0 {
		t.Fatalf("prune with the owner's key: %+v", st)
	}
	if probe := s.olKeys(t, "index/scalr-backup-delete-probe"); len(probe) != 0 {
		t.Errorf("the owner's prune left the delete probe: %v", probe)
	}
	for _, r := range []*testenv.ResticCLI{s.r14, s.r18} {
		olResticDumps(t, r, s.loc, map[string]string{idB: sumB, idC: sumC})
	}
	t.Logf("acceptance 4 in %s", time.Since(start).Round(time.Millisecond))
}

// Acceptance 1: an attacker with the host's credentials overwrites config,
// adds a key file, deletes every object and then tries to delete every
// object version: no locked version is destroyed, restic cannot open the
// repository, `rewind --to` a time before the attack restores it (a dry
// run first changes nothing), and restic 0.18.1 check --read-data is clean
// and every snapshot dumps byte-identical.
func TestObjectLockRewind(t *testing.T) {
	start := time.Now()
	s := olStart(t, "1h", testenv.S3Options{})
	ctx := t.Context()
	s.ours.mustRun(t, nil, "init")
	idA, sumA := olBackup(t, s.ours, 1, 2<<20)
	idB, sumB := olBackup(t, s.ours, 2, 2<<20)

	// Our versions before the attack.
	ours := map[string]bool{}
	for o := range s.mc.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Recursive: true, WithVersions: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		if !strings.HasPrefix(o.Key, "locks/") {
			ours[o.Key+"@"+o.VersionID] = true
		}
	}
	// Object times have a precision of a second on some servers.
	time.Sleep(1100 * time.Millisecond)
	before := time.Now().UTC()
	time.Sleep(1100 * time.Millisecond)

	// The attack, with the same credentials as the host's.
	junk := bytes.Repeat([]byte("ransom "), 100)
	put := func(key string, lock bool) {
		opts := minio.PutObjectOptions{}
		if lock {
			opts.Mode, opts.RetainUntilDate = minio.Governance, time.Now().Add(time.Hour).UTC()
		}
		if _, err := s.mc.PutObject(ctx, s.bucket, key, bytes.NewReader(junk), int64(len(junk)), opts); err != nil {
			t.Fatalf("attack: put %s: %v", key, err)
		}
	}
	put("config", true) // locked too, so the attacker's version cannot be removed
	for _, key := range s.olKeys(t, "") {
		if err := s.mc.RemoveObject(ctx, s.bucket, key, minio.RemoveObjectOptions{}); err != nil {
			t.Fatalf("attack: delete %s: %v", key, err)
		}
	}
	var refused, destroyed int
	for o := range s.mc.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Recursive: true, WithVersions: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		if o.IsDeleteMarker {
			continue
		}
		err := s.mc.RemoveObject(ctx, s.bucket, o.Key, minio.RemoveObjectOptions{VersionID: o.VersionID})
		switch {
		case err == nil && ours[o.Key+"@"+o.VersionID]:
			t.Errorf("attack destroyed locked version %s@%s", o.Key, o.VersionID)
			destroyed++
		case err != nil:
			refused++
		}
	}
	newKey := "keys/" + strings.Repeat("e", 64)
	put(newKey, false) // created after the time: rewind leaves it unless asked
	t.Logf("attack: %d versions refused deletion, %d of ours destroyed", refused, destroyed)
	if refused < len(ours) {
		t.Errorf("attack: %d deletions refused, want at least our %d versions", refused, len(ours))
	}
	if res, err := s.r18.Run(ctx, s.loc, "", nil, "snapshots"); err == nil && res.Err() == nil {
		t.Fatalf("restic opens the repository after the attack:\n%s", res.Stdout)
	}

	// A dry run lists the changes and changes nothing.
	at := before.Format(time.RFC3339Nano)
	res := s.ours.mustRun(t, nil, "rewind", "--to", at, "--dry-run", "--json")
	checkJSONConvention(t, "rewind --json", string(res.stdout))
	var dry struct {
		Keys    int              `json:"keys"`
		Changes []map[string]any `json:"changes"`
		DryRun  bool             `json:"dry_run"`
	}
	if err := json.Unmarshal(lastJSONLine(res.stdout), &dry); err != nil || !dry.DryRun {
		t.Fatalf("rewind --dry-run --json: %v\n%s", err, res)
	}
	actions := map[string]int{}
	for _, ch := range dry.Changes {
		actions[ch["action"].(string)]++
	}
	if actions["undelete"] == 0 || actions["restore"] != 1 || actions["keep_newer"] != 1 {
		t.Errorf("dry run: actions %v, want undeletes, 1 restore (config) and 1 newer key kept", actions)
	}
	if keys := s.olKeys(t, ""); len(keys) != 1 || keys[0] != newKey {
		t.Fatalf("dry run changed the bucket: %v", keys)
	}

	res = s.ours.mustRun(t, nil, "rewind", "--to", at, "--remove-newer")
	t.Logf("rewind:\n%s", res.stdout)
	if !bytes.Contains(res.stdout, []byte("restore config")) || !bytes.Contains(res.stdout, []byte("remove "+newKey)) {
		t.Errorf("rewind output does not name the restored config and the removed key:\n%s", res.stdout)
	}
	olCheck(t, s.r18, s.loc)
	for id, sum := range map[string]string{idA: sumA, idB: sumB} {
		if got, _ := resticDumpHash(t, s.r18, s.loc, id, "/db.pgdump"); got != sum {
			t.Errorf("restic dump %.8s after rewind: %s, want %s", id, got, sum)
		}
	}
	t.Logf("acceptance 1 in %s", time.Since(start).Round(time.Millisecond))
}

// olCheck is resticCheckReadData that also refuses the non-critical hint
// of a pack listed in two index files, which a prune that rewrote the
// index while an old index file stayed would cause.
func olCheck(t *testing.T, r *testenv.ResticCLI, loc string) {
	t.Helper()
	res := r.MustRun(t, loc, "", nil, "check", "--read-data")
	out := string(res.Stdout) + string(res.Stderr)
	for _, bad := range []string{"several indexes", "repair index"} {
		if strings.Contains(out, bad) {
			t.Errorf("restic %s check --read-data mentions %q:\n%s", r.Version, bad, out)
		}
	}
	resticCheckReadData(t, r, loc)
}
