package controlplane

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/outposthq/outpost/controlplane/store"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

func TestReflectionAndHealth(t *testing.T) {
	s := startCP(t, t.TempDir())
	c := dial(t, s.Addr())
	stream, err := reflectionpb.NewServerReflectionClient(c.conn).ServerReflectionInfo(ctxT(t))
	if err != nil {
		t.Fatalf("ServerReflectionInfo: %v", err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, svc := range resp.GetListServicesResponse().GetService() {
		got = append(got, svc.GetName())
	}
	for _, want := range []string{"outpost.v1.ControlPlaneService", "outpost.v1.ArtifactService", "outpost.v1.GatewayService", "grpc.health.v1.Health"} {
		if !slices.Contains(got, want) {
			t.Errorf("reflection lists %v, missing %s", got, want)
		}
	}
	stream.CloseSend()

	h, err := healthpb.NewHealthClient(c.conn).Check(ctxT(t), &healthpb.HealthCheckRequest{Service: "outpost.v1.ControlPlaneService"})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health = %v, %v; want SERVING", h, err)
	}
}

func wantCode(t *testing.T, what string, err error, code codes.Code, contains string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), contains) {
		t.Errorf("%s: error %v, want %v containing %q", what, err, code, contains)
	}
}

func TestApplyNodes(t *testing.T) {
	s := startCP(t, t.TempDir())
	c := dial(t, s.Addr())
	nodes := applyNodes(t, c, 3, nil)

	changed := proto.CloneOf(nodes[1])
	changed.Labels["color"] = "blue"
	resp, err := c.ApplyNodes(ctxT(t), &outpostv1.ApplyNodesRequest{Nodes: []*outpostv1.Node{
		nodes[0], changed, {Id: "srv-new", Address: "127.0.50.1", Datacenter: "dc2"},
	}})
	if err != nil {
		t.Fatalf("ApplyNodes: %v", err)
	}
	if resp.GetCreated() != 1 || resp.GetUpdated() != 1 || resp.GetUnchanged() != 1 {
		t.Errorf("created/updated/unchanged = %d/%d/%d, want 1/1/1", resp.GetCreated(), resp.GetUpdated(), resp.GetUnchanged())
	}
	if got := resp.GetNodes()[2].GetAddress(); got != "127.0.50.1:22" {
		t.Errorf("address stored as %q, want port 22 added", got)
	}
	got, err := c.GetNode(ctxT(t), &outpostv1.GetNodeRequest{Id: nodes[1].GetId()})
	if err != nil || got.GetNode().GetLabels()["color"] != "blue" {
		t.Errorf("GetNode = %v, %v", got, err)
	}

	_, err = c.ApplyNodes(ctxT(t), &outpostv1.ApplyNodesRequest{Nodes: []*outpostv1.Node{
		{Id: "ok-1", Address: "127.0.0.9", Datacenter: "dc1"},
		{Id: "Bad/Id", Address: "not an address", Datacenter: "dc1"},
	}})
	wantCode(t, "invalid nodes", err, codes.InvalidArgument, "nodes[1].id")
	wantCode(t, "invalid nodes", err, codes.InvalidArgument, "nodes[1].address")
	var fields []string
	for _, d := range status.Convert(err).Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.GetFieldViolations() {
				fields = append(fields, v.GetField())
			}
		}
	}
	if !slices.Contains(fields, "nodes[1].address") {
		t.Errorf("field violations %v, want nodes[1].address", fields)
	}

	if _, err := c.DeleteNode(ctxT(t), &outpostv1.DeleteNodeRequest{Id: "srv-new"}); err != nil {
		t.Errorf("DeleteNode: %v", err)
	}
	_, err = c.GetNode(ctxT(t), &outpostv1.GetNodeRequest{Id: "srv-new"})
	wantCode(t, "deleted node", err, codes.NotFound, "srv-new")
	_, err = c.DeleteNode(ctxT(t), &outpostv1.DeleteNodeRequest{Id: "srv-new"})
	wantCode(t, "delete again", err, codes.NotFound, "srv-new")
}

