package deployer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/outposthq/outpost/internal/ctxio"
	"github.com/outposthq/outpost/internal/delta"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// A delta upload sends only the bytes of the new artifact that the node's
// current release lacks, then rebuilds the artifact on the node with dd,
// tail and head in one script, and checks its SHA-256 there. Any failure
// of the rebuild falls back to the full upload; the activation's verify
// step checks the file again either way.
const (
	deltaFile = ".outpost-delta" // the uploaded literal bytes, removed by the rebuild

	// MinDeltaSize: smaller artifacts are sent whole; the rebuild's round
	// trip costs more than their bytes.
	MinDeltaSize = 64 << 10
	// MaxDeltaSize: larger artifacts are sent whole. The gateway holds
	// the new artifact in memory while it computes a delta.
	MaxDeltaSize = 2 << 30
	// MaxDeltaPieces bounds the rebuild script's commands; a more
	// fragmented delta is sent whole.
	MaxDeltaPieces = 512
	// maxDeltaShare: a delta whose literal bytes exceed this share of the
	// artifact is sent whole (the rebuild would save little).
	maxDeltaShare = 0.5

	exitRebuild  = 72 // the rebuild's commands failed
	exitMismatch = 73 // the rebuilt file's SHA-256 is wrong; it follows on stdout
)

// Upload modes for Config.OnUpload and the upload step's detail.
const (
	UploadDelta = "delta"
	UploadFull  = "full"
)

// deltaCache keeps the last deltas computed, so that the nodes of a
// rollout, which mostly hold the same previous release, share one
// computation. Computations run one at a time. A delta that passed the
// limits (too large or too fragmented to be worth it) is remembered as
// such: its computation stopped there.
//
// It also keeps the signatures of the last artifacts deployed, by digest:
// a rollout's artifact is the next rollout's base, so its signature is
// computed in the background while it is deployed (warm), and the next
// delta starts with the target's scan.
type deltaCache struct {
	mu     sync.Mutex
	byPair map[string]deltaOutcome // base digest + " " + target digest
	order  []string

	sigMu    sync.Mutex
	sigs     map[string]*sigEntry // artifact digest
	sigOrder []string

	// The background computations warm starts; stop cancels them and
	// waits for them. After stop, warm starts none.
	warmMu     sync.Mutex
	warmOne    sync.Mutex // held by the one computation that runs
	warmCtx    context.Context
	cancelWarm context.CancelFunc
	stopped    bool
	warms      sync.WaitGroup
}

// sigEntry is one artifact's signature; done is closed once sig or err
// is set.
type sigEntry struct {
	done chan struct{}
	sig  *delta.Signature
	err  error
}

// deltaOutcome is a computed delta, or why none is sent.
type deltaOutcome struct {
	d   *delta.Delta
	why string
}

const deltaCacheSize = 8

// get returns the delta from the base file to the target file, computing
// it on a miss, or why the full artifact is sent instead.
func (c *deltaCache) get(basePath, baseDigest, targetPath, targetDigest string) (deltaOutcome, error) {
	key := baseDigest + " " + targetDigest
	c.mu.Lock()
	defer c.mu.Unlock()
	if o, ok := c.byPair[key]; ok {
		return o, nil
	}
	o, err := c.computeDelta(basePath, baseDigest, targetPath)
	if err != nil {
		return deltaOutcome{}, err
	}
	if c.byPair == nil {
		c.byPair = make(map[string]deltaOutcome)
	}
	if len(c.order) == deltaCacheSize {
		delete(c.byPair, c.order[0])
		c.order = c.order[1:]
	}
	c.byPair[key] = o
	c.order = append(c.order, key)
	return o, nil
}

// signature returns the signature of the artifact with the given digest
// at p, computing it once: concurrent callers wait for the first. A
// failed computation is forgotten, so that a later call tries again.
func (c *deltaCache) signature(p, digest string) (*delta.Signature, error) {
	e, start := c.sigEntry(digest)
	if start {
		c.fillSignature(context.Background(), e, p, digest)
	}
	<-e.done
	return e.sig, e.err
}

