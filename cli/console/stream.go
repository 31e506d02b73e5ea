package console

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

const (
	// maxAuditEntries is the most entries the audit page lists at once.
	maxAuditEntries = 500
	// maxPages bounds every paging loop.
	maxPages = 1000
)

// sse writes server-sent events.
type sse struct {
	w http.ResponseWriter
	f http.Flusher
}

func newSSE(w http.ResponseWriter) (*sse, bool) {
	f, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "streaming unsupported")
		return nil, false
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	f.Flush()
	return &sse{w: w, f: f}, true
}

func (e *sse) send(event string, data json.RawMessage) error {
	if _, err := fmt.Fprintf(e.w, "event: %s\ndata: %s\n\n", event, data); err != nil {
		return err
	}
	e.f.Flush()
	return nil
}

func (e *sse) fail(err error) {
	b, _ := json.Marshal(map[string]string{"error": err.Error()})
	e.send("failure", b)
}

// watchRollout relays the WatchRollout stream as server-sent events:
// rollout, grid (the snapshot's nodes: ids and states), ready (end of the
// snapshot), then nodes (the records of nodes that changed), node, step,
// end (the rollout finished) and failure. The records behind the grid
// stay here for the node panel (rolloutNode) while the stream lasts.
func (s *Server) watchRollout(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	stream, err := s.cfg.CP.WatchRollout(r.Context(), &outpostv1.WatchRolloutRequest{Id: id, NodePageSize: 1000})
	if err != nil {
		writeRPCError(w, "watch rollout", err)
		return
	}
	e, ok := newSSE(w)
	if !ok {
		return
	}
	live, done := s.watching(id)
	defer done()
	snapshot := true
	for {
		resp, err := stream.Recv()
		if err != nil {
			if r.Context().Err() == nil {
				if errors.Is(err, io.EOF) {
					e.send("end", json.RawMessage("{}"))
				} else {
					e.fail(err)
				}
			}
			return
		}
		var sendErr error
		switch ev := resp.GetEvent().(type) {
		case *outpostv1.WatchRolloutResponse_Rollout:
			sendErr = e.send("rollout", raw(ev.Rollout))
		case *outpostv1.WatchRolloutResponse_NodePage:
			live.put(ev.NodePage.GetNodes())
			if !snapshot {
				sendErr = e.send("nodes", raw(ev.NodePage))
			}
		case *outpostv1.WatchRolloutResponse_Node:
			live.put([]*outpostv1.RolloutNode{ev.Node})
			if !snapshot {
				sendErr = e.send("node", raw(ev.Node))
			}
		case *outpostv1.WatchRolloutResponse_StepEvent:
			sendErr = e.send("step", raw(ev.StepEvent))
		case *outpostv1.WatchRolloutResponse_SnapshotEnd:
			snapshot = false
			if sendErr = e.send("grid", encodeGrid(live.grid())); sendErr == nil {
				sendErr = e.send("ready", json.RawMessage("{}"))
			}
		}
		if sendErr != nil {
			return
		}
	}
}

// auditFilter keeps the entries a page asked for: actor and action
// (substring), on top of the control plane's rollout and since filters.
type auditFilter struct{ actor, action string }

func (f auditFilter) keep(e *outpostv1.AuditEntry) bool {
	return (f.actor == "" || strings.Contains(e.GetActor(), f.actor)) && (f.action == "" || strings.Contains(e.GetAction(), f.action))
}

func auditQuery(r *http.Request) (auditFilter, string, *timestamppb.Timestamp, error) {
	q := r.URL.Query()
	f := auditFilter{actor: q.Get("actor"), action: q.Get("action")}
	var since *timestamppb.Timestamp
	if v := q.Get("since"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			d, derr := time.ParseDuration(v)
			if derr != nil || d <= 0 {
				return f, "", nil, fmt.Errorf("since: want a time (RFC 3339) or a duration (1h), not %q", v)
			}
			t = time.Now().Add(-d)
		}
		since = timestamppb.New(t)
	}
	return f, q.Get("rollout"), since, nil
}

func (s *Server) audit(w http.ResponseWriter, r *http.Request) {
	f, rollout, since, err := auditQuery(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	var kept []json.RawMessage
	token := ""
	for range maxPages {
		ctx, cancel := unary(r)
		resp, err := s.cfg.Audit.ListAuditEntries(ctx, &outpostv1.ListAuditEntriesRequest{RolloutId: rollout, Since: since, PageToken: token, PageSize: 500})
		cancel()
		if err != nil {
			writeRPCError(w, "list audit entries", err)
			return
		}
		for _, e := range resp.GetEntries() {
			if f.keep(e) {
				kept = append(kept, raw(e))
			}
		}
		if len(kept) > maxAuditEntries {
			kept = kept[len(kept)-maxAuditEntries:]
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	writeJSON(w, map[string]any{"entries": kept})
}

// followAudit relays new audit entries as server-sent "entry" events.
func (s *Server) followAudit(w http.ResponseWriter, r *http.Request) {
	f, rollout, _, err := auditQuery(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	stream, err := s.cfg.Audit.WatchAuditEntries(r.Context(), &outpostv1.WatchAuditEntriesRequest{RolloutId: rollout})
	if err != nil {
		writeRPCError(w, "follow audit entries", err)
		return
	}
	e, ok := newSSE(w)
	if !ok {
		return
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			if r.Context().Err() == nil {
				e.fail(err)
			}
			return
		}
		if en := resp.GetEntry(); en != nil && f.keep(en) {
			if e.send("entry", raw(en)) != nil {
				return
			}
		}
	}
}
