package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/outposthq/outpost/e2e/e2etest"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// TestWebhooksFollowRealRollouts: a receiver gets each rollout's events in
// order (started, then succeeded or failed), with a Slack-compatible text,
// and a receiver that is down does not hold a rollout back.
func TestWebhooksFollowRealRollouts(t *testing.T) {
	s := newSystem(t, 4, alternateDC)
	s.twoGateways()

	var mu sync.Mutex
	var got []string // "event rollout-id", in arrival order
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Event     string `json:"event"`
			RolloutID string `json:"rollout_id"`
			App       string `json:"app"`
			Text      string `json:"text"`
		}
		if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		if body.App != e2etest.App || !strings.Contains(body.Text, body.RolloutID) {
			t.Errorf("webhook %q for %s: app %q, text %q; want the app and a text naming the rollout", body.Event, body.RolloutID, body.App, body.Text)
		}
		mu.Lock()
		got = append(got, body.Event+" "+body.RolloutID)
		mu.Unlock()
	}))
	defer recv.Close()
	// A receiver that is down: a loopback port nothing listens on any more.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + ln.Addr().String() + "/hooks"
	ln.Close()

	plan := func(version, webhook string, maxFail int32) *outpostv1.PlanSpec {
		p := e2etest.RollingPlan("release-"+version+".tar.gz", "2", maxFail)
		p.Notify = &outpostv1.PlanNotify{Webhook: webhook}
		return p
	}
	_, good := s.release("1.0.0", true)
	r1 := s.create(plan("1.0.0", recv.URL+"/hooks/deploys", 10), good)
	if done := s.waitDone(r1.GetId()); done.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED {
		t.Fatalf("good rollout ended %v: %s", done.GetState(), done.GetMessage())
	}
	_, broken := s.release("2.0.0", false)
	r2 := s.create(plan("2.0.0", recv.URL+"/hooks/deploys", 0), broken)
	if done := s.waitDone(r2.GetId()); done.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_ABORTED {
		t.Fatalf("broken rollout ended %v: %s", done.GetState(), done.GetMessage())
	}
	_, v3 := s.release("3.0.0", true)
	r3 := s.create(plan("3.0.0", dead, 10), v3)
	if done := s.waitDone(r3.GetId()); done.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED {
		t.Fatalf("rollout with a dead webhook receiver ended %v: %s", done.GetState(), done.GetMessage())
	}

	want := fmt.Sprint([]string{
		"started " + r1.GetId(), "succeeded " + r1.GetId(),
		"started " + r2.GetId(), "failed " + r2.GetId(),
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		mu.Lock()
		have := fmt.Sprint(got)
		mu.Unlock()
		if have == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("webhook events = %s, want %s", have, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
