package console

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

const (
	// callTimeout bounds one unary call, as the CLI does.
	callTimeout = 30 * time.Second
	// maxRollouts bounds the rollouts a list page scans.
	maxRollouts = 1000
	// maxBody bounds a request body.
	maxBody = 64 << 10
	// maxReason bounds a reason or comment typed into the console.
	maxReason = 1024
)

var jsonOut = protojson.MarshalOptions{}

func (s *Server) api() http.Handler {
	m := http.NewServeMux()
	m.HandleFunc("GET /api/me", s.me)
	m.HandleFunc("GET /api/rollouts", s.listRollouts)
	m.HandleFunc("GET /api/rollouts/{id}", s.getRollout)
	m.HandleFunc("GET /api/rollouts/{id}/watch", s.watchRollout)
	m.HandleFunc("GET /api/rollouts/{id}/nodes/{node}", s.rolloutNode)
	m.HandleFunc("GET /api/rollouts/{id}/diff", s.diff)
	m.HandleFunc("POST /api/rollouts/{id}/{action}", s.act)
	m.HandleFunc("POST /api/apps/{app}/undo", s.undo)
	m.HandleFunc("GET /api/approvals", s.approvals)
	m.HandleFunc("GET /api/fleet", s.fleet)
	m.HandleFunc("POST /api/fleet/verify", s.verify)
	m.HandleFunc("GET /api/audit", s.audit)
	m.HandleFunc("GET /api/audit/follow", s.followAudit)
	return m
}

func unary(r *http.Request) (context.Context, context.CancelFunc) {
	return context.WithTimeout(r.Context(), callTimeout)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// writeRPCError answers with the control plane's refusal, its status
// mapped to HTTP and its message kept, so the page shows the server's
// reason (four eyes, roles, states).
func writeRPCError(w http.ResponseWriter, what string, err error) {
	st, _ := status.FromError(err)
	code := http.StatusBadGateway
	switch st.Code() {
	case codes.InvalidArgument, codes.OutOfRange:
		code = http.StatusBadRequest
	case codes.NotFound:
		code = http.StatusNotFound
	case codes.PermissionDenied, codes.Unauthenticated:
		code = http.StatusForbidden
	case codes.FailedPrecondition, codes.AlreadyExists, codes.Aborted:
		code = http.StatusConflict
	case codes.DeadlineExceeded:
		code = http.StatusGatewayTimeout
	}
	writeError(w, code, fmt.Sprintf("%s: %s: %s", what, strings.ToLower(strings.ReplaceAll(st.Code().String(), "Permission", "permission ")), st.Message()))
}

// raw is a proto message as JSON inside a Go value.
func raw(m proto.Message) json.RawMessage {
	b, err := jsonOut.Marshal(m)
	if err != nil {
		return json.RawMessage("null")
	}
	return b
}

func (s *Server) me(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, map[string]any{
		"user": s.cfg.User, "role": s.cfg.Role, "controlplane": s.cfg.ControlPlane,
		// What the role allows, for disabling buttons with a reason; the
		// control plane checks again.
		"mayDeploy":  s.cfg.Role == "deployer" || s.cfg.Role == "admin",
		"mayApprove": s.cfg.Role == "approver" || s.cfg.Role == "admin",
	})
}

// stateName is a rollout state without its prefix: "RUNNING".
func stateName(st outpostv1.RolloutState) string {
	return strings.TrimPrefix(st.String(), "ROLLOUT_STATE_")
}

// summary is a rollout in a list: without its plan and batches.
type summary struct {
	ID          string          `json:"id"`
	App         string          `json:"app"`
	Revision    int64           `json:"revision"`
	State       string          `json:"state"`
	Environment string          `json:"environment"`
	ChangeID    string          `json:"changeId"`
	Requester   string          `json:"requester"`
	Approver    string          `json:"approver"`
	Message     string          `json:"message"`
	Created     string          `json:"created"`
	Counts      json.RawMessage `json:"counts"`
	Digest      string          `json:"digest"`
	// Signer is the trusted key that verified the artifact's signature;
	// Signed says a signature came with it at all (an environment that
	// trusts no key leaves Signer empty: only the gateways verify).
	Signer  string `json:"signer"`
	Signed  bool   `json:"signed"`
	Release string `json:"release"`
}

