// Package delta computes how to rebuild a new file from an old one the
// receiver already has, rsync style: the old file (the base) is cut into
// fixed blocks, each known by a rolling weak checksum and a strong hash;
// the new file (the target) is scanned byte by byte for those blocks. The
// result is a short list of pieces, each either a run of whole base blocks
// or a range of the target itself (the literal bytes to send).
//
// Pieces are built for a receiver with POSIX tools only: a run of base
// blocks is one `dd bs=BLOCK skip=N count=M`, because runs start and end
// on block boundaries; adjacent runs and adjacent literals are merged so
// the piece count stays small. The receiver's result is always verified by
// its SHA-256 elsewhere: a weak or strong hash collision here can only make
// that check fail, never pass a wrong file.
package delta

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"math"
)

// Block size bounds: small files get small blocks (more matches), large
// files larger ones (fewer signatures and pieces), about sqrt(size) as
// rsync chooses.
const (
	MinBlock = 1 << 10
	MaxBlock = 128 << 10
)

// BlockSize returns the block size for a base of size bytes: sqrt(size)
// rounded up to a multiple of 1 KiB, within [MinBlock, MaxBlock].
func BlockSize(size int64) int {
	b := int64(math.Sqrt(float64(max(size, 0))))
	b = (b + MinBlock - 1) / MinBlock * MinBlock
	return int(min(max(b, MinBlock), MaxBlock))
}

// Piece is one part of the target, in order.
type Piece struct {
	// FromBase: the bytes are base[Off:Off+Len], a run of whole blocks
	// (Off and Len are multiples of the block size). Otherwise they are
	// literal: target[Off:Off+Len], sent to the receiver.
	FromBase bool
	Off, Len int64
}

// Delta says how to rebuild a target from a base.
type Delta struct {
	BlockSize int
	Pieces    []Piece
	// TargetSize is the target's length; Literal how many of its bytes
	// are sent (the sum of the literal pieces' lengths).
	TargetSize, Literal int64
}

// Signature is what the sender knows of the base: its block hashes.
type Signature struct {
	blockSize int
	blocks    int64              // whole blocks of the base
	weak      map[uint32][]int32 // weak checksum -> block indexes
	strong    map[[16]byte]int32 // strong hash -> first block index
	filter    []uint64           // bit set of weak&filterMask, a fast "no"
}

const filterBits = 1 << 20

// maxBlocks bounds a signature (int32 block indexes): 2^31 blocks of at
// least 1 KiB is a 2 TiB base, far past anything deployed.
const maxBlocks = math.MaxInt32

// NewSignature reads the base from r (size bytes) with the given block
// size. A trailing partial block is not indexed: target bytes that match
// it are sent as literals.
func NewSignature(r io.Reader, size int64, blockSize int) (*Signature, error) {
	if blockSize < 1 {
		return nil, errors.New("delta: block size must be positive")
	}
	s := &Signature{
		blockSize: blockSize,
		blocks:    size / int64(blockSize),
		weak:      make(map[uint32][]int32),
		strong:    make(map[[16]byte]int32),
		filter:    make([]uint64, filterBits/64),
	}
	if s.blocks > maxBlocks {
		return nil, fmt.Errorf("delta: base of %d bytes has too many blocks", size)
	}
	buf := make([]byte, blockSize)
	for i := int64(0); i < s.blocks; i++ {
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, fmt.Errorf("delta: read base block %d: %w", i, err)
		}
		sum := strongSum(buf)
		if _, dup := s.strong[sum]; dup {
			continue
		}
		s.strong[sum] = int32(i)
		w := weakSum(buf)
		s.weak[w] = append(s.weak[w], int32(i))
		s.filter[(w%filterBits)/64] |= 1 << (w % 64)
	}
	return s, nil
}

func strongSum(b []byte) [16]byte {
	full := sha256.Sum256(b)
	var out [16]byte
	copy(out[:], full[:16])
	return out
}

// weakSum is rsync's checksum: a = sum of bytes, b = sum of a's prefix
// sums, both mod 2^16, as b<<16 | a.
func weakSum(p []byte) uint32 {
	var a, b uint32
	n := uint32(len(p))
	for i, c := range p {
		a += uint32(c)
		b += (n - uint32(i)) * uint32(c)
	}
	return (b&0xffff)<<16 | a&0xffff
}

// Compute finds the pieces that rebuild target from the base sig was
// made of.
func Compute(sig *Signature, target []byte) *Delta {
	d, _ := ComputeWithin(sig, target, Limits{})
	return d
}

// Limits stop a computation as soon as its delta could not be used, so
// that an artifact with little in common with the base costs the sender
// only part of a scan. A zero field is no limit.
type Limits struct {
	MaxLiteral int64 // more literal bytes than this
	MaxPieces  int   // more pieces than this
}

// Errors of ComputeWithin: the delta passed a limit.
var (
	ErrTooLarge      = errors.New("delta: more literal bytes than the limit")
	ErrTooFragmented = errors.New("delta: more pieces than the limit")
)

// LimitError is ComputeWithin's error: which limit the delta passed
// (errors.Is ErrTooLarge or ErrTooFragmented) and how many bytes of the
// target had been scanned when it stopped.
type LimitError struct {
	Err             error
	Scanned, Target int64
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("%v (stopped after %d of %d target bytes)", e.Err, e.Scanned, e.Target)
}

