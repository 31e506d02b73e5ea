package controlplane

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/outposthq/outpost/controlplane/audit"
	"github.com/outposthq/outpost/controlplane/store"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// BenchmarkAuditVolume runs a 10,000-node rollout through two fake
// gateways that report every step of a real deployment (connect to
// unlock, fifteen steps), and measures what the audit log keeps in etcd
// for it: audit entries per node deployment (node.result entries, and
// all entries of the run), and bytes per node deployment (keys and
// values of the entries, their markers and the signed checkpoints).
// OUTPOST_BENCH_AUDIT_NODES lowers the node count while working on it.
func BenchmarkAuditVolume(b *testing.B) {
	nodes := auditLoadNodes
	if v := os.Getenv("OUTPOST_BENCH_AUDIT_NODES"); v != "" {
		var err error
		if nodes, err = strconv.Atoi(v); err != nil || nodes < 1 || nodes > auditLoadNodes {
			b.Fatalf("OUTPOST_BENCH_AUDIT_NODES=%q: want 1 to %d", v, auditLoadNodes)
		}
	}
	for range b.N {
		s := startCP(b, b.TempDir(), func(c *Config) {
			c.LeaderTTL = time.Minute
			c.heartbeatInterval = 10 * time.Second
		})
		c := dial(b, s.Addr())
		ctx, cancel := context.WithTimeout(context.Background(), auditLoadLimit)
		applyNodes(b, c, nodes, func(i int) string { return []string{"dc1", "dc2"}[i%2] })
		digest := upload(b, c, "app.tar.gz", []byte("app"))
		for _, dc := range []string{"dc1", "dc2"} {
			gw := newFakeGateway(b, "gw-"+dc, dc, 1000)
			gw.auto, gw.everyStep = succeedAll, true
			gw.connect(s.Addr())
			defer gw.disconnect()
		}
		r := createRollout(b, c, rollingPlan("25%", 0), digest)
		for i := 0; ; i++ {
			if i == int(auditLoadLimit/(500*time.Millisecond)) {
				b.Fatalf("rollout %s not SUCCEEDED after %v", r.GetId(), auditLoadLimit)
			}
			resp, err := c.GetRollout(ctx, &outpostv1.GetRolloutRequest{Id: r.GetId()})
			if err != nil {
				b.Fatal(err)
			}
			if resp.GetRollout().GetState() == outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED {
				break
			}
			time.Sleep(500 * time.Millisecond)
		}
		if err := s.audit.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		if _, err := s.audit.Checkpoint(ctx); err != nil {
			b.Fatal(err)
		}
		results, entries, stepEntries := 0, 0, 0
		var bytes int64
		for _, prefix := range []string{store.AuditPrefix, store.AuditIndexPrefix, store.AuditCheckpointPrefix} {
			key := prefix
			for page := 0; ; page++ {
				if page == 10_000 {
					b.Fatal("audit log: too many pages")
				}
				resp, err := s.store.Client().Get(ctx, key, clientv3.WithRange(clientv3.GetPrefixRangeEnd(prefix)), clientv3.WithLimit(1000))
				if err != nil {
					b.Fatal(err)
				}
				for _, kv := range resp.Kvs {
					bytes += int64(len(kv.Key) + len(kv.Value))
					if prefix != store.AuditPrefix {
						continue
					}
					entries++
					e := &outpostv1.AuditEntry{}
					if err := proto.Unmarshal(kv.Value, e); err != nil {
						b.Fatal(err)
					}
					switch e.GetAction() {
					case audit.ActionNodeResult:
						results++
					case audit.ActionNodeStep:
						stepEntries++
					}
				}
				if !resp.More || len(resp.Kvs) == 0 {
					break
				}
				key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
			}
		}
		// What the audit log takes in etcd's database: the pages in use
		// with it and without it, each after a compaction.
		withAudit := dbInUse(ctx, b, s.store)
		for _, prefix := range []string{store.AuditPrefix, store.AuditIndexPrefix, store.AuditCheckpointPrefix} {
			if _, err := s.store.Client().Delete(ctx, prefix, clientv3.WithPrefix()); err != nil {
				b.Fatal(err)
			}
		}
		withoutAudit := dbInUse(ctx, b, s.store)
		cancel()
		if results != nodes || stepEntries != 0 {
			b.Fatalf("%d node.result and %d node.step entries for %d nodes; want one result each and no step entries", results, stepEntries, nodes)
		}
		b.ReportMetric(float64(results)/float64(nodes), "result-entries/node")
		b.ReportMetric(float64(entries)/float64(nodes), "entries/node")
		b.ReportMetric(float64(bytes)/float64(nodes), "bytes/node")
		b.ReportMetric(float64(withAudit-withoutAudit)/float64(nodes), "db-bytes/node")
		b.Logf("%d nodes: %d audit entries (%d node results), %d bytes of audit keys and values in etcd", nodes, entries, results, bytes)
	}
}

// dbInUse compacts etcd to its current revision and returns the bytes of
// its database in use (etcd's dbSizeInUse).
func dbInUse(ctx context.Context, b *testing.B, st *store.Store) int64 {
	b.Helper()
	c := st.Client()
	rev, err := st.Revision(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := c.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
		b.Fatal(err)
	}
	status, err := c.Status(ctx, c.Endpoints()[0])
	if err != nil {
		b.Fatal(err)
	}
	return status.DbSizeInUse
}