func summarize(ro *outpostv1.Rollout) summary {
	return summary{
		ID: ro.GetId(), App: ro.GetApp(), Revision: ro.GetRevision(), State: stateName(ro.GetState()),
		Environment: ro.GetPlan().GetEnvironment(), ChangeID: ro.GetPlan().GetChangeId(),
		Requester: ro.GetRequester(), Approver: ro.GetApprover(), Message: ro.GetMessage(),
		Created: ro.GetCreateTime().AsTime().UTC().Format(time.RFC3339),
		Counts:  raw(ro.GetNodeCounts()), Digest: ro.GetArtifact().GetSha256(), Release: ro.GetReleaseId(),
		Signer: ro.GetArtifact().GetSignature().GetSigner(), Signed: ro.GetArtifact().GetSignature() != nil,
	}
}

// rollouts lists up to maxRollouts rollouts (of app when not empty) that
// keep accepts, newest first.
func (s *Server) rollouts(r *http.Request, app string, keep func(*outpostv1.Rollout) bool) ([]*outpostv1.Rollout, error) {
	var out []*outpostv1.Rollout
	token := ""
	for seen := 0; seen < maxRollouts; {
		ctx, cancel := unary(r)
		resp, err := s.cfg.CP.ListRollouts(ctx, &outpostv1.ListRolloutsRequest{App: app, PageToken: token, PageSize: 200})
		cancel()
		if err != nil {
			return nil, err
		}
		for _, ro := range resp.GetRollouts() {
			if keep(ro) {
				out = append(out, ro)
			}
		}
		seen += len(resp.GetRollouts())
		if token = resp.GetNextPageToken(); token == "" || len(resp.GetRollouts()) == 0 {
			break
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].GetCreateTime().AsTime().After(out[j].GetCreateTime().AsTime()) })
	return out, nil
}

func (s *Server) listRollouts(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	state, env := strings.ToUpper(q.Get("state")), q.Get("environment")
	list, err := s.rollouts(r, q.Get("app"), func(ro *outpostv1.Rollout) bool {
		return (state == "" || stateName(ro.GetState()) == state) && (env == "" || ro.GetPlan().GetEnvironment() == env)
	})
	if err != nil {
		writeRPCError(w, "list rollouts", err)
		return
	}
	out := make([]summary, 0, len(list))
	for _, ro := range list {
		out = append(out, summarize(ro))
	}
	writeJSON(w, map[string]any{"rollouts": out})
}

func (s *Server) getRollout(w http.ResponseWriter, r *http.Request) {
	if ro, ok := s.rollout(w, r); ok {
		writeJSON(w, raw(ro))
	}
}

// rollout gets the rollout the path names; when it cannot, it answers the
// error and returns false.
func (s *Server) rollout(w http.ResponseWriter, r *http.Request) (*outpostv1.Rollout, bool) {
	ctx, cancel := unary(r)
	defer cancel()
	resp, err := s.cfg.CP.GetRollout(ctx, &outpostv1.GetRolloutRequest{Id: r.PathValue("id")})
	if err != nil {
		writeRPCError(w, "get rollout", err)
		return nil, false
	}
	return resp.GetRollout(), true
}

// mayApprove says whether this person may approve ro, and if not, why:
// what the control plane answered for them (Rollout.caller_approval,
// which knows whether it allows self-approval), or, from a control plane
// too old to answer, a guess from the role and four eyes. The control
// plane decides in the end.
func (s *Server) mayApprove(ro *outpostv1.Rollout) (bool, string) {
	if ca := ro.GetCallerApproval(); ca != nil {
		return ca.GetMayApprove(), ca.GetReason()
	}
	if ro.GetRequester() == s.cfg.User {
		return false, "four eyes: you requested this rollout, someone else must approve it"
	}
	if s.cfg.Role != "approver" && s.cfg.Role != "admin" {
		return false, fmt.Sprintf("your role (%s) cannot approve: approver or admin can", s.cfg.Role)
	}
	return true, ""
}

func (s *Server) approvals(w http.ResponseWriter, r *http.Request) {
	list, err := s.rollouts(r, "", func(ro *outpostv1.Rollout) bool {
		return ro.GetState() == outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL
	})
	if err != nil {
		writeRPCError(w, "list rollouts", err)
		return
	}
	type approval struct {
		summary
		CanApprove bool   `json:"canApprove"`
		Reason     string `json:"reason"`
		// SelfApproval: the person requested it and may approve it
		// all the same (the control plane allows self-approval).
		SelfApproval bool `json:"selfApproval"`
	}
	out := make([]approval, 0, len(list))
	for _, ro := range list {
		ok, why := s.mayApprove(ro)
		out = append(out, approval{summary: summarize(ro), CanApprove: ok, Reason: why, SelfApproval: ro.GetCallerApproval().GetSelfApproval()})
	}
	writeJSON(w, map[string]any{"approvals": out, "user": s.cfg.User, "role": s.cfg.Role})
}

