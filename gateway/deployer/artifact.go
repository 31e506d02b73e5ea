package deployer

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/outposthq/outpost/internal/tarscan"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Names the deployer itself writes into a release directory; an artifact
// may not bring its own.
const (
	artifactFile = ".outpost-artifact" // the uploaded tar, removed after unpack
	digestFile   = ".outpost-sha256"   // the release's SHA-256; its mtime orders releases for prune
)

// artifactInfo is what the deployer learned about an artifact file locally.
type artifactInfo struct {
	// gzip reports whether the tar is gzip-compressed (by magic bytes).
	gzip bool
	// unpacked is the sum of a tar's entry sizes; 0 for a single file.
	unpacked int64
}

// artifactKey identifies one version of a local artifact file, so that a
// file scanned once is not scanned again for each of thousands of nodes.
type artifactKey struct {
	path    string
	sha256  string
	size    int64
	modTime time.Time
	unpack  outpostv1.Unpack
	limits  tarscan.Limits
}

// maxScanCache bounds the scan cache; a gateway holds few artifacts at once.
const maxScanCache = 256

// artifactScans caches successful artifact inspections.
type artifactScans struct {
	mu    sync.Mutex
	infos map[artifactKey]artifactInfo // guarded by mu
}

// inspect checks the local artifact file against the release: its size,
// and for a tar, that it is one, that every entry stays inside the release
// directory, and that it stays within lim. Only successes are cached.
func (c *artifactScans) inspect(file string, a *outpostv1.Artifact, lim tarscan.Limits) (artifactInfo, error) {
	f, err := os.Open(file)
	if err != nil {
		return artifactInfo{}, fmt.Errorf("artifact: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return artifactInfo{}, fmt.Errorf("artifact: %w", err)
	}
	if !st.Mode().IsRegular() {
		return artifactInfo{}, fmt.Errorf("artifact %s is not a regular file", file)
	}
	if st.Size() != a.GetSize() {
		return artifactInfo{}, fmt.Errorf("artifact %s is %d bytes, the release says %d", file, st.Size(), a.GetSize())
	}
	key := artifactKey{path: file, sha256: a.GetSha256(), size: st.Size(), modTime: st.ModTime(), unpack: a.GetUnpack(), limits: lim}
	c.mu.Lock()
	info, ok := c.infos[key]
	c.mu.Unlock()
	if ok {
		return info, nil
	}
	if a.GetUnpack() == outpostv1.Unpack_UNPACK_TAR {
		if info, err = scanTar(f, st.Size(), lim); err != nil {
			return artifactInfo{}, err
		}
	}
	c.mu.Lock()
	if c.infos == nil || len(c.infos) >= maxScanCache {
		c.infos = make(map[artifactKey]artifactInfo)
	}
	c.infos[key] = info
	c.mu.Unlock()
	return info, nil
}

// scanTar reads a whole tar (gzip-compressed or not) of size bytes and
// refuses entries that could escape the release directory when GNU tar
// extracts them: absolute names, ".." components, writes through a symlink
// the archive made, links whose target is absolute or outside, and
// anything that is not a file, directory or link (devices, fifos). It also
// refuses the names the deployer writes itself, and, through tarscan, an
// archive over lim: too large unpacked, too compressed, too many entries,
// or setuid and setgid bits lim does not allow.
func scanTar(r io.Reader, size int64, lim tarscan.Limits) (artifactInfo, error) {
	symlinks := map[string]bool{}
	sum, err := tarscan.Walk(r, size, lim, func(h *tar.Header) error { return checkEntry(h, symlinks) })
	info := artifactInfo{gzip: sum.Gzip, unpacked: sum.UnpackedBytes}
	switch {
	case err == nil, errors.As(err, new(*UnsafeArtifactError)):
	case errors.As(err, new(*tarscan.ModeError)):
		err = fmt.Errorf("artifact: %w unless the environment sets allow_setuid", err)
	default:
		err = fmt.Errorf("artifact: %w", err)
	}
	return info, err
}

// checkEntry applies scanTar's rules to one header; symlinks holds the
// cleaned names of the symlinks seen so far.
func checkEntry(h *tar.Header, symlinks map[string]bool) error {
	unsafe := func(reason string, args ...any) error {
		return &UnsafeArtifactError{Entry: h.Name, Reason: fmt.Sprintf(reason, args...)}
	}
	if h.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	name, err := entryPath(h.Name)
	if err != nil {
		return unsafe("%v", err)
	}
	if name == artifactFile || name == digestFile {
		return unsafe("the name is reserved for the deployer")
	}
	if p := symlinkPrefix(name, symlinks); p != "" {
		return unsafe("it is written through the symlink %q", p)
	}
	switch h.Typeflag {
	case tar.TypeReg, '\x00', tar.TypeDir:
		if name == "." && h.Typeflag != tar.TypeDir {
			return unsafe("not a directory at the release root")
		}
	case tar.TypeSymlink:
		if name == "." {
			return unsafe("a symlink at the release root")
		}
		if err := checkSymlinkTarget(name, h.Linkname, symlinks); err != nil {
			return unsafe("symlink to %q: %v", h.Linkname, err)
		}
		symlinks[name] = true
	case tar.TypeLink:
		target, err := entryPath(h.Linkname)
		if err != nil || target == "." {
			return unsafe("hard link to %q: must name a file inside the release", h.Linkname)
		}
		if p := symlinkPrefix(target, symlinks); p != "" || symlinks[target] {
			return unsafe("hard link to %q goes through a symlink", h.Linkname)
		}
	default:
		return unsafe("entry type %q is not a file, directory or link (device, fifo or unsupported)", string(h.Typeflag))
	}
	return nil
}

// entryPath returns name cleaned, refusing absolute names, ".."
// components, NUL and empty names.
func entryPath(name string) (string, error) {
	switch {
	case name == "":
		return "", errors.New("empty name")
	case strings.HasPrefix(name, "/"):
		return "", errors.New("absolute path")
	case strings.IndexByte(name, 0) >= 0:
		return "", errors.New("NUL in name")
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." {
			return "", errors.New("a .. component escapes the release directory")
		}
	}
	return path.Clean(name), nil
}

// symlinkPrefix returns the first proper parent of name that is a symlink
// from the archive, or "".
func symlinkPrefix(name string, symlinks map[string]bool) string {
	for i := 0; i < len(name); i++ {
		if name[i] == '/' && symlinks[name[:i]] {
			return name[:i]
		}
	}
	return ""
}

// checkSymlinkTarget walks target from the symlink's directory, refusing
// absolute targets, steps above the release root and steps through other
// symlinks (whose own targets would make the lexical walk meaningless).
func checkSymlinkTarget(name, target string, symlinks map[string]bool) error {
	switch {
	case target == "":
		return errors.New("empty target")
	case strings.HasPrefix(target, "/"):
		return errors.New("absolute target")
	case strings.IndexByte(target, 0) >= 0:
		return errors.New("NUL in target")
	}
	var cur []string
	if dir := path.Dir(name); dir != "." {
		cur = strings.Split(dir, "/")
	}
	parts := strings.Split(target, "/")
	for i, part := range parts {
		switch part {
		case "", ".":
		case "..":
			if len(cur) == 0 {
				return errors.New("target escapes the release directory")
			}
			cur = cur[:len(cur)-1]
		default:
			cur = append(cur, part)
			// A chain ending in a symlink (libfoo.so -> libfoo.so.1) is
			// fine: that symlink was checked on its own.
			if i < len(parts)-1 && symlinks[strings.Join(cur, "/")] {
				return errors.New("target goes through another symlink")
			}
		}
	}
	return nil
}
