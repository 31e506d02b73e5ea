package cli

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func auditExportCommand() *command {
	return &command{
		name:  "export",
		short: "write the audit log with its hash chain as JSON Lines (for WORM storage or a SIEM)",
		usage: "outpost audit export [--since DURATION|TIME] > audit.jsonl",
		long: `Writes the audit log, oldest first, to standard output as JSON Lines:
first the signed checkpoints that cover the exported entries (lines of
the form {"checkpoint": {...}}), then one AuditEntry per line, as
outpost audit -o json prints them, with their chain fields (sequence,
previous_hash, hash).

Every entry names the hash of the one before it and a checkpoint signed
by the control plane's CA fixes the chain up to its entry, so the file
can be checked later, offline, with nothing but the CA certificate:
outpost audit verify --file audit.jsonl --ca ca.crt. Keep exports on
write-once storage: they then prove what the log said when they were
taken, even if etcd is edited afterwards.

--since takes a duration back from now (24h) or an RFC 3339 time; 0
(the default) means everything kept.

Examples:
  outpost audit export > audit-$(date +%F).jsonl
  outpost audit export --since 24h | aws s3 cp - s3://audit-worm/outpost-$(date +%F).jsonl
  outpost audit export --since 2026-03-01T00:00:00Z | jq -c 'select(.action == "node.result")'`,
		flags: func(fs *flag.FlagSet, env *Env) func(context.Context, []string) error {
			addr := controlPlaneFlag(fs, env)
			since := fs.String("since", "0", "entries from this long ago (`DURATION`) or this RFC 3339 time; 0 means all kept")
			return func(ctx context.Context, args []string) error {
				if len(args) > 0 {
					return usagef("audit export takes no arguments")
				}
				from, err := parseSince(*since, time.Now())
				if err != nil {
					return err
				}
				c, err := dial(*addr)
				if err != nil {
					return err
				}
				defer c.Close()
				a := auditClient{c: c, ac: outpostv1.NewAuditServiceClient(c.cc)}
				w := bufio.NewWriter(env.Stdout)
				cps, err := a.checkpoints(ctx)
				if err != nil {
					return err
				}
				for _, cp := range exportedCheckpoints(cps, from) {
					if err := writeCheckpointLine(w, cp); err != nil {
						return err
					}
				}
				err = a.eachEntry(ctx, from, func(e *outpostv1.AuditEntry) error {
					return writeItem(w, "json", e)
				})
				if ferr := w.Flush(); err == nil {
					err = ferr
				}
				return err
			}
		},
	}
}

// checkpoints lists every checkpoint of the audit log, oldest first.
func (a auditClient) checkpoints(ctx context.Context) ([]*outpostv1.AuditCheckpoint, error) {
	req := &outpostv1.ListAuditCheckpointsRequest{PageSize: 1000}
	var out []*outpostv1.AuditCheckpoint
	err := listPages(ctx, a.c, "list audit checkpoints", func(ctx context.Context, token string) (*outpostv1.ListAuditCheckpointsResponse, error) {
		req.PageToken = token
		return a.ac.ListAuditCheckpoints(ctx, req)
	}, func(resp *outpostv1.ListAuditCheckpointsResponse) bool {
		out = append(out, resp.GetCheckpoints()...)
		return true
	})
	return out, err
}

// eachEntry calls fn with every entry from since (zero: all kept), oldest
// first, a page at a time, so an export of any size streams.
func (a auditClient) eachEntry(ctx context.Context, since time.Time, fn func(*outpostv1.AuditEntry) error) error {
	req := &outpostv1.ListAuditEntriesRequest{PageSize: 1000}
	if !since.IsZero() {
		req.Since = timestamppb.New(since)
	}
	var fnErr error
	err := listPages(ctx, a.c, "list audit entries", func(ctx context.Context, token string) (*outpostv1.ListAuditEntriesResponse, error) {
		req.PageToken = token
		return a.ac.ListAuditEntries(ctx, req)
	}, func(resp *outpostv1.ListAuditEntriesResponse) bool {
		for _, e := range resp.GetEntries() {
			if fnErr = fn(e); fnErr != nil {
				return false
			}
		}
		return true
	})
	if fnErr != nil {
		return fnErr
	}
	return err
}

// exportedCheckpoints are the checkpoints an export from since needs:
// those of exported entries, and the newest one before them, which the
// first exported entry may link to.
func exportedCheckpoints(cps []*outpostv1.AuditCheckpoint, since time.Time) []*outpostv1.AuditCheckpoint {
	first := 0
	for i, cp := range cps {
		if cp.GetEntryTime().AsTime().Before(since) {
			first = i
		}
	}
	return cps[first:]
}

// writeCheckpointLine writes {"checkpoint": CHECKPOINT} and a newline.
func writeCheckpointLine(w io.Writer, cp *outpostv1.AuditCheckpoint) error {
	j, err := protoJSON(cp)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "{%q:%s}\n", checkpointLineKey, j)
	return err
}

// checkpointLineKey is the key of a checkpoint line in an export.
const checkpointLineKey = "checkpoint"