// actionBody is what the page sends with an action.
type actionBody struct {
	Reason  string   `json:"reason"`
	Stage   string   `json:"stage"`
	NodeIDs []string `json:"nodeIds"`
	// RequestID makes a repeated click one action.
	RequestID  string `json:"requestId"`
	ToRevision int64  `json:"toRevision"`
}

// readAction reads an action's body and settles its request id; on a bad
// body it answers 400 and returns false.
func readAction(w http.ResponseWriter, r *http.Request) (actionBody, bool) {
	b, err := readBody(w, r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return b, false
	}
	if b.RequestID == "" {
		b.RequestID, _ = randomHex(16)
	}
	return b, true
}

func readBody(w http.ResponseWriter, r *http.Request) (actionBody, error) {
	var b actionBody
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return b, fmt.Errorf("request body: %w", err)
	}
	if len(b.Reason) > maxReason {
		return b, fmt.Errorf("reason: %d bytes, at most %d", len(b.Reason), maxReason)
	}
	if len(b.RequestID) > 64 {
		return b, fmt.Errorf("requestId: at most 64 bytes")
	}
	if len(b.NodeIDs) > 10000 {
		return b, fmt.Errorf("nodeIds: at most 10000")
	}
	return b, nil
}

// act runs one action on a rollout with the person's credential.
func (s *Server) act(w http.ResponseWriter, r *http.Request) {
	b, ok := readAction(w, r)
	if !ok {
		return
	}
	id, action, rid := r.PathValue("id"), r.PathValue("action"), b.RequestID
	ctx, cancel := unary(r)
	defer cancel()
	var ro interface{ GetRollout() *outpostv1.Rollout }
	var err error
	switch action {
	case "approve":
		ro, err = s.cfg.CP.ApproveRollout(ctx, &outpostv1.ApproveRolloutRequest{Id: id, Comment: b.Reason, RequestId: rid})
	case "reject":
		ro, err = s.cfg.CP.RejectRollout(ctx, &outpostv1.RejectRolloutRequest{Id: id, Reason: b.Reason, RequestId: rid})
	case "pause":
		ro, err = s.cfg.CP.PauseRollout(ctx, &outpostv1.PauseRolloutRequest{Id: id, Reason: b.Reason, RequestId: rid})
	case "resume":
		ro, err = s.cfg.CP.ResumeRollout(ctx, &outpostv1.ResumeRolloutRequest{Id: id, RequestId: rid})
	case "abort":
		ro, err = s.cfg.CP.AbortRollout(ctx, &outpostv1.AbortRolloutRequest{Id: id, Reason: b.Reason, RequestId: rid})
	case "promote":
		ro, err = s.cfg.CP.PromoteRollout(ctx, &outpostv1.PromoteRolloutRequest{Id: id, Stage: b.Stage, RequestId: rid})
	case "retry":
		ro, err = s.cfg.CP.RetryRollout(ctx, &outpostv1.RetryRolloutRequest{Id: id, NodeIds: b.NodeIDs, RequestId: rid})
	case "validate":
		ro, err = s.cfg.CP.ValidateRollout(ctx, &outpostv1.ValidateRolloutRequest{Id: id, Comment: b.Reason, RequestId: rid})
	default:
		writeError(w, http.StatusNotFound, fmt.Sprintf("unknown action %q", action))
		return
	}
	if err != nil {
		writeRPCError(w, action+" rollout "+id, err)
		return
	}
	writeJSON(w, raw(ro.GetRollout()))
}

// undo creates the rollout that returns an app to an earlier revision.
func (s *Server) undo(w http.ResponseWriter, r *http.Request) {
	b, ok := readAction(w, r)
	if !ok {
		return
	}
	if b.ToRevision < 0 {
		writeError(w, http.StatusBadRequest, "toRevision must not be negative")
		return
	}
	rid := b.RequestID
	app := r.PathValue("app")
	ctx, cancel := unary(r)
	defer cancel()
	resp, err := s.cfg.CP.CreateRollout(ctx, &outpostv1.CreateRolloutRequest{Undo: &outpostv1.RolloutUndo{App: app, ToRevision: b.ToRevision}, RequestId: rid})
	if err != nil {
		writeRPCError(w, "undo "+app, err)
		return
	}
	writeJSON(w, raw(resp.GetRollout()))
}