// warm starts computing the signature of the artifact at p in the
// background, unless it is known or under way. Computations run one at a
// time; a cancelled one waiting for its turn ends at its first read.
func (c *deltaCache) warm(p, digest string) {
	c.warmMu.Lock()
	defer c.warmMu.Unlock()
	if c.stopped {
		return
	}
	if c.warmCtx == nil {
		c.warmCtx, c.cancelWarm = context.WithCancel(context.Background())
	}
	if e, start := c.sigEntry(digest); start {
		c.warms.Add(1)
		go func(ctx context.Context) {
			defer c.warms.Done()
			// One at a time: a gateway deploying many artifacts at once
			// reads them one after the other, not all together.
			c.warmOne.Lock()
			defer c.warmOne.Unlock()
			c.fillSignature(ctx, e, p, digest)
		}(c.warmCtx)
	}
}

// stop cancels the background computations and waits for them to end. A
// cancelled one is forgotten, like any failed one.
func (c *deltaCache) stop() {
	c.warmMu.Lock()
	c.stopped = true
	if c.cancelWarm != nil {
		c.cancelWarm()
	}
	c.warmMu.Unlock()
	c.warms.Wait()
}

// sigEntry returns digest's entry, and whether the caller must fill it
// (a new one).
func (c *deltaCache) sigEntry(digest string) (*sigEntry, bool) {
	c.sigMu.Lock()
	defer c.sigMu.Unlock()
	if e, ok := c.sigs[digest]; ok {
		return e, false
	}
	if c.sigs == nil {
		c.sigs = make(map[string]*sigEntry)
	}
	if len(c.sigOrder) == deltaCacheSize {
		delete(c.sigs, c.sigOrder[0])
		c.sigOrder = c.sigOrder[1:]
	}
	e := &sigEntry{done: make(chan struct{})}
	c.sigs[digest] = e
	c.sigOrder = append(c.sigOrder, digest)
	return e, true
}

func (c *deltaCache) fillSignature(ctx context.Context, e *sigEntry, p, digest string) {
	e.sig, e.err = readSignature(ctx, p)
	if e.err != nil {
		c.sigMu.Lock()
		if c.sigs[digest] == e {
			delete(c.sigs, digest)
			c.sigOrder = slices.DeleteFunc(c.sigOrder, func(d string) bool { return d == digest })
		}
		c.sigMu.Unlock()
	}
	close(e.done)
}

// readSignature computes the signature of the file at p; it stops with
// ctx's error when ctx ends.
func readSignature(ctx context.Context, p string) (*delta.Signature, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	return delta.NewSignature(bufio.NewReaderSize(ctxio.Reader(ctx, f), 1<<20), fi.Size(), delta.BlockSize(fi.Size()))
}

// computeDelta computes the delta within the limits a delta upload
// accepts: the scan of an artifact with little in common with the base
// stops once it passes them, so that a full upload starts soon. The
// target is read while the base's signature is computed (or found). It is
// read, not mapped: a cached file truncated under a mapping would crash
// the gateway; a read of it fails, and the full upload follows.
func (c *deltaCache) computeDelta(basePath, baseDigest, targetPath string) (deltaOutcome, error) {
	c.warm(basePath, baseDigest)
	target, err := os.ReadFile(targetPath)
	if err != nil {
		return deltaOutcome{}, err
	}
	sig, err := c.signature(basePath, baseDigest)
	if err != nil {
		return deltaOutcome{}, err
	}
	size := int64(len(target))
	d, err := delta.ComputeWithin(sig, target, delta.Limits{
		MaxLiteral: int64(maxDeltaShare * float64(size)),
		MaxPieces:  MaxDeltaPieces,
	})
	var le *delta.LimitError
	switch {
	case errors.Is(err, delta.ErrTooFragmented) && errors.As(err, &le):
		return deltaOutcome{why: fmt.Sprintf("delta too fragmented (more than %d pieces within the first %s of %s)",
			MaxDeltaPieces, bytesIEC(le.Scanned), bytesIEC(size))}, nil
	case errors.Is(err, delta.ErrTooLarge) && errors.As(err, &le):
		return deltaOutcome{why: fmt.Sprintf("delta too large (over %.0f%% of %s within the first %s)",
			100*maxDeltaShare, bytesIEC(size), bytesIEC(le.Scanned))}, nil
	case err != nil:
		return deltaOutcome{}, err
	}
	return deltaOutcome{d: d}, nil
}

