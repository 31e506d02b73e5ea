package controlplane

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/outposthq/outpost/controlplane/artifact"
	"github.com/outposthq/outpost/internal/ctxio"
	"github.com/outposthq/outpost/internal/plan"
	"github.com/outposthq/outpost/internal/tarscan"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// A tar artifact is measured when a rollout is created (and undone), from
// the artifact store, with the limits its plan and environment give: one
// over them is refused there, before any gateway fetches it, and the
// unpacked size makes min_free_bytes "auto" twice what the release will
// take on a node. Every gateway measures it again before it uploads (see
// gateway/deployer), and also checks what only it checks (paths, links),
// so a tar that is not readable is left to the gateways to refuse, with
// their reasons: here it counts for what could be read.

// tarPolicy is the limits on one plan's tar artifact and where each comes
// from, for errors.
type tarPolicy struct {
	lim tarscan.Limits
	// env names the plan's environment; "" when it is not declared.
	env string
	// sizeFrom and ratioFrom name the setting a limit comes from.
	sizeFrom, ratioFrom string
}

// tarPolicyOf resolves the limits on spec's tar artifact: the plan's
// artifact.max_unpacked_bytes, else its environment's, else the default;
// the environment's ratio and setuid settings. A plan asking for more than
// its environment's max_unpacked_bytes is refused.
func (s *Server) tarPolicyOf(spec *outpostv1.PlanSpec) (tarPolicy, error) {
	p := tarPolicy{
		sizeFrom:  "the default, which the plan's artifact.max_unpacked_bytes or its environment's max_unpacked_bytes changes",
		ratioFrom: "the default, which the plan's environment's max_unpacked_ratio changes",
	}
	if env := s.envs[spec.GetEnvironment()]; env != nil {
		p.env = spec.GetEnvironment()
		p.lim.AllowSetuid = env.AllowSetuid
		if env.MaxUnpackedBytes > 0 {
			p.lim.MaxUnpackedBytes = env.MaxUnpackedBytes
			p.sizeFrom = "environments." + p.env + ".max_unpacked_bytes"
		}
		if env.MaxUnpackedRatio > 0 {
			p.lim.MaxRatio = env.MaxUnpackedRatio
			p.ratioFrom = "environments." + p.env + ".max_unpacked_ratio"
		}
	}
	if v := spec.GetArtifact().GetMaxUnpackedBytes(); v != "" {
		n, err := plan.ParseSize("artifact.max_unpacked_bytes", v)
		if err != nil {
			return p, planStatus(err, "plan.")
		}
		if p.lim.MaxUnpackedBytes > 0 && n > p.lim.MaxUnpackedBytes {
			return p, fieldError("plan.artifact.max_unpacked_bytes", "%q is above the %s that environments.%s.max_unpacked_bytes allows",
				v, tarscan.FormatBytes(p.lim.MaxUnpackedBytes), p.env)
		}
		p.lim.MaxUnpackedBytes = n
		p.sizeFrom = "plan.artifact.max_unpacked_bytes"
	}
	if err := p.lim.CheckAndSetDefaults(); err != nil {
		return p, internal(err)
	}
	return p, nil
}

// measureTar returns the unpacked size of art (0 for an artifact that is
// not a tar), refusing one over p's limits with INVALID_ARGUMENT on
// artifact_sha256 that gives the sizes and the setting to change.
func (s *Server) measureTar(ctx context.Context, art *outpostv1.Artifact, p tarPolicy) (int64, error) {
	if art.GetUnpack() != outpostv1.Unpack_UNPACK_TAR {
		return 0, nil
	}
	key := tarMeasureKey{sha256: art.GetSha256(), lim: p.lim}
	if n, ok := s.tarMeasures.get(key); ok {
		return n, nil
	}
	f, meta, err := s.artifacts.Open(art.GetSha256())
	if errors.Is(err, artifact.ErrNotFound) && art.GetSize() == 0 {
		// A dry run of an artifact that was not uploaded (CreateRollout
		// allows only that): there is nothing to measure yet; the real
		// create measures it.
		return 0, nil
	}
	if err != nil {
		return 0, internal(err)
	}
	defer f.Close()
	sum, err := tarscan.Walk(ctxio.Reader(ctx, f), meta.Size, p.lim, nil)
	if err := ctx.Err(); err != nil {
		return 0, internal(err)
	}
	var tl *tarscan.TooLargeError
	var me *tarscan.ModeError
	switch {
	case errors.As(err, &tl):
		hint := ""
		switch tl.Limit {
		case tarscan.LimitUnpackedBytes:
			hint = " (limit: " + p.sizeFrom + ")"
		case tarscan.LimitRatio:
			hint = " (limit: " + p.ratioFrom + ")"
		}
		return 0, fieldError("artifact_sha256", "sha256:%s: %v%s", art.GetSha256(), err, hint)
	case errors.As(err, &me):
		where := "the plan's environment, declared in the control plane's configuration,"
		if p.env != "" {
			where = fmt.Sprintf("environments.%s", p.env)
		}
		return 0, fieldError("artifact_sha256", "sha256:%s: %v unless %s sets allow_setuid", art.GetSha256(), err, where)
	case err != nil:
		s.log.Debug("artifact is not a readable tar; the gateways will refuse it", "sha256", art.GetSha256(), "error", err)
	}
	s.tarMeasures.put(key, sum.UnpackedBytes)
	return sum.UnpackedBytes, nil
}

// maxTarMeasures bounds the cache; a control plane deploys few artifacts
// at a time.
const maxTarMeasures = 256

type tarMeasureKey struct {
	sha256 string
	lim    tarscan.Limits
}

// tarMeasures caches unpacked sizes, so that creating, retrying and
// undoing rollouts of a large artifact decompresses it once. Artifacts
// are stored by digest: a measurement never goes stale.
type tarMeasures struct {
	mu sync.Mutex
	m  map[tarMeasureKey]int64 // guarded by mu
}

func (c *tarMeasures) get(k tarMeasureKey) (int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.m[k]
	return n, ok
}

func (c *tarMeasures) put(k tarMeasureKey, n int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= maxTarMeasures {
		c.m = make(map[tarMeasureKey]int64)
	}
	c.m[k] = n
}