func (e *LimitError) Unwrap() error { return e.Err }

// literalCheck is how many literal bytes the scan passes between checks
// of Limits.MaxLiteral: often enough to stop within a fraction of a
// percent of a large target, rarely enough to cost nothing.
const literalCheck = 64 << 10

// ComputeWithin is Compute that gives up, returning a *LimitError and no
// delta, once the delta passes lim.
func ComputeWithin(sig *Signature, target []byte, lim Limits) (*Delta, error) {
	bs := sig.blockSize
	d := &Delta{BlockSize: bs, TargetSize: int64(len(target))}
	maxLit, maxPieces := lim.MaxLiteral, lim.MaxPieces
	if maxLit <= 0 {
		maxLit = math.MaxInt64
	}
	if maxPieces <= 0 {
		maxPieces = math.MaxInt
	}
	stop := func(err error, at int) (*Delta, error) {
		return nil, &LimitError{Err: err, Scanned: int64(at), Target: int64(len(target))}
	}
	lit := 0 // start of the pending literal
	if sig.blocks > 0 && len(target) >= bs {
		n := uint32(bs)
		var a, b uint32
		for j, c := range target[:bs] {
			a += uint32(c)
			b += (n - uint32(j)) * uint32(c)
		}
		i := 0
		for {
			w := (b&0xffff)<<16 | a&0xffff
			if sig.filter[(w%filterBits)/64]&(1<<(w%64)) != 0 {
				if idx, ok := sig.match(w, target[i:i+bs]); ok {
					d.add(Piece{Off: int64(lit), Len: int64(i - lit)})
					d.add(Piece{FromBase: true, Off: int64(idx) * int64(bs), Len: int64(bs)})
					if len(d.Pieces) > maxPieces {
						return stop(ErrTooFragmented, i+bs)
					}
					i += bs
					lit = i
					if i+bs > len(target) {
						break
					}
					a, b = 0, 0
					for j, c := range target[i : i+bs] {
						a += uint32(c)
						b += (n - uint32(j)) * uint32(c)
					}
					continue
				}
			}
			if i+bs >= len(target) {
				break
			}
			out, in := uint32(target[i]), uint32(target[i+bs])
			a = a - out + in
			b = b - n*out + a
			i++
			if i%literalCheck == 0 && d.Literal+int64(i-lit) > maxLit {
				return stop(ErrTooLarge, i)
			}
		}
	}
	d.add(Piece{Off: int64(lit), Len: int64(len(target) - lit)})
	switch {
	case d.Literal > maxLit:
		return stop(ErrTooLarge, len(target))
	case len(d.Pieces) > maxPieces:
		return stop(ErrTooFragmented, len(target))
	}
	return d, nil
}

func (s *Signature) match(w uint32, block []byte) (int32, bool) {
	cands, ok := s.weak[w]
	if !ok {
		return 0, false
	}
	sum := strongSum(block)
	idx, ok := s.strong[sum]
	if !ok {
		return 0, false
	}
	// The strong hash names the block; the weak one must agree.
	for _, c := range cands {
		if c == idx {
			return idx, true
		}
	}
	// Same content under another weak-sum bucket cannot happen (the weak
	// sum is a function of the content); a strong-hash collision can.
	return 0, false
}

// add appends p, merging it into the last piece when they continue each
// other (a literal after a literal, or base blocks right after the
// previous run). Empty pieces are dropped.
func (d *Delta) add(p Piece) {
	if p.Len == 0 {
		return
	}
	if !p.FromBase {
		d.Literal += p.Len
	}
	if n := len(d.Pieces); n > 0 {
		last := &d.Pieces[n-1]
		if last.FromBase == p.FromBase && last.Off+last.Len == p.Off {
			last.Len += p.Len
			return
		}
	}
	d.Pieces = append(d.Pieces, p)
}

// Payload returns the literal bytes to send, in piece order, read from
// target (the new file).
func (d *Delta) Payload(target io.ReaderAt) io.Reader {
	var rs []io.Reader
	for _, p := range d.Pieces {
		if !p.FromBase {
			rs = append(rs, io.NewSectionReader(target, p.Off, p.Len))
		}
	}
	return io.MultiReader(rs...)
}

// Apply rebuilds the target from base and the payload, as the receiver's
// script does. It is the reference the script is tested against.
func (d *Delta) Apply(base io.ReaderAt, payload io.Reader, w io.Writer) error {
	for i, p := range d.Pieces {
		var err error
		if p.FromBase {
			if p.Off%int64(d.BlockSize) != 0 || p.Len%int64(d.BlockSize) != 0 {
				return fmt.Errorf("delta: piece %d is not block aligned", i)
			}
			_, err = io.Copy(w, io.NewSectionReader(base, p.Off, p.Len))
		} else {
			_, err = io.CopyN(w, payload, p.Len)
		}
		if err != nil {
			return fmt.Errorf("delta: piece %d: %w", i, err)
		}
	}
	return nil
}

// Rebuild is Apply into memory, for tests and fuzzing.
func (d *Delta) Rebuild(base []byte, payload []byte) ([]byte, error) {
	var out bytes.Buffer
	err := d.Apply(bytes.NewReader(base), bytes.NewReader(payload), &out)
	return out.Bytes(), err
}