// planDelta returns the delta to send, or why the full artifact is sent.
func (dep *deployment) planDelta() (*delta.Delta, string) {
	a := dep.job.Release.GetArtifact()
	base := dep.facts.baseDigest
	sized := a.GetSize() >= MinDeltaSize && a.GetSize() <= MaxDeltaSize
	if sized && dep.job.ArtifactPath != "" {
		// This artifact is likely the base of the next rollout.
		dep.d.deltas.warm(dep.job.ArtifactPath, a.GetSha256())
	}
	switch {
	case base == "" || releaseOf(dep.facts.current) == "":
		return nil, "no previous artifact on the node"
	case a.GetSize() < MinDeltaSize:
		return nil, "artifact smaller than " + bytesIEC(MinDeltaSize)
	case a.GetSize() > MaxDeltaSize:
		return nil, "artifact larger than " + bytesIEC(MaxDeltaSize)
	case dep.job.Base == nil:
		return nil, "no artifact cache"
	}
	basePath, ok := dep.job.Base(base)
	if !ok {
		return nil, "the node's artifact " + base[:12] + " is not in the gateway's cache"
	}
	o, err := dep.d.deltas.get(basePath, base, dep.job.ArtifactPath, a.GetSha256())
	if err != nil {
		dep.log.Warn("computing a delta failed; sending the full artifact", "err", err)
		return nil, "computing the delta failed"
	}
	return o.d, o.why
}

// uploadDelta sends d's literal bytes and rebuilds the artifact on the
// node. ok reports a verified rebuild; otherwise fallback says why, and
// err is a failure that ends the deployment (the connection or ctx).
func (dep *deployment) uploadDelta(ctx context.Context, d *delta.Delta) (detail, fallback string, err error) {
	target, err := os.Open(dep.job.ArtifactPath)
	if err != nil {
		return "", "", fmt.Errorf("upload: %w", err)
	}
	defer target.Close()
	start := time.Now()
	remote := path.Join(dep.partialDir(), deltaFile)
	res, err := dep.remote.Upload(ctx, d.Payload(target), remote, 0o600)
	if err != nil {
		if ctx.Err() == nil {
			dep.broken = true
		}
		return "", "", err
	}
	dep.onUpload(UploadDelta, res.Bytes, false)
	if res.Bytes != d.Literal {
		return "", "", fmt.Errorf("upload %s: sent %d bytes, the delta has %d (did the file change?)", remote, res.Bytes, d.Literal)
	}
	out, err := dep.exec(ctx, dep.rebuildScript(d))
	if err != nil {
		return "", "", fmt.Errorf("rebuild from delta: %w", err)
	}
	switch out.ExitCode {
	case 0:
	case exitMismatch:
		return "", fmt.Sprintf("the rebuilt file did not verify (sha256 %s)", strings.TrimSpace(string(out.Stdout))), nil
	default:
		return "", fmt.Sprintf("the rebuild failed: %s", tail(strings.TrimSpace(string(out.Stderr)), 512)), nil
	}
	a := dep.job.Release.GetArtifact()
	dep.sentSHA256 = a.GetSha256()
	dep.rebuiltOK = true
	return fmt.Sprintf("delta: sent %s of %s (%.1f%%) in %d pieces, rebuilt from release %s in %v",
		bytesIEC(res.Bytes), bytesIEC(a.GetSize()), 100*float64(res.Bytes)/float64(max(a.GetSize(), 1)),
		len(d.Pieces), releaseOf(dep.facts.current), time.Since(start).Round(time.Millisecond)), "", nil
}

