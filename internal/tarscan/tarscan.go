// Package tarscan reads a tar artifact, gzip-compressed or not, and
// measures what unpacking it would write, refusing an archive that would
// write too much, hold too many entries, or carry setuid or setgid bits,
// before anything of it is unpacked.
//
// The control plane walks a tar artifact with it when a rollout is created,
// so that a plan is refused early and min_free_bytes "auto" is computed from
// the unpacked size; every gateway walks it again before it uploads to a
// node (a control plane may be compromised without the gateways being so).
// Both apply the same rules because both call Walk.
//
// Invariants:
//
//   - The work is bounded by the limits, not by the archive: sizes are
//     summed from the headers, before the entry's data is read, and the walk
//     stops at the first header over a limit. A header claiming a terabyte
//     costs nothing to refuse; decompressing stops once the sum passes
//     MaxUnpackedBytes or MaxRatio times the archive's size.
//   - The unpacked size is the sum of the sizes the data-carrying entries
//     declare (a sparse file counts its full length). Links, directories and
//     devices write no data whatever size their header claims, as GNU tar
//     and archive/tar agree.
package tarscan

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"math"
)

// Defaults applied by Limits.CheckAndSetDefaults.
const (
	// DefaultMaxUnpackedBytes bounds what one release may write: 8 GiB.
	DefaultMaxUnpackedBytes = 8 << 30
	// DefaultMaxRatio bounds unpacked size over archive size. Build
	// outputs compress 2 to 20 times; 200 is a bomb.
	DefaultMaxRatio = 200
	// DefaultRatioFloor is the unpacked size below which the ratio is not
	// checked, so that a small, very compressible artifact (a tar of text)
	// passes: 64 MiB.
	DefaultRatioFloor = 64 << 20
	// DefaultMaxEntries bounds the number of entries (inodes on the node).
	DefaultMaxEntries = 1_000_000
)

// Mode bits refused unless Limits.AllowSetuid.
const (
	modeSetuid = 0o4000
	modeSetgid = 0o2000
)

// Limits bound what an archive may unpack to.
type Limits struct {
	// MaxUnpackedBytes bounds the sum of the entries' sizes; zero means
	// DefaultMaxUnpackedBytes.
	MaxUnpackedBytes int64
	// MaxRatio bounds the unpacked size over the archive's size, once the
	// unpacked size passes RatioFloor; zero means DefaultMaxRatio.
	MaxRatio int64
	// RatioFloor is the unpacked size up to which the ratio is not
	// checked; zero means DefaultRatioFloor. Plans and environments leave
	// it at its default; tests lower it.
	RatioFloor int64
	// MaxEntries bounds the number of entries; zero means
	// DefaultMaxEntries. Plans and environments leave it at its default.
	MaxEntries int
	// AllowSetuid admits entries with the setuid or setgid bit; false
	// refuses them.
	AllowSetuid bool
}

// CheckAndSetDefaults validates l and fills in its defaults.
func (l *Limits) CheckAndSetDefaults() error {
	if l.MaxUnpackedBytes < 0 || l.MaxRatio < 0 || l.RatioFloor < 0 || l.MaxEntries < 0 {
		return fmt.Errorf("tar limits: negative value in %+v", *l)
	}
	if l.MaxUnpackedBytes == 0 {
		l.MaxUnpackedBytes = DefaultMaxUnpackedBytes
	}
	if l.MaxRatio == 0 {
		l.MaxRatio = DefaultMaxRatio
	}
	if l.RatioFloor == 0 {
		l.RatioFloor = DefaultRatioFloor
	}
	if l.MaxEntries == 0 {
		l.MaxEntries = DefaultMaxEntries
	}
	return nil
}

// Summary is what a walk measured.
type Summary struct {
	// Gzip reports whether the archive is gzip-compressed (by magic bytes).
	Gzip bool
	// Entries is the number of headers read, global headers included.
	Entries int
	// UnpackedBytes is the sum of the sizes the data-carrying entries
	// declare.
	UnpackedBytes int64
}

// Limit names the limit a TooLargeError is about.
type Limit int

// The limits of Limits.
const (
	LimitUnpackedBytes Limit = iota + 1
	LimitRatio
	LimitEntries
)

// TooLargeError reports an archive over one of its Limits. The figures are
// those at the entry where the walk stopped: the archive may hold more.
type TooLargeError struct {
	Limit Limit
	// Entry names the entry that crossed the limit.
	Entry string
	// Entries and UnpackedBytes are the counts up to and including Entry.
	Entries       int
	UnpackedBytes int64
	// ArchiveBytes is the archive's own size.
	ArchiveBytes int64
	// Limits are the limits applied, defaults filled in.
	Limits Limits
}

func (e *TooLargeError) Error() string {
	switch e.Limit {
	case LimitEntries:
		return fmt.Sprintf("the tar holds more than %d entries (the limit), counting to entry %q", e.Limits.MaxEntries, e.Entry)
	case LimitRatio:
		return fmt.Sprintf("the tar unpacks to at least %s by entry %q, %d times its own %s, over the limit of %d times (checked past %s unpacked): a compression bomb?",
			FormatBytes(e.UnpackedBytes), e.Entry, ratio(e.UnpackedBytes, e.ArchiveBytes), FormatBytes(e.ArchiveBytes),
			e.Limits.MaxRatio, FormatBytes(e.Limits.RatioFloor))
	default:
		return fmt.Sprintf("the tar unpacks to at least %s by entry %q, over the limit of %s on its unpacked size",
			FormatBytes(e.UnpackedBytes), e.Entry, FormatBytes(e.Limits.MaxUnpackedBytes))
	}
}

