package cli

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// rolloutVerb is a verb that takes one ROLLOUT_ID, calls the control plane
// once and prints the rollout as the call left it.
type rolloutVerb struct {
	name, short, usage, long string
	// flags registers the verb's own flags and returns the call to make,
	// given the client, the rollout id and a fresh request id.
	flags func(fs *flag.FlagSet) func(ctx context.Context, c *client, id, requestID string) (*outpostv1.Rollout, error)
	// check validates the flags before anything is dialled; nil means none.
	check func() error
}

func (v rolloutVerb) command() *command {
	return &command{
		name: v.name, short: v.short, usage: v.usage, long: v.long,
		flags: func(fs *flag.FlagSet, env *Env) func(context.Context, []string) error {
			addr := controlPlaneFlag(fs, env)
			out := outputFlag(fs, resourceFormats...)
			call := v.flags(fs)
			return func(ctx context.Context, args []string) error {
				if len(args) != 1 {
					return usagef("rollout %s takes one ROLLOUT_ID", v.name)
				}
				if v.check != nil {
					if err := v.check(); err != nil {
						return err
					}
				}
				c, err := dial(*addr)
				if err != nil {
					return err
				}
				defer c.Close()
				cctx, cancel := unary(ctx)
				defer cancel()
				r, err := call(cctx, c, args[0], newRequestID())
				if err != nil {
					return c.explain(v.name+" rollout "+args[0], err)
				}
				return writeVerbResult(env.Stdout, *out, r)
			}
		},
	}
}

// writeVerbResult prints a rollout after a verb: one line for people
// ("r-000042: PAUSED: paused: lunch"), or the whole resource.
func writeVerbResult(w io.Writer, format string, r *outpostv1.Rollout) error {
	if structured(format) {
		return writeProto(w, format, r)
	}
	line := fmt.Sprintf("%s: %s", r.GetId(), rolloutstate.Name(r.GetState()))
	if st := currentStage(r); st != nil && !rolloutstate.Finished(r.GetState()) {
		line += fmt.Sprintf(" (stage %s %s)", st.GetName(), stageState(st.GetState()))
	}
	if r.GetMessage() != "" {
		line += ": " + r.GetMessage()
	}
	_, err := fmt.Fprintf(w, "%s\n  %s\n", line, rolloutstate.CountsText(rolloutCounts(r)))
	return err
}

func currentStage(r *outpostv1.Rollout) *outpostv1.Stage {
	i := int(r.GetCurrentStage())
	if i < 0 || i >= len(r.GetStages()) {
		return nil
	}
	return r.GetStages()[i]
}