func TestListNodesPagination(t *testing.T) {
	s := startCP(t, t.TempDir())
	c := dial(t, s.Addr())
	applyNodes(t, c, 25, func(i int) string { return fmt.Sprintf("dc%d", i%2) })

	list := func(req *outpostv1.ListNodesRequest) []string {
		t.Helper()
		var ids []string
		for page := 0; page < 100; page++ {
			resp, err := c.ListNodes(ctxT(t), req)
			if err != nil {
				t.Fatalf("ListNodes(%v): %v", req, err)
			}
			if req.GetPageSize() > 0 && len(resp.GetNodes()) > int(req.GetPageSize()) {
				t.Fatalf("page of %d, above page_size %d", len(resp.GetNodes()), req.GetPageSize())
			}
			for _, n := range resp.GetNodes() {
				ids = append(ids, n.GetId())
			}
			if resp.GetNextPageToken() == "" {
				return ids
			}
			req = proto.CloneOf(req)
			req.PageToken = resp.GetNextPageToken()
		}
		t.Fatal("too many pages")
		return nil
	}
	var all, dc1, tier1 []string
	for i := 0; i < 25; i++ {
		all = append(all, nodeID(i))
		if i%2 == 1 {
			dc1 = append(dc1, nodeID(i))
		}
		if i%3 == 0 {
			tier1 = append(tier1, nodeID(i))
		}
	}
	tests := []struct {
		name string
		req  *outpostv1.ListNodesRequest
		want []string
	}{
		{"default page", &outpostv1.ListNodesRequest{}, all},
		{"pages of 10", &outpostv1.ListNodesRequest{PageSize: 10}, all},
		{"pages of 1", &outpostv1.ListNodesRequest{PageSize: 1}, all},
		{"datacenter", &outpostv1.ListNodesRequest{PageSize: 4, Datacenter: "dc1"}, dc1},
		{"selector", &outpostv1.ListNodesRequest{PageSize: 3, LabelSelector: "tier=1, app=billing-api"}, tier1},
		{"no match", &outpostv1.ListNodesRequest{LabelSelector: "tier=9"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, list(tt.req)); diff != "" {
				t.Errorf("ids (-want +got):\n%s", diff)
			}
		})
	}
	first, err := c.ListNodes(ctxT(t), &outpostv1.ListNodesRequest{PageSize: 10})
	if err != nil || len(first.GetNodes()) != 10 || first.GetNextPageToken() == "" {
		t.Fatalf("first page: %d nodes, token %q, %v", len(first.GetNodes()), first.GetNextPageToken(), err)
	}
	_, err = c.ListNodes(ctxT(t), &outpostv1.ListNodesRequest{PageToken: "garbage"})
	wantCode(t, "bad token", err, codes.InvalidArgument, "page_token")
	_, err = c.ListNodes(ctxT(t), &outpostv1.ListNodesRequest{LabelSelector: "tier"})
	wantCode(t, "bad selector", err, codes.InvalidArgument, "label_selector")
}