// ratio returns a/b rounded down, for messages; a/1 when b is 0.
func ratio(a, b int64) int64 {
	return a / max(b, 1)
}

// ModeError reports an entry with the setuid or setgid bit while Limits
// does not allow them.
type ModeError struct {
	Entry string
	// Mode is the entry's permission and mode bits, as in tar.Header.
	Mode int64
}

func (e *ModeError) Error() string {
	var bits []byte
	if e.Mode&modeSetuid != 0 {
		bits = append(bits, "setuid"...)
	}
	if e.Mode&modeSetgid != 0 {
		if len(bits) > 0 {
			bits = append(bits, " and "...)
		}
		bits = append(bits, "setgid"...)
	}
	return fmt.Sprintf("entry %q has mode %04o: the %s bit is not allowed", e.Entry, e.Mode&0o7777, bits)
}

var gzipMagic = []byte{0x1f, 0x8b}

// Walk reads the whole archive from r, which is archiveSize bytes long, and
// returns what it measured. It stops with a *TooLargeError at the first
// header that takes the archive over lim, with a *ModeError at the first
// entry with a setuid or setgid bit when lim does not allow them, with the
// error of each (which may be nil) when it refuses a header, and with an
// error when the archive is not a readable tar or has no entries. The
// Summary returned with an error counts what was read before it.
func Walk(r io.Reader, archiveSize int64, lim Limits, each func(*tar.Header) error) (Summary, error) {
	if err := lim.CheckAndSetDefaults(); err != nil {
		return Summary{}, err
	}
	br := bufio.NewReader(r)
	magic, _ := br.Peek(len(gzipMagic))
	sum := Summary{Gzip: bytes.Equal(magic, gzipMagic)}
	var src io.Reader = br
	if sum.Gzip {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return sum, fmt.Errorf("gzip: %w", err)
		}
		defer zr.Close()
		src = zr
	}
	tr := tar.NewReader(src)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return sum, fmt.Errorf("not a readable tar: %w", err)
		}
		if err := count(&sum, h, archiveSize, lim); err != nil {
			return sum, err
		}
		if each != nil {
			if err := each(h); err != nil {
				return sum, err
			}
		}
	}
	if sum.Entries == 0 {
		return sum, errors.New("the tar has no entries")
	}
	return sum, nil
}

// count adds h to sum, refusing it when that takes sum over lim.
func count(sum *Summary, h *tar.Header, archiveSize int64, lim Limits) error {
	tooLarge := func(l Limit) error {
		return &TooLargeError{Limit: l, Entry: h.Name, Entries: sum.Entries, UnpackedBytes: sum.UnpackedBytes, ArchiveBytes: archiveSize, Limits: lim}
	}
	sum.Entries++
	if sum.Entries > lim.MaxEntries {
		return tooLarge(LimitEntries)
	}
	if size := dataSize(h); size > 0 {
		if size > math.MaxInt64-sum.UnpackedBytes {
			sum.UnpackedBytes = math.MaxInt64
		} else {
			sum.UnpackedBytes += size
		}
	}
	if sum.UnpackedBytes > lim.MaxUnpackedBytes {
		return tooLarge(LimitUnpackedBytes)
	}
	// unpacked > ratio × archive, without overflowing the product.
	if sum.UnpackedBytes > lim.RatioFloor && sum.UnpackedBytes > mulSat(lim.MaxRatio, archiveSize) {
		return tooLarge(LimitRatio)
	}
	if !lim.AllowSetuid && h.Mode&(modeSetuid|modeSetgid) != 0 && !linkType(h.Typeflag) {
		return &ModeError{Entry: h.Name, Mode: h.Mode}
	}
	return nil
}

// mulSat returns a×b for non-negative a and b, or math.MaxInt64 when that
// overflows.
func mulSat(a, b int64) int64 {
	if a != 0 && b > math.MaxInt64/a {
		return math.MaxInt64
	}
	return a * b
}

// dataSize is the number of bytes h's entry writes when unpacked: its size,
// except for the types that carry no data whatever their size field says.
func dataSize(h *tar.Header) int64 {
	switch h.Typeflag {
	case tar.TypeLink, tar.TypeSymlink, tar.TypeChar, tar.TypeBlock, tar.TypeDir, tar.TypeFifo, tar.TypeXGlobalHeader:
		return 0
	}
	return h.Size
}

// linkType reports whether t is a link, whose mode bits tar does not apply.
func linkType(t byte) bool { return t == tar.TypeLink || t == tar.TypeSymlink }

// FormatBytes writes n for people and exactly: "8.0 GiB (8589934592 bytes)".
func FormatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d bytes", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB (%d bytes)", float64(n)/float64(div), "KMGTPE"[exp], n)
}
