package gateway

import (
	"context"
	"errors"
	"path"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/outposthq/outpost/gateway/deployer"
	"github.com/outposthq/outpost/gateway/sshexec"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Observing a node (fleet truth, ControlPlaneService.VerifyNodes): the
// control plane asks over the ServeHostKeyScans stream (a request with
// observe set); the gateway logs in as for a deployment, runs the one
// read-only observe command (deployer.ObserveScript) and answers with what
// it found or why it could not. A relative deploy path costs one SFTP
// request before it (deployer.ResolvePath), so that the command reads the
// directory the deployer wrote. Observations share the stream's bound on
// concurrent work (maxScans), so a verification of the whole fleet never
// takes more than that many SSH sessions, and a node this gateway is
// deploying right now is not observed at all: the control plane skips
// nodes in a running rollout, and the gateway checks its own tasks too.

// observeTimeout bounds one observation: connect, log in, one command.
// A variable for tests on a loaded machine.
var observeTimeout = 30 * time.Second

// observe answers one observe request.
func (g *Gateway) observe(ctx context.Context, req *outpostv1.ServeHostKeyScansResponse) *outpostv1.ServeHostKeyScansRequest {
	n, ob := req.GetNode(), req.GetObserve()
	res := &outpostv1.ServeHostKeyScansRequest{ScanId: req.GetScanId()}
	o := g.observeNode(ctx, n, ob)
	o.Time = timestamppb.New(g.cfg.Now())
	o.Gateway = g.cfg.Name
	res.Observation = o
	return res
}

func (g *Gateway) observeNode(ctx context.Context, n *outpostv1.Node, ob *outpostv1.ObserveRequest) *outpostv1.NodeObservation {
	failed := func(r outpostv1.ObserveResult, err error) *outpostv1.NodeObservation {
		g.log.Info("node not observed", "node_id", n.GetId(), "result", r.String(), "error", err)
		return &outpostv1.NodeObservation{Result: r, Error: err.Error()}
	}
	switch {
	case n.GetDatacenter() != g.cfg.Datacenter:
		return failed(outpostv1.ObserveResult_OBSERVE_RESULT_FAILED, errors.New("node is in datacenter "+n.GetDatacenter()+"; this gateway serves "+g.cfg.Datacenter))
	case g.deploying(n.GetId()):
		return failed(outpostv1.ObserveResult_OBSERVE_RESULT_FAILED, errors.New("a deployment to the node runs on this gateway"))
	}
	layout := deployer.LayoutReleases
	if ob.GetLayout() == outpostv1.Layout_LAYOUT_INPLACE {
		layout = deployer.LayoutInplace
	}
	cmd, err := deployer.ObserveScript(ob.GetPath(), layout, ob.GetRelease())
	if err != nil {
		return failed(outpostv1.ObserveResult_OBSERVE_RESULT_FAILED, err)
	}
	cfg, err := g.sshConfig(n)
	if err != nil {
		return failed(outpostv1.ObserveResult_OBSERVE_RESULT_FAILED, err)
	}
	cfg.MaxOutputBytes = deployer.MaxObserveOutput
	cfg.DialRetries = -1
	ctx, cancel := context.WithTimeout(ctx, observeTimeout)
	defer cancel()
	c, err := sshexec.Dial(ctx, cfg)
	if err != nil {
		return failed(classifyDial(err), err)
	}
	defer c.Close()
	// A relative deploy path is read where the deployer wrote it: in the
	// SFTP server's start directory, which need not be the login shell's.
	if p := ob.GetPath(); !path.IsAbs(p) {
		dir, err := deployer.ResolvePath(ctx, c, p)
		if err == nil {
			cmd, err = deployer.ObserveScript(dir, layout, ob.GetRelease())
		}
		if err != nil {
			return failed(outpostv1.ObserveResult_OBSERVE_RESULT_FAILED, err)
		}
	}
	res, err := c.Run(ctx, cmd)
	if err != nil {
		return failed(outpostv1.ObserveResult_OBSERVE_RESULT_UNREACHABLE, err)
	}
	if res.Truncated {
		return failed(outpostv1.ObserveResult_OBSERVE_RESULT_FAILED, errors.New("the node's output is larger than the observe command prints; refused"))
	}
	if err := res.Err(); err != nil {
		return failed(outpostv1.ObserveResult_OBSERVE_RESULT_FAILED, err)
	}
	o, err := deployer.ParseObservation(res.Stdout, layout)
	if err != nil {
		return failed(outpostv1.ObserveResult_OBSERVE_RESULT_FAILED, err)
	}
	return o
}

// classifyDial says why a node could not be reached. x/crypto reports a
// refused login only in its message; a refused host key has its own type.
func classifyDial(err error) outpostv1.ObserveResult {
	var hk *sshexec.HostKeyError
	switch {
	case errors.As(err, &hk):
		return outpostv1.ObserveResult_OBSERVE_RESULT_HOST_KEY
	case strings.Contains(err.Error(), "unable to authenticate"):
		return outpostv1.ObserveResult_OBSERVE_RESULT_AUTH
	default:
		return outpostv1.ObserveResult_OBSERVE_RESULT_UNREACHABLE
	}
}

// deploying reports whether an assignment of this gateway works on node
// now (accepted, queued or running).
func (g *Gateway) deploying(node string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, t := range g.tasks {
		if t.a.GetNode().GetId() == node {
			return true
		}
	}
	return false
}
