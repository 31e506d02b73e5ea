package controlplane

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/outposthq/outpost/controlplane/artifact"
	"github.com/outposthq/outpost/controlplane/planner"
	"github.com/outposthq/outpost/controlplane/rollout"
	"github.com/outposthq/outpost/controlplane/store"
	"github.com/outposthq/outpost/internal/plan"
	"github.com/outposthq/outpost/internal/rolloutstate"
	"github.com/outposthq/outpost/internal/telemetry"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	clientv3 "go.etcd.io/etcd/client/v3"
	otelcodes "go.opentelemetry.io/otel/codes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// requestTTL is how long a request_id is remembered.
const requestTTL = 24 * 60 * 60 // seconds

// rolloutIDDigits pads rollout numbers so ids sort in creation order up to
// 99,999,999 rollouts.
const rolloutIDDigits = 8

// allocAttempts bounds compare-and-swap retries under concurrent creates.
const allocAttempts = 100

func rolloutID(n int64) string { return fmt.Sprintf("r-%0*d", rolloutIDDigits, n) }

// rolloutNumber parses an id made by rolloutID.
func rolloutNumber(id string) (int64, bool) {
	s, ok := cutPrefix(id, "r-")
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil && n > 0
}

func cutPrefix(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || s[:len(prefix)] != prefix {
		return "", false
	}
	return s[len(prefix):], true
}

// releaseID names a rollout's release on the nodes: r<revision>-<first 8
// hex of the artifact's sha256>.
func releaseID(revision int64, sha string) string {
	return fmt.Sprintf("r%d-%s", revision, sha[:8])
}

