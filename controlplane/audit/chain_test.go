package audit_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/outposthq/outpost/controlplane/audit"
	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/controlplane/store/storetest"
	"github.com/outposthq/outpost/internal/auditchain"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func newSigner(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// verifyLog walks the whole log as `outpost audit verify` does: the
// checkpoints, then every entry through List. It returns the summary and
// the first break.
func verifyLog(t *testing.T, l *audit.Log, key *ecdsa.PrivateKey) (auditchain.Summary, error) {
	t.Helper()
	var cps []*outpostv1.AuditCheckpoint
	token := ""
	for range 1000 {
		page, next, err := l.ListCheckpoints(ctxT(t), 2, token)
		if err != nil {
			t.Fatalf("ListCheckpoints: %v", err)
		}
		cps = append(cps, page...)
		if token = next; token == "" {
			break
		}
	}
	v, err := auditchain.NewVerifier(auditchain.Options{Key: key.Public()}, cps)
	if err != nil {
		return auditchain.Summary{}, err
	}
	for _, e := range listAll(t, l, audit.Query{}, 1000) {
		if err := v.Add(e); err != nil {
			return auditchain.Summary{}, err
		}
	}
	return v.Finish()
}

// appendN appends n entries named prefix-i.
func appendN(t *testing.T, l *audit.Log, prefix string, n int) {
	t.Helper()
	for i := range n {
		if err := l.Append(ctxT(t), entry(fmt.Sprintf("%s-%d", prefix, i), "")); err != nil {
			t.Fatal(err)
		}
	}
}

// rawEntry returns the key and the stored entry with sequence seq.
func rawEntry(t *testing.T, s *store.Store, seq int64) (string, *outpostv1.AuditEntry) {
	t.Helper()
	resp, err := s.Client().Get(ctxT(t), store.AuditPrefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		e := &outpostv1.AuditEntry{}
		if err := proto.Unmarshal(kv.Value, e); err != nil {
			t.Fatal(err)
		}
		if e.GetSequence() == seq {
			return string(kv.Key), e
		}
	}
	t.Fatalf("no entry %d in etcd", seq)
	return "", nil
}

// signHead signs a checkpoint and checks that the newest one (this, or
// one the janitor signed meanwhile) covers entry seq.
func signHead(t *testing.T, l *audit.Log, seq int64) {
	t.Helper()
	if _, err := l.Checkpoint(ctxT(t)); err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}
	cps, _, err := l.ListCheckpoints(ctxT(t), 1000, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(cps) == 0 || cps[len(cps)-1].GetSequence() != seq {
		t.Fatalf("newest checkpoint = %v, want one of entry %d", cps, seq)
	}
}

func putRaw(t *testing.T, s *store.Store, key string, e *outpostv1.AuditEntry) {
	t.Helper()
	b, err := proto.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Client().Put(ctxT(t), key, string(b)); err != nil {
		t.Fatal(err)
	}
}

// TestChainTamperingInEtcd edits, deletes and reorders entries with a raw
// etcd client, as someone with access to etcd would: verify names the
// entry, and the control plane refuses to sign a checkpoint over it.
func TestChainTamperingInEtcd(t *testing.T) {
	s := storetest.Open(t)
	key := newSigner(t)
	for _, tc := range []struct {
		name   string
		tamper func(t *testing.T)
		want   string
	}{
		{"Intact", func(*testing.T) {}, ""},
		{"Edited", func(t *testing.T) {
			k, e := rawEntry(t, s, 5)
			e.Result = "OK"
			e.Message = "nothing to see"
			putRaw(t, s, k, e)
		}, "entry 5 ("},
		{"Deleted", func(t *testing.T) {
			k, _ := rawEntry(t, s, 5)
			if _, err := s.Client().Delete(ctxT(t), k); err != nil {
				t.Fatal(err)
			}
		}, "entry 5 before it was removed"},
		{"Reordered", func(t *testing.T) {
			k5, e5 := rawEntry(t, s, 5)
			k6, e6 := rawEntry(t, s, 6)
			putRaw(t, s, k5, e6)
			putRaw(t, s, k6, e5)
		}, "entry 6 ("},
		{"EditedAndRehashed", func(t *testing.T) {
			// The attacker recomputes the hashes after the edit: the links
			// hold, the signed checkpoint of entry 8 does not.
			var prev []byte
			for seq := int64(5); seq <= 10; seq++ {
				k, e := rawEntry(t, s, seq)
				if seq == 5 {
					e.Message = "rewritten"
					prev = e.GetPreviousHash()
				}
				e.PreviousHash, e.Hash = prev, nil
				h, err := auditchain.HashEntry(e)
				if err != nil {
					t.Fatal(err)
				}
				e.Hash, prev = h, h
				putRaw(t, s, k, e)
			}
		}, "entry 8 ("},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearAudit(t, s)
			l := openLog(t, s, audit.Config{Signer: key, CheckpointInterval: time.Hour})
			appendN(t, l, "e", 8)
			signHead(t, l, 8)
			appendN(t, l, "f", 2)
			tc.tamper(t)
			_, err := verifyLog(t, l, key)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
				t.Fatalf("verify = %q, want %q", got, tc.want)
			}
			// The checkpointer walks from entry 8 on: it sees tampering
			// at or after it, and must then not sign.
			switch cp, err := l.Checkpoint(ctxT(t)); tc.name {
			case "Intact":
				signHead(t, l, 10)
			case "EditedAndRehashed":
				if err == nil {
					t.Errorf("Checkpoint over a rewritten chain = %v, want an error", cp)
				}
			}
		})
	}
}

