package chaos

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/outposthq/outpost/e2e/e2etest"
	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// digestMarker is the file in a complete release directory that holds its
// artifact's digest (gateway/deployer's digestFile).
const digestMarker = ".outpost-sha256"

// want is the release a node must end on.
type want struct {
	id      string // release id, "r<revision>-<digest prefix>"
	sha256  string
	version string
}

func wantOf(r *outpostv1.Rollout, rel release) want {
	return want{id: r.GetReleaseId(), sha256: rel.sha256, version: rel.version}
}

// history reads the node's .outpost/history; every line must be JSON.
func history(t *testing.T, n *node) []e2etest.HistoryEntry {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(n.deployDir(), ".outpost", "history"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []e2etest.HistoryEntry
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		var e e2etest.HistoryEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Errorf("%s: history line %q is not JSON: %v", n.id, line, err)
			continue
		}
		out = append(out, e)
	}
	return out
}

// checkNode asserts that n ends on exactly one complete release, w, with
// activations successful activations of it in a consistent history, its
// service healthy, and nothing of a deployment left behind: no lock, no
// activation marker, no partial release.
func checkNode(t *testing.T, n *node, w want, activations int) []e2etest.HistoryEntry {
	t.Helper()
	dir := n.deployDir()
	target, err := os.Readlink(filepath.Join(dir, "current"))
	if err != nil {
		t.Errorf("%s: current: %v", n.id, err)
	} else if target != "releases/"+w.id {
		t.Errorf("%s: current -> %q, want releases/%s", n.id, target, w.id)
	}
	rel := filepath.Join(dir, "releases", w.id)
	if info, err := os.Stat(rel); err != nil || !info.IsDir() {
		t.Errorf("%s: release directory %s: %v", n.id, rel, err)
	}
	if b, err := os.ReadFile(filepath.Join(rel, digestMarker)); err != nil || strings.TrimSpace(string(b)) != w.sha256 {
		t.Errorf("%s: %s = %q, %v; want the artifact's digest %s", n.id, digestMarker, strings.TrimSpace(string(b)), err, w.sha256)
	}
	if b, err := os.ReadFile(filepath.Join(rel, "VERSION")); err != nil || strings.TrimSpace(string(b)) != w.version {
		t.Errorf("%s: VERSION = %q, %v; want %q", n.id, strings.TrimSpace(string(b)), err, w.version)
	}
	entries, err := os.ReadDir(filepath.Join(dir, "releases"))
	if err != nil {
		t.Errorf("%s: releases: %v", n.id, err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".partial") {
			t.Errorf("%s: partial release left behind: releases/%s", n.id, e.Name())
		} else if _, err := os.Stat(filepath.Join(dir, "releases", e.Name(), digestMarker)); err != nil {
			t.Errorf("%s: incomplete release directory releases/%s: %v", n.id, e.Name(), err)
		}
	}
	for _, f := range []string{"lock", "active"} {
		if _, err := os.Lstat(filepath.Join(dir, ".outpost", f)); err == nil {
			b, _ := os.ReadFile(filepath.Join(dir, ".outpost", f))
			t.Errorf("%s: .outpost/%s left behind: %s", n.id, f, b)
		}
	}
	if code := healthOf(n); code != http.StatusOK {
		t.Errorf("%s: health = %d, want 200", n.id, code)
	}

	hist := history(t, n)
	var last *e2etest.HistoryEntry
	count := 0
	for i, e := range hist {
		if e.Result != "succeeded" {
			continue
		}
		last = &hist[i]
		if e.Action == "activate" && e.Release == w.id {
			count++
		}
	}
	switch {
	case last == nil:
		t.Errorf("%s: no successful activation in history", n.id)
	case last.Release != w.id:
		t.Errorf("%s: the last successful history entry (%s of %s) does not match current (%s)", n.id, last.Action, last.Release, w.id)
	}
	if count != activations {
		t.Errorf("%s: %d successful activations of %s in history, want %d:\n%s", n.id, count, w.id, activations, historyText(hist))
	}
	return hist
}

func historyText(h []e2etest.HistoryEntry) string {
	var b strings.Builder
	for _, e := range h {
		fmt.Fprintf(&b, "  %s %s %s release=%s previous=%s owner=%s epoch=%d: %s\n",
			e.Time.Format(time.StampMicro), e.Rollout, e.Action, e.Release, e.Previous, e.Owner, e.Epoch, e.Result)
	}
	return b.String()
}

// healthOf returns the node's health status as the plan's check sees it,
// 0 when unreachable.
func healthOf(n *node) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s:%d%s", n.ip, e2etest.HealthPort, e2etest.HealthPath), nil)
	if err != nil {
		return 0
	}
	resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}).Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// checkRollout asserts the rollout's final state and counts, and that every
