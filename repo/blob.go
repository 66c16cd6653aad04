package repo

import (
	"encoding/json"
	"fmt"
)

// BlobType says whether a blob holds file data or a tree.
type BlobType uint8

// Blob types. The values are this package's own; pack headers and index
// files use their own encodings.
const (
	InvalidBlob BlobType = iota
	DataBlob
	TreeBlob
)

func (t BlobType) String() string {
	switch t {
	case DataBlob:
		return "data"
	case TreeBlob:
		return "tree"
	}
	return fmt.Sprintf("invalid(%d)", uint8(t))
}

// MarshalJSON encodes the type as index files spell it.
func (t BlobType) MarshalJSON() ([]byte, error) {
	switch t {
	case DataBlob, TreeBlob:
		return json.Marshal(t.String())
	}
	return nil, fmt.Errorf("cannot encode blob type %v", t)
}

// UnmarshalJSON decodes "data" or "tree".
func (t *BlobType) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("invalid blob type: %w", err)
	}
	switch s {
	case "data":
		*t = DataBlob
	case "tree":
		*t = TreeBlob
	default:
		return fmt.Errorf("invalid blob type %q", s)
	}
	return nil
}

// ParseBlobType reads "data" or "tree".
func ParseBlobType(s string) (BlobType, error) {
	var t BlobType
	err := t.UnmarshalJSON([]byte(`"` + s + `"`))
	return t, err
}

// BlobHandle names a blob: the same bytes stored as data and as tree are
// two blobs.
type BlobHandle struct {
	ID   ID
	Type BlobType
}

func (h BlobHandle) String() string { return h.Type.String() + " blob " + h.ID.Str() }

// Blob is one blob's place inside a pack.
type Blob struct {
	BlobHandle
	Offset uint32
	// Length is the stored (sealed) length.
	Length uint32
	// UncompressedLength is the plaintext length of a compressed blob, 0
	// for an uncompressed one.
	UncompressedLength uint32
}

// DataLength is the blob's plaintext length.
func (b Blob) DataLength() uint32 {
	if b.UncompressedLength != 0 {
		return b.UncompressedLength
	}
	return b.Length - cryptoOverhead
}

// IsCompressed reports whether the blob is stored zstd-compressed.
func (b Blob) IsCompressed() bool { return b.UncompressedLength != 0 }

// PackedBlob is a blob together with the pack that holds it.
type PackedBlob struct {
	Blob
	PackID ID
}
