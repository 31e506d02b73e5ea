package audit

import (
	"bytes"
	"context"
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/internal/auditchain"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Defaults for Config.
const (
	DefaultRetention     = 90 * 24 * time.Hour
	DefaultSweepInterval = time.Hour
	DefaultBatchDelay    = 50 * time.Millisecond
	DefaultQueueSize     = 10000
	// DefaultCheckpointInterval and DefaultCheckpointEvery: a checkpoint
	// is signed this often, or after this many entries, whichever comes
	// first.
	DefaultCheckpointInterval = 10 * time.Minute
	DefaultCheckpointEvery    = 5000
	// DefaultReplicaName is the actor of system entries when Config has none.
	DefaultReplicaName = "controlplane"
)

const (
	// maxBatch and maxBatchBytes bound one append transaction, well under
	// etcd's limits (store.MaxTxnOps, 1.5 MiB requests).
	maxBatch      = 64
	maxBatchBytes = 512 << 10
	// writeTimeout bounds one background write so a stuck etcd cannot hold
	// the writer forever.
	writeTimeout = 10 * time.Second
	// maxRetryDelay caps the backoff after failed background writes.
	maxRetryDelay = 2 * time.Second
	// casAttempts bounds retries of one batch that keeps losing the race
	// for the head to other replicas before it counts as a failed write.
	casAttempts = 20
	// lostLogEvery rate-limits the "audit entry not recorded" error.
	lostLogEvery = 10 * time.Second
)

// ErrClosed is returned by Append and Enqueue after Close.
var ErrClosed = errors.New("audit log closed")

// marshal encodes deterministically (details is a map), so a batch's bytes
// can be compared with what etcd holds after an uncertain write.
var marshal = proto.MarshalOptions{Deterministic: true}

// Config configures a Log.
type Config struct {
	// Store is the etcd store (required).
	Store *store.Store
	// Retention is how long entries are kept; 0 means DefaultRetention.
	Retention time.Duration
	// SweepInterval is how often the janitor deletes expired entries; 0
	// means DefaultSweepInterval.
	SweepInterval time.Duration
	// BatchDelay is how long an entry that nobody waits for (an engine
	// entry) waits for company before it is written; 0 means
	// DefaultBatchDelay. Entries that a caller waits for are written at once.
	BatchDelay time.Duration
	// QueueSize bounds the entries waiting to be written; 0 means
	// DefaultQueueSize. When it is full, Append and Enqueue wait for
	// space (back-pressure): nothing is dropped.
	QueueSize int
	// Identity names the caller of an API call; nil means PeerIdentity (the
	// verified TLS client certificate).
	Identity IdentityFunc
	// ReplicaName is the actor of entries the control plane itself makes
	// (rollout state changes); "" means DefaultReplicaName.
	ReplicaName string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Logger; nil means slog.Default().
	Logger *slog.Logger
	// Metrics; nil means no metrics.
	Metrics *Metrics
	// Signer signs the hash chain's checkpoints (the control plane's CA
	// key, held in memory only); nil means no checkpoints are signed (the
	// entries are still chained).
	Signer crypto.Signer
	// CheckpointInterval is how often a checkpoint is signed when entries
	// were added; 0 means DefaultCheckpointInterval.
	CheckpointInterval time.Duration
	// CheckpointEvery signs a checkpoint sooner, once this many entries
	// were written since the last; 0 means DefaultCheckpointEvery.
	CheckpointEvery int64
}

// CheckAndSetDefaults validates the config and fills in defaults.
func (c *Config) CheckAndSetDefaults() error {
	switch {
	case c.Store == nil:
		return errors.New("audit: Store is required")
	case c.Retention < 0, c.SweepInterval < 0, c.BatchDelay < 0:
		return errors.New("audit: negative Retention, SweepInterval or BatchDelay")
	case c.CheckpointInterval < 0, c.CheckpointEvery < 0:
		return errors.New("audit: negative CheckpointInterval or CheckpointEvery")
	case c.QueueSize < 0:
		return fmt.Errorf("audit: negative QueueSize %d", c.QueueSize)
	}
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	if c.SweepInterval == 0 {
		c.SweepInterval = DefaultSweepInterval
	}
	if c.BatchDelay == 0 {
		c.BatchDelay = DefaultBatchDelay
	}
	if c.CheckpointInterval == 0 {
		c.CheckpointInterval = DefaultCheckpointInterval
	}
	if c.CheckpointEvery == 0 {
		c.CheckpointEvery = DefaultCheckpointEvery
	}
	if c.QueueSize == 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.Identity == nil {
		c.Identity = PeerIdentity
	}
	if c.ReplicaName == "" {
		c.ReplicaName = DefaultReplicaName
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// item is one queued entry.
type item struct {
	e  *outpostv1.AuditEntry // owned by the writer once queued
	at time.Time             // when it was queued: the entry's time unless the head is later
	// done receives the write's outcome; nil when nobody waits (Enqueue).
	done chan error
}

// head is the newest entry in etcd as this writer last saw it.
type head struct {
	valid bool
	key   string // "" when the log is empty
	seq   int64
	time  time.Time
	rev   int64  // etcd revision at which the head was seen
	hash  []byte // the head entry's hash; nil when the log is empty or it has none
}

// uncertain is a batch whose write failed without saying whether it
// landed.
type uncertain struct {
	key   string // key of its first entry
	value []byte // that entry's bytes
	n     int    // entries in the batch
}

// Log appends audit entries to etcd and reads them back. It is safe for
// concurrent use. It owns two goroutines (the writer and the janitor);
// Close stops them.
type Log struct {
	cfg Config
	log *slog.Logger

	mu sync.Mutex // guards the fields below
	// queue holds entries not yet written, oldest first. Only the writer
	// (or Close, after the writer stopped) removes them, from the front.
	queue    []*item
	closed   bool
	space    chan struct{} // closed and replaced when the queue shrinks or closes
	progress chan struct{} // closed and replaced when entries leave the queue
	queued   int64         // entries ever queued
	settled  int64         // entries ever written or given up
	waitFor  int64         // entries up to this count (of queued) have a caller waiting: Append or Flush
	waiters  int           // callers waiting for space in the full queue
	lastAt   time.Time     // latest queue time, so times never go backwards here
	// lost counts the engine's entries that were not queued (see
	// enqueueRecord); lastLost is when that was last logged, and
	// lostSince how many since.
	lost      int64
	lastLost  time.Time
	lostSince int64

	kick   chan struct{} // an entry arrived in an empty queue
	urgent chan struct{} // someone waits, or a batch is full: write now
	stop   chan struct{}
	done   chan struct{} // writer stopped
	jdone  chan struct{} // janitor stopped
	// cpKick asks the janitor for a checkpoint: CheckpointEvery entries
	// were written.
	cpKick chan struct{}

	closeOnce sync.Once
	closeErr  error

	// steps holds node steps until their node's result entry.
	steps stepFold

	// Owned by the writer goroutine (by Close after it stopped).
	head      head
	uncertain *uncertain
	// kickedAt is the sequence at which the writer last asked for a
	// checkpoint.
	kickedAt int64
}

// New starts a Log: its writer and its janitor run until Close.
func New(cfg Config) (*Log, error) {
	if err := cfg.CheckAndSetDefaults(); err != nil {
		return nil, err
	}
	l := &Log{
		cfg:      cfg,
		log:      cfg.Logger.With("component", "audit"),
		space:    make(chan struct{}),
		progress: make(chan struct{}),
		kick:     make(chan struct{}, 1),
		urgent:   make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
		jdone:    make(chan struct{}),
		cpKick:   make(chan struct{}, 1),
	}
	if m := cfg.Metrics; m != nil {
		m.QueueCapacity.Set(float64(cfg.QueueSize))
		m.QueueDepth.Set(0)
	}
	go l.run()
	go l.janitor()
	return l, nil
}

// Append queues e and waits until it is written to etcd, bounded by ctx.
// It sets e's time and sequence. What is stored is a copy of e with
// secret-looking details redacted and free text scrubbed (see Scrub).
// When the queue is full it first waits for space, as Enqueue does. If
// ctx ends once e is queued, the entry is still written later; e is then
// left unchanged. Append returns ErrClosed after Close.
func (l *Log) Append(ctx context.Context, e *outpostv1.AuditEntry) error {
	it := l.newItem(e, true)
	if err := l.push(ctx, it); err != nil {
		return err
	}
	select {
	case err := <-it.done:
		if err == nil {
			// The writer is done with it.e: the receive orders its writes
			// before these reads.
			e.Time, e.Sequence = it.e.GetTime(), it.e.GetSequence()
		}
		return err
	case <-ctx.Done():
		return fmt.Errorf("audit: wait for append: %w", ctx.Err())
	}
}

// Enqueue queues e to be written, without waiting for the write; e is
// left unchanged. While the queue is full it waits for space, bounded by
// ctx: an entry is never dropped because etcd is slow, the caller slows
// down instead (back-pressure). When ctx ends first it returns ctx's
// error, and ErrClosed after Close; the entry is then not queued, and
// the caller must report that loudly. The rollout engine records through
// it (the Record methods), so a slow etcd slows rollouts down.
func (l *Log) Enqueue(ctx context.Context, e *outpostv1.AuditEntry) error {
	return l.push(ctx, l.newItem(e, false))
}

// Flush waits until every entry queued before the call is written (or
// given up at Close), bounded by ctx.
func (l *Log) Flush(ctx context.Context) error {
	l.mu.Lock()
	target := l.queued
	l.waitFor = max(l.waitFor, target)
	l.mu.Unlock()
	signal(l.urgent)
	for range 1 << 30 {
		l.mu.Lock()
		settled, progress := l.settled, l.progress
		l.mu.Unlock()
		if settled >= target {
			return nil
		}
		select {
		case <-progress:
		case <-ctx.Done():
			return fmt.Errorf("audit: flush: %w", ctx.Err())
		}
	}
	return errors.New("audit: flush: no progress")
}

// Close stops the janitor and the writer, then writes what is still
// queued, bounded by ctx; entries it cannot write are logged as lost and
// their waiters get an error. Later calls return the first call's result.
func (l *Log) Close(ctx context.Context) error {
	l.closeOnce.Do(func() { l.closeErr = l.close(ctx) })
	return l.closeErr
}

func (l *Log) close(ctx context.Context) error {
	l.mu.Lock()
	l.closed = true
	close(l.space) // wake Appends waiting for space: they see closed
	l.space = make(chan struct{})
	l.mu.Unlock()
	close(l.stop)
	<-l.done
	<-l.jdone

	retry := 10 * time.Millisecond
	for l.pending() > 0 {
		err := l.writeBatch(ctx)
		if err == nil {
			continue
		}
		if ctx.Err() == nil {
			t := time.NewTimer(retry)
			select {
			case <-t.C:
				retry = min(2*retry, maxRetryDelay)
				continue
			case <-ctx.Done():
				t.Stop()
			}
		}
		lost := l.abandon(fmt.Errorf("audit: log closed before the entry was written: %w", err))
		l.log.Error("audit entries lost at shutdown", "entries", lost, "err", err)
		return fmt.Errorf("audit: close: %d entries not written: %w", lost, err)
	}
	return nil
}

// abandon fails every queued entry and returns how many there were.
func (l *Log) abandon(err error) int {
	l.mu.Lock()
	q := l.queue
	l.queue = nil
	l.settled += int64(len(q))
	l.signalProgressLocked()
	l.setDepthLocked()
	l.mu.Unlock()
	for _, it := range q {
		if it.done != nil {
			it.done <- err
		}
	}
	return len(q)
}

// newItem copies e so the caller may reuse it, redacts and bounds the
// copy, and stamps the queue time.
func (l *Log) newItem(e *outpostv1.AuditEntry, wait bool) *item {
	it := &item{e: proto.CloneOf(e), at: l.cfg.Now()}
	sanitize(it.e)
	if wait {
		it.done = make(chan error, 1)
	}
	return it
}

// push queues it, waiting for space while the queue is full, bounded by
// ctx. It never gives up for want of space alone.
func (l *Log) push(ctx context.Context, it *item) error {
	var waited time.Time // when it found the queue full; zero if it did not
	for range 1 << 30 {
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			l.countNotQueued()
			return ErrClosed
		}
		if len(l.queue) < l.cfg.QueueSize {
			l.enqueueLocked(it)
			l.mu.Unlock()
			if m := l.cfg.Metrics; m != nil && !waited.IsZero() {
				m.QueueWait.Observe(time.Since(waited).Seconds())
			}
			return nil
		}
		if waited.IsZero() {
			waited = time.Now()
		}
		space := l.space
		l.waiters++
		l.mu.Unlock()
		// Someone waits: the writer must not gather a batch first.
		signal(l.urgent)
		var err error
		select {
		case <-space:
		case <-ctx.Done():
			err = ctx.Err()
		}
		l.mu.Lock()
		l.waiters--
		l.mu.Unlock()
		if err != nil {
			l.countNotQueued()
			return fmt.Errorf("audit: queue full: %w", err)
		}
	}
	return errors.New("audit: queue full")
}

func (l *Log) countNotQueued() {
	if m := l.cfg.Metrics; m != nil {
		m.NotQueued.Inc()
	}
}

// setDepthLocked reports the queue's depth.
func (l *Log) setDepthLocked() {
	if m := l.cfg.Metrics; m != nil {
		m.QueueDepth.Set(float64(len(l.queue)))
	}
}

func (l *Log) enqueueLocked(it *item) {
	// Times never go backwards within this process; across replicas the
	// writer clamps to the head's time.
	if it.at.Before(l.lastAt) {
		it.at = l.lastAt
	}
	l.lastAt = it.at
	l.queue = append(l.queue, it)
	l.queued++
	l.setDepthLocked()
	if it.done != nil {
		l.waitFor = l.queued
	}
	switch {
	// A full queue makes the next caller wait: write it now.
	case it.done != nil, len(l.queue) >= maxBatch, len(l.queue) >= l.cfg.QueueSize:
		signal(l.urgent)
	case len(l.queue) == 1:
		signal(l.kick)
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (l *Log) signalProgressLocked() {
	close(l.progress)
	l.progress = make(chan struct{})
	close(l.space)
	l.space = make(chan struct{})
}

func (l *Log) pending() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.queue)
}

// run is the writer goroutine: it waits for entries, gives unhurried ones
// BatchDelay to gather, and writes until the queue is empty or holds only
// a partial batch nobody waits for, retrying failed writes with backoff.
func (l *Log) run() {
	defer close(l.done)
	retry := time.Duration(0)
	lastWarn := time.Time{}
	gather := false // the queue holds a partial batch: give it BatchDelay
	for {
		if gather {
			t := time.NewTimer(l.cfg.BatchDelay)
			select {
			case <-l.stop:
				t.Stop()
				return
			case <-t.C:
			case <-l.urgent:
				t.Stop()
			}
		} else if retry == 0 {
			select {
			case <-l.stop:
				return
			case <-l.kick:
				t := time.NewTimer(l.cfg.BatchDelay)
				select {
				case <-l.stop:
					t.Stop()
					return
				case <-t.C:
				case <-l.urgent:
					t.Stop()
				}
			case <-l.urgent:
			}
		} else {
			t := time.NewTimer(retry)
			select {
			case <-l.stop:
				t.Stop()
				return
			case <-t.C:
			}
		}
		retry, gather = 0, false
		for l.pending() > 0 {
			ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
			err := l.writeBatch(ctx)
			cancel()
			if err != nil {
				retry = min(max(2*retry, l.cfg.BatchDelay), maxRetryDelay)
				if now := time.Now(); now.Sub(lastWarn) >= time.Second {
					lastWarn = now
					l.log.Warn("audit write failed; will retry", "err", err, "queued", l.pending(), "retry_in", retry)
				}
				break
			}
			select {
			case <-l.stop:
				return
			default:
			}
			if l.partialRest() {
				gather = true
				break
			}
		}
	}
}

// partialRest reports whether what a full batch left in the queue is a
// partial batch that nobody waits for (neither for its write nor for
// space in the queue). It then gathers for BatchDelay, as entries
// arriving in an empty queue do, rather than go out at once in a small
// transaction. A full-batch signal sent while the batch before was being
// written is stale and is dropped; a caller who starts waiting later
// signals again.
func (l *Log) partialRest() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := len(l.queue); n == 0 || n >= maxBatch || n >= l.cfg.QueueSize || l.settled < l.waitFor || l.waiters > 0 {
		return false
	}
	select {
	case <-l.urgent:
	default:
	}
	return true
}

// writeBatch writes the oldest queued entries in one transaction and
// removes them from the queue.
func (l *Log) writeBatch(ctx context.Context) error {
	l.mu.Lock()
	var batch []*item
	for _, it := range l.queue {
		if len(batch) == maxBatch {
			break
		}
		batch = append(batch, it)
	}
	l.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	n, err := l.commit(ctx, batch)
	if err != nil {
		return err
	}
	l.mu.Lock()
	written := l.queue[:n]
	l.queue = l.queue[n:]
	l.settled += int64(n)
	l.signalProgressLocked()
	l.setDepthLocked()
	l.mu.Unlock()
	for _, it := range written {
		if it.done != nil {
			it.done <- nil
		}
	}
	return nil
}

// commit appends a prefix of batch after the head and returns its length.
func (l *Log) commit(ctx context.Context, batch []*item) (int, error) {
	if !l.head.valid {
		if err := l.readHead(ctx); err != nil {
			return 0, err
		}
		if u := l.uncertain; u != nil {
			l.uncertain = nil
			landed, err := l.landed(ctx, u)
			if err != nil {
				l.uncertain = u
				return 0, err
			}
			if landed {
				return min(u.n, len(batch)), nil
			}
		}
	}
	for range casAttempts {
		ops, n, first, err := l.assign(batch)
		if err != nil {
			return 0, err
		}
		cmpKey := l.head.key
		if cmpKey == "" {
			cmpKey = store.AuditPrefix
		}
		// No key at or after the head may be newer than the head we saw:
		// if one is, another replica appended first.
		cmp := clientv3.Compare(clientv3.ModRevision(cmpKey), "<", l.head.rev+1).
			WithRange(clientv3.GetPrefixRangeEnd(store.AuditPrefix))
		resp, err := l.cfg.Store.Client().Txn(ctx).If(cmp).Then(ops...).
			Else(clientv3.OpGet(store.AuditPrefix, clientv3.WithLastKey()...)).Commit()
		if err != nil {
			l.head.valid = false
			l.uncertain = &uncertain{key: first.key, value: first.value, n: n}
			return 0, fmt.Errorf("append %d audit entries: %w", n, err)
		}
		if resp.Succeeded {
			last := batch[n-1].e
			l.head = head{valid: true, key: store.AuditKey(last.GetTime().AsTime(), last.GetSequence()),
				seq: last.GetSequence(), time: last.GetTime().AsTime(), rev: resp.Header.Revision, hash: last.GetHash()}
			l.wrote(last.GetSequence())
			return n, nil
		}
		// The else branch read the new head at the transaction's revision.
		var kvs []*mvccpb.KeyValue
		if len(resp.Responses) == 1 {
			kvs = resp.Responses[0].GetResponseRange().GetKvs()
		}
		if err := l.setHead(kvs, resp.Header.Revision); err != nil {
			return 0, err
		}
	}
	return 0, fmt.Errorf("append audit entries: lost the race for the head %d times", casAttempts)
}

// assign numbers the batch after the head and returns the puts for as many
// entries (each with its marker, see markerKey) as fit in one transaction,
// how many entries that is, and the first one's key and bytes.
func (l *Log) assign(batch []*item) ([]clientv3.Op, int, uncertain, error) {
	var (
		ops   []clientv3.Op
		n     int // entries in ops
		first uncertain
		size  int
		// markers are the ops' indexes of the markers put, by key.
		markers = map[string]int{}
	)
	prev, seq, prevHash := l.head.time, l.head.seq, l.head.hash
	for _, it := range batch {
		at := it.at
		if at.Before(prev) {
			at = prev
		}
		seq++
		it.e.Time = timestamppb.New(at)
		it.e.Sequence = seq
		// The chain: each entry names its predecessor's hash, and its own
		// hash covers that, so no entry can be edited, removed or moved
		// without breaking the links after it (see internal/auditchain).
		it.e.PreviousHash = prevHash
		it.e.Hash = nil
		h, err := auditchain.HashEntry(it.e)
		if err != nil {
			return nil, 0, first, fmt.Errorf("hash audit entry: %w", err)
		}
		it.e.Hash = h
		b, err := marshal.Marshal(it.e)
		if err != nil {
			return nil, 0, first, fmt.Errorf("encode audit entry: %w", err)
		}
		key := store.AuditKey(at, seq)
		// The marker goes in the entry's transaction: a crash cannot leave
		// one without the other, so a marker proves the entry was written.
		marker := markerKey(it.e)
		idx, dup := markers[marker]
		need := 1
		if marker != "" && !dup {
			need = 2
		}
		if n > 0 && (size+len(key)+len(b)+len(marker) > maxBatchBytes || len(ops)+need > store.MaxTxnOps) {
			break
		}
		if n == 0 {
			first = uncertain{key: key, value: b}
		}
		size += len(key) + len(b) + len(marker)
		ops = append(ops, clientv3.OpPut(key, string(b)))
		switch {
		case marker == "":
		case dup:
			// etcd refuses a transaction that puts a key twice; the
			// result was queued twice and its newer entry holds the marker.
			ops[idx] = clientv3.OpPut(marker, strconv.FormatInt(seq, 10))
		default:
			markers[marker] = len(ops)
			ops = append(ops, clientv3.OpPut(marker, strconv.FormatInt(seq, 10)))
		}
		n++
		prev, prevHash = at, h
	}
	return ops, n, first, nil
}

// readHead reads the newest entry.
func (l *Log) readHead(ctx context.Context) error {
	resp, err := l.cfg.Store.Client().Get(ctx, store.AuditPrefix, clientv3.WithLastKey()...)
	if err != nil {
		return fmt.Errorf("read the newest audit entry: %w", err)
	}
	return l.setHead(resp.Kvs, resp.Header.Revision)
}

// setHead records the newest entry (kvs holds it, or nothing when the log
// is empty), seen at etcd revision rev.
func (l *Log) setHead(kvs []*mvccpb.KeyValue, rev int64) error {
	if len(kvs) == 0 {
		l.head = head{valid: true, rev: rev}
		return nil
	}
	var e outpostv1.AuditEntry
	if err := proto.Unmarshal(kvs[0].Value, &e); err != nil {
		l.head.valid = false
		return fmt.Errorf("decode audit entry %s: %w", kvs[0].Key, err)
	}
	l.head = head{valid: true, key: string(kvs[0].Key), seq: e.GetSequence(), time: e.GetTime().AsTime(), rev: rev, hash: e.GetHash()}
	return nil
}

// landed reports whether the uncertain batch u is in etcd: its first
// entry is there with the bytes this writer sent.
func (l *Log) landed(ctx context.Context, u *uncertain) (bool, error) {
	resp, err := l.cfg.Store.Client().Get(ctx, u.key)
	if err != nil {
		return false, fmt.Errorf("check audit write: %w", err)
	}
	return len(resp.Kvs) == 1 && bytes.Equal(resp.Kvs[0].Value, u.value), nil
}