func TestCreateRolloutValidation(t *testing.T) {
	s := startCP(t, t.TempDir())
	c := dial(t, s.Addr())
	applyNodes(t, c, 7, nil)
	digest := upload(t, c, "a.tar.gz", []byte("a"))
	missing := strings.Repeat("ab", 32)

	bad := rollingPlan("5", 10)
	bad.Strategy.Batch = "0"
	bad.Deploy.Path = ""
	noMatch := rollingPlan("5", 10)
	noMatch.Targets.Selector = map[string]string{"app": "nothing"}
	otherDC := rollingPlan("5", 10)
	otherDC.Targets.Datacenters = []string{"busan-1"}
	blueGreen := rollingPlan("", 10)
	blueGreen.Strategy = &outpostv1.PlanStrategy{Type: "blue_green", SwitchNode: "lb-1", SwitchHook: "sh switch"}
	tests := []struct {
		name     string
		req      *outpostv1.CreateRolloutRequest
		code     codes.Code
		contains []string
	}{
		{"no plan", &outpostv1.CreateRolloutRequest{ArtifactSha256: digest}, codes.InvalidArgument, []string{"plan"}},
		{"invalid plan", &outpostv1.CreateRolloutRequest{Plan: bad, ArtifactSha256: digest}, codes.InvalidArgument, []string{"plan.strategy.batch", "plan.deploy.path"}},
		{"artifact not uploaded", &outpostv1.CreateRolloutRequest{Plan: rollingPlan("5", 10), ArtifactSha256: missing}, codes.FailedPrecondition, []string{missing}},
		{"bad digest", &outpostv1.CreateRolloutRequest{Plan: rollingPlan("5", 10), ArtifactSha256: "xyz"}, codes.InvalidArgument, []string{"artifact_sha256"}},
		{"selects nothing", &outpostv1.CreateRolloutRequest{Plan: noMatch, ArtifactSha256: digest}, codes.InvalidArgument, []string{"targets.selector"}},
		{"no node in the datacenters", &outpostv1.CreateRolloutRequest{Plan: otherDC, ArtifactSha256: digest}, codes.InvalidArgument, []string{"targets.selector", "busan-1"}},
		{"blue/green switch node missing", &outpostv1.CreateRolloutRequest{Plan: blueGreen, ArtifactSha256: digest}, codes.InvalidArgument, []string{"plan.strategy.switch_node", "lb-1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.CreateRollout(ctxT(t), tt.req)
			for _, want := range tt.contains {
				wantCode(t, tt.name, err, tt.code, want)
			}
		})
	}

	// A dry run expands without storing anything.
	dry, err := c.CreateRollout(ctxT(t), &outpostv1.CreateRolloutRequest{Plan: rollingPlan("3", 10), ArtifactSha256: digest, DryRun: true})
	if err != nil {
		t.Fatalf("dry run: %v", err)
	}
	r := dry.GetRollout()
	var sizes []int
	for _, b := range r.GetStages()[0].GetBatches() {
		sizes = append(sizes, len(b.GetNodeIds()))
	}
	if r.GetId() != "" || r.GetRevision() != 0 || !slices.Equal(sizes, []int{3, 3, 1}) || r.GetNodeCounts().GetPending() != 7 ||
		r.GetArtifact().GetUnpack() != outpostv1.Unpack_UNPACK_TAR || r.GetDeploy().GetKeepReleases() != 5 {
		t.Errorf("dry run = id %q revision %d batches %v counts %v artifact %v", r.GetId(), r.GetRevision(), sizes, r.GetNodeCounts(), r.GetArtifact())
	}
	// A dry run needs only the artifact's digest: nothing is uploaded for
	// it. The real create still needs the artifact stored.
	unknown := strings.Repeat("ab", 32)
	dry, err = c.CreateRollout(ctxT(t), &outpostv1.CreateRolloutRequest{Plan: rollingPlan("3", 10), ArtifactSha256: unknown, DryRun: true})
	if err != nil || dry.GetRollout().GetArtifact().GetSha256() != unknown || dry.GetRollout().GetArtifact().GetSize() != 0 || len(dry.GetRollout().GetStages()) == 0 {
		t.Errorf("dry run of an artifact not uploaded = %v, %v; want the stages, the digest and size 0", dry.GetRollout(), err)
	}
	_, err = c.CreateRollout(ctxT(t), &outpostv1.CreateRolloutRequest{Plan: rollingPlan("3", 10), ArtifactSha256: unknown})
	wantCode(t, "create with an artifact not uploaded", err, codes.FailedPrecondition, "upload it first")
	list, err := c.ListRollouts(ctxT(t), &outpostv1.ListRolloutsRequest{})
	if err != nil || len(list.GetRollouts()) != 0 {
		t.Errorf("after a dry run ListRollouts = %v, %v; want none", list, err)
	}

	// Revisions count per app.
	other := rollingPlan("5", 10)
	other.App = "other-app"
	var revs []string
	for _, spec := range []*outpostv1.PlanSpec{rollingPlan("5", 10), other, rollingPlan("5", 10)} {
		r := createRollout(t, c, spec, digest)
		revs = append(revs, fmt.Sprintf("%s:%d:%s", r.GetApp(), r.GetRevision(), r.GetId()))
	}
	want := []string{"billing-api:1:r-00000001", "other-app:1:r-00000002", "billing-api:2:r-00000003"}
	if diff := cmp.Diff(want, revs); diff != "" {
		t.Errorf("app:revision:id (-want +got):\n%s", diff)
	}

	// A retry with the same request_id returns the first call's rollout.
	req := &outpostv1.CreateRolloutRequest{Plan: rollingPlan("5", 10), ArtifactSha256: digest, RequestId: "req-1"}
	first, err := c.CreateRollout(ctxT(t), req)
	if err != nil {
		t.Fatalf("CreateRollout: %v", err)
	}
	again, err := c.CreateRollout(ctxT(t), req)
	if err != nil || again.GetRollout().GetId() != first.GetRollout().GetId() || again.GetRollout().GetRevision() != 3 {
		t.Errorf("retry = %v, %v; want rollout %s (revision 3)", again.GetRollout().GetId(), err, first.GetRollout().GetId())
	}
	changed := proto.CloneOf(req)
	changed.Plan.Strategy.Batch = "1"
	_, err = c.CreateRollout(ctxT(t), changed)
	wantCode(t, "request_id reused", err, codes.InvalidArgument, "request_id")
}

