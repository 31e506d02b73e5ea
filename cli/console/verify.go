package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

const (
	// verifyLimit bounds one "verify now": the control plane bounds each
	// node (45 s) and runs a few per datacenter at once, so a big
	// datacenter takes minutes.
	verifyLimit = 30 * time.Minute
	// maxDatacenterName bounds the datacenter a verify names.
	maxDatacenterName = 253
)

// verifyBody is what the fleet page sends to verify nodes.
type verifyBody struct {
	// Datacenter limits the verification to one datacenter; empty means
	// every node.
	Datacenter string `json:"datacenter"`
}

// verifyLine is one line of the answer to a verify: a node verified (or
// skipped), then a last line with end or error.
type verifyLine struct {
	Node    *fleetNode `json:"node,omitempty"`
	Skipped string     `json:"skipped,omitempty"`
	Done    int32      `json:"done"`
	Total   int32      `json:"total"`
	End     bool       `json:"end,omitempty"`
	Error   string     `json:"error,omitempty"`
}

// verify runs VerifyNodes with the person's credential and answers with
// its progress as JSON lines, one per node, so the page shows it as it
// goes. A refusal before the first node (role, bad datacenter) is an
// ordinary error answer.
func (s *Server) verify(w http.ResponseWriter, r *http.Request) {
	var b verifyBody
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("request body: %v", err))
		return
	}
	if len(b.Datacenter) > maxDatacenterName {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("datacenter: %d bytes, at most %d", len(b.Datacenter), maxDatacenterName))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), verifyLimit)
	defer cancel()
	stream, err := s.cfg.CP.VerifyNodes(ctx, &outpostv1.VerifyNodesRequest{Datacenter: b.Datacenter})
	if err != nil {
		writeRPCError(w, "verify nodes", err)
		return
	}
	first, err := stream.Recv()
	if err != nil && !errors.Is(err, io.EOF) {
		writeRPCError(w, "verify nodes", err)
		return
	}
	f, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "streaming unsupported")
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("X-Accel-Buffering", "no")
	enc := json.NewEncoder(w)
	var done, total int32
	for m := first; m != nil; {
		n := fleetNodeOf(m.GetNode())
		done, total = m.GetDone(), m.GetTotal()
		if enc.Encode(verifyLine{Node: &n, Skipped: m.GetSkipped(), Done: done, Total: total}) != nil {
			return // the page went away
		}
		f.Flush()
		if m, err = stream.Recv(); err != nil {
			break
		}
	}
	last := verifyLine{Done: done, Total: total, End: true}
	if err != nil && !errors.Is(err, io.EOF) {
		last = verifyLine{Done: done, Total: total, Error: "verify nodes: " + err.Error()}
	}
	enc.Encode(last)
	f.Flush()
}
