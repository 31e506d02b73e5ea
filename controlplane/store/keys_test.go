package store_test

import (
	"slices"
	"testing"
	"time"

	"github.com/outposthq/outpost/controlplane/store"
)

func TestKeys(t *testing.T) {
	ts := time.Date(2026, 3, 1, 9, 30, 0, 120000000, time.FixedZone("KST", 9*3600))
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"node", store.NodeKey("srv-0001"), "/outpost/nodes/srv-0001"},
		{"plan", store.PlanKey("p1"), "/outpost/plans/p1"},
		{"rollout", store.RolloutKey("r1"), "/outpost/rollouts/r1"},
		{"rollout node", store.RolloutNodeKey("r1", "srv-0001"), "/outpost/rollouts/r1/nodes/srv-0001"},
		{"rollout nodes prefix", store.RolloutNodesPrefix("r1"), "/outpost/rollouts/r1/nodes/"},
		{"revision", store.RevisionKey("billing-api", 42), "/outpost/revisions/billing-api/0000000042"},
		{"revisions prefix", store.RevisionsPrefix("billing-api"), "/outpost/revisions/billing-api/"},
		{"gateway", store.GatewayKey("seoul-1"), "/outpost/gateways/seoul-1"},
		{"audit", store.AuditKey(ts, 7), "/outpost/audit/2026-03-01T00:30:00.120000000Z-0000000007"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s key = %q, want %q", tt.name, tt.got, tt.want)
		}
	}
}

// TestKeyOrder checks that lexical key order (etcd's order) is numeric and
// chronological order.
func TestKeyOrder(t *testing.T) {
	revs := []int64{1, 2, 9, 10, 11, 100, 999, 1000, 123456789}
	var keys []string
	for _, n := range revs {
		keys = append(keys, store.RevisionKey("app", n))
	}
	if !slices.IsSorted(keys) {
		t.Errorf("revision keys not in numeric order: %q", keys)
	}

	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	audit := []string{
		store.AuditKey(base, 0),
		store.AuditKey(base, 1),
		store.AuditKey(base, 10),
		store.AuditKey(base.Add(time.Nanosecond), 0),
		store.AuditKey(base.Add(100*time.Millisecond), 0),
		store.AuditKey(base.Add(time.Second), 0),
	}
	if !slices.IsSorted(audit) {
		t.Errorf("audit keys not in time order: %q", audit)
	}
}

func TestCheckID(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"srv-0001", true},
		{"billing-api", true},
		{"서버-1", true},
		{"", false},
		{"a/b", false},
		{"..", false},
		{"a\nb", false},
		{"\xff", false},
		{string(make([]byte, 254)), false},
	}
	for _, tt := range tests {
		err := store.CheckID(tt.id)
		if (err == nil) != tt.ok {
			t.Errorf("CheckID(%q) = %v, want ok=%v", tt.id, err, tt.ok)
		}
	}
}