// rebuildScript writes the artifact into the partial release from the
// current release's file and the uploaded literal bytes: one dd per run
// of base blocks, one dd per literal reading on from where the previous
// literal ended (file descriptor 3, open on the uploaded bytes), then
// checks the SHA-256. The
// uploaded bytes are removed whatever happens; a file that failed the
// check is removed too.
func (dep *deployment) rebuildScript(d *delta.Delta) string {
	a := dep.job.Release.GetArtifact()
	var s script
	s.set("P", dep.dir)
	s.set("I", dep.job.Release.GetId())
	s.set("J", releaseOf(dep.facts.current))
	s.set("F", dep.uploadName())
	s.set("S", a.GetSha256())
	s.line(`T="$P/releases/$I.partial"; D="$T/` + deltaFile + `"; O="$T/$F"; B="$P/releases/$J/$F"`)
	s.line(`{`)
	for _, p := range d.Pieces {
		if p.FromBase {
			ddRun(&s, int64(d.BlockSize), p.Off/int64(d.BlockSize), p.Len/int64(d.BlockSize))
			continue
		}
		ddLiteral(&s, p.Len)
	}
	s.line(`:; } 3<"$D" >"$O"; r=$?; rm -f -- "$D"`)
	s.line(`[ "$r" = 0 ] || { rm -f -- "$O"; exit ` + strconv.Itoa(exitRebuild) + `; }`)
	if a.GetUnpack() == outpostv1.Unpack_UNPACK_NONE {
		s.line(`chmod 755 -- "$O" || exit ` + strconv.Itoa(exitRebuild))
	}
	s.line(digestCmd(`"$O"`, `exit `+strconv.Itoa(exitRebuild)))
	s.line(`s=${s%% *}; [ "$s" = "$S" ] || { rm -f -- "$O"; echo "$s"; exit ` + strconv.Itoa(exitMismatch) + `; }`)
	return s.String()
}

// ddChunk is about the size of the reads that copy the long runs of base
// blocks: dd's cost is mostly per read, and a delta's block is small
// (about √size, 14 KiB for a 200 MB artifact), which made dd cost the
// node twice the system time of large reads.
const ddChunk = 1 << 20

// ddRun appends the dd commands that copy base blocks [first,
// first+count) of bs bytes to the script's output: one dd for a short run;
// for a long one, one with large reads (groups of blocks, aligned on the
// group) between at most two with block-sized ones for the blocks before
// and after the groups. POSIX dd counts skip and count in its bs, so a
// run that does not start or end on a group boundary needs those two.
func ddRun(s *script, bs, first, count int64) {
	dd := func(bs, skip, count int64) {
		if count > 0 {
			s.line(`dd if="$B" bs=` + strconv.FormatInt(bs, 10) + ` skip=` + strconv.FormatInt(skip, 10) +
				` count=` + strconv.FormatInt(count, 10) + ` 2>/dev/null &&`)
		}
	}
	group := ddChunk / bs
	if group < 2 || count < 4*group {
		dd(bs, first, count)
		return
	}
	head := (group - first%group) % group
	groups := (count - head) / group
	dd(bs, first, head)
	dd(bs*group, (first+head)/group, groups)
	dd(bs, first+head+groups*group, count-head-groups*group)
}

// ddLiteral appends the dd commands that copy the next n bytes of the
// uploaded literals (file descriptor 3) to the script's output: one
// command per literal, and a second one for the rest when n is over
// ddChunk, so that no dd holds a buffer larger than ddChunk. dd reads a
// regular file in full blocks, so each leaves the offset right after its
// bytes for the next; a short read would show in the SHA-256 check.
func ddLiteral(s *script, n int64) {
	dd := func(bs, count int64) {
		if bs > 0 && count > 0 {
			s.line(`dd bs=` + strconv.FormatInt(bs, 10) + ` count=` + strconv.FormatInt(count, 10) + ` <&3 2>/dev/null &&`)
		}
	}
	if n <= ddChunk {
		dd(n, 1)
		return
	}
	dd(ddChunk, n/ddChunk)
	dd(n%ddChunk, 1)
}

func (dep *deployment) onUpload(mode string, n int64, rebuildFailed bool) {
	if f := dep.d.cfg.OnUpload; f != nil {
		f(mode, n, rebuildFailed)
	}
}
