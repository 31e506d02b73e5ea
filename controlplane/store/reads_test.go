package store_test

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/controlplane/store/storetest"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// putNodes writes node(id) at prefix+id for each id and returns the keys.
func putNodes(t *testing.T, s *store.Store, prefix string, ids ...string) []string {
	t.Helper()
	var keys []string
	for _, id := range ids {
		key := prefix + id
		if err := s.Put(ctxT(t), key, node(id)); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, key)
	}
	return keys
}

// decodeKeys returns a decode func for List-like calls that appends each
// key to *got and checks the value is a Node.
func decodeKeys(got *[]string) func(string, []byte) error {
	return func(key string, value []byte) error {
		*got = append(*got, key)
		return proto.Unmarshal(value, &outpostv1.Node{})
	}
}

func TestExists(t *testing.T) {
	s := storetest.Open(t)
	ctx := ctxT(t)
	putNodes(t, s, "/outpost/t/", "a")
	for _, tt := range []struct {
		key  string
		want bool
	}{
		{"/outpost/t/a", true},
		{"/outpost/t/b", false},
		{"/outpost/t/", false}, // a prefix of a key is not the key
	} {
		got, err := s.Exists(ctx, tt.key)
		if err != nil || got != tt.want {
			t.Errorf("Exists(%q) = %v, %v; want %v", tt.key, got, err, tt.want)
		}
	}
	if _, err := s.Exists(ctx, ""); err == nil {
		t.Error(`Exists("") succeeded, want etcd's error for an empty key`)
	}
}

