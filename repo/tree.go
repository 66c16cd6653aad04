package repo

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"time"
	"unicode/utf8"
)

// Node types as trees spell them.
const (
	NodeFile    = "file"
	NodeDir     = "dir"
	NodeSymlink = "symlink"
)

// Node is one entry of a tree. The field order and tags are restic's, so a
// tree encoded here is byte-identical to restic's for the same entries and
// deduplicates with restic's own trees.
type Node struct {
	Name               string                     `json:"name"`
	Type               string                     `json:"type"`
	Mode               fs.FileMode                `json:"mode,omitempty"`
	ModTime            time.Time                  `json:"mtime,omitempty"`
	AccessTime         time.Time                  `json:"atime,omitempty"`
	ChangeTime         time.Time                  `json:"ctime,omitempty"`
	UID                uint32                     `json:"uid"`
	GID                uint32                     `json:"gid"`
	User               string                     `json:"user,omitempty"`
	Group              string                     `json:"group,omitempty"`
	Inode              uint64                     `json:"inode,omitempty"`
	DeviceID           uint64                     `json:"device_id,omitempty"`
	Size               uint64                     `json:"size,omitempty"`
	Links              uint64                     `json:"links,omitempty"`
	LinkTarget         string                     `json:"linktarget,omitempty"`
	LinkTargetRaw      []byte                     `json:"linktarget_raw,omitempty"`
	ExtendedAttributes []ExtendedAttribute        `json:"extended_attributes,omitempty"`
	GenericAttributes  map[string]json.RawMessage `json:"generic_attributes,omitempty"`
	Device             uint64                     `json:"device,omitempty"`
	Content            []ID                       `json:"content"`
	Subtree            *ID                        `json:"subtree,omitempty"`
	Error              string                     `json:"error,omitempty"`
}

// ExtendedAttribute is one xattr of a node.
type ExtendedAttribute struct {
	Name  string `json:"name"`
	Value []byte `json:"value"`
}

// fixTime keeps a time encodable: RFC 3339 allows only years 0 to 9999.
func fixTime(t time.Time) time.Time {
	switch {
	case t.Year() < 0:
		return time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC)
	case t.Year() > 9999:
		return time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
	}
	return t
}

// MarshalJSON writes the name through strconv.Quote (without the outer
// quotes) as restic does, so names that are not valid UTF-8 survive, and a
// link target that is not valid UTF-8 as raw bytes.
func (n Node) MarshalJSON() ([]byte, error) {
	type plain Node
	p := plain(n)
	p.ModTime, p.AccessTime, p.ChangeTime = fixTime(n.ModTime), fixTime(n.AccessTime), fixTime(n.ChangeTime)
	q := strconv.Quote(n.Name)
	p.Name = q[1 : len(q)-1]
	p.LinkTargetRaw = nil
	if !utf8.ValidString(n.LinkTarget) {
		p.LinkTargetRaw = []byte(n.LinkTarget)
	}
	return json.Marshal(p)
}

// UnmarshalJSON reverses MarshalJSON.
func (n *Node) UnmarshalJSON(b []byte) error {
	type plain Node
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	name, err := strconv.Unquote(`"` + p.Name + `"`)
	if err != nil {
		return fmt.Errorf("node name %q: %w", p.Name, err)
	}
	p.Name = name
	if p.LinkTargetRaw != nil {
		p.LinkTarget = string(p.LinkTargetRaw)
		p.LinkTargetRaw = nil
	}
	*n = Node(p)
	return nil
}

// Tree is a directory: nodes sorted by name, names unique.
type Tree struct {
	Nodes []*Node `json:"nodes"`
}

// Sort orders the nodes by name (Go string order, as restic).
func (t *Tree) Sort() {
	sort.Slice(t.Nodes, func(i, j int) bool { return t.Nodes[i].Name < t.Nodes[j].Name })
}

// Find returns the node called name, or nil.
func (t *Tree) Find(name string) *Node {
	i := sort.Search(len(t.Nodes), func(i int) bool { return t.Nodes[i].Name >= name })
	if i < len(t.Nodes) && t.Nodes[i].Name == name {
		return t.Nodes[i]
	}
	// Trees from other writers may not be sorted; fall back to a scan.
	for _, n := range t.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// EncodeTree returns the tree blob for t: compact JSON and one newline.
// Nodes must be sorted with unique names.
func EncodeTree(t *Tree) ([]byte, error) {
	for i := 1; i < len(t.Nodes); i++ {
		if t.Nodes[i-1].Name >= t.Nodes[i].Name {
			return nil, fmt.Errorf("tree nodes not sorted or duplicate at %q", t.Nodes[i].Name)
		}
	}
	if t.Nodes == nil {
		t = &Tree{Nodes: []*Node{}}
	}
	buf, err := json.Marshal(t)
	if err != nil {
		return nil, fmt.Errorf("encode tree: %w", err)
	}
	return append(buf, '\n'), nil
}

// DecodeTree parses a tree blob.
func DecodeTree(buf []byte) (*Tree, error) {
	var t Tree
	if err := json.Unmarshal(buf, &t); err != nil {
		return nil, fmt.Errorf("decode tree: %w", err)
	}
	for i, n := range t.Nodes {
		if n == nil {
			return nil, fmt.Errorf("decode tree: node %d is null", i)
		}
		if n.Type == NodeDir && n.Subtree == nil {
			return nil, fmt.Errorf("decode tree: directory %q has no subtree", n.Name)
		}
	}
	return &t, nil
}