func TestListRolloutsAndNodesPagination(t *testing.T) {
	s := startCP(t, t.TempDir())
	c := dial(t, s.Addr())
	applyNodes(t, c, 7, nil)
	digest := upload(t, c, "a.tar.gz", []byte("a"))
	other := rollingPlan("5", 10)
	other.App = "other-app"
	var ids []string
	for _, spec := range []*outpostv1.PlanSpec{rollingPlan("5", 10), other, rollingPlan("5", 10), rollingPlan("5", 10)} {
		ids = append(ids, createRollout(t, c, spec, digest).GetId())
	}

	pages := func(req *outpostv1.ListRolloutsRequest) [][]string {
		t.Helper()
		var out [][]string
		for i := 0; i < 20; i++ {
			resp, err := c.ListRollouts(ctxT(t), req)
			if err != nil {
				t.Fatalf("ListRollouts: %v", err)
			}
			var page []string
			for _, r := range resp.GetRollouts() {
				page = append(page, r.GetId())
			}
			out = append(out, page)
			if resp.GetNextPageToken() == "" {
				return out
			}
			req = proto.CloneOf(req)
			req.PageToken = resp.GetNextPageToken()
		}
		t.Fatal("too many pages")
		return nil
	}
	if diff := cmp.Diff([][]string{{ids[3], ids[2]}, {ids[1], ids[0]}}, pages(&outpostv1.ListRolloutsRequest{PageSize: 2})); diff != "" {
		t.Errorf("newest first, pages of 2 (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([][]string{{ids[3], ids[2]}, {ids[0]}}, pages(&outpostv1.ListRolloutsRequest{PageSize: 2, App: "billing-api"})); diff != "" {
		t.Errorf("app filter (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([][]string{{ids[1]}}, pages(&outpostv1.ListRolloutsRequest{App: "other-app"})); diff != "" {
		t.Errorf("other app (-want +got):\n%s", diff)
	}
	_, err := c.ListRollouts(ctxT(t), &outpostv1.ListRolloutsRequest{PageToken: encodeToken("nodes", "x")})
	wantCode(t, "token of another list", err, codes.InvalidArgument, "page_token")

	var got []string
	req := &outpostv1.ListRolloutNodesRequest{RolloutId: ids[0], PageSize: 3}
	for i := 0; i < 10; i++ {
		resp, err := c.ListRolloutNodes(ctxT(t), req)
		if err != nil {
			t.Fatalf("ListRolloutNodes: %v", err)
		}
		if len(resp.GetNodes()) > 3 {
			t.Fatalf("page of %d", len(resp.GetNodes()))
		}
		for _, n := range resp.GetNodes() {
			got = append(got, n.GetNodeId())
		}
		if resp.GetNextPageToken() == "" {
			break
		}
		req.PageToken = resp.GetNextPageToken()
	}
	var want []string
	for i := 0; i < 7; i++ {
		want = append(want, nodeID(i))
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("rollout nodes (-want +got):\n%s", diff)
	}
	// No gateway: everything is pending; nothing has succeeded.
	resp, err := c.ListRolloutNodes(ctxT(t), &outpostv1.ListRolloutNodesRequest{RolloutId: ids[0], State: outpostv1.NodeState_NODE_STATE_SUCCEEDED})
	if err != nil || len(resp.GetNodes()) != 0 {
		t.Errorf("SUCCEEDED filter = %v, %v", resp.GetNodes(), err)
	}
	_, err = c.ListRolloutNodes(ctxT(t), &outpostv1.ListRolloutNodesRequest{RolloutId: "r-99999999"})
	wantCode(t, "unknown rollout", err, codes.NotFound, "r-99999999")
	_, err = c.GetRollout(ctxT(t), &outpostv1.GetRolloutRequest{Id: "r-99999999"})
	wantCode(t, "unknown rollout", err, codes.NotFound, "r-99999999")
	waitRollout(t, c, ids[0], "RUNNING", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_RUNNING))
	paused, err := c.PauseRollout(ctxT(t), &outpostv1.PauseRolloutRequest{Id: ids[0]})
	if err != nil || paused.GetRollout().GetState() != outpostv1.RolloutState_ROLLOUT_STATE_PAUSED {
		t.Errorf("pause = %v, %v; want PAUSED", paused.GetRollout().GetState(), err)
	}
}

func TestArtifacts(t *testing.T) {
	s := startCP(t, t.TempDir())
	c := dial(t, s.Addr())
	data := bytes.Repeat([]byte("0123456789abcdef"), (5<<20)/32) // 2.5 MiB: three chunks
	digest := upload(t, c, "app.tar.gz", data)

	st, err := c.StatArtifact(ctxT(t), &outpostv1.StatArtifactRequest{Sha256: digest})
	if err != nil || !st.GetFound() || st.GetArtifact().GetSize() != int64(len(data)) || st.GetArtifact().GetName() != "app.tar.gz" {
		t.Fatalf("StatArtifact = %v, %v", st, err)
	}
	missing := strings.Repeat("0", 64)
	if st, err := c.StatArtifact(ctxT(t), &outpostv1.StatArtifactRequest{Sha256: missing}); err != nil || st.GetFound() {
		t.Errorf("StatArtifact(missing) = %v, %v", st, err)
	}

	// Uploading again: already present, answered after the header.
	stream, err := c.UploadArtifact(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&outpostv1.UploadArtifactRequest{Payload: &outpostv1.UploadArtifactRequest_Header{Header: &outpostv1.UploadArtifactHeader{Name: "app.tar.gz", Size: int64(len(data)), Sha256: digest}}})
	up, err := stream.CloseAndRecv()
	if err != nil || !up.GetAlreadyPresent() {
		t.Errorf("second upload = %v, %v; want already_present", up, err)
	}

	// A body that does not match its header is refused and not stored.
	other := []byte("something else")
	sum := sha256.Sum256([]byte("what the header claims"))
	stream, _ = c.UploadArtifact(ctxT(t))
	stream.Send(&outpostv1.UploadArtifactRequest{Payload: &outpostv1.UploadArtifactRequest_Header{Header: &outpostv1.UploadArtifactHeader{Name: "x", Size: int64(len(other)), Sha256: hex.EncodeToString(sum[:])}}})
	stream.Send(&outpostv1.UploadArtifactRequest{Payload: &outpostv1.UploadArtifactRequest_Chunk{Chunk: other}})
	_, err = stream.CloseAndRecv()
	wantCode(t, "mismatched upload", err, codes.InvalidArgument, "does not match")
	if st, _ := c.StatArtifact(ctxT(t), &outpostv1.StatArtifactRequest{Sha256: hex.EncodeToString(sum[:])}); st.GetFound() {
		t.Errorf("mismatched upload was stored")
	}

	fetch := func(off int64) ([]byte, *outpostv1.Artifact, error) {
		fs, err := c.FetchArtifact(ctxT(t), &outpostv1.FetchArtifactRequest{Sha256: digest, Offset: off})
		if err != nil {
			return nil, nil, err
		}
		var got []byte
		var meta *outpostv1.Artifact
		for i := 0; ; i++ {
			m, err := fs.Recv()
			if errors.Is(err, io.EOF) {
				return got, meta, nil
			}
			if err != nil {
				return nil, nil, err
			}
			if i == 0 {
				meta = m.GetArtifact()
			} else if m.GetArtifact() != nil {
				t.Errorf("message %d repeats the artifact", i)
			}
			if len(m.GetChunk()) > 1<<20 {
				t.Errorf("chunk of %d bytes, more than 1 MiB", len(m.GetChunk()))
			}
			got = append(got, m.GetChunk()...)
		}
	}
	for _, off := range []int64{0, 1<<20 + 7, int64(len(data))} {
		got, meta, err := fetch(off)
		if err != nil || !bytes.Equal(got, data[off:]) || meta.GetSha256() != digest {
			t.Errorf("FetchArtifact(offset %d): %d bytes, meta %v, err %v; want %d bytes", off, len(got), meta, err, len(data)-int(off))
		}
	}
	_, _, err = fetch(int64(len(data)) + 1)
	wantCode(t, "offset past the end", err, codes.OutOfRange, "offset")
	fs, err := c.FetchArtifact(ctxT(t), &outpostv1.FetchArtifactRequest{Sha256: missing})
	if err == nil {
		_, err = fs.Recv()
	}
	wantCode(t, "fetch missing", err, codes.NotFound, missing)
}

func TestAbortRollout(t *testing.T) {
	s := startCP(t, t.TempDir())
	c := dial(t, s.Addr())
	applyNodes(t, c, 4, nil)
	digest := upload(t, c, "a.tar.gz", []byte("a"))
	gw := newFakeGateway(t, "gw", "dc1", 10)
	gw.connect(s.Addr())
	defer gw.disconnect()
	r := createRollout(t, c, rollingPlan("2", 50), digest)
	running := idsOf(gw.waitAssigned(2))
	sort.Strings(running)

	resp, err := c.AbortRollout(ctxT(t), &outpostv1.AbortRolloutRequest{Id: r.GetId(), Reason: "wrong build"})
	if err != nil {
		t.Fatalf("AbortRollout: %v", err)
	}
	got := resp.GetRollout()
	if got.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_RUNNING || got.GetMessage() != "aborted: wrong build" ||
		got.GetNodeCounts().GetSkipped() != 2 || got.GetNodeCounts().GetRunning() != 2 {
		t.Fatalf("after abort: state %v message %q counts %v; want RUNNING (2 nodes finishing), 2 skipped", got.GetState(), got.GetMessage(), got.GetNodeCounts())
	}
	gw.finishNode(running[0], outpostv1.NodeState_NODE_STATE_SUCCEEDED, "")
	gw.finishNode(running[1], outpostv1.NodeState_NODE_STATE_ROLLED_BACK, "health")
	done := waitRollout(t, c, r.GetId(), "ABORTED", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_ABORTED))
	want := &outpostv1.NodeCounts{Total: 4, Succeeded: 1, RolledBack: 1, Skipped: 2}
	if !proto.Equal(done.GetNodeCounts(), want) || done.GetMessage() != "aborted: wrong build" {
		t.Errorf("aborted rollout: counts %v message %q", done.GetNodeCounts(), done.GetMessage())
	}
	if st := done.GetStages()[0].GetState(); st != outpostv1.StageState_STAGE_STATE_FAILED {
		t.Errorf("stage = %v, want FAILED", st)
	}

	_, err = c.AbortRollout(ctxT(t), &outpostv1.AbortRolloutRequest{Id: r.GetId()})
	wantCode(t, "abort again", err, codes.FailedPrecondition, "is ABORTED; abort applies only to PENDING_APPROVAL, APPROVED, RUNNING or PAUSED")

	// A rollout waiting for approval aborts at once.
	spec := rollingPlan("2", 50)
	spec.Approval = &outpostv1.PlanApproval{Required: true}
	pending := createRollout(t, c, spec, digest)
	if pending.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL {
		t.Fatalf("with approval required: %v", pending.GetState())
	}
	resp, err = c.AbortRollout(ctxT(t), &outpostv1.AbortRolloutRequest{Id: pending.GetId()})
	if err != nil || resp.GetRollout().GetState() != outpostv1.RolloutState_ROLLOUT_STATE_ABORTED || resp.GetRollout().GetNodeCounts().GetSkipped() != 4 {
		t.Errorf("abort pending = %v, %v", resp.GetRollout(), err)
	}

	// A succeeded rollout cannot be aborted.
	gw.disconnect() // it would take work and never answer
	gw2 := newFakeGateway(t, "gw2", "dc1", 10)
	gw2.auto = succeedAll
	gw2.connect(s.Addr())
	defer gw2.disconnect()
	ok := createRollout(t, c, rollingPlan("100%", 0), digest)
	waitRollout(t, c, ok.GetId(), "SUCCEEDED", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED))
	_, err = c.AbortRollout(ctxT(t), &outpostv1.AbortRolloutRequest{Id: ok.GetId()})
	wantCode(t, "abort succeeded", err, codes.FailedPrecondition, "SUCCEEDED")
	_, err = c.AbortRollout(ctxT(t), &outpostv1.AbortRolloutRequest{Id: "r-99999999"})
	wantCode(t, "abort unknown", err, codes.NotFound, "")
}