// TestPruneKeepsChainVerifiable: the retention janitor deletes old
// entries and signs a PRUNE checkpoint of the last one in the same
// transaction; the chain verifies from it, and an entry removed beyond
// it is still caught.
func TestPruneKeepsChainVerifiable(t *testing.T) {
	s := storetest.Open(t)
	key := newSigner(t)
	clearAudit(t, s)
	clk := newClock(t0)
	l := openLog(t, s, audit.Config{Now: clk.Now, Signer: key, Retention: 48 * time.Hour, SweepInterval: time.Hour, CheckpointInterval: time.Hour})
	for day := range 4 {
		appendN(t, l, fmt.Sprintf("d%d", day), 3)
		if _, err := l.Checkpoint(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		clk.Add(24 * time.Hour)
	}
	if n, err := l.Sweep(ctxT(t)); err != nil || n != 6 {
		t.Fatalf("Sweep = %d, %v; want 6 deleted", n, err)
	}
	sum, err := verifyLog(t, l, key)
	if err != nil {
		t.Fatalf("verify after prune: %v", err)
	}
	if !sum.Anchored || sum.First != 7 || sum.Last != 12 || sum.SignedThrough != 12 {
		t.Errorf("verify after prune = %+v, want entries 7 to 12, anchored, signed through 12", sum)
	}
	cps, _, err := l.ListCheckpoints(ctxT(t), 100, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(cps) == 0 || cps[0].GetSequence() != 6 || cps[0].GetReason() != outpostv1.AuditCheckpointReason_AUDIT_CHECKPOINT_REASON_PRUNE {
		t.Fatalf("oldest checkpoint after prune = %v, want the PRUNE checkpoint of entry 6", cps[0])
	}
	// A second prune in chunks, of entries written since.
	appendN(t, l, "more", 5)
	clk.Add(72 * time.Hour)
	if _, err := l.Sweep(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := verifyLog(t, l, key); err != nil {
		t.Fatalf("verify after the second prune: %v", err)
	}
	// Removing the oldest kept entry by hand is not a prune.
	appendN(t, l, "last", 2)
	k, _ := rawEntry(t, s, 17)
	if _, err := s.Client().Delete(ctxT(t), k); err != nil {
		t.Fatal(err)
	}
	if _, err := verifyLog(t, l, key); err == nil || !strings.Contains(err.Error(), "entry 18") {
		t.Errorf("verify after deleting the oldest kept entry = %v, want entry 18 named", err)
	}
}

// TestReplicasKeepOneChain: two replicas' logs append at once from
// several goroutines each, and one of them stops half way, as a deposed
// leader does; the other goes on from the stored head. The result is one
// linear chain.
func TestReplicasKeepOneChain(t *testing.T) {
	s := storetest.Open(t)
	key := newSigner(t)
	clearAudit(t, s)
	a := openLog(t, s, audit.Config{Signer: key, ReplicaName: "cp-a", BatchDelay: time.Millisecond})
	b := openLog(t, s, audit.Config{Signer: key, ReplicaName: "cp-b", BatchDelay: time.Millisecond})
	const writers, each = 4, 50
	var wg sync.WaitGroup
	errs := make(chan error, 2*writers*each)
	for w := range writers {
		for _, l := range []*audit.Log{a, b} {
			wg.Go(func() {
				for i := range each {
					if err := l.Enqueue(context.Background(), entry(fmt.Sprintf("w%d-%d", w, i), "")); err != nil {
						errs <- err
					}
				}
			})
		}
	}
	wg.Wait()
	// Replica a steps down with entries still queued: Close writes them.
	if err := a.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	appendN(t, b, "after", 10)
	if err := b.Flush(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if _, err := b.Checkpoint(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	sum, err := verifyLog(t, b, key)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if want := int64(2*writers*each + 10); sum.First != 1 || sum.Last != want || sum.Entries != int(want) || sum.SignedThrough != want {
		t.Errorf("verify = %+v, want one chain of entries 1 to %d, signed through the last", sum, want)
	}
}

func TestListCheckpointsRefusesForeignTokens(t *testing.T) {
	s := storetest.Open(t)
	clearAudit(t, s)
	l := openLog(t, s, audit.Config{Signer: newSigner(t)})
	appendN(t, l, "e", 3)
	_, listToken, err := l.List(ctxT(t), audit.Query{}, 1, "")
	if err != nil || listToken == "" {
		t.Fatalf("List = %q, %v; want a next page", listToken, err)
	}
	for _, token := range []string{"garbage", listToken, "YXVkaXRjcDovb3V0cG9zdC9ub2Rlcy8"} {
		if _, _, err := l.ListCheckpoints(ctxT(t), 10, token); !errors.Is(err, audit.ErrBadPageToken) {
			t.Errorf("ListCheckpoints(token %q) = %v, want ErrBadPageToken", token, err)
		}
	}
}
