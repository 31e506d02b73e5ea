package e2etest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/outposthq/outpost/internal/pki"
	"github.com/outposthq/outpost/internal/pki/enroll"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Client is a real gRPC client of a control plane's people-facing APIs,
// over TLS with a person's credential (an admin's, in tests).
type Client struct {
	outpostv1.ControlPlaneServiceClient
	outpostv1.ArtifactServiceClient
	outpostv1.AdminServiceClient
	Conn *grpc.ClientConn
	addr string
}

// Dial connects to the control plane at addr with cred, for example the
// admin credential the control plane wrote into its data directory.
func Dial(addr string, cred *pki.Credential) (*Client, error) {
	conn, err := enroll.Dial(addr, cred)
	if err != nil {
		return nil, err
	}
	return &Client{
		ControlPlaneServiceClient: outpostv1.NewControlPlaneServiceClient(conn),
		ArtifactServiceClient:     outpostv1.NewArtifactServiceClient(conn),
		AdminServiceClient:        outpostv1.NewAdminServiceClient(conn),
		Conn:                      conn,
		addr:                      addr,
	}, nil
}

// Close closes the connection.
func (c *Client) Close() error { return c.Conn.Close() }

// JoinToken creates a single-use token for gateway name of datacenter dc.
func (c *Client) JoinToken(ctx context.Context, name, dc string) (string, error) {
	resp, err := c.CreateJoinToken(ctx, &outpostv1.CreateJoinTokenRequest{Datacenter: dc, GatewayName: name})
	if err != nil {
		return "", fmt.Errorf("join token for gateway %s: %w", name, err)
	}
	return resp.GetToken(), nil
}

// JoinGateway enrolls gateway name of datacenter dc the way a new gateway
// does (a join token, then JoinGateway) and returns its credential.
func (c *Client) JoinGateway(ctx context.Context, name, dc string) (*pki.Credential, error) {
	token, err := c.JoinToken(ctx, name, dc)
	if err != nil {
		return nil, err
	}
	cred, err := enroll.Join(ctx, c.addr, token, name)
	if err != nil {
		return nil, fmt.Errorf("join as gateway %s: %w", name, err)
	}
	return cred, nil
}

// TLSDialOption is the transport credentials of a client holding cred.
func TLSDialOption(cred *pki.Credential) grpc.DialOption {
	return grpc.WithTransportCredentials(credentials.NewTLS(pki.ClientTLSConfig(cred, "")))
}

// applyChunk keeps one ApplyNodes call well under gRPC's message limit.
const applyChunk = 500

// Apply creates or updates nodes, in chunks.
func (c *Client) Apply(ctx context.Context, nodes []*outpostv1.Node) error {
	for start := 0; start < len(nodes); start += applyChunk {
		chunk := nodes[start:min(start+applyChunk, len(nodes))]
		if _, err := c.ApplyNodes(ctx, &outpostv1.ApplyNodesRequest{Nodes: chunk}); err != nil {
			return fmt.Errorf("apply nodes: %w", err)
		}
	}
	return nil
}

// Upload stores the file at path as an artifact and returns its SHA-256.
func (c *Client) Upload(ctx context.Context, path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(data)
	digest := hex.EncodeToString(sum[:])
	stream, err := c.UploadArtifact(ctx)
	if err != nil {
		return "", fmt.Errorf("upload: %w", err)
	}
	hdr := &outpostv1.UploadArtifactHeader{Name: filepath.Base(path), Size: int64(len(data)), Sha256: digest}
	if err := stream.Send(&outpostv1.UploadArtifactRequest{Payload: &outpostv1.UploadArtifactRequest_Header{Header: hdr}}); err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("upload header: %w", err)
	}
	for off := 0; off < len(data); off += 1 << 20 {
		chunk := data[off:min(off+1<<20, len(data))]
		if err := stream.Send(&outpostv1.UploadArtifactRequest{Payload: &outpostv1.UploadArtifactRequest_Chunk{Chunk: chunk}}); err != nil {
			break // the server may answer early (already stored); CloseAndRecv says
		}
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		return "", fmt.Errorf("upload: %w", err)
	}
	return digest, nil
}

// Create submits spec with an uploaded artifact.
func (c *Client) Create(ctx context.Context, spec *outpostv1.PlanSpec, digest string) (*outpostv1.Rollout, error) {
	resp, err := c.CreateRollout(ctx, &outpostv1.CreateRolloutRequest{Plan: spec, ArtifactSha256: digest})
	if err != nil {
		return nil, fmt.Errorf("create rollout: %w", err)
	}
	return resp.GetRollout(), nil
}

// Wait polls rollout id every interval until ok accepts it or ctx ends;
// on ctx's end the error describes the last state seen.
func (c *Client) Wait(ctx context.Context, id string, interval time.Duration, ok func(*outpostv1.Rollout) bool) (*outpostv1.Rollout, error) {
	var last *outpostv1.Rollout
	var lastErr error
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		resp, err := c.GetRollout(ctx, &outpostv1.GetRolloutRequest{Id: id})
		if err == nil {
			last = resp.GetRollout()
			if ok(last) {
				return last, nil
			}
		} else {
			lastErr = err
		}
		select {
		case <-ctx.Done():
			return last, fmt.Errorf("rollout %s: gave up waiting (%w): last state %v, message %q, counts {%v}, last error %v",
				id, ctx.Err(), last.GetState(), last.GetMessage(), last.GetNodeCounts(), lastErr)
		case <-tick.C:
		}
	}
}

// Nodes returns every node record of a rollout, sorted by node id.
func (c *Client) Nodes(ctx context.Context, id string) ([]*outpostv1.RolloutNode, error) {
	var out []*outpostv1.RolloutNode
	token := ""
	for range 1000 {
		resp, err := c.ListRolloutNodes(ctx, &outpostv1.ListRolloutNodesRequest{RolloutId: id, PageSize: 5000, PageToken: token})
		if err != nil {
			return nil, fmt.Errorf("list rollout nodes: %w", err)
		}
		out = append(out, resp.GetNodes()...)
		if token = resp.GetNextPageToken(); token == "" {
			return out, nil
		}
	}
	return nil, errors.New("list rollout nodes: too many pages")
}

// RollingPlan is a rolling plan over every node labelled app=App with the
// demo conventions: deploy path DeployPath, the simulated service's start
// and stop hooks, HTTP health on HealthPort.
func RollingPlan(artifactPath, batch string, maxFailPercent int32) *outpostv1.PlanSpec {
	return &outpostv1.PlanSpec{
		App:      App,
		Artifact: &outpostv1.PlanArtifact{Path: artifactPath},
		Targets:  &outpostv1.PlanTargets{Selector: map[string]string{"app": App}},
		Deploy:   &outpostv1.PlanDeploy{Path: DeployPath},
		Hooks:    &outpostv1.Hooks{Start: "sh bin/start", Stop: "sh bin/stop"},
		Health: &outpostv1.PlanHealth{
			Http:     &outpostv1.HttpHealthCheck{Port: HealthPort, Path: HealthPath},
			Timeout:  "2s",
			Interval: "100ms",
		},
		Strategy: &outpostv1.PlanStrategy{Type: "rolling", Batch: batch, MaxFailPercent: &maxFailPercent},
	}
}
