package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/outposthq/outpost/controlplane/store"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// errRevoked is the cancel cause of streams whose certificate is revoked.
var errRevoked = errors.New("certificate revoked")

// Watch restart backoff bounds.
const (
	minWatchRetry = 100 * time.Millisecond
	maxWatchRetry = 5 * time.Second
)

// revocations caches the set of revoked serials from etcd and ends the
// streams of serials as they are revoked. While the cache is not in sync
// with etcd (before the first load, after a watch broke) lookups go to
// etcd, so a revocation is never missed: the cache only saves round trips.
type revocations struct {
	store *store.Store
	log   *slog.Logger

	mu sync.Mutex // guards the fields below
	// synced reports whether serials mirrors etcd up to the watch.
	synced  bool
	serials map[string]bool
	// streams maps a serial to the cancel funcs of the streams opened
	// with it, by registration number.
	streams map[string]map[uint64]context.CancelCauseFunc
	nextReg uint64
}

func newRevocations(s *store.Store, log *slog.Logger) *revocations {
	return &revocations{store: s, log: log, streams: make(map[string]map[uint64]context.CancelCauseFunc)}
}

// isRevoked reports whether serial is revoked.
func (r *revocations) isRevoked(ctx context.Context, serial string) (bool, error) {
	r.mu.Lock()
	synced, revoked := r.synced, r.serials[serial]
	r.mu.Unlock()
	if synced {
		return revoked, nil
	}
	revoked, err := r.store.Exists(ctx, store.RevokedKey(serial))
	if err != nil {
		return false, fmt.Errorf("check revocation: %w", err)
	}
	return revoked, nil
}

// register arranges for cancel to be called with errRevoked when serial
// is revoked, until the returned func is called. Register before checking
// isRevoked, so a revocation between the two is not missed.
func (r *revocations) register(serial string, cancel context.CancelCauseFunc) (unregister func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.nextReg++
	n := r.nextReg
	if r.streams[serial] == nil {
		r.streams[serial] = make(map[uint64]context.CancelCauseFunc)
	}
	r.streams[serial][n] = cancel
	return func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		delete(r.streams[serial], n)
		if len(r.streams[serial]) == 0 {
			delete(r.streams, serial)
		}
	}
}

// revokeLocked records serial as revoked and ends its streams. r.mu is
// held.
func (r *revocations) revokeLocked(serial string) {
	r.serials[serial] = true
	for _, cancel := range r.streams[serial] {
		cancel(errRevoked)
	}
}

// markRevoked records revocations this replica just wrote, without
// waiting for the watch to bring them back.
func (r *revocations) markRevoked(recs []*outpostv1.Credential) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.serials == nil {
		return // not loaded: lookups go to etcd
	}
	for _, rec := range recs {
		if rec.GetRevoked() {
			r.revokeLocked(rec.GetSerial())
		}
	}
}

// load reads every revocation and returns the revision to watch from.
func (r *revocations) load(ctx context.Context) error {
	_, err := r.reload(ctx)
	return err
}

func (r *revocations) reload(ctx context.Context) (int64, error) {
	rev, err := r.store.Revision(ctx)
	if err != nil {
		return 0, fmt.Errorf("load revocations: %w", err)
	}
	serials := make(map[string]bool)
	after := ""
	for page := 0; ; page++ {
		next, err := r.store.List(ctx, store.RevokedPrefix, 0, after, func(key string, _ []byte) error {
			serials[strings.TrimPrefix(key, store.RevokedPrefix)] = true
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("load revocations: %w", err)
		}
		if next == "" {
			break
		}
		after = next
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.serials = make(map[string]bool, len(serials))
	for s := range serials {
		r.revokeLocked(s)
	}
	r.synced = true
	return rev, nil
}

func (r *revocations) setUnsynced() {
	r.mu.Lock()
	r.synced = false
	r.mu.Unlock()
}

// run watches revocations until ctx ends, re-listing whenever the watch
// breaks (compaction, lost etcd leader, closed client).
func (r *revocations) run(ctx context.Context) {
	defer r.setUnsynced()
	retry := time.Duration(0)
	var rev int64
	for {
		if retry > 0 {
			t := time.NewTimer(retry)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
		if rev == 0 {
			var err error
			if rev, err = r.reload(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				r.log.Warn("revocation list unavailable; checking etcd per call", "err", err)
				retry = min(max(2*retry, minWatchRetry), maxWatchRetry)
				continue
			}
			retry = 0
		}
		err := r.watch(ctx, rev)
		if ctx.Err() != nil {
			return
		}
		r.setUnsynced()
		r.log.Warn("revocation watch ended; re-listing", "err", err)
		rev = 0
		retry = min(max(2*retry, minWatchRetry), maxWatchRetry)
	}
}

// watch applies changes after rev until the watch ends, and says why.
func (r *revocations) watch(ctx context.Context, rev int64) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for resp := range r.store.Watch(wctx, store.RevokedPrefix, rev+1) {
		if err := resp.Err(); err != nil {
			return err
		}
		r.mu.Lock()
		for _, ev := range resp.Events {
			serial := strings.TrimPrefix(string(ev.Kv.Key), store.RevokedPrefix)
			switch ev.Type {
			case mvccpb.PUT:
				r.revokeLocked(serial)
			case mvccpb.DELETE:
				// The lease ended: the certificate has expired, and TLS
				// refuses it now without our help.
				delete(r.serials, serial)
			}
		}
		r.mu.Unlock()
	}
	return errors.New("watch channel closed")
}
