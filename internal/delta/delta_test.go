package delta

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

func compute(t testing.TB, base, target []byte, bs int) *Delta {
	t.Helper()
	sig, err := NewSignature(bytes.NewReader(base), int64(len(base)), bs)
	if err != nil {
		t.Fatal(err)
	}
	return Compute(sig, target)
}

// roundTrip checks that the delta rebuilds target exactly, that its
// pieces are block aligned, merged and account for every byte.
func roundTrip(t testing.TB, base, target []byte, bs int) *Delta {
	t.Helper()
	d := compute(t, base, target, bs)
	var payload bytes.Buffer
	if _, err := payload.ReadFrom(d.Payload(bytes.NewReader(target))); err != nil {
		t.Fatal(err)
	}
	if int64(payload.Len()) != d.Literal {
		t.Fatalf("payload %d bytes, Literal says %d", payload.Len(), d.Literal)
	}
	got, err := d.Rebuild(base, payload.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, target) {
		t.Fatalf("rebuilt %d bytes differ from the target's %d", len(got), len(target))
	}
	var total int64
	for i, p := range d.Pieces {
		total += p.Len
		if p.Len <= 0 {
			t.Fatalf("piece %d is empty", i)
		}
		if p.FromBase && (p.Off%int64(bs) != 0 || p.Len%int64(bs) != 0 || p.Off+p.Len > int64(len(base))) {
			t.Fatalf("piece %d %+v is not whole base blocks", i, p)
		}
		if i > 0 {
			q := d.Pieces[i-1]
			if q.FromBase == p.FromBase && q.Off+q.Len == p.Off {
				t.Fatalf("pieces %d and %d were not merged", i-1, i)
			}
		}
	}
	if total != int64(len(target)) {
		t.Fatalf("pieces cover %d bytes, target has %d", total, len(target))
	}
	return d
}

