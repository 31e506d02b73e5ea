package artifact

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/outposthq/outpost/internal/ctxio"
)

var (
	// ErrNotFound: no artifact has this digest.
	ErrNotFound = errors.New("artifact not found")
	// ErrMismatch: the uploaded bytes do not have the expected digest or
	// size. Nothing was stored.
	ErrMismatch = errors.New("artifact does not match")
	// ErrInvalidDigest: the digest is not 64 lower-case hex characters.
	ErrInvalidDigest = errors.New("invalid sha256 digest")
)

// Meta describes an artifact.
type Meta struct {
	// SHA256 is the lower-case hex digest. In Put's want, "" means not known
	// in advance (no check).
	SHA256 string `json:"sha256"`
	// Size in bytes. In Put's want, 0 means not known in advance (no check).
	Size int64 `json:"size"`
	// Name is the uploaded file name (e.g. billing-api-1.4.2.tar.gz),
	// informational; "" if none. The first upload's name is kept.
	Name string `json:"name,omitempty"`
}

// staleTmpAge is how old an upload in tmp/ must be for Open to remove it:
// it was left by a crash, since uploads clean up after themselves.
const staleTmpAge = time.Hour

// maxNameLen bounds Meta.Name.
const maxNameLen = 255

// Store is an artifact store in one directory. It is safe for concurrent
// use, also by several Stores (processes) on the same directory.
type Store struct {
	dir string
}

// Open opens (creating if needed) the store in dir and removes uploads left
// in dir/tmp by a crash.
func Open(dir string) (*Store, error) {
	s := &Store{dir: dir}
	for _, d := range []string{dir, s.tmpDir(), s.blobDir()} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("artifact store: %w", err)
		}
	}
	entries, err := os.ReadDir(s.tmpDir())
	if err != nil {
		return nil, fmt.Errorf("artifact store: %w", err)
	}
	for _, e := range entries {
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > staleTmpAge {
			os.Remove(filepath.Join(s.tmpDir(), e.Name()))
		}
	}
	return s, nil
}

func (s *Store) tmpDir() string  { return filepath.Join(s.dir, "tmp") }
func (s *Store) blobDir() string { return filepath.Join(s.dir, "sha256") }

// CheckDigest reports whether d is a valid digest: exactly 64 lower-case
// hex characters. Anything else is refused before it can reach a path.
func CheckDigest(d string) error {
	if len(d) != sha256.Size*2 {
		return fmt.Errorf("%w: %q has %d characters, want %d", ErrInvalidDigest, d, len(d), sha256.Size*2)
	}
	for i := 0; i < len(d); i++ {
		if c := d[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return fmt.Errorf("%w: %q is not lower-case hex", ErrInvalidDigest, d)
		}
	}
	return nil
}

// CheckName reports whether name can be an artifact name: at most 255
// bytes of UTF-8 with no '/', no control characters, not "." or "..".
func CheckName(name string) error {
	switch {
	case len(name) > maxNameLen:
		return fmt.Errorf("artifact name longer than %d bytes", maxNameLen)
	case !utf8.ValidString(name):
		return errors.New("artifact name is not valid UTF-8")
	case strings.ContainsRune(name, '/'):
		return fmt.Errorf("artifact name %q contains '/'", name)
	case name == "." || name == "..":
		return fmt.Errorf("artifact name %q is reserved", name)
	}
	for _, r := range name {
		if r < 0x20 || r == 0x7f {
			return fmt.Errorf("artifact name %q contains a control character", name)
		}
	}
	return nil
}

// Path returns where the artifact with this digest is (or would be) stored,
// or "" if the digest is invalid.
func (s *Store) Path(sha256 string) string {
	if CheckDigest(sha256) != nil {
		return ""
	}
	return filepath.Join(s.blobDir(), sha256)
}

func (s *Store) metaPath(sha256 string) string { return s.Path(sha256) + ".json" }