// node record agrees with the state the test expects of it.
func checkRollout(t *testing.T, cl *e2etest.Client, r *outpostv1.Rollout, state outpostv1.RolloutState, nodeStates map[string]outpostv1.NodeState) {
	t.Helper()
	if r.GetState() != state {
		t.Errorf("rollout %s is %v (%q), want %v", r.GetId(), r.GetState(), r.GetMessage(), state)
	}
	recs := rolloutNodes(t, cl, r.GetId())
	counts := map[outpostv1.NodeState]int32{}
	for id, st := range nodeStates {
		rec := recs[id]
		if rec.GetState() != st {
			t.Errorf("node %s is %v at %v (%q), want %v", id, rec.GetState(), rec.GetStep(), rec.GetError(), st)
		}
		if st == outpostv1.NodeState_NODE_STATE_SUCCEEDED && rec.GetRelease() != r.GetReleaseId() {
			t.Errorf("node %s record names release %q, want %q", id, rec.GetRelease(), r.GetReleaseId())
		}
		counts[st]++
	}
	if len(recs) != len(nodeStates) {
		t.Errorf("rollout has %d node records, want %d", len(recs), len(nodeStates))
	}
	c := r.GetNodeCounts()
	if c.GetTotal() != int32(len(nodeStates)) || c.GetSucceeded() != counts[outpostv1.NodeState_NODE_STATE_SUCCEEDED] ||
		c.GetFailed() != counts[outpostv1.NodeState_NODE_STATE_FAILED] || c.GetRunning() != 0 || c.GetPending() != 0 {
		t.Errorf("rollout counts = {%v}, want %d nodes: %d succeeded, %d failed, none running or pending",
			c, len(nodeStates), counts[outpostv1.NodeState_NODE_STATE_SUCCEEDED], counts[outpostv1.NodeState_NODE_STATE_FAILED])
	}
}

// auditFlush bounds the wait for the audit log to catch up with a rollout
// that just ended: entries are appended in batches, after the state they
// record.
const auditFlush = 10 * time.Second

// checkAudit asserts that the audit log has the rollout's creation, its
// final state and each node's result, consistent with the rollout. It
// reports, without failing, a control plane that does not serve the audit
// log yet. diedWith are nodes whose result a leader killed with SIGKILL
// had made durable just before it died: the engine queues audit entries
// in memory after the state they record is in etcd, so the dead leader
// may have lost them, and the next leader's reconciliation (from the
// audit markers) must have recorded them.
func checkAudit(t *testing.T, cl *e2etest.Client, r *outpostv1.Rollout, nodeStates map[string]outpostv1.NodeState, diedWith map[string]bool) {
	t.Helper()
	deadline := time.Now().Add(auditFlush)
	for {
		entries, ok := listAudit(t, cl, r.GetId())
		if !ok {
			return
		}
		// Errors are kept, not reported, until the deadline.
		rec := &recorder{}
		auditComplete(rec, entries, r, nodeStates, diedWith)
		if len(rec.errs) == 0 || time.Now().After(deadline) {
			for _, l := range rec.logs {
				t.Log(l)
			}
			for _, e := range rec.errs {
				t.Error(e)
			}
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// recorder collects what a check would report.
type recorder struct{ errs, logs []string }

func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}
func (r *recorder) Logf(format string, args ...any) {
	r.logs = append(r.logs, fmt.Sprintf(format, args...))
}

// listAudit returns the rollout's audit entries; false when the control
// plane does not serve the audit log, or on an error (reported).
func listAudit(t *testing.T, cl *e2etest.Client, rolloutID string) ([]*outpostv1.AuditEntry, bool) {
	t.Helper()
	audit := outpostv1.NewAuditServiceClient(cl.Conn)
	var entries []*outpostv1.AuditEntry
	token := ""
	for range 1000 {
		resp, err := audit.ListAuditEntries(ctxT(t), &outpostv1.ListAuditEntriesRequest{RolloutId: rolloutID, PageSize: 1000, PageToken: token})
		if status.Code(err) == codes.Unimplemented {
			t.Logf("NOTE: this control plane does not serve the audit log (%v); audit not checked", err)
			return nil, false
		}
		if err != nil {
			t.Errorf("list audit entries: %v", err)
			return nil, false
		}
		entries = append(entries, resp.GetEntries()...)
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	return entries, true
}

// auditComplete checks entries against the rollout's end.
func auditComplete(t *recorder, entries []*outpostv1.AuditEntry, r *outpostv1.Rollout, nodeStates map[string]outpostv1.NodeState, diedWith map[string]bool) {
	final := rolloutstate.Name(r.GetState())
	results := map[string][]string{}
	sawFinal, sawCreate := false, false
	for _, e := range entries {
		switch e.GetAction() {
		case "/outpost.v1.ControlPlaneService/CreateRollout":
			sawCreate = sawCreate || e.GetResult() == "OK"
		case "rollout.state":
			if e.GetDetails()["to"] == final {
				sawFinal = true
			}
		case "node.result":
			results[e.GetNodeId()] = append(results[e.GetNodeId()], e.GetDetails()["state"])
			if e.GetDetails()["recovered"] == "true" {
				t.Logf("audit: node.result for %s recovered by a later leader", e.GetNodeId())
			}
		}
	}
	if !sawCreate {
		t.Errorf("audit: no successful CreateRollout entry for rollout %s among %d entries", r.GetId(), len(entries))
	}
	if !sawFinal {
		t.Errorf("audit: no rollout.state entry to %s among %d entries", final, len(entries))
	}
	for id, st := range nodeStates {
		name := rolloutstate.NodeName(st)
		got := results[id]
		switch {
		case len(got) == 0 && diedWith[id]:
			// Its entry may have died queued in the killed leader's
			// memory; the next leader's reconciliation must record it.
			t.Errorf("audit: no node.result entry for %s, whose result the killed leader had made durable (not recovered by the next leader)", id)
		case len(got) == 0:
			t.Errorf("audit: no node.result entry for %s", id)
		}
		for _, g := range got {
			if g != name {
				t.Errorf("audit: node.result for %s says %s, want %s", id, g, name)
			}
		}
		if len(got) > 1 {
			t.Logf("audit: %d node.result entries for %s", len(got), id)
		}
	}
}