func random(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestIdenticalIsOneCopyAndATail(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	base := random(r, 100*1024+123)
	d := roundTrip(t, base, base, 1024)
	if len(d.Pieces) != 2 || !d.Pieces[0].FromBase || d.Literal != 123 {
		t.Fatalf("identical file: %d pieces, %d literal bytes; want 1 run of blocks and the 123-byte tail", len(d.Pieces), d.Literal)
	}
}

func TestInsertionShiftsButMatches(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	base := random(r, 256*1024)
	target := append(append(append([]byte{}, base[:50000]...), []byte("inserted bytes that shift the rest")...), base[50000:]...)
	target = append(target[:200000:200000], append(random(r, 300), target[200300:]...)...)
	d := roundTrip(t, base, target, 1024)
	if d.Literal > 4*1024 {
		t.Fatalf("sent %d literal bytes for two small edits with 1 KiB blocks", d.Literal)
	}
	if len(d.Pieces) > 7 {
		t.Fatalf("%d pieces for two edits", len(d.Pieces))
	}
}

func TestNothingInCommonIsAllLiteral(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	d := roundTrip(t, random(r, 64*1024), random(r, 64*1024), 1024)
	if d.Literal != 64*1024 || len(d.Pieces) != 1 {
		t.Fatalf("unrelated files: %d literal bytes in %d pieces", d.Literal, len(d.Pieces))
	}
}

func TestEdgeSizes(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	base := random(r, 4096)
	for _, c := range []struct {
		name         string
		base, target []byte
	}{
		{"empty both", nil, nil},
		{"empty base", nil, base},
		{"empty target", base, nil},
		{"target shorter than a block", base, base[:100]},
		{"target one block", base, base[1024:2048]},
		{"base shorter than a block", base[:100], base},
		{"repeated blocks", bytes.Repeat([]byte{0}, 8192), bytes.Repeat([]byte{0}, 9000)},
	} {
		t.Run(c.name, func(t *testing.T) { roundTrip(t, c.base, c.target, 1024) })
	}
}

func TestBlockSize(t *testing.T) {
	for _, c := range []struct {
		size int64
		want int
	}{{-1, MinBlock}, {0, MinBlock}, {1 << 20, MinBlock}, {200 << 20, 15 << 10}, {1 << 40, MaxBlock}} {
		if got := BlockSize(c.size); got != c.want {
			t.Errorf("BlockSize(%d) = %d, want %d", c.size, got, c.want)
		}
	}
}

func TestBadSignature(t *testing.T) {
	if _, err := NewSignature(bytes.NewReader(nil), 0, 0); err == nil {
		t.Fatal("block size 0 accepted")
	}
	if _, err := NewSignature(bytes.NewReader([]byte("short")), 4096, 1024); err == nil {
		t.Fatal("a base shorter than its size accepted")
	}
}

func TestApplyRefusesUnalignedPiece(t *testing.T) {
	d := &Delta{BlockSize: 4, Pieces: []Piece{{FromBase: true, Off: 1, Len: 4}}}
	if _, err := d.Rebuild([]byte("0123456789"), nil); err == nil {
		t.Fatal("unaligned base piece applied")
	}
}

// FuzzDelta: any base and any edit of it rebuild exactly.
func FuzzDelta(f *testing.F) {
	f.Add([]byte("hello, world, hello, world, hello"), []byte("hello, there, world"), uint8(0))
	f.Add([]byte{}, []byte("x"), uint8(3))
	f.Fuzz(func(t *testing.T, base, edit []byte, shift uint8) {
		// Targets that share much with the base exercise matching: the
		// base with edit spliced in at a place shift picks.
		at := 0
		if len(base) > 0 {
			at = int(shift) * len(base) / 256
		}
		target := append(append(append([]byte{}, base[:at]...), edit...), base[at:]...)
		for _, bs := range []int{1, 3, 16} {
			roundTrip(t, base, target, bs)
			roundTrip(t, base, edit, bs)
		}
	})
}

// TestComputeWithinStopsEarly: an unrelated target stops the scan soon
// after its literal bytes pass the limit, not at its end.
func TestComputeWithinStopsEarly(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	const size = 4 << 20
	base, target := random(r, size), random(r, size)
	sig, err := NewSignature(bytes.NewReader(base), size, 4096)
	if err != nil {
		t.Fatal(err)
	}
	d, err := ComputeWithin(sig, target, Limits{MaxLiteral: size / 4})
	var le *LimitError
	if d != nil || !errors.Is(err, ErrTooLarge) || !errors.As(err, &le) {
		t.Fatalf("ComputeWithin = %v, %v; want no delta and ErrTooLarge", d, err)
	}
	if le.Scanned > size/4+literalCheck || le.Target != size {
		t.Errorf("stopped after %d of %d bytes, want at most %d (a quarter and one check)", le.Scanned, le.Target, size/4+literalCheck)
	}
	// Within the limit, the same delta as Compute.
	if d, err := ComputeWithin(sig, target, Limits{MaxLiteral: size}); err != nil || d.Literal != size {
		t.Errorf("at a limit of the whole target: %v, %v", d, err)
	}
}

// TestComputeWithinPieces: a fragmented delta stops at the piece limit;
// one with exactly as many pieces as allowed passes.
func TestComputeWithinPieces(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	base := random(r, 64*1024)
	target := append([]byte{}, base...)
	for i := 0; i < len(target); i += 4096 { // one changed byte every 4 blocks
		target[i] ^= 0xff
	}
	full := roundTrip(t, base, target, 1024)
	sig, err := NewSignature(bytes.NewReader(base), int64(len(base)), 1024)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ComputeWithin(sig, target, Limits{MaxPieces: len(full.Pieces) - 1}); !errors.Is(err, ErrTooFragmented) {
		t.Errorf("with one piece fewer than needed: %v, want ErrTooFragmented", err)
	}
	d, err := ComputeWithin(sig, target, Limits{MaxPieces: len(full.Pieces), MaxLiteral: full.Literal})
	if err != nil || len(d.Pieces) != len(full.Pieces) || d.Literal != full.Literal {
		t.Errorf("at exactly the delta's size: %v, %v", d, err)
	}
}