// Put stores the bytes of r. It streams them to a temporary file while
// hashing, fsyncs, checks them against want.SHA256 and want.Size when set,
// and moves the file into place. It reports whether the artifact was
// already present; when want.SHA256 names a present artifact, r is not
// read. On any error (mismatch, read error, ctx done) nothing is left
// behind. With want.Size set, at most want.Size+1 bytes are read.
func (s *Store) Put(ctx context.Context, r io.Reader, want Meta) (Meta, bool, error) {
	if want.SHA256 != "" {
		if err := CheckDigest(want.SHA256); err != nil {
			return Meta{}, false, err
		}
	}
	if want.Size < 0 {
		return Meta{}, false, fmt.Errorf("negative artifact size %d", want.Size)
	}
	if err := CheckName(want.Name); err != nil {
		return Meta{}, false, err
	}
	if want.SHA256 != "" {
		if m, ok, err := s.Stat(want.SHA256); err != nil || ok {
			if ok && want.Size != 0 && m.Size != want.Size {
				return Meta{}, false, fmt.Errorf("%w: %s has %d bytes, want %d", ErrMismatch, want.SHA256, m.Size, want.Size)
			}
			return m, ok, err
		}
	}

	f, err := os.CreateTemp(s.tmpDir(), "put-*")
	if err != nil {
		return Meta{}, false, fmt.Errorf("put artifact: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op once linked into place
	got, err := s.receive(ctx, f, r, want)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("put artifact: %w", cerr)
	}
	if err != nil {
		return Meta{}, false, err
	}
	return s.commit(tmp, got)
}

// receive copies r into f, fsyncs and checks the result against want.
func (s *Store) receive(ctx context.Context, f *os.File, r io.Reader, want Meta) (Meta, error) {
	h := sha256.New()
	if want.Size > 0 {
		// One byte more than expected is enough to know the stream is too
		// long; never read an unbounded stream to its end.
		r = io.LimitReader(r, want.Size+1)
	}
	n, err := io.Copy(io.MultiWriter(f, h), ctxio.Reader(ctx, r))
	if err != nil {
		return Meta{}, fmt.Errorf("receive artifact after %d bytes: %w", n, err)
	}
	if err := f.Sync(); err != nil {
		return Meta{}, fmt.Errorf("put artifact: %w", err)
	}
	got := Meta{SHA256: hex.EncodeToString(h.Sum(nil)), Size: n, Name: want.Name}
	if want.Size > 0 && got.Size != want.Size {
		return Meta{}, fmt.Errorf("%w: received %d bytes, want %d", ErrMismatch, got.Size, want.Size)
	}
	if want.SHA256 != "" && got.SHA256 != want.SHA256 {
		return Meta{}, fmt.Errorf("%w: received sha256 %s, want %s", ErrMismatch, got.SHA256, want.SHA256)
	}
	return got, nil
}

// commit moves the verified upload at tmp into place. It links rather than
// renames so that, of concurrent uploads of the same bytes, exactly one
// creates the file and the others learn it is already present.
func (s *Store) commit(tmp string, m Meta) (Meta, bool, error) {
	if err := os.Chmod(tmp, 0o440); err != nil {
		return Meta{}, false, fmt.Errorf("put artifact: %w", err)
	}
	// The sidecar goes first: a sidecar without its artifact is ignored,
	// while an artifact without a sidecar would lose its name.
	if _, err := os.Stat(s.metaPath(m.SHA256)); errors.Is(err, fs.ErrNotExist) {
		if err := s.writeMeta(m); err != nil {
			return Meta{}, false, err
		}
	}
	err := os.Link(tmp, s.Path(m.SHA256))
	switch {
	case errors.Is(err, fs.ErrExist):
		present, ok, serr := s.Stat(m.SHA256)
		if serr != nil {
			return Meta{}, false, serr
		}
		if !ok {
			return Meta{}, false, fmt.Errorf("put artifact: %s vanished while being stored", m.SHA256)
		}
		return present, true, nil
	case err != nil:
		return Meta{}, false, fmt.Errorf("put artifact: %w", err)
	}
	if err := syncDir(s.blobDir()); err != nil {
		return Meta{}, false, err
	}
	return m, false, nil
}

func (s *Store) writeMeta(m Meta) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("encode artifact meta: %w", err)
	}
	f, err := os.CreateTemp(s.tmpDir(), "meta-*")
	if err != nil {
		return fmt.Errorf("write artifact meta: %w", err)
	}
	defer os.Remove(f.Name())
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), s.metaPath(m.SHA256))
	}
	if err != nil {
		return fmt.Errorf("write artifact meta: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

// Open opens the artifact with this digest for reading. It returns
// ErrNotFound if there is none. The caller closes the file.
func (s *Store) Open(sha256 string) (*os.File, Meta, error) {
	if err := CheckDigest(sha256); err != nil {
		return nil, Meta{}, err
	}
	f, err := os.Open(s.Path(sha256))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, Meta{}, fmt.Errorf("%w: %s", ErrNotFound, sha256)
	}
	if err != nil {
		return nil, Meta{}, fmt.Errorf("open artifact: %w", err)
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, Meta{}, fmt.Errorf("open artifact: %w", err)
	}
	return f, s.meta(sha256, info.Size()), nil
}

// Stat returns the artifact's Meta and reports whether it is present.
func (s *Store) Stat(sha256 string) (Meta, bool, error) {
	if err := CheckDigest(sha256); err != nil {
		return Meta{}, false, err
	}
	info, err := os.Stat(s.Path(sha256))
	if errors.Is(err, fs.ErrNotExist) {
		return Meta{}, false, nil
	}
	if err != nil {
		return Meta{}, false, fmt.Errorf("stat artifact: %w", err)
	}
	return s.meta(sha256, info.Size()), true, nil
}

// meta combines the sidecar's name with the digest and the file's size,
// which are authoritative. A missing or unreadable sidecar only loses the
// name.
func (s *Store) meta(sha256 string, size int64) Meta {
	m := Meta{SHA256: sha256, Size: size}
	b, err := os.ReadFile(s.metaPath(sha256))
	if err != nil {
		return m
	}
	var side Meta
	if json.Unmarshal(b, &side) == nil && CheckName(side.Name) == nil {
		m.Name = side.Name
	}
	return m
}
