package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
)

// ErrClosed is reported for puts to a closed BatchWriter.
var ErrClosed = errors.New("batch writer closed")

// Defaults for NewBatchWriter's zero arguments.
const (
	DefaultBatchOps   = MaxTxnOps
	DefaultBatchDelay = 50 * time.Millisecond
	// batchWriteTimeout bounds one background write, so a stuck etcd cannot
	// hold the writer (and, through the full buffer, its callers) forever.
	batchWriteTimeout = 10 * time.Second
	// maxBatchBytes keeps one transaction well under etcd's default request
	// limit of 1.5 MiB.
	maxBatchBytes = 1 << 20
	// maxRetryDelay caps the backoff after failed background writes.
	maxRetryDelay = 2 * time.Second
)

// BatchWriter coalesces many small fenced puts (per-node states) into few
// etcd transactions: a batch is written when it holds maxOps keys or when
// its oldest put is maxDelay old, whichever comes first. Within a batch the
// last put per key wins.
//
// Each transaction is guarded by the fence; chunks are written in put order
// but atomicity holds per transaction only. ErrNotLeader is final: the
// pending puts are dropped, later puts are ignored, and Err and every later
// Flush report it. Other write errors keep the puts pending and are retried
// with backoff; Err reports the latest until a write succeeds.
//
// The writer owns one goroutine; Close stops it.
type BatchWriter struct {
	store    *Store
	fence    Fence
	maxOps   int
	maxDelay time.Duration

	writeMu sync.Mutex // serializes writes so batches land in put order

	mu sync.Mutex // guards the fields below
	// space is signalled when pending shrinks or the writer stops.
	space   *sync.Cond
	pending map[string][]byte
	order   []string // keys of pending in first-put order
	err     error    // latest write error; sticky when ErrNotLeader
	closed  bool

	kick chan struct{} // a first put arrived: start the delay timer
	full chan struct{} // pending reached maxOps: write now
	stop chan struct{}
	done chan struct{}
}

// NewBatchWriter returns a writer of fenced puts to s. maxOps (at most
// MaxTxnOps; <= 0 means DefaultBatchOps) is the batch size that triggers a
// write, and also the buffer: Put blocks while maxOps keys wait and the
// previous batch is still being written. maxDelay (<= 0 means
// DefaultBatchDelay) bounds how long a put waits for company.
func NewBatchWriter(s *Store, fence Fence, maxOps int, maxDelay time.Duration) *BatchWriter {
	if maxOps <= 0 || maxOps > MaxTxnOps {
		maxOps = DefaultBatchOps
	}
	if maxDelay <= 0 {
		maxDelay = DefaultBatchDelay
	}
	w := &BatchWriter{
		store:    s,
		fence:    fence,
		maxOps:   maxOps,
		maxDelay: maxDelay,
		pending:  make(map[string][]byte),
		kick:     make(chan struct{}, 1),
		full:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	w.space = sync.NewCond(&w.mu)
	go w.run()
	return w
}

// Put queues m for key. m is encoded at once, so the caller may reuse it.
// Put blocks while the buffer is full. After ErrNotLeader or Close the put
// is dropped (Err says why).
func (w *BatchWriter) Put(key string, m proto.Message) {
	b, err := marshal.Marshal(m)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.err = fmt.Errorf("encode %s: %w", key, err)
		return
	}
	for {
		if w.closed {
			if w.err == nil {
				w.err = ErrClosed
			}
			return
		}
		if errors.Is(w.err, ErrNotLeader) {
			return
		}
		if _, ok := w.pending[key]; ok {
			w.pending[key] = b
			return
		}
		if len(w.pending) < w.maxOps {
			break
		}
		w.space.Wait()
	}
	w.pending[key] = b
	w.order = append(w.order, key)
	switch len(w.pending) {
	case 1:
		signal(w.kick)
	case w.maxOps:
		signal(w.full)
	}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// Err returns the latest write error: ErrNotLeader (final), a transient
// error still being retried, or nil.
func (w *BatchWriter) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Flush writes every pending put now and waits for it. It returns
// ErrNotLeader after leadership is lost, or the write error; on a transient
// error the puts stay pending.
func (w *BatchWriter) Flush(ctx context.Context) error {
	return w.flush(ctx)
}

// Close stops the background goroutine, then flushes what is pending.
// Later puts are dropped.
func (w *BatchWriter) Close(ctx context.Context) error {
	w.mu.Lock()
	already := w.closed
	w.closed = true
	w.space.Broadcast()
	w.mu.Unlock()
	if !already {
		close(w.stop)
	}
	<-w.done
	return w.flush(ctx)
}

func (w *BatchWriter) run() {
	defer close(w.done)
	retry := time.Duration(0)
	for {
		if retry == 0 {
			select {
			case <-w.stop:
				return
			case <-w.kick:
			case <-w.full:
			}
		}
		// Whichever signal woke us, a full buffer is written at once (the
		// full signal may have been consumed above).
		if retry > 0 || !w.isFull() {
			wait := w.maxDelay
			if retry > 0 {
				wait = retry
			}
			t := time.NewTimer(wait)
			select {
			case <-w.stop:
				t.Stop()
				return
			case <-t.C:
			case <-w.full:
				t.Stop()
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), batchWriteTimeout)
		err := w.flush(ctx)
		cancel()
		switch {
		case err == nil, errors.Is(err, ErrNotLeader):
			retry = 0
		default:
			retry = min(max(2*retry, w.maxDelay), maxRetryDelay)
			w.store.logger.Warn("batched write failed, will retry", "err", err, "retry_in", retry)
		}
	}
}

func (w *BatchWriter) isFull() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.pending) >= w.maxOps
}

