package store

import (
	"context"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
)

// MaxTxnOps is the most operations (and, separately, comparisons) one etcd
// transaction may carry: etcd's default --max-txn-ops, which the embedded
// etcd keeps. External clusters configured lower will refuse bigger
// transactions.
const MaxTxnOps = 128

// marshal encodes deterministically so equal messages give equal bytes.
var marshal = proto.MarshalOptions{Deterministic: true}

// OpPut returns an etcd put of m at key, for building fenced transactions.
func OpPut(key string, m proto.Message) (clientv3.Op, error) {
	b, err := marshal.Marshal(m)
	if err != nil {
		return clientv3.Op{}, fmt.Errorf("encode %s: %w", key, err)
	}
	return clientv3.OpPut(key, string(b)), nil
}

// Get reads key into m. It reports whether the key exists and, if it does,
// its ModRevision (for compare-and-swap with TxnIf).
func (s *Store) Get(ctx context.Context, key string, m proto.Message) (found bool, modRev int64, err error) {
	return s.get(ctx, key, 0, m)
}

// GetAt is Get as of etcd revision rev (0: the newest): it reads the value
// key had then. A rev older than the history etcd keeps fails with an
// error that matches rpctypes.ErrCompacted (errors.Is).
func (s *Store) GetAt(ctx context.Context, key string, rev int64, m proto.Message) (found bool, err error) {
	found, _, err = s.get(ctx, key, rev, m)
	return found, err
}

func (s *Store) get(ctx context.Context, key string, rev int64, m proto.Message) (found bool, modRev int64, err error) {
	var opts []clientv3.OpOption
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	resp, err := s.client.Get(ctx, key, opts...)
	if err != nil {
		return false, 0, fmt.Errorf("get %s: %w", key, err)
	}
	if len(resp.Kvs) == 0 {
		return false, 0, nil
	}
	kv := resp.Kvs[0]
	if err := proto.Unmarshal(kv.Value, m); err != nil {
		return false, 0, fmt.Errorf("decode %s: %w", key, err)
	}
	return true, kv.ModRevision, nil
}

// Put writes m at key without a fence. Use it only for data any replica may
// write (node inventory, artifact metadata); rollout progress goes through
// Txn with the leader's fence.
func (s *Store) Put(ctx context.Context, key string, m proto.Message) error {
	op, err := OpPut(key, m)
	if err != nil {
		return err
	}
	s.countWrite(1)
	if _, err := s.client.Do(ctx, op); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

// Delete removes key without a fence and reports whether it existed.
func (s *Store) Delete(ctx context.Context, key string) (deleted bool, err error) {
	s.countWrite(1)
	resp, err := s.client.Delete(ctx, key)
	if err != nil {
		return false, fmt.Errorf("delete %s: %w", key, err)
	}
	return resp.Deleted > 0, nil
}

// Exists reports whether key exists, without reading its value.
func (s *Store) Exists(ctx context.Context, key string) (bool, error) {
	resp, err := s.client.Get(ctx, key, clientv3.WithCountOnly())
	if err != nil {
		return false, fmt.Errorf("get %s: %w", key, err)
	}
	return resp.Count > 0, nil
}

// GetAll reads keys and calls decode for each one that exists, in the
// order of keys; missing keys are skipped. Each MaxTxnOps keys are read
// in one transaction, so they are one snapshot.
func (s *Store) GetAll(ctx context.Context, keys []string, decode func(key string, value []byte) error) error {
	for len(keys) > 0 {
		chunk := keys[:min(len(keys), MaxTxnOps)]
		keys = keys[len(chunk):]
		ops := make([]clientv3.Op, len(chunk))
		for i, key := range chunk {
			ops[i] = clientv3.OpGet(key)
		}
		resp, err := s.client.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return fmt.Errorf("get %d keys: %w", len(chunk), err)
		}
		for _, r := range resp.Responses {
			for _, kv := range r.GetResponseRange().GetKvs() {
				if err := decode(string(kv.Key), kv.Value); err != nil {
					return fmt.Errorf("decode %s: %w", kv.Key, err)
				}
			}
		}
	}
	return nil
}

