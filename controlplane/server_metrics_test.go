package controlplane

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/outposthq/outpost/controlplane/store/storetest"
)

// TestLeaderMetrics: only the leader reports rollouts by state; each
// replica says whether it leads, and the follower that takes over says so.
func TestLeaderMetrics(t *testing.T) {
	etcd := storetest.Open(t)
	kek := filepath.Join(t.TempDir(), "ca.kek")
	metrics := func(c *Config) { c.MetricsListen = "127.0.0.1:0" }
	s1 := startCP(t, t.TempDir(), withEtcd(etcd.Endpoints(), kek), withName("cp-1"), metrics)
	s2 := startCP(t, t.TempDir(), withEtcd(etcd.Endpoints(), kek), withName("cp-2"), metrics)

	lead, follow := scrape(t, s1), scrape(t, s2)
	for _, want := range []string{"outpost_leader 1\n", "outpost_leader_changes_total 1\n", `outpost_rollouts{state="running"} 0`} {
		if !strings.Contains(lead, want) {
			t.Errorf("leader's metrics lack %q", want)
		}
	}
	if !strings.Contains(follow, "outpost_leader 0\n") || strings.Contains(follow, "outpost_rollouts{") {
		t.Errorf("follower's metrics: want outpost_leader 0 and no outpost_rollouts:\n%s", grepLines(follow, "outpost_leader", "outpost_rollouts{"))
	}

	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := s1.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitLimit)
	for {
		m := scrape(t, s2)
		if strings.Contains(m, "outpost_leader 1\n") && strings.Contains(m, `outpost_rollouts{state="pending_approval"} 0`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cp-2 did not report leading within %v:\n%s", waitLimit, grepLines(m, "outpost_leader", "outpost_rollouts{"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func grepLines(text string, prefixes ...string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				out = append(out, l)
			}
		}
	}
	return strings.Join(out, "\n")
}
