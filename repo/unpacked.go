package repo

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"github.com/scalr-platform/scalr-backup/backend"
)

// jsonMarshal encodes v as Go's encoding/json does by default (restic's
// files are produced the same way, which keeps tree blobs byte-identical).
func jsonMarshal(v any) ([]byte, error) {
	buf, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", v, err)
	}
	return buf, nil
}

// sealUnpacked turns a plaintext into the stored bytes of a snapshot,
// index or lock file: in version 2 a 0x02 byte and a zstd frame, then
// sealed. Before it is returned the result is opened again and compared,
// so memory or software faults cannot store a file that does not read back.
func (r *Repository) sealUnpacked(plain []byte) ([]byte, error) {
	p := plain
	if r.cfg.Version >= 2 {
		p = r.enc.EncodeAll(plain, []byte{2})
	}
	sealed, err := r.key.Seal(nil, p)
	if err != nil {
		return nil, err
	}
	back, err := r.openUnpacked("new file", sealed)
	if err != nil {
		return nil, fmt.Errorf("verify sealed file: %w", err)
	}
	if !bytes.Equal(back, plain) {
		return nil, fmt.Errorf("verify sealed file: contents differ after sealing (memory or software fault)")
	}
	return sealed, nil
}

// openUnpacked authenticates, decrypts and (in version 2) decompresses the
// stored bytes of a snapshot, index or lock file.
func (r *Repository) openUnpacked(name string, sealed []byte) ([]byte, error) {
	p, err := r.key.Open(nil, sealed)
	if err != nil {
		return nil, corrupt(name, "decrypt: %w", err)
	}
	if r.cfg.Version < 2 || len(p) == 0 || p[0] == '{' || p[0] == '[' {
		return p, nil
	}
	if p[0] != 2 {
		return nil, corrupt(name, "unknown encoding byte 0x%02x", p[0])
	}
	out, err := r.dec.DecodeAll(p[1:], nil)
	if err != nil {
		return nil, corrupt(name, "decompress: %w", err)
	}
	return out, nil
}

// saveJSON stores v as an unpacked file of type t and returns its ID.
func (r *Repository) saveJSON(ctx context.Context, t backend.FileType, v any) (ID, error) {
	plain, err := jsonMarshal(v)
	if err != nil {
		return ID{}, err
	}
	sealed, err := r.sealUnpacked(plain)
	if err != nil {
		return ID{}, fmt.Errorf("save %s file: %w", t, err)
	}
	id := Hash(sealed)
	h := backend.Handle{Type: t, Name: id.String()}
	if err := r.be.Save(ctx, h, backend.BytesSource(sealed)); err != nil {
		return ID{}, fmt.Errorf("save %v: %w", h, err)
	}
	return id, nil
}

// loadUnpacked loads, verifies against its name, and opens file id of type t.
func (r *Repository) loadUnpacked(ctx context.Context, t backend.FileType, id ID) ([]byte, error) {
	h := backend.Handle{Type: t, Name: id.String()}
	buf, err := backend.LoadAll(ctx, r.be, h)
	if err != nil {
		return nil, fmt.Errorf("load %v: %w", h, err)
	}
	// Locks are not content-addressed in every writer; everything else is.
	if t != backend.LockFile && Hash(buf) != id {
		return nil, corrupt(h.String(), "content hash %s does not match its name", Hash(buf).Str())
	}
	return r.openUnpacked(h.String(), buf)
}

// loadJSON loads file id of type t and decodes it into v.
func (r *Repository) loadJSON(ctx context.Context, t backend.FileType, id ID, v any) error {
	plain, err := r.loadUnpacked(ctx, t, id)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(plain, v); err != nil {
		h := backend.Handle{Type: t, Name: id.String()}
		return corrupt(h.String(), "decode JSON: %w", err)
	}
	return nil
}

// LoadRaw returns the decrypted, decompressed plaintext of an unpacked file
// (config, snapshot, index, lock), for inspection.
func (r *Repository) LoadRaw(ctx context.Context, t backend.FileType, id ID) ([]byte, error) {
	if t == backend.ConfigFile {
		return jsonMarshal(r.cfg)
	}
	return r.loadUnpacked(ctx, t, id)
}

// findID resolves a full or short (prefix) ID among the files of type t.
func (r *Repository) findID(ctx context.Context, t backend.FileType, prefix string) (ID, error) {
	if len(prefix) == 64 {
		return ParseID(prefix)
	}
	if prefix == "" {
		return ID{}, fmt.Errorf("empty %s ID", t)
	}
	var match string
	n := 0
	err := r.be.List(ctx, t, func(fi backend.FileInfo) error {
		if len(fi.Name) >= len(prefix) && fi.Name[:len(prefix)] == prefix {
			match = fi.Name
			n++
		}
		return nil
	})
	if err != nil {
		return ID{}, fmt.Errorf("list %s: %w", t, err)
	}
	switch n {
	case 0:
		return ID{}, fmt.Errorf("no %s file matches ID %q: %w", t, prefix, ErrNoSnapshotOrFile(t))
	case 1:
		return ParseID(match)
	}
	return ID{}, fmt.Errorf("%s ID %q matches %d files: %w", t, prefix, n, ErrAmbiguousID)
}

// ErrNoSnapshotOrFile is the sentinel wrapped when an ID prefix matches no
// file: ErrNoSnapshot for snapshots, backend.ErrNotExist for the others.
func ErrNoSnapshotOrFile(t backend.FileType) error {
	if t == backend.SnapshotFile {
		return ErrNoSnapshot
	}
	return backend.ErrNotExist
}

// FindFile resolves a full or unique short ID among the files of type t.
func (r *Repository) FindFile(ctx context.Context, t backend.FileType, prefix string) (ID, error) {
	return r.findID(ctx, t, prefix)
}