// Last reads the last key under prefix, in key order (the newest, for
// keys that sort by number or time), into m and returns it; "" when no
// key has the prefix. A nil m reads the key alone.
func (s *Store) Last(ctx context.Context, prefix string, m proto.Message) (key string, err error) {
	opts := clientv3.WithLastKey()
	if m == nil {
		opts = append(opts, clientv3.WithKeysOnly())
	}
	resp, err := s.client.Get(ctx, prefix, opts...)
	if err != nil {
		return "", fmt.Errorf("get the last key of %s: %w", prefix, err)
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	kv := resp.Kvs[0]
	if m != nil {
		if err := proto.Unmarshal(kv.Value, m); err != nil {
			return "", fmt.Errorf("decode %s: %w", kv.Key, err)
		}
	}
	return string(kv.Key), nil
}

// OpPutLeased returns a put of m at key bound to a lease of ttl, granted
// now, so etcd deletes the key when the lease runs out; apply it with Txn
// or TxnIf. The ttl is counted in whole seconds (rounded down) and must be
// at least one; etcd raises one below its minimum lease TTL to that
// minimum and refuses one above its maximum. A put that is never applied
// leaves the lease to expire unused.
func (s *Store) OpPutLeased(ctx context.Context, key string, m proto.Message, ttl time.Duration) (clientv3.Op, error) {
	if ttl < time.Second {
		return clientv3.Op{}, fmt.Errorf("lease for %s: ttl %v is under a second", key, ttl)
	}
	b, err := marshal.Marshal(m)
	if err != nil {
		return clientv3.Op{}, fmt.Errorf("encode %s: %w", key, err)
	}
	lease, err := s.client.Grant(ctx, int64(ttl/time.Second))
	if err != nil {
		return clientv3.Op{}, fmt.Errorf("lease for %s: %w", key, err)
	}
	return clientv3.OpPut(key, string(b), clientv3.WithLease(lease.ID)), nil
}

// PutLeased is Put with the key bound to a lease of ttl, as OpPutLeased
// says: etcd deletes the key when the lease runs out.
func (s *Store) PutLeased(ctx context.Context, key string, m proto.Message, ttl time.Duration) error {
	op, err := s.OpPutLeased(ctx, key, m, ttl)
	if err != nil {
		return err
	}
	s.countWrite(1)
	if _, err := s.client.Do(ctx, op); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

// Txn applies ops in one etcd transaction guarded by fence:
// If(fence.Cmps()...).Then(ops...). When the guard fails nothing is written
// and the error is ErrNotLeader. A nil fence writes unconditionally.
//
// With more than MaxTxnOps ops the write is split into transactions of at
// most MaxTxnOps ops, each guarded by the fence and applied in order:
// atomicity then holds per chunk only, and an error (including ErrNotLeader)
// may leave earlier chunks written. Callers that need all-or-nothing keep
// len(ops) <= MaxTxnOps. With no ops, Txn only checks the fence.
func (s *Store) Txn(ctx context.Context, fence Fence, ops ...clientv3.Op) error {
	var cmps []clientv3.Cmp
	if fence != nil {
		cmps = fence.Cmps()
	}
	for {
		n := min(len(ops), MaxTxnOps)
		if err := s.txn(ctx, cmps, ops[:n]); err != nil {
			return err
		}
		ops = ops[n:]
		if len(ops) == 0 {
			return nil
		}
	}
}

func (s *Store) txn(ctx context.Context, cmps []clientv3.Cmp, ops []clientv3.Op) error {
	s.countWrite(len(ops))
	resp, err := s.client.Txn(ctx).If(cmps...).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("txn of %d ops: %w", len(ops), err)
	}
	if !resp.Succeeded {
		s.fenceFailures.Add(1)
		return ErrNotLeader
	}
	return nil
}

// TxnIf applies ops atomically if the fence and the caller's comparisons
// all hold. It returns ErrNotLeader when the fence fails and ErrConflict
// when only cmps fail (for example a ModRevision compare after Get); nothing
// is written in either case. len(ops) and len(fence cmps)+len(cmps) must not
// exceed MaxTxnOps: TxnIf never splits.
func (s *Store) TxnIf(ctx context.Context, fence Fence, cmps []clientv3.Cmp, ops ...clientv3.Op) error {
	var fcmps []clientv3.Cmp
	if fence != nil {
		fcmps = fence.Cmps()
	}
	if len(ops) > MaxTxnOps || len(fcmps)+len(cmps) > MaxTxnOps {
		return fmt.Errorf("txn of %d ops and %d comparisons exceeds etcd's limit of %d", len(ops), len(fcmps)+len(cmps), MaxTxnOps)
	}
	all := append(append(make([]clientv3.Cmp, 0, len(fcmps)+len(cmps)), fcmps...), cmps...)
	// On failure the else branch re-evaluates the fence alone, so one round
	// trip tells "not leader" from "conflict".
	s.countWrite(len(ops))
	resp, err := s.client.Txn(ctx).If(all...).Then(ops...).Else(clientv3.OpTxn(fcmps, nil, nil)).Commit()
	if err != nil {
		return fmt.Errorf("txn of %d ops: %w", len(ops), err)
	}
	if resp.Succeeded {
		return nil
	}
	if len(resp.Responses) == 1 {
		if inner := resp.Responses[0].GetResponseTxn(); inner != nil && !inner.Succeeded {
			s.fenceFailures.Add(1)
			return ErrNotLeader
		}
	}
	s.compareFailure.Add(1)
	return ErrConflict
}

func (s *Store) countWrite(ops int) {
	s.writeTxns.Add(1)
	s.writeOps.Add(int64(ops))
}

// DefaultListLimit is the page size List and ListChildren use when limit <= 0.
const DefaultListLimit = 500

// List calls decode for every key under prefix that sorts after `after`
// (pass "" for the first page), in key order, up to limit keys (limit <= 0
// means DefaultListLimit). It returns the last key decoded as next when more
// keys remain, or "" at the end; pass next as after to get the next page.
// List descends into sub-prefixes: listing RolloutsPrefix also returns every
// rollout's per-node keys. Use ListChildren to skip them. Each page is one
// range request at one revision; pages are not a consistent snapshot.
func (s *Store) List(ctx context.Context, prefix string, limit int64, after string, decode func(key string, value []byte) error) (next string, err error) {
	if limit <= 0 {
		limit = DefaultListLimit
	}
	resp, err := s.client.Get(ctx, startKey(prefix, after), clientv3.WithRange(clientv3.GetPrefixRangeEnd(prefix)), clientv3.WithLimit(limit))
	if err != nil {
		return "", fmt.Errorf("list %s: %w", prefix, err)
	}
	for _, kv := range resp.Kvs {
		if err := decode(string(kv.Key), kv.Value); err != nil {
			return "", fmt.Errorf("decode %s: %w", kv.Key, err)
		}
	}
	if resp.More && len(resp.Kvs) > 0 {
		return string(resp.Kvs[len(resp.Kvs)-1].Key), nil
	}
	return "", nil
}

// ListChildren is List restricted to the direct children of prefix: keys
// with no '/' after the prefix. Listing RolloutsPrefix returns the rollouts
// and skips /outpost/rollouts/<id>/nodes/...; prefix should end in '/'.
//
// Cost: etcd cannot filter by depth, so ListChildren reads keys in order
// and, on meeting the first key of a child's subtree, jumps past that subtree
// with a new range request (from "<child>0", '0' being the byte after '/').
// A page of n children whose subtrees are non-empty therefore costs about
// n+1 range requests (and transfers up to n+1 subtree values in the worst
// case) instead of one; subtree sizes do not matter. All requests of one
// call read the same revision, so a page is a consistent snapshot.
func (s *Store) ListChildren(ctx context.Context, prefix string, limit int64, after string, decode func(key string, value []byte) error) (next string, err error) {
	if limit <= 0 {
		limit = DefaultListLimit
	}
	end := clientv3.GetPrefixRangeEnd(prefix)
	start := startKey(prefix, after)
	var (
		rev     int64 // pinned after the first request
		decoded int64
		last    string
	)
	// Each pass strictly advances start, so the loop ends; the bound is a
	// guard against a bug turning it into a spin.
	for pass := 0; pass < 1<<20; pass++ {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(limit - decoded + 1)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := s.client.Get(ctx, start, opts...)
		if err != nil {
			return "", fmt.Errorf("list %s: %w", prefix, err)
		}
		if rev == 0 {
			// Only the first: etcd's header carries its current revision
			// even for a read at an older one.
			rev = resp.Header.Revision
		}
		jumped := false
		for _, kv := range resp.Kvs {
			key := string(kv.Key)
			rest := key[len(prefix):]
			if i := strings.IndexByte(rest, '/'); i >= 0 {
				start = prefix + rest[:i] + "0"
				jumped = true
				break
			}
			if rest == "" {
				continue
			}
			if decoded == limit {
				// Another direct child exists: there is a next page.
				return last, nil
			}
			if err := decode(key, kv.Value); err != nil {
				return "", fmt.Errorf("decode %s: %w", key, err)
			}
			decoded++
			last = key
		}
		if jumped {
			continue
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return "", nil
		}
		start = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	return "", fmt.Errorf("list %s: too many passes", prefix)
}

// ListReverse is List backwards: it calls decode for every key under
// prefix that sorts before `before` (pass "" for the first page), from
// the last key down, up to limit keys (limit <= 0 means
// DefaultListLimit). It returns the last key decoded as next when more
// keys remain, or "" at the end; pass next as before to get the next
// page. Like List it descends into sub-prefixes, and each page is one
// range request at one revision.
func (s *Store) ListReverse(ctx context.Context, prefix string, limit int64, before string, decode func(key string, value []byte) error) (next string, err error) {
	if limit <= 0 {
		limit = DefaultListLimit
	}
	end := clientv3.GetPrefixRangeEnd(prefix)
	if before != "" && before < end {
		end = before
	}
	if end <= prefix {
		return "", nil
	}
	resp, err := s.client.Get(ctx, prefix, clientv3.WithRange(end),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend), clientv3.WithLimit(limit))
	if err != nil {
		return "", fmt.Errorf("list %s: %w", prefix, err)
	}
	for _, kv := range resp.Kvs {
		if err := decode(string(kv.Key), kv.Value); err != nil {
			return "", fmt.Errorf("decode %s: %w", kv.Key, err)
		}
	}
	if resp.More && len(resp.Kvs) > 0 {
		return string(resp.Kvs[len(resp.Kvs)-1].Key), nil
	}
	return "", nil
}

// ListKeys returns every key under prefix in key order, without the
// values, read in one request (one snapshot): for prefixes whose size is
// bounded, such as one rollout's audit markers.
func (s *Store) ListKeys(ctx context.Context, prefix string) ([]string, error) {
	resp, err := s.client.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", prefix, err)
	}
	keys := make([]string, len(resp.Kvs))
	for i, kv := range resp.Kvs {
		keys[i] = string(kv.Key)
	}
	return keys, nil
}

