package controlplane

import (
	"context"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/outposthq/outpost/controlplane/audit"
	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/controlplane/store/storetest"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Shape of TestAuditKeepsEveryResultOfABigRolloutOnASlowStore.
const (
	auditLoadNodes = 10_000
	// auditLoadQueue is far below what the engine produces while the
	// audit writes crawl: the queue is full most of the time.
	auditLoadQueue = 16
	// auditLoadDelay is added to every audit write transaction.
	auditLoadDelay = 2 * time.Millisecond
	// auditLoadLimit bounds the rollout and the wait for its entries.
	auditLoadLimit = 5 * time.Minute
)

// TestAuditKeepsEveryResultOfABigRolloutOnASlowStore runs a 10,000-node
// rollout while every audit write transaction is delayed in the etcd
// client and the audit queue holds 16 entries, so the engine produces
// entries much faster than they are written. The engine must wait for the
// audit log rather than drop entries: every node's result and its
// finished step (folded into the result entry) are in etcd exactly once,
// written by the engine (none recovered), and the metrics show that callers waited for the full
// queue. OUTPOST_TEST_AUDIT_NODES lowers the node count while working on
// it.
func TestAuditKeepsEveryResultOfABigRolloutOnASlowStore(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000-node rollout")
	}
	nodes := auditLoadNodes
	if v := os.Getenv("OUTPOST_TEST_AUDIT_NODES"); v != "" {
		var err error
		if nodes, err = strconv.Atoi(v); err != nil || nodes < 1 || nodes > auditLoadNodes {
			t.Fatalf("OUTPOST_TEST_AUDIT_NODES=%q: want 1 to %d", v, auditLoadNodes)
		}
	}
	s := startCP(t, t.TempDir(), func(c *Config) {
		// A loaded machine must not end the leadership term or a
		// gateway's session: the fake gateways do not come back.
		c.LeaderTTL = time.Minute
		c.heartbeatInterval = 10 * time.Second
		c.MetricsListen = "127.0.0.1:0"
		c.auditQueueSize = auditLoadQueue
		c.wrapKV = func(kv clientv3.KV) clientv3.KV {
			return &storetest.DelayedKV{KV: kv, Prefix: store.AuditPrefix, Wait: func(ctx context.Context) error {
				t := time.NewTimer(auditLoadDelay)
				defer t.Stop()
				select {
				case <-t.C:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			}}
		}
	})
	c := dial(t, s.Addr())
	ctx, cancel := context.WithTimeout(context.Background(), auditLoadLimit)
	defer cancel()
	applyNodes(t, c, nodes, func(i int) string { return []string{"dc1", "dc2"}[i%2] })
	digest := upload(t, c, "app.tar.gz", []byte("app"))
	for _, dc := range []string{"dc1", "dc2"} {
		gw := newFakeGateway(t, "gw-"+dc, dc, 1000)
		gw.auto = succeedAll
		gw.connect(s.Addr())
		defer gw.disconnect()
	}
	start := time.Now()
	r := createRollout(t, c, rollingPlan("25%", 0), digest)
	var last *outpostv1.Rollout
	for last.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED {
		if ctx.Err() != nil {
			t.Fatalf("rollout %s: %v after %v, counts %v, message %q", r.GetId(), last.GetState(), auditLoadLimit, last.GetNodeCounts(), last.GetMessage())
		}
		time.Sleep(500 * time.Millisecond)
		resp, err := c.GetRollout(ctx, &outpostv1.GetRolloutRequest{Id: r.GetId()})
		if err != nil {
			t.Fatalf("GetRollout: %v", err)
		}
		last = resp.GetRollout()
	}
	rolledOut := time.Since(start)
	// The engine queues the final state's entry after every node's: once
	// it is written (its marker is), so is everything before it. The
	// queue holds a moment's worth of entries at most.
	for i := 0; ; i++ {
		resp, err := s.store.Client().Get(ctx, audit.RolloutStateMarkerKey(r.GetId(), outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED))
		if err != nil {
			t.Fatalf("read the final state's marker: %v", err)
		}
		if len(resp.Kvs) == 1 {
			break
		}
		if i == 600 {
			t.Error("the final state's audit entry is not written 30s after the rollout ended")
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%d nodes rolled out in %v, audit written %v later", nodes, rolledOut.Round(time.Millisecond),
		(time.Since(start) - rolledOut).Round(time.Millisecond))

	results, steps := map[string]int{}, map[string]int{}
	folded := 0
	recovered := 0
	end := clientv3.GetPrefixRangeEnd(store.AuditPrefix)
	key := store.AuditPrefix
	for page := 0; ; page++ {
		if page == 1000 {
			t.Fatal("audit log: too many pages")
		}
		resp, err := s.store.Client().Get(ctx, key, clientv3.WithRange(end), clientv3.WithLimit(1000))
		if err != nil {
			t.Fatalf("read the audit log: %v", err)
		}
		for _, kv := range resp.Kvs {
			e := &outpostv1.AuditEntry{}
			if err := proto.Unmarshal(kv.Value, e); err != nil {
				t.Fatalf("decode %s: %v", kv.Key, err)
			}
			if e.GetRolloutId() != r.GetId() {
				continue
			}
			if e.GetDetails()[audit.Recovered] != "" {
				recovered++
			}
			switch e.GetAction() {
			case audit.ActionNodeResult:
				results[e.GetNodeId()]++
				if e.GetDetails()["steps"] == "unlock ok 3ms" {
					folded++
				}
			case audit.ActionNodeStep:
				steps[e.GetNodeId()]++
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	if recovered != 0 {
		t.Errorf("%d entries recovered by reconciliation; want the engine to record all", recovered)
	}
	// Each node reports one finished step (UNLOCK); its start is no result.
	// Steps are folded into the node's result entry.
	if len(steps) != 0 || folded != nodes {
		t.Errorf("%d nodes have node.step entries, %d result entries carry their step; want none and %d", len(steps), folded, nodes)
	}
	for what, counts := range map[string]map[string]int{"node.result": results} {
		missing, twice := 0, 0
		for i := range nodes {
			switch n := counts[nodeID(i)]; {
			case n == 0:
				missing++
			case n > 1:
				twice++
			}
		}
		if missing != 0 || twice != 0 || len(counts) != nodes {
			t.Errorf("%s entries: %d nodes have none, %d more than one, %d nodes named; want exactly one for each of %d nodes",
				what, missing, twice, len(counts), nodes)
		}
	}

	metrics := scrape(t, s)
	if got := metricValue(t, metrics, "outpost_audit_queue_capacity"); got != auditLoadQueue {
		t.Errorf("outpost_audit_queue_capacity = %v, want %d", got, auditLoadQueue)
	}
	if got := metricValue(t, metrics, "outpost_audit_queue_depth"); got != 0 {
		t.Errorf("outpost_audit_queue_depth = %v after everything was written, want 0", got)
	}
	// The queue was full and callers waited: the test exercised
	// back-pressure, not a queue that kept up.
	waits := metricValue(t, metrics, "outpost_audit_queue_wait_seconds_count")
	if waits == 0 {
		t.Error("outpost_audit_queue_wait_seconds_count = 0: nothing ever waited for the audit queue")
	}
	t.Logf("callers waited for the audit queue %v times, %.1f s in all", waits, metricValue(t, metrics, "outpost_audit_queue_wait_seconds_sum"))
}

// scrape returns the control plane's /metrics page.
func scrape(t *testing.T, s *Server) string {
	t.Helper()
	resp, err := http.Get("http://" + s.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read /metrics: %v", err)
	}
	return string(body)
}

// metricValue returns the value of the unlabelled sample name in a
// /metrics page.
func metricValue(t *testing.T, page, name string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(page)
	if m == nil {
		t.Errorf("metrics lack %s", name)
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Errorf("metric %s = %q: %v", name, m[1], err)
	}
	return v
}