func TestMetrics(t *testing.T) {
	s := startCP(t, t.TempDir(), func(c *Config) { c.MetricsListen = "127.0.0.1:0" })
	c := dial(t, s.Addr())
	applyNodes(t, c, 3, nil)
	digest := upload(t, c, "a.tar.gz", []byte("a"))
	gw := newFakeGateway(t, "gw", "dc1", 10)
	gw.auto = func(a *outpostv1.Assignment) (outpostv1.NodeState, string) {
		if a.GetNode().GetId() == nodeID(2) {
			return outpostv1.NodeState_NODE_STATE_FAILED, "disk full"
		}
		return outpostv1.NodeState_NODE_STATE_SUCCEEDED, ""
	}
	gw.connect(s.Addr())
	defer gw.disconnect()
	r := createRollout(t, c, rollingPlan("100%", 50), digest)
	waitRollout(t, c, r.GetId(), "SUCCEEDED", stateIs(outpostv1.RolloutState_ROLLOUT_STATE_SUCCEEDED))
	// One waits for a person: counted from etcd, where the engine does
	// not hold it.
	spec := rollingPlan("100%", 50)
	spec.Approval = &outpostv1.PlanApproval{Required: true}
	if p := createRollout(t, c, spec, digest); p.GetState() != outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL {
		t.Fatalf("with approval required: %v", p.GetState())
	}
	fs, err := c.FetchArtifact(ctxT(t), &outpostv1.FetchArtifactRequest{Sha256: digest})
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := fs.Recv(); err != nil {
			break
		}
	}
	// Two nodes in drift, as node verify records them: counted from etcd.
	for i, kinds := range [][]outpostv1.DriftKind{
		{outpostv1.DriftKind_DRIFT_KIND_RELEASE_SWITCHED, outpostv1.DriftKind_DRIFT_KIND_STALE_LOCK},
		{outpostv1.DriftKind_DRIFT_KIND_RELEASE_SWITCHED},
	} {
		if err := s.store.Put(ctxT(t), store.NodeStatusKey(nodeID(i)), &outpostv1.NodeStatus{Drift: kinds}); err != nil {
			t.Fatal(err)
		}
	}
	s.rollouts.invalidate()

	resp, err := http.Get("http://" + s.MetricsAddr() + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s\n%s", resp.Status, body)
	}
	for _, want := range []string{
		`outpost_node_deployments_total{app="billing-api",datacenter="dc1",state="succeeded"} 2`,
		`outpost_node_deployments_total{app="billing-api",datacenter="dc1",state="failed"} 1`,
		`outpost_node_deployment_duration_seconds_count{app="billing-api",datacenter="dc1",state="succeeded"} 2`,
		`outpost_rollouts_finished_total{state="succeeded"} 1`,
		`outpost_rollouts{state="running"} 0`,
		`outpost_rollouts{state="pending_approval"} 1`,
		`outpost_nodes_drifted{kind="release_switched"} 2`,
		`outpost_nodes_drifted{kind="stale_lock"} 1`,
		`outpost_nodes_drifted{kind="unreachable"} 0`,
		`outpost_gateways_connected{datacenter="dc1"} 1`,
		`outpost_step_duration_seconds_count{result="succeeded",step="unlock"} 2`,
		`outpost_step_duration_seconds_count{result="failed",step="health"} 1`,
		"outpost_leader 1\n",
		"outpost_leader_changes_total 1\n",
		`outpost_certificate_expiry_timestamp_seconds{certificate="controlplane_server"}`,
		`outpost_certificate_expiry_timestamp_seconds{certificate="ca"}`,
		`outpost_grpc_server_handled_total{grpc_code="OK",grpc_method="CreateRollout",grpc_service="outpost.v1.ControlPlaneService",grpc_type="unary"} 2`,
		`outpost_grpc_server_handling_seconds_bucket{grpc_method="CreateRollout",grpc_service="outpost.v1.ControlPlaneService",grpc_type="unary",le="0.001"}`,
		"etcd_server_has_leader 1\n",
		"go_goroutines ",
		"outpost_artifact_fetches_total 1\n",
		"outpost_artifact_fetch_sent_bytes_total 1\n",
		"outpost_audit_queue_capacity 10000\n",
		"outpost_audit_entries_not_queued_total 0\n",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

func TestConcurrentCreatesGetDistinctRevisions(t *testing.T) {
	s := startCP(t, t.TempDir())
	c := dial(t, s.Addr())
	applyNodes(t, c, 2, nil)
	digest := upload(t, c, "a.tar.gz", []byte("a"))
	const n = 6
	type created struct {
		id  string
		rev int64
		err error
	}
	results := make(chan created, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.CreateRollout(ctxT(t), &outpostv1.CreateRolloutRequest{Plan: rollingPlan("1", 0), ArtifactSha256: digest})
			results <- created{resp.GetRollout().GetId(), resp.GetRollout().GetRevision(), err}
		}()
	}
	wg.Wait()
	close(results)
	ids, revs := map[string]bool{}, map[int64]bool{}
	for r := range results {
		if r.err != nil {
			t.Fatalf("CreateRollout: %v", r.err)
		}
		ids[r.id], revs[r.rev] = true, true
	}
	for i := int64(1); i <= n; i++ {
		if !revs[i] {
			t.Errorf("revisions %v lack %d", revs, i)
		}
	}
	if len(ids) != n {
		t.Errorf("ids %v, want %d distinct", ids, n)
	}
}