// Page is one range read by ReadPage.
type Page struct {
	// Kvs are the keys read, with their values, in key order.
	Kvs []*mvccpb.KeyValue
	// Revision is the etcd revision the page was read at: the rev asked
	// for, or etcd's current one for rev 0. Reading the following pages at
	// it makes the pages one snapshot; watching from Revision+1 misses no
	// change after it. (etcd's own response header carries the current
	// revision even for a read at an older one, which is not the
	// snapshot's.)
	Revision int64
	// More reports whether more keys under the prefix follow the page.
	More bool
}

// ReadPage reads up to limit keys (limit <= 0 means DefaultListLimit)
// under prefix from start on, in key order, as of etcd revision rev (0:
// the newest); a start before prefix means the prefix's first key. It is
// the step of a scan that must stay on one snapshot across pages (pass
// the first page's Revision as rev, and the last key + "\x00" as start)
// or that stops part way. A rev older than the history etcd keeps fails
// with an error that matches rpctypes.ErrCompacted (errors.Is).
func (s *Store) ReadPage(ctx context.Context, prefix, start string, rev, limit int64) (Page, error) {
	if limit <= 0 {
		limit = DefaultListLimit
	}
	if start < prefix {
		start = prefix
	}
	opts := []clientv3.OpOption{clientv3.WithRange(clientv3.GetPrefixRangeEnd(prefix)), clientv3.WithLimit(limit)}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(rev))
	}
	resp, err := s.client.Get(ctx, start, opts...)
	if err != nil {
		return Page{}, fmt.Errorf("read %s: %w", prefix, err)
	}
	if rev <= 0 {
		rev = resp.Header.Revision
	}
	return Page{Kvs: resp.Kvs, Revision: rev, More: resp.More}, nil
}

// startKey is the first key a listing of prefix after `after` may return.
func startKey(prefix, after string) string {
	if after == "" || after < prefix {
		return prefix
	}
	return after + "\x00"
}

// Watch watches every key under prefix from revision fromRev (0 means from
// now), with etcd's own semantics: events in order, ErrCompacted when fromRev
// is older than the kept history (re-list, then watch from the list's
// revision). The watch requires an etcd leader, so a partitioned member ends
// it instead of going silent. opts are appended (e.g. clientv3.WithPrevKV()).
func (s *Store) Watch(ctx context.Context, prefix string, fromRev int64, opts ...clientv3.OpOption) clientv3.WatchChan {
	o := []clientv3.OpOption{clientv3.WithPrefix()}
	if fromRev > 0 {
		o = append(o, clientv3.WithRev(fromRev))
	}
	return s.client.Watch(clientv3.WithRequireLeader(ctx), prefix, append(o, opts...)...)
}