// flush takes everything pending and writes it in chunks of at most maxOps
// puts and maxBatchBytes.
func (w *BatchWriter) flush(ctx context.Context) error {
	w.writeMu.Lock()
	defer w.writeMu.Unlock()

	w.mu.Lock()
	if errors.Is(w.err, ErrNotLeader) {
		w.mu.Unlock()
		return ErrNotLeader
	}
	pending, order := w.pending, w.order
	w.pending, w.order = make(map[string][]byte), nil
	w.space.Broadcast()
	w.mu.Unlock()

	var (
		ops   []clientv3.Op
		keys  []string
		bytes int
	)
	for i, key := range order {
		v := pending[key]
		ops = append(ops, clientv3.OpPut(key, string(v)))
		keys = append(keys, key)
		bytes += len(key) + len(v)
		last := i == len(order)-1
		if !last && len(ops) < w.maxOps && bytes+len(order[i+1])+len(pending[order[i+1]]) <= maxBatchBytes {
			continue
		}
		if err := w.store.Txn(ctx, w.fence, ops...); err != nil {
			return w.failed(err, order[i+1-len(keys):], pending)
		}
		ops, keys, bytes = ops[:0], keys[:0], 0
	}
	w.mu.Lock()
	if w.err != nil && !errors.Is(w.err, ErrClosed) {
		w.err = nil
	}
	w.mu.Unlock()
	return nil
}

// failed records err for the keys not written (unwritten, in order) and
// puts them back unless a newer put replaced them meanwhile.
func (w *BatchWriter) failed(err error, unwritten []string, values map[string][]byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.err = err
	if errors.Is(err, ErrNotLeader) {
		clear(w.pending)
		w.order = nil
		w.space.Broadcast()
		return err
	}
	// Re-queue ahead of newer keys so the retry keeps put order; a key put
	// again meanwhile keeps its newer value.
	var order []string
	for _, key := range unwritten {
		if _, newer := w.pending[key]; !newer {
			w.pending[key] = values[key]
			order = append(order, key)
		}
	}
	w.order = append(order, w.order...)
	return err
}
