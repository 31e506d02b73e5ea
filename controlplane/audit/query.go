package audit

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/outposthq/outpost/controlplane/store"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Page sizes of List.
const (
	DefaultPageSize = 100
	MaxPageSize     = 1000
	// scanBudget bounds the keys one List call reads, so a filter that
	// matches little cannot make one call read the whole log.
	scanBudget = 10000
	// tokenKind marks page tokens of List, so tokens of other calls are refused.
	tokenKind = "audit:"
)

// ErrBadPageToken is returned by List for a page token it did not issue.
var ErrBadPageToken = errors.New("invalid page token")

// Query selects entries.
type Query struct {
	// RolloutID keeps only entries of this rollout; "" keeps all.
	RolloutID string
	// Since keeps only entries at or after this time; zero means from the
	// oldest kept (List) or, with AfterSequence 0, only new entries (Watch).
	Since time.Time
	// AfterSequence keeps only entries with a higher sequence; 0 keeps all.
	AfterSequence int64
}

func (q Query) match(e *outpostv1.AuditEntry) bool {
	return (q.RolloutID == "" || e.GetRolloutId() == q.RolloutID) && e.GetSequence() > q.AfterSequence
}

// startKey is the first key q can match.
func (q Query) startKey() string {
	if q.Since.IsZero() {
		return store.AuditPrefix
	}
	return store.AuditKey(q.Since, 0)
}

// List returns up to pageSize entries (<= 0 means DefaultPageSize, at
// most MaxPageSize) matching q, oldest first, and the token of the next
// page ("" at the end of the log). With a RolloutID a page may be short,
// even empty, while the token is not: each call reads a bounded part of
// the log.
func (l *Log) List(ctx context.Context, q Query, pageSize int, pageToken string) ([]*outpostv1.AuditEntry, string, error) {
	switch {
	case pageSize <= 0:
		pageSize = DefaultPageSize
	case pageSize > MaxPageSize:
		pageSize = MaxPageSize
	}
	start := q.startKey()
	if pageToken != "" {
		after, err := decodePageToken(pageToken)
		if err != nil {
			return nil, "", err
		}
		start = max(start, after+"\x00")
	}
	var (
		out     []*outpostv1.AuditEntry
		rev     int64  // pinned after the first read, so pages are one snapshot
		scanned int    // keys read by this call
		prev    string // the key read last
	)
	for scanned < scanBudget {
		resp, err := l.cfg.Store.ReadPage(ctx, store.AuditPrefix, start, rev, int64(min(pageSize+1, scanBudget-scanned)))
		if err != nil {
			return nil, "", fmt.Errorf("list audit entries: %w", err)
		}
		rev = resp.Revision
		for _, kv := range resp.Kvs {
			e, ok := l.decode(kv.Key, kv.Value)
			if ok && q.match(e) {
				if len(out) == pageSize {
					// Another match exists: the next page starts at it.
					return out, encodePageToken(prev), nil
				}
				out = append(out, e)
			}
			scanned++
			prev = string(kv.Key)
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return out, "", nil
		}
		start = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	return out, encodePageToken(prev), nil
}

// Watch calls fn for every entry matching q in sequence order: first the
// stored ones from q.Since (none when q.Since is zero and q.AfterSequence
// is 0), then each new one as it is appended. It returns when ctx ends
// (ctx's error) or fn fails (fn's error). Lost etcd watches (compaction, a
// lost etcd leader) are resumed after the last entry seen, so no entry is
// skipped or repeated.
func (l *Log) Watch(ctx context.Context, q Query, fn func(*outpostv1.AuditEntry) error) error {
	// from is the first key not yet read; it only moves forward.
	from := q.startKey()
	if q.Since.IsZero() && q.AfterSequence == 0 {
		// Only entries after now: start after the newest stored one.
		newest, err := l.cfg.Store.Last(ctx, store.AuditPrefix, nil)
		if err != nil {
			return fmt.Errorf("watch audit entries: %w", err)
		}
		if newest != "" {
			from = newest + "\x00"
		}
	}
	w := &watcher{l: l, q: q, fn: fn, from: from}
	backoff := 100 * time.Millisecond
	for {
		rev, err := w.catchUp(ctx)
		if err == nil {
			err = w.follow(ctx, rev+1)
		}
		var fnErr *callbackError
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.As(err, &fnErr):
			return fnErr.err
		}
		l.log.Debug("audit watch interrupted; resuming", "err", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// watcher is the state of one Watch call.
type watcher struct {
	l    *Log
	q    Query
	fn   func(*outpostv1.AuditEntry) error
	from string // first key not yet delivered or skipped
}

// callbackError carries an error of Watch's fn out of the watcher.
type callbackError struct{ err error }

func (e *callbackError) Error() string { return e.err.Error() }

// catchUp delivers the stored entries from w.from on, page by page at one
// revision, and returns that revision.
func (w *watcher) catchUp(ctx context.Context) (int64, error) {
	var rev int64
	for {
		resp, err := w.l.cfg.Store.ReadPage(ctx, store.AuditPrefix, w.from, rev, 500)
		if err != nil {
			return 0, fmt.Errorf("read audit entries: %w", err)
		}
		rev = resp.Revision
		for _, kv := range resp.Kvs {
			if err := w.deliver(kv.Key, kv.Value); err != nil {
				return 0, err
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return rev, nil
		}
	}
}

// follow watches from rev and delivers new entries until the watch ends.
func (w *watcher) follow(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for wr := range w.l.cfg.Store.Watch(wctx, store.AuditPrefix, rev) {
		if err := wr.Err(); err != nil {
			return err
		}
		for _, ev := range wr.Events {
			if ev.Type != clientv3.EventTypePut {
				continue // the janitor's deletes
			}
			if err := w.deliver(ev.Kv.Key, ev.Kv.Value); err != nil {
				return err
			}
		}
	}
	return errors.New("audit watch ended")
}

// deliver passes one stored entry to fn unless it was seen before or does
// not match. Errors of fn come back as *callbackError.
func (w *watcher) deliver(key, value []byte) error {
	k := string(key)
	if k < w.from {
		return nil
	}
	w.from = k + "\x00"
	e, ok := w.l.decode(key, value)
	if !ok || !w.q.match(e) {
		return nil
	}
	if err := w.fn(e); err != nil {
		return &callbackError{err: err}
	}
	return nil
}

// decode decodes a stored entry. An entry that does not decode is logged
// and skipped, so one damaged record cannot stop every reader of the log.
func (l *Log) decode(key, value []byte) (*outpostv1.AuditEntry, bool) {
	var e outpostv1.AuditEntry
	if err := proto.Unmarshal(value, &e); err != nil {
		l.log.Error("skipping an audit entry that does not decode", "key", string(key), "err", err)
		return nil, false
	}
	return &e, true
}

func encodePageToken(key string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(tokenKind + key))
}

func decodePageToken(token string) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return "", ErrBadPageToken
	}
	key, ok := strings.CutPrefix(string(b), tokenKind)
	if !ok || !strings.HasPrefix(key, store.AuditPrefix) {
		return "", ErrBadPageToken
	}
	return key, nil
}
