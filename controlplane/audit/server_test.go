package audit_test

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/outposthq/outpost/controlplane/audit"
	"github.com/outposthq/outpost/controlplane/store/storetest"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func TestServer(t *testing.T) {
	s := storetest.Open(t)
	clk := newClock(t0)
	l := openLog(t, s, audit.Config{Now: clk.Now})
	ctx := ctxT(t)
	for i := range 5 {
		if err := l.Append(ctx, entry(fmt.Sprintf("a%d", i), fmt.Sprintf("r-%d", i%2))); err != nil {
			t.Fatal(err)
		}
		clk.Add(time.Minute)
	}
	stored := listAll(t, l, audit.Query{}, 100)

	srv := audit.NewServer(l)
	gs := grpc.NewServer()
	outpostv1.RegisterAuditServiceServer(gs, srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		gs.Serve(lis)
	}()
	defer func() {
		srv.Stop()
		gs.GracefulStop() // returns only if Stop ended the watches
		<-served
	}()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	c := outpostv1.NewAuditServiceClient(cc)

	t.Run("List", func(t *testing.T) {
		var got []*outpostv1.AuditEntry
		req := &outpostv1.ListAuditEntriesRequest{PageSize: 2}
		for range 10 {
			resp, err := c.ListAuditEntries(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, resp.GetEntries()...)
			if resp.GetNextPageToken() == "" {
				break
			}
			req.PageToken = resp.GetNextPageToken()
		}
		if diff := cmp.Diff(stored, got, protocmp.Transform()); diff != "" {
			t.Errorf("paged list (-want +got):\n%s", diff)
		}
		resp, err := c.ListAuditEntries(ctx, &outpostv1.ListAuditEntriesRequest{RolloutId: "r-1", Since: timestamppb.New(t0.Add(2 * time.Minute))})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(stored[3:4], resp.GetEntries(), protocmp.Transform()); diff != "" {
			t.Errorf("filtered list (-want +got):\n%s", diff)
		}
		for _, bad := range []*outpostv1.ListAuditEntriesRequest{
			{PageToken: "not-a-token"},
			{PageSize: -1},
			{RolloutId: "a/b"},
			{Since: &timestamppb.Timestamp{Nanos: -1}},
		} {
			if _, err := c.ListAuditEntries(ctx, bad); status.Code(err) != codes.InvalidArgument {
				t.Errorf("ListAuditEntries(%v) = %v, want InvalidArgument", bad, err)
			}
		}
	})

	t.Run("Watch", func(t *testing.T) {
		stream, err := c.WatchAuditEntries(ctx, &outpostv1.WatchAuditEntriesRequest{
			RolloutId: "r-0", Since: stored[1].GetTime(), AfterSequence: stored[1].GetSequence()})
		if err != nil {
			t.Fatal(err)
		}
		recv := func() *outpostv1.AuditEntry {
			t.Helper()
			resp, err := stream.Recv()
			if err != nil {
				t.Fatalf("Recv: %v", err)
			}
			return resp.GetEntry()
		}
		for _, want := range []string{"a2", "a4"} {
			if got := recv().GetAction(); got != want {
				t.Fatalf("stored entry %q, want %q", got, want)
			}
		}
		if err := l.Append(ctx, entry("skip", "r-1")); err != nil {
			t.Fatal(err)
		}
		if err := l.Append(ctx, entry("live", "r-0")); err != nil {
			t.Fatal(err)
		}
		if got := recv(); got.GetAction() != "live" || got.GetSequence() != 7 {
			t.Fatalf("live entry %q (sequence %d), want live (7)", got.GetAction(), got.GetSequence())
		}
		srv.Stop()
		if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
			t.Errorf("Recv after Stop = %v, want Unavailable", err)
		}
	})
}