func TestLast(t *testing.T) {
	s := storetest.Open(t)
	ctx := ctxT(t)
	prefix := store.RevisionsPrefix("app")
	for _, n := range []int64{1, 2, 10, 9} {
		if err := s.Put(ctx, store.RevisionKey("app", n), &outpostv1.Revision{App: "app", Revision: n}); err != nil {
			t.Fatal(err)
		}
	}
	// A neighbour whose name starts with the same letters sorts after
	// every key of prefix; it must not be taken for the last one.
	if err := s.Put(ctx, store.RevisionKey("app2", 99), &outpostv1.Revision{App: "app2", Revision: 99}); err != nil {
		t.Fatal(err)
	}

	var rev outpostv1.Revision
	key, err := s.Last(ctx, prefix, &rev)
	if err != nil || key != store.RevisionKey("app", 10) || rev.GetRevision() != 10 {
		t.Errorf("Last(%s) = %q (revision %d), %v; want revision 10", prefix, key, rev.GetRevision(), err)
	}
	key, err = s.Last(ctx, prefix, nil)
	if err != nil || key != store.RevisionKey("app", 10) {
		t.Errorf("Last(%s, nil) = %q, %v; want the key of revision 10", prefix, key, err)
	}
	var none outpostv1.Revision
	key, err = s.Last(ctx, store.RevisionsPrefix("empty"), &none)
	if err != nil || key != "" || none.GetRevision() != 0 {
		t.Errorf("Last(empty prefix) = %q, %v, %v; want \"\" and m untouched", key, &none, err)
	}

	if _, err := s.Client().Put(ctx, store.RevisionKey("bad", 1), "\xff\xff"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Last(ctx, store.RevisionsPrefix("bad"), &none); err == nil || !strings.Contains(err.Error(), store.RevisionKey("bad", 1)) {
		t.Errorf("Last(corrupt value) = %v, want an error naming the key", err)
	}
}

func TestGetAll(t *testing.T) {
	s := storetest.Open(t)
	ctx := ctxT(t)
	// More keys than one transaction may read, every third one missing,
	// in an order that is not key order.
	var keys, want []string
	for i := 2*store.MaxTxnOps + 10; i > 0; i-- {
		key := fmt.Sprintf("/outpost/t/n%04d", i)
		keys = append(keys, key)
		if i%3 == 0 {
			continue
		}
		putNodes(t, s, "/outpost/t/", fmt.Sprintf("n%04d", i))
		want = append(want, key)
	}
	var got []string
	if err := s.GetAll(ctx, keys, decodeKeys(&got)); err != nil {
		t.Fatalf("GetAll: %v", err)
	}
	if !slices.Equal(got, want) {
		t.Errorf("GetAll returned %d keys %q..., want %d in the order asked, without the missing ones", len(got), got[:min(3, len(got))], len(want))
	}

	t.Run("RepeatedAndEmpty", func(t *testing.T) {
		var got []string
		if err := s.GetAll(ctx, []string{want[0], want[0]}, decodeKeys(&got)); err != nil || len(got) != 2 {
			t.Errorf("GetAll(same key twice) = %q, %v; want it twice", got, err)
		}
		got = nil
		if err := s.GetAll(ctx, nil, decodeKeys(&got)); err != nil || got != nil {
			t.Errorf("GetAll(no keys) = %q, %v; want nothing", got, err)
		}
	})

	t.Run("DecodeError", func(t *testing.T) {
		boom := errors.New("boom")
		err := s.GetAll(ctx, want[:1], func(string, []byte) error { return boom })
		if !errors.Is(err, boom) || !strings.Contains(err.Error(), want[0]) {
			t.Errorf("GetAll with a failing decode = %v, want boom naming %s", err, want[0])
		}
	})
}

func TestListReverse(t *testing.T) {
	s := storetest.Open(t)
	ctx := ctxT(t)
	prefix := "/outpost/t/"
	var all []string
	for i := range 7 {
		all = append(all, putNodes(t, s, prefix, fmt.Sprintf("k%d", i))...)
	}
	putNodes(t, s, "/outpost/t", "x")  // /outpost/tx: a neighbour after the prefix
	putNodes(t, s, "/outpost/", "s/z") // /outpost/s/z: one before it
	reversed := slices.Clone(all)
	slices.Reverse(reversed)

	t.Run("Pages", func(t *testing.T) {
		var got []string
		before := ""
		for pages := 1; ; pages++ {
			if pages > 10 {
				t.Fatal("ListReverse did not end after 10 pages")
			}
			next, err := s.ListReverse(ctx, prefix, 3, before, decodeKeys(&got))
			if err != nil {
				t.Fatalf("ListReverse: %v", err)
			}
			if next == "" {
				break
			}
			before = next
		}
		if !slices.Equal(got, reversed) {
			t.Errorf("ListReverse pages = %q, want %q", got, reversed)
		}
	})

	for _, tt := range []struct {
		name   string
		limit  int64
		before string
		want   []string
		next   string
	}{
		{"DefaultLimit", 0, "", reversed, ""},
		{"BeforeAKey", 2, all[4], []string{all[3], all[2]}, all[2]},
		{"BeforeTheFirstKey", 5, all[0], nil, ""},
		{"BeforeThePrefix", 5, prefix, nil, ""},
		{"BeforeSomethingSmaller", 5, "/outpost/a", nil, ""},
		{"BeforeSomethingLarger", 1, "/outpost/u", reversed[:1], reversed[0]},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			next, err := s.ListReverse(ctx, prefix, tt.limit, tt.before, decodeKeys(&got))
			if err != nil || next != tt.next || !slices.Equal(got, tt.want) {
				t.Errorf("ListReverse(limit %d, before %q) = %q, next %q, %v; want %q, next %q", tt.limit, tt.before, got, next, err, tt.want, tt.next)
			}
		})
	}
}

func TestListKeys(t *testing.T) {
	s := storetest.Open(t)
	ctx := ctxT(t)
	want := putNodes(t, s, "/outpost/t/", "a", "b/c", "d")
	putNodes(t, s, "/outpost/t", "x")
	got, err := s.ListKeys(ctx, "/outpost/t/")
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("ListKeys = %q, %v; want %q", got, err, want)
	}
	got, err = s.ListKeys(ctx, "/outpost/none/")
	if err != nil || len(got) != 0 {
		t.Errorf("ListKeys(empty prefix) = %q, %v; want none", got, err)
	}
}

