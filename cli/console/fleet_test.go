package console

import (
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// TestObserve: the fleet page's columns say what the node's status says,
// drift kinds included; a node never observed has no observation.
func TestObserve(t *testing.T) {
	at := time.Date(2026, 12, 7, 1, 2, 3, 0, time.UTC)
	ok := outpostv1.ObserveResult_OBSERVE_RESULT_OK
	tests := []struct {
		name string
		st   *outpostv1.NodeStatus
		want *observation
	}{
		{"never observed", &outpostv1.NodeStatus{Desired: &outpostv1.NodeDesired{Release: "r1-aaaa"}}, nil},
		{"clean", &outpostv1.NodeStatus{Observation: &outpostv1.NodeObservation{Result: ok, Release: "r1-aaaa", Time: timestamppb.New(at), Gateway: "gw-1"}},
			&observation{Result: "ok", Release: "r1-aaaa", Gateway: "gw-1", Time: "2026-12-07T01:02:03Z", Drift: []string{}}},
		{"switched by hand", &outpostv1.NodeStatus{
			Observation: &outpostv1.NodeObservation{Result: ok, CurrentOther: "/opt/elsewhere", LockHeld: true, LockOwner: "gw-2", LockRollout: "r-000009"},
			Drift:       []outpostv1.DriftKind{outpostv1.DriftKind_DRIFT_KIND_RELEASE_SWITCHED, outpostv1.DriftKind_DRIFT_KIND_STALE_LOCK},
			DriftSince:  timestamppb.New(at)},
			&observation{Result: "ok", Release: "(/opt/elsewhere)", Lock: "gw-2 r-000009", Drift: []string{"release_switched", "stale_lock"}, DriftSince: "2026-12-07T01:02:03Z"}},
		{"unreachable", &outpostv1.NodeStatus{
			Observation: &outpostv1.NodeObservation{Result: outpostv1.ObserveResult_OBSERVE_RESULT_HOST_KEY, Error: "host key mismatch"},
			Drift:       []outpostv1.DriftKind{outpostv1.DriftKind_DRIFT_KIND_UNREACHABLE}},
			&observation{Result: "host_key", Error: "host key mismatch", Drift: []string{"unreachable"}}},
	}
	for _, tt := range tests {
		got := observe(&outpostv1.Node{Id: "srv-1", Status: tt.st})
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("%s: observe (-want +got):\n%s", tt.name, diff)
		}
	}
}

// TestVerifyRefusesBadBodies: verify now with a body that is not the one
// the page sends is refused before anything reaches the control plane
// (there is none: a call would panic on the nil client), as is one from
// another origin.
func TestVerifyRefusesBadBodies(t *testing.T) {
	s, base := serve(t)
	jar, _ := cookiejar.New(nil)
	c := noRedirect(jar)
	if resp := do(t, c, "GET", base+s.LoginPath(), nil, ""); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %s", resp.Status)
	}
	json := map[string]string{"Origin": base, "Content-Type": "application/json"}
	for name, body := range map[string]string{
		"empty":            ``,
		"not an object":    `[]`,
		"unknown field":    `{"datacenter": "dc-1", "selector": "a=b"}`,
		"wrong type":       `{"datacenter": 7}`,
		"huge datacenter":  `{"datacenter": "` + strings.Repeat("d", 300) + `"}`,
		"larger than 64KB": `{"datacenter": "` + strings.Repeat("d", 70<<10) + `"}`,
	} {
		if resp := do(t, c, "POST", base+"/api/fleet/verify", json, body); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("verify with %s body: %s, want 400", name, resp.Status)
		}
	}
	if resp := do(t, c, "POST", base+"/api/fleet/verify", map[string]string{"Origin": "http://evil.example", "Content-Type": "application/json"}, `{}`); resp.StatusCode != http.StatusForbidden {
		t.Errorf("verify from another origin: %s, want 403", resp.Status)
	}
	if resp := do(t, c, "GET", base+"/api/fleet/verify", nil, ""); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("verify by GET: %s, want 405", resp.Status)
	}
}