// fileNameRE is what an artifact placed as a file (unpack none) may be named.
var fileNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$`)

// CreateRollout validates the plan, selects and expands its nodes and
// stores the rollout; the leader's engine picks it up from there. With
// undo set it returns the app to an earlier revision instead (undo.go).
func (c *controlPlaneService) CreateRollout(ctx context.Context, req *outpostv1.CreateRolloutRequest) (*outpostv1.CreateRolloutResponse, error) {
	s := c.s
	if req.GetUndo() != nil {
		return s.createUndo(ctx, req)
	}
	spec := req.GetPlan()
	if spec == nil {
		return nil, fieldError("plan", "required (or undo, to return to an earlier revision)")
	}
	if err := plan.Validate(spec); err != nil {
		return nil, planStatus(err, "plan.")
	}
	digest := req.GetArtifactSha256()
	if digest == "" {
		return nil, fieldError("artifact_sha256", "required: upload the artifact with ArtifactService.UploadArtifact and pass its SHA-256")
	}
	if err := artifact.CheckDigest(digest); err != nil {
		return nil, fieldError("artifact_sha256", "%v", err)
	}
	meta, found, err := s.artifacts.Stat(digest)
	if err != nil {
		return nil, internal(err)
	}
	if !found && !req.GetDryRun() {
		return nil, status.Errorf(codes.FailedPrecondition, "artifact sha256:%s is not in the artifact store; upload it first", digest)
	}
	// A dry run plans without the artifact: clients send only its digest
	// (nothing is uploaded or stored), and the size stays 0 unless stored.
	unpack := plan.UnpackOf(spec)
	name := path.Base(spec.GetArtifact().GetPath())
	if !fileNameRE.MatchString(name) {
		if unpack == outpostv1.Unpack_UNPACK_NONE {
			return nil, fieldError("plan.artifact.path", "%q: the file is placed on the nodes under its base name, which must be letters, digits, '.', '_' or '-'", name)
		}
		name = meta.Name
	}
	art := &outpostv1.Artifact{Sha256: digest, Size: meta.Size, Name: name, Unpack: unpack,
		KeepFile: unpack == outpostv1.Unpack_UNPACK_TAR && spec.GetArtifact().GetKeepFile()}
	if b := req.GetArtifactSignature(); len(b) > 0 {
		art.Signature = &outpostv1.ArtifactSignature{Bundle: b}
	}
	r, nodes, err := s.buildRollout(ctx, spec, art, planner.Options{})
	if err != nil {
		return nil, err
	}
	return s.createBuilt(ctx, req, r, nodes)
}

// createBuilt ends CreateRollout for a rollout built from a plan or an
// undo: it names the requester, holds the rollout for approval when its
// plan needs it, and stores it unless this is a dry run. A request_id
// makes the call idempotent: a retry gets the first call's rollout.
func (s *Server) createBuilt(ctx context.Context, req *outpostv1.CreateRolloutRequest, r *outpostv1.Rollout, nodes []*outpostv1.RolloutNode) (*outpostv1.CreateRolloutResponse, error) {
	r.Requester = callerName(ctx)
	if s.needsApproval(r.GetPlan()) {
		r.State = outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL
	}
	if req.GetDryRun() {
		return &outpostv1.CreateRolloutResponse{Rollout: r}, nil
	}
	var dedup *requestRecord
	if rid := req.GetRequestId(); rid != "" {
		if err := checkRequestID(rid); err != nil {
			return nil, err
		}
		dedup = &requestRecord{key: store.CreateRequestKey(rid), hash: requestHash(req)}
		if prev, err := s.replay(ctx, dedup); prev != nil || err != nil {
			return prev, err
		}
	}
	if err := s.storeRollout(ctx, r, nodes, dedup); err != nil {
		if errors.Is(err, errDuplicateRequest) {
			// A concurrent call with the same request_id won.
			return s.replay(ctx, dedup)
		}
		return nil, err
	}
	return &outpostv1.CreateRolloutResponse{Rollout: r}, nil
}

// checkRequestID validates an idempotency key.
func checkRequestID(rid string) error {
	if err := store.CheckID(rid); err != nil || len(rid) > 128 {
		return fieldError("request_id", "%q: at most 128 characters, no '/' or control characters", rid)
	}
	return nil
}

// needsApproval reports whether a rollout of spec starts in
// PENDING_APPROVAL: the plan asks for it, or its environment is protected.
func (s *Server) needsApproval(spec *outpostv1.PlanSpec) bool {
	if spec.GetApproval().GetRequired() {
		return true
	}
	env := s.envs[spec.GetEnvironment()]
	return env != nil && env.Protected
}

// buildRollout selects spec's nodes in the inventory and expands them into
// an APPROVED rollout (no id, revision or requester yet) and its node
// records. For blue/green plans it finds the switch node and which color
// serves now; opts may already say (an undo).
func (s *Server) buildRollout(ctx context.Context, spec *outpostv1.PlanSpec, art *outpostv1.Artifact, opts planner.Options) (*outpostv1.Rollout, []*outpostv1.RolloutNode, error) {
	inv, err := s.allNodes(ctx)
	if err != nil {
		return nil, nil, internal(err)
	}
	all := make([]*outpostv1.Node, 0, len(inv))
	for _, n := range inv {
		all = append(all, n)
	}
	if spec.GetTargets().GetDrifted() {
		if spec.GetStrategy().GetType() == plan.StrategyBlueGreen {
			return nil, nil, fieldError("plan.targets.drifted", "a blue_green rollout deploys a whole color; repair drifted nodes with another strategy")
		}
		if err := s.withStatus(ctx, all); err != nil {
			return nil, nil, internal(err)
		}
	}
	selected, err := plan.SelectNodes(spec, all)
	if err != nil {
		return nil, nil, planStatus(err, "plan.")
	}
	if spec.GetStrategy().GetType() == plan.StrategyBlueGreen {
		opts.SwitchNode = inv[spec.GetStrategy().GetSwitchNode()]
		bg, err := s.blueGreenHistory(ctx, spec.GetApp())
		if err != nil {
			return nil, nil, internal(err)
		}
		// The color is picked now, from what earlier rollouts left: one
		// still in progress could still switch the traffic.
		if bg.busy != "" {
			return nil, nil, status.Errorf(codes.FailedPrecondition,
				"rollout %s of %s has not ended; a blue/green rollout picks the idle color when it is created: create it once that one ended", bg.busy, spec.GetApp())
		}
		if opts.LiveColor == "" && opts.SwitchBackTo == "" {
			opts.LiveColor = bg.live
		}
	}
	exp, err := planner.Expand(spec, selected, opts)
	if err != nil {
		return nil, nil, planStatus(err, "plan.")
	}
	if err := s.checkSignature(ctx, spec, art); err != nil {
		return nil, nil, err
	}
	tp, err := s.tarPolicyOf(spec)
	if err != nil {
		return nil, nil, err
	}
	unpacked, err := s.measureTar(ctx, art, tp)
	if err != nil {
		return nil, nil, err
	}
	deploy, err := plan.DeploySpecOf(spec, max(art.GetSize(), unpacked))
	if err != nil {
		return nil, nil, planStatus(err, "plan.")
	}
	deploy.MaxUnpackedBytes, deploy.MaxUnpackedRatio, deploy.AllowSetuid = tp.lim.MaxUnpackedBytes, tp.lim.MaxRatio, tp.lim.AllowSetuid
	now := timestamppb.New(s.cfg.Clock.Now())
	r := &outpostv1.Rollout{
		App:          spec.GetApp(),
		Plan:         spec,
		Artifact:     art,
		State:        outpostv1.RolloutState_ROLLOUT_STATE_APPROVED,
		Stages:       exp.Stages,
		NodeCounts:   rolloutstate.Counts(exp.Nodes),
		CreateTime:   now,
		UpdateTime:   now,
		CurrentStage: -1,
		Deploy:       deploy,
		BlueGreen:    exp.BlueGreen,
	}
	for _, st := range r.Stages {
		var recs []*outpostv1.RolloutNode
		for _, n := range exp.Nodes {
			if n.GetStage() == st.GetName() {
				recs = append(recs, n)
			}
		}
		st.NodeCounts = rolloutstate.Counts(recs)
	}
	return r, exp.Nodes, nil
}

// storeRollout gives r its id, trace and revision and writes it with its
// node records. A create that fails leaves nothing behind: its node
// records are deleted and its rollout number is given back unless a later
// one was handed out meanwhile (abandonRollout); the revision is only
// taken by the transaction that writes the rollout record.
func (s *Server) storeRollout(ctx context.Context, r *outpostv1.Rollout, nodes []*outpostv1.RolloutNode, dedup *requestRecord) error {
	n, err := s.nextRolloutNumber(ctx)
	if err != nil {
		return internal(err)
	}
	r.Id = rolloutID(n)
	// The rollout's trace: its root span is this short one, exported as
	// soon as the create returns; every leader's stage and batch spans
	// hang under it. Kept only when tracing records with our ids.
	traceID := rollout.NewTraceID()
	span, ok := rollout.StartRootSpan(ctx, s.tracer, r.Id, traceID)
	defer span.End()
	if ok {
		r.TraceId = traceID
		span.SetAttributes(telemetry.AttrApp.String(r.App), telemetry.AttrReleaseID.String(r.ReleaseId))
	}

	err = s.writeRollout(ctx, r, nodes, dedup)
	if err != nil {
		stored, aerr := s.abandonRollout(ctx, n)
		switch {
		case aerr != nil:
			s.log.Error("a failed create left node records behind", "rollout", r.Id, "prefix", store.RolloutNodesPrefix(r.Id), "err", aerr, "create_err", err)
		case stored:
			// The write went through; only its answer was lost.
			got, gerr := s.getRollout(ctx, r.Id)
			if gerr != nil {
				return gerr
			}
			proto.Reset(r)
			proto.Merge(r, got)
			err = nil
		}
	}
	if err != nil {
		if errors.Is(err, errDuplicateRequest) {
			return err
		}
		span.RecordError(err)
		span.SetStatus(otelcodes.Error, err.Error())
		return internal(err)
	}
	s.log.Info("rollout created", "rollout", r.Id, "app", r.App, "revision", r.Revision, "release", r.ReleaseId,
		"nodes", len(nodes), "stages", len(r.Stages), "state", r.State.String(), "requester", r.Requester,
		"undo_to", r.SourceRevision)
	return nil
}

// writeRollout writes the node records of r, then r with its revision.
// Node records go first: the engine starts a rollout when its record
// appears (with its revision), and then needs every node record. They take
// several transactions for more than store.MaxTxnOps nodes.
func (s *Server) writeRollout(ctx context.Context, r *outpostv1.Rollout, nodes []*outpostv1.RolloutNode, dedup *requestRecord) error {
	var ops []clientv3.Op
	for _, rn := range nodes {
		rn.RolloutId = r.Id
		rn.UpdateTime = r.GetCreateTime()
		op, err := store.OpPut(store.RolloutNodeKey(r.Id, rn.GetNodeId()), rn)
		if err != nil {
			return err
		}
		ops = append(ops, op)
	}
	if err := s.store.Txn(ctx, nil, ops...); err != nil {
		return err
	}
	if f := s.cfg.failCreate; f != nil {
		if err := f(r.Id); err != nil {
			return err
		}
	}
	return s.storeWithRevision(ctx, r, dedup)
}

// abandonTimeout bounds the clean-up of a failed create, which runs even
// when the caller has gone away.
const abandonTimeout = 10 * time.Second

// abandonRollout undoes a create of rollout number n that failed before
// or while writing its rollout record: in one transaction, and only if
// that record does not exist, it deletes the rollout's node records and
// sets the rollout counter back to n-1 if it still says n (a later create
// may have taken n+1; then n stays unused). It reports whether the record
// exists after all: a write whose answer was lost.
func (s *Server) abandonRollout(ctx context.Context, n int64) (stored bool, err error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), abandonTimeout)
	defer cancel()
	id := rolloutID(n)
	cur, err := proto.Marshal(wrapperspb.Int64(n))
	if err != nil {
		return false, err
	}
	prev, err := proto.Marshal(wrapperspb.Int64(n - 1))
	if err != nil {
		return false, err
	}
	giveBack := clientv3.OpTxn(
		[]clientv3.Cmp{clientv3.Compare(clientv3.Value(store.RolloutCounterKey), "=", string(cur))},
		[]clientv3.Op{clientv3.OpPut(store.RolloutCounterKey, string(prev))}, nil)
	err = s.store.TxnIf(ctx, nil,
		[]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(store.RolloutKey(id)), "=", 0)},
		clientv3.OpDelete(store.RolloutNodesPrefix(id), clientv3.WithPrefix()), giveBack)
	switch {
	case errors.Is(err, store.ErrConflict):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("abandon rollout %s: %w", id, err)
	}
	return false, nil
}

// nextRolloutNumber hands out the next rollout number (compare-and-swap).
func (s *Server) nextRolloutNumber(ctx context.Context) (int64, error) {
	for range allocAttempts {
		cur := &wrapperspb.Int64Value{}
		found, modRev, err := s.store.Get(ctx, store.RolloutCounterKey, cur)
		if err != nil {
			return 0, err
		}
		cmp := clientv3.Compare(clientv3.ModRevision(store.RolloutCounterKey), "=", modRev)
		if !found {
			cmp = clientv3.Compare(clientv3.CreateRevision(store.RolloutCounterKey), "=", 0)
		}
		next := cur.GetValue() + 1
		op, err := store.OpPut(store.RolloutCounterKey, wrapperspb.Int64(next))
		if err != nil {
			return 0, err
		}
		err = s.store.TxnIf(ctx, nil, []clientv3.Cmp{cmp}, op)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return 0, err
		}
		return next, nil
	}
	return 0, errors.New("allocate a rollout id: too much contention")
}

// requestRecord is the idempotency record of one CreateRollout call.
type requestRecord struct {
	key  string
	hash string
}

var errDuplicateRequest = errors.New("request_id already used")

// requestHash identifies a request's content, request_id aside.
func requestHash(req *outpostv1.CreateRolloutRequest) string {
	c := proto.CloneOf(req)
	c.RequestId = ""
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// replay returns the rollout an earlier call with the same request_id
// created, nil when there was none, or an error when that call carried a
// different request.
func (s *Server) replay(ctx context.Context, rec *requestRecord) (*outpostv1.CreateRolloutResponse, error) {
	v := &wrapperspb.StringValue{}
	found, _, err := s.store.Get(ctx, rec.key, v)
	if err != nil {
		return nil, internal(err)
	}
	if !found {
		return nil, nil
	}
	id, hash, _ := strings.Cut(v.GetValue(), " ")
	if hash != rec.hash {
		return nil, fieldError("request_id", "already used by a different CreateRollout request (rollout %s)", id)
	}
	r, err := s.getRollout(ctx, id)
	if err != nil {
		return nil, err
	}
	return &outpostv1.CreateRolloutResponse{Rollout: r}, nil
}

// storeWithRevision gives r the app's next revision and writes the
// revision record, the rollout and, with dedup, the request record in one
// transaction. errDuplicateRequest means another call with the same
// request_id stored its rollout first.
func (s *Server) storeWithRevision(ctx context.Context, r *outpostv1.Rollout, dedup *requestRecord) error {
	var dedupOp clientv3.Op
	var dedupCmps []clientv3.Cmp
	if dedup != nil {
		var err error
		if dedupOp, err = s.store.OpPutLeased(ctx, dedup.key, wrapperspb.String(r.GetId()+" "+dedup.hash), requestTTL*time.Second); err != nil {
			return fmt.Errorf("request record: %w", err)
		}
		dedupCmps = []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(dedup.key), "=", 0)}
	}
	for range allocAttempts {
		prev := &outpostv1.Revision{}
		if _, err := s.store.Last(ctx, store.RevisionsPrefix(r.GetApp()), prev); err != nil {
			return fmt.Errorf("read latest revision of %s: %w", r.GetApp(), err)
		}
		r.Revision = prev.GetRevision() + 1
		if r.GetSourceRevision() == 0 {
			// An undo keeps its source's release id: the nodes hold it.
			r.ReleaseId = releaseID(r.Revision, r.GetArtifact().GetSha256())
		}
		key := store.RevisionKey(r.GetApp(), r.Revision)
		revOp, err := store.OpPut(key, rollout.RevisionOf(r))
		if err != nil {
			return err
		}
		rOp, err := store.OpPut(store.RolloutKey(r.GetId()), r)
		if err != nil {
			return err
		}
		cmps := append([]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(key), "=", 0)}, dedupCmps...)
		ops := []clientv3.Op{revOp, rOp}
		if dedup != nil {
			ops = append(ops, dedupOp)
		}
		err = s.store.TxnIf(ctx, nil, cmps, ops...)
		if errors.Is(err, store.ErrConflict) {
			if dedup != nil {
				if used, gerr := s.store.Exists(ctx, dedup.key); gerr == nil && used {
					return errDuplicateRequest
				}
			}
			continue
		}
		return err
	}
	return errors.New("allocate a revision: too much contention")
}

// GetRollout returns one rollout.
func (c *controlPlaneService) GetRollout(ctx context.Context, req *outpostv1.GetRolloutRequest) (*outpostv1.GetRolloutResponse, error) {
	if err := checkRolloutID("id", req.GetId()); err != nil {
		return nil, err
	}
	r, err := c.s.getRollout(ctx, req.GetId())
	if err != nil {
		return nil, err
	}
	r.CallerApproval = c.s.callerApproval(ctx, r)
	return &outpostv1.GetRolloutResponse{Rollout: r}, nil
}

func (s *Server) getRollout(ctx context.Context, id string) (*outpostv1.Rollout, error) {
	r := &outpostv1.Rollout{}
	found, _, err := s.store.Get(ctx, store.RolloutKey(id), r)
	if err != nil {
		return nil, internal(err)
	}
	if !found {
		return nil, status.Errorf(codes.NotFound, "rollout %s not found", id)
	}
	return r, nil
}

// getRollouts reads rollouts by id in one transaction; missing ones are
// left out.
func (s *Server) getRollouts(ctx context.Context, ids []string) ([]*outpostv1.Rollout, error) {
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = store.RolloutKey(id)
	}
	var out []*outpostv1.Rollout
	if err := s.store.GetAll(ctx, keys, func(_ string, v []byte) error {
		r := &outpostv1.Rollout{}
		if err := proto.Unmarshal(v, r); err != nil {
			return err
		}
		out = append(out, r)
		return nil
	}); err != nil {
		return nil, fmt.Errorf("read rollouts: %w", err)
	}
	return out, nil
}

// ListRollouts lists rollouts newest first. Without an app filter it walks
// rollout numbers downwards; with one it walks the app's revisions.
func (c *controlPlaneService) ListRollouts(ctx context.Context, req *outpostv1.ListRolloutsRequest) (*outpostv1.ListRolloutsResponse, error) {
	resp, err := c.s.listRollouts(ctx, req)
	if err != nil {
		return nil, err
	}
	for _, r := range resp.GetRollouts() {
		r.CallerApproval = c.s.callerApproval(ctx, r)
	}
	return resp, nil
}

func (s *Server) listRollouts(ctx context.Context, req *outpostv1.ListRolloutsRequest) (*outpostv1.ListRolloutsResponse, error) {
	size := pageSize(req.GetPageSize(), defaultRolloutsPage, maxRolloutsPage)
	if app := req.GetApp(); app != "" {
		if err := store.CheckID(app); err != nil {
			return nil, fieldError("app", "%v", err)
		}
		return s.listAppRollouts(ctx, app, req.GetPageToken(), size)
	}
	pos, ok := decodeToken("rollouts", req.GetPageToken())
	if !ok {
		return nil, fieldError("page_token", "not a token returned by ListRollouts")
	}
	var below int64
	if pos != "" {
		if below, ok = rolloutNumber(pos); !ok {
			return nil, fieldError("page_token", "not a token returned by ListRollouts")
		}
	} else {
		cur := &wrapperspb.Int64Value{}
		if _, _, err := s.store.Get(ctx, store.RolloutCounterKey, cur); err != nil {
			return nil, internal(err)
		}
		below = cur.GetValue() + 1
	}
	resp := &outpostv1.ListRolloutsResponse{}
	// Numbers are dense except where a create failed while a later one was
	// created (abandonRollout cannot give its number back then), so a
	// batch of size ids usually fills the page.
	for below > 1 && len(resp.Rollouts) < size {
		want := size - len(resp.Rollouts)
		var ids []string
		for n := below - 1; n >= 1 && len(ids) < want; n-- {
			ids = append(ids, rolloutID(n))
		}
		below -= int64(len(ids))
		rs, err := s.getRollouts(ctx, ids)
		if err != nil {
			return nil, internal(err)
		}
		// getRollouts keeps the order of ids: newest first.
		resp.Rollouts = append(resp.Rollouts, rs...)
	}
	if below > 1 && len(resp.Rollouts) > 0 {
		resp.NextPageToken = encodeToken("rollouts", rolloutID(below))
	}
	return resp, nil
}

func (s *Server) listAppRollouts(ctx context.Context, app, token string, size int) (*outpostv1.ListRolloutsResponse, error) {
	pos, ok := decodeToken("app:"+app, token)
	if !ok {
		return nil, fieldError("page_token", "not a token returned by ListRollouts for app %s", app)
	}
	var before string // exclusive: revisions below it
	if pos != "" {
		n, err := strconv.ParseInt(pos, 10, 64)
		if err != nil || n < 1 {
			return nil, fieldError("page_token", "not a token returned by ListRollouts")
		}
		before = store.RevisionKey(app, n)
	}
	resp := &outpostv1.ListRolloutsResponse{}
	for range maxScanPages {
		var ids []string
		var last int64
		next, err := s.store.ListReverse(ctx, store.RevisionsPrefix(app), int64(size-len(resp.Rollouts)), before, func(_ string, v []byte) error {
			rev := &outpostv1.Revision{}
			if err := proto.Unmarshal(v, rev); err != nil {
				return err
			}
			ids = append(ids, rev.GetRolloutId())
			last = rev.GetRevision()
			return nil
		})
		if err != nil {
			return nil, internal(err)
		}
		rs, err := s.getRollouts(ctx, ids)
		if err != nil {
			return nil, internal(err)
		}
		resp.Rollouts = append(resp.Rollouts, rs...)
		if next == "" {
			return resp, nil
		}
		before = next
		if len(resp.Rollouts) >= size {
			resp.NextPageToken = encodeToken("app:"+app, strconv.FormatInt(last, 10))
			return resp, nil
		}
	}
	return resp, nil
}

// ListRolloutNodes lists a rollout's node states sorted by node id.
func (c *controlPlaneService) ListRolloutNodes(ctx context.Context, req *outpostv1.ListRolloutNodesRequest) (*outpostv1.ListRolloutNodesResponse, error) {
	s := c.s
	id := req.GetRolloutId()
	if err := checkRolloutID("rollout_id", id); err != nil {
		return nil, err
	}
	kind := "rollout-nodes:" + id
	pos, ok := decodeToken(kind, req.GetPageToken())
	if !ok {
		return nil, fieldError("page_token", "not a token returned by ListRolloutNodes for rollout %s", id)
	}
	if _, err := s.getRollout(ctx, id); err != nil {
		return nil, err
	}
	after := ""
	if pos != "" {
		after = store.RolloutNodeKey(id, pos)
	}
	size := pageSize(req.GetPageSize(), defaultRolloutNodesPage, maxRolloutNodesPage)
	resp := &outpostv1.ListRolloutNodesResponse{}
	for range maxScanPages {
		var page []*outpostv1.RolloutNode
		next, err := s.store.List(ctx, store.RolloutNodesPrefix(id), int64(size), after, func(_ string, v []byte) error {
			n := &outpostv1.RolloutNode{}
			if err := proto.Unmarshal(v, n); err != nil {
				return err
			}
			page = append(page, n)
			return nil
		})
		if err != nil {
			return nil, internal(err)
		}
		for i, n := range page {
			if st := req.GetState(); st != outpostv1.NodeState_NODE_STATE_UNSPECIFIED && n.GetState() != st {
				continue
			}
			resp.Nodes = append(resp.Nodes, n)
			if len(resp.Nodes) == size {
				if i < len(page)-1 || next != "" {
					resp.NextPageToken = encodeToken(kind, n.GetNodeId())
				}
				return resp, nil
			}
		}
		if next == "" {
			return resp, nil
		}
		after = next
	}
	if l := len(resp.Nodes); l > 0 {
		resp.NextPageToken = encodeToken(kind, resp.Nodes[l-1].GetNodeId())
	}
	return resp, nil
}