// TestReadAtRevision covers ReadPage and GetAt: both read an older
// revision, and both report a compacted one as rpctypes.ErrCompacted.
func TestReadAtRevision(t *testing.T) {
	s := storetest.Open(t)
	ctx := ctxT(t)
	prefix := "/outpost/t/"
	keys := putNodes(t, s, prefix, "a", "b", "c", "d", "e")
	putNodes(t, s, "/outpost/t", "x")
	rev, err := s.Revision(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// After rev: a changes, f appears.
	if err := s.Put(ctx, keys[0], node("changed")); err != nil {
		t.Fatal(err)
	}
	putNodes(t, s, prefix, "f")

	t.Run("Pages", func(t *testing.T) {
		var got []string
		start, at := "", int64(0)
		for pages := 1; ; pages++ {
			if pages > 10 {
				t.Fatal("ReadPage did not end after 10 pages")
			}
			p, err := s.ReadPage(ctx, prefix, start, at, 2)
			if err != nil {
				t.Fatalf("ReadPage: %v", err)
			}
			if at == 0 {
				at = p.Revision
				// Written after the first page: later pages must not see it.
				putNodes(t, s, prefix, "g")
			}
			if p.Revision != at {
				t.Errorf("page %d read at revision %d, want %d", pages, p.Revision, at)
			}
			for _, kv := range p.Kvs {
				got = append(got, string(kv.Key))
			}
			if !p.More {
				break
			}
			start = string(p.Kvs[len(p.Kvs)-1].Key) + "\x00"
		}
		want := append(slices.Clone(keys), prefix+"f")
		if !slices.Equal(got, want) {
			t.Errorf("ReadPage pages = %q, want %q", got, want)
		}
	})

	for _, tt := range []struct {
		name  string
		start string
		rev   int64
		limit int64
		want  []string
		more  bool
	}{
		{"AtOldRevision", "", rev, 0, keys, false},
		{"StartBeforePrefix", "/outpost/a", rev, 2, keys[:2], true},
		{"StartInside", keys[3], rev, 0, keys[3:], false},
		{"StartAfterPrefix", "/outpost/u", rev, 0, nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := s.ReadPage(ctx, prefix, tt.start, tt.rev, tt.limit)
			var got []string
			for _, kv := range p.Kvs {
				got = append(got, string(kv.Key))
			}
			if err != nil || !slices.Equal(got, tt.want) || p.More != tt.more {
				t.Errorf("ReadPage(start %q, rev %d, limit %d) = %q, more %v, %v; want %q, more %v", tt.start, tt.rev, tt.limit, got, p.More, err, tt.want, tt.more)
			}
		})
	}

	t.Run("GetAt", func(t *testing.T) {
		var n outpostv1.Node
		found, err := s.GetAt(ctx, keys[0], rev, &n)
		if err != nil || !found || n.GetId() != "a" {
			t.Errorf("GetAt(%s, %d) = %v, %v, %v; want the value before the change", keys[0], rev, found, &n, err)
		}
		found, err = s.GetAt(ctx, keys[0], 0, &n)
		if err != nil || !found || n.GetId() != "changed" {
			t.Errorf("GetAt(%s, 0) = %v, %v, %v; want the newest value", keys[0], found, &n, err)
		}
		found, err = s.GetAt(ctx, prefix+"f", rev, &n)
		if err != nil || found {
			t.Errorf("GetAt(key written after rev) = %v, %v; want not found", found, err)
		}
	})

	t.Run("Compacted", func(t *testing.T) {
		now, err := s.Revision(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.Client().Compact(ctx, now); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ReadPage(ctx, prefix, "", rev, 0); !errors.Is(err, rpctypes.ErrCompacted) {
			t.Errorf("ReadPage(compacted rev) = %v, want ErrCompacted", err)
		}
		if _, err := s.GetAt(ctx, keys[0], rev, &outpostv1.Node{}); !errors.Is(err, rpctypes.ErrCompacted) {
			t.Errorf("GetAt(compacted rev) = %v, want ErrCompacted", err)
		}
	})
}

func TestPutLeased(t *testing.T) {
	s := storetest.Open(t)
	ctx := ctxT(t)
	leaseOf := func(t *testing.T, key string) (clientv3.LeaseID, int64) {
		t.Helper()
		resp, err := s.Client().Get(ctx, key)
		if err != nil || len(resp.Kvs) != 1 {
			t.Fatalf("get %s = %v, %v; want one key", key, resp, err)
		}
		id := clientv3.LeaseID(resp.Kvs[0].Lease)
		if id == clientv3.NoLease {
			t.Fatalf("%s has no lease", key)
		}
		ttl, err := s.Client().TimeToLive(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return id, ttl.GrantedTTL
	}

	t.Run("Put", func(t *testing.T) {
		key := store.HostKeyScanKey("n1")
		before := s.Stats()
		if err := s.PutLeased(ctx, key, node("n1"), 90*time.Second+500*time.Millisecond); err != nil {
			t.Fatalf("PutLeased: %v", err)
		}
		if got := s.Stats().WriteOps - before.WriteOps; got != 1 {
			t.Errorf("PutLeased counted %d write ops, want 1", got)
		}
		if _, ttl := leaseOf(t, key); ttl != 90 {
			t.Errorf("lease granted for %d s, want 90 (whole seconds, rounded down)", ttl)
		}
		var n outpostv1.Node
		if found, _, err := s.Get(ctx, key, &n); err != nil || !found || n.GetId() != "n1" {
			t.Errorf("Get after PutLeased = %v, %v, %v", found, &n, err)
		}
	})

	t.Run("OpInTxnAndExpiry", func(t *testing.T) {
		key := store.CreateRequestKey("req-1")
		op, err := s.OpPutLeased(ctx, key, node("r"), time.Hour)
		if err != nil {
			t.Fatalf("OpPutLeased: %v", err)
		}
		if ok, _ := s.Exists(ctx, key); ok {
			t.Fatal("OpPutLeased wrote before the op was applied")
		}
		if err := s.Txn(ctx, nil, op); err != nil {
			t.Fatal(err)
		}
		id, ttl := leaseOf(t, key)
		if ttl != 3600 {
			t.Errorf("lease granted for %d s, want 3600", ttl)
		}
		// The key lives as long as its lease.
		if _, err := s.Client().Revoke(ctx, id); err != nil {
			t.Fatal(err)
		}
		if ok, err := s.Exists(ctx, key); err != nil || ok {
			t.Errorf("Exists after the lease ended = %v, %v; want false", ok, err)
		}
	})

	for _, tt := range []struct {
		name string
		ttl  time.Duration
		want string
	}{
		{"Zero", 0, "under a second"},
		{"Negative", -time.Hour, "under a second"},
		{"SubSecond", 999 * time.Millisecond, "under a second"},
		{"BeyondEtcdMaximum", math.MaxInt64, "too large"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			key := store.HostKeyScanKey("bad-" + tt.name)
			err := s.PutLeased(ctx, key, node("x"), tt.ttl)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), key) {
				t.Errorf("PutLeased(ttl %v) = %v, want an error naming %s and saying %q", tt.ttl, err, key, tt.want)
			}
			if ok, _ := s.Exists(ctx, key); ok {
				t.Errorf("PutLeased(ttl %v) failed but wrote %s", tt.ttl, key)
			}
		})
	}
}

// TestListChildrenOneSnapshot writes a child while ListChildren is half
// way (from decode, between its range requests): the listing is one
// snapshot, so the new child must not appear. Each jump past a subtree
// is a new request; they used to read at the revision etcd reported with
// the previous one, which is its current revision, not the snapshot's.
func TestListChildrenOneSnapshot(t *testing.T) {
	s := storetest.Open(t)
	ctx := ctxT(t)
	prefix := "/outpost/t/"
	// a and c have subtrees, so the listing jumps twice.
	putNodes(t, s, prefix, "a", "a/x", "c", "c/x", "e")
	var got []string
	wrote := false
	next, err := s.ListChildren(ctx, prefix, 10, "", func(key string, _ []byte) error {
		got = append(got, key)
		if !wrote {
			wrote = true
			putNodes(t, s, prefix, "d")
		}
		return nil
	})
	want := []string{prefix + "a", prefix + "c", prefix + "e"}
	if err != nil || next != "" || !slices.Equal(got, want) {
		t.Errorf("ListChildren = %q, next %q, %v; want %q: a child written during the listing is not in its snapshot", got, next, err, want)
	}
}
