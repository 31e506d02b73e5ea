package cli

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/outposthq/outpost/internal/plan"
	"github.com/outposthq/outpost/internal/rolloutstate"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

func rolloutCreateCommand() *command {
	return &command{
		name:  "create",
		short: "submit a plan: upload its artifact and start a rollout",
		usage: "outpost rollout create -f PLAN [--signature BUNDLE] [--watch] [--dry-run]",
		long: `Reads a plan, uploads its artifact to the control plane's artifact store
(only when the store does not have it yet: artifacts are stored by their
SHA-256), and creates a rollout. artifact.path is relative to the plan
file's directory.

Without --watch it prints just the rollout id on standard output, so
scripts can capture it. With --watch it follows the rollout like
'outpost rollout watch' and exits 0 only if the rollout succeeded.

A signed artifact carries its Sigstore bundle beside it: the plan's
artifact.signature (relative to the plan file's directory) or
--signature BUNDLE (which wins). Make it with cosign, offline:

  cosign sign-blob --key cosign.key --bundle app.bundle \
    --new-bundle-format --tlog-upload=false app.tar.gz

An environment with require_signature refuses an artifact not signed by
one of its trusted keys, and every gateway with --trusted-keys verifies
the signature again before anything reaches a node.

--dry-run checks the plan on the control plane and prints the stages it
would run and every node of every batch, in order, without creating
anything or touching any node. The artifact is still uploaded when
missing: it is stored by content and reused by the real rollout.

A minimal plan (see deploy/examples/ for more):

  app: billing-api
  artifact: {path: ./build/billing-api-1.4.2.tar.gz}
  targets: {selector: {app: billing-api}}
  deploy: {path: /srv/billing-api}
  hooks: {stop: "sudo systemctl stop billing-api", start: "sudo systemctl start billing-api"}
  health: {http: {port: 8080, path: /health}, timeout: 30s}
  strategy: {type: rolling, batch: "10%", max_fail_percent: 10}

Examples:
  outpost rollout create -f plan.yaml --watch
  outpost rollout create -f plan.yaml --dry-run
  outpost rollout create -f plan.yaml --signature build/app.tar.gz.bundle
  id=$(outpost rollout create -f plan.yaml) && outpost rollout watch "$id"`,
		flags: func(fs *flag.FlagSet, env *Env) func(context.Context, []string) error {
			addr := controlPlaneFlag(fs, env)
			file := fs.String("f", "", "plan `FILE` (YAML)")
			watch := fs.Bool("watch", false, "follow the rollout like rollout watch until it ends or waits for validation; exit 0 only if it succeeded")
			dryRun := fs.Bool("dry-run", false, "show the stages and batches the plan would run; create nothing")
			sigFile := fs.String("signature", "", "Sigstore `BUNDLE` signing the artifact (cosign sign-blob --bundle F --new-bundle-format); overrides the plan's artifact.signature")
			out := outputFlag(fs, resourceFormats...)
			return func(ctx context.Context, args []string) error {
				if len(args) > 0 {
					return usagef("rollout create takes no arguments (did you mean -f %s?)", args[0])
				}
				if *file == "" {
					return usagef("-f PLAN is required")
				}
				if *watch && *dryRun {
					return usagef("--watch and --dry-run do not go together")
				}
				data, err := readPlan(*file)
				if err != nil {
					return err
				}
				spec, err := plan.Parse(data)
				if err != nil {
					return fileErrors(*file, err)
				}
				artifactPath := spec.GetArtifact().GetPath()
				if !filepath.IsAbs(artifactPath) {
					artifactPath = filepath.Join(filepath.Dir(*file), artifactPath)
				}
				bundlePath := *sigFile
				if bundlePath == "" && spec.GetArtifact().GetSignature() != "" {
					bundlePath = spec.GetArtifact().GetSignature()
					if !filepath.IsAbs(bundlePath) {
						bundlePath = filepath.Join(filepath.Dir(*file), bundlePath)
					}
				}
				var bundle []byte
				if bundlePath != "" {
					if bundle, err = readBundle(bundlePath); err != nil {
						return err
					}
				}
				c, err := dial(*addr)
				if err != nil {
					return err
				}
				defer c.Close()
				var sha string
				var size int64
				if *dryRun {
					// The plan needs only the digest: a dry run uploads nothing.
					sha, size, err = hashArtifact(artifactPath)
				} else {
					sha, err = ensureArtifact(ctx, c, artifactPath, env)
				}
				if err != nil {
					return err
				}
				cctx, cancel := unary(ctx)
				defer cancel()
				resp, err := c.cp.CreateRollout(cctx, &outpostv1.CreateRolloutRequest{
					Plan: spec, ArtifactSha256: sha, RequestId: newRequestID(), DryRun: *dryRun,
					ArtifactSignature: bundle,
				})
				if err != nil {
					return c.explain("create rollout", err)
				}
				r := resp.GetRollout()
				if *dryRun {
					if a := r.GetArtifact(); a != nil && a.GetSize() == 0 {
						a.Size = size
						if a.GetName() == "" {
							a.Name = artifactName(artifactPath)
						}
					}
					if structured(*out) {
						return writeProto(env.Stdout, *out, r)
					}
					return writeDryRun(env.Stdout, r)
				}
				created := fmt.Sprintf("rollout %s created: %s revision %d, release %s, %s in %s",
					r.GetId(), r.GetApp(), r.GetRevision(), r.GetReleaseId(), rolloutstate.CountsText(rolloutCounts(r)), stagesText(r))
				if r.GetState() == outpostv1.RolloutState_ROLLOUT_STATE_PENDING_APPROVAL {
					created += "; waiting for approval by someone else"
				}
				if !*watch {
					fmt.Fprintln(env.Stderr, created)
					fmt.Fprintln(env.Stdout, r.GetId())
					return nil
				}
				o := watchOptionsFor(env, *out)
				if o.structured() {
					fmt.Fprintln(env.Stderr, created)
				} else {
					fmt.Fprintln(env.Stdout, created)
				}
				return watchRollout(ctx, c, r.GetId(), o)
			}
		},
	}
}

// readPlan reads a plan file, refusing one over plan.MaxPlanBytes before
// reading it: a 100 MB file is not read into memory to be refused after.
func readPlan(name string) ([]byte, error) {
	return readLimited(name, plan.MaxPlanBytes, "plan")
}

// readLimited reads a file of at most limit bytes, refusing a larger
// regular file from its size, before reading it; a stream (a pipe, a
// device) is read up to one byte past the limit. what names the file in
// errors ("plan").
func readLimited(name string, limit int64, what string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Mode().IsRegular() && st.Size() > limit {
		return nil, fmt.Errorf("%s: %d bytes: a %s is at most %d bytes", name, st.Size(), what, limit)
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", name, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: more than %d bytes: a %s is at most %d bytes", name, limit, what, limit)
	}
	return data, nil
}

// stagesText says how a rollout is cut: "2 stages, 5 batches" or "4 batches".
func stagesText(r *outpostv1.Rollout) string {
	batches := 0
	for _, s := range r.GetStages() {
		batches += len(s.GetBatches())
	}
	plural := func(n int, one, many string) string {
		if n == 1 {
			return "1 " + one
		}
		return fmt.Sprintf("%d %s", n, many)
	}
	if len(r.GetStages()) == 1 {
		return plural(batches, "batch", "batches")
	}
	return plural(len(r.GetStages()), "stage", "stages") + ", " + plural(batches, "batch", "batches")
}

// uploadChunk is the size of one UploadArtifact chunk (the API's maximum).
const uploadChunk = 1 << 20

// hashArtifact returns the SHA-256 and size of the regular file at path.
func hashArtifact(path string) (string, int64, error) {
	f, st, err := openArtifact(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	sha, err := hashFile(f, path)
	return sha, st.Size(), err
}

// openArtifact opens the artifact file, which must be a regular file.
func openArtifact(path string) (*os.File, os.FileInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("artifact: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("artifact: %w", err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("artifact %s: not a regular file", path)
	}
	return f, st, nil
}

func hashFile(f *os.File, path string) (string, error) {
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("artifact: hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ensureArtifact hashes the file at path and uploads it unless the
// control plane already stores that SHA-256. It returns the SHA-256.
func ensureArtifact(ctx context.Context, c *client, path string, env *Env) (string, error) {
	f, st, err := openArtifact(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sha, err := hashFile(f, path)
	if err != nil {
		return "", err
	}

	cctx, cancel := unary(ctx)
	stat, err := c.art.StatArtifact(cctx, &outpostv1.StatArtifactRequest{Sha256: sha})
	cancel()
	if err != nil {
		return "", c.explain("check artifact", err)
	}
	name := artifactName(path)
	if stat.GetFound() {
		fmt.Fprintf(env.Stderr, "artifact %s (%s) is already stored\n", name, byteSize(st.Size()))
		return sha, nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", fmt.Errorf("artifact: %w", err)
	}
	live, _ := terminal(env.Stderr, env.Getenv)
	if err := upload(ctx, c, f, name, st.Size(), sha, env.Stderr, live); err != nil {
		return "", err
	}
	return sha, nil
}

// upload streams the artifact in chunks. On a terminal it redraws a
// progress line at most ten times a second; elsewhere it prints one line
// when done.
func upload(ctx context.Context, c *client, r io.Reader, name string, size int64, sha string, progress io.Writer, live bool) error {
	// Cancelling ctx aborts the stream; the server then stores nothing.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := c.art.UploadArtifact(sctx)
	if err != nil {
		return c.explain("upload artifact", err)
	}
	if err := stream.Send(&outpostv1.UploadArtifactRequest{Payload: &outpostv1.UploadArtifactRequest_Header{
		Header: &outpostv1.UploadArtifactHeader{Name: name, Size: size, Sha256: sha},
	}}); err != nil && !errors.Is(err, io.EOF) {
		return c.explain("upload artifact", err)
	}
	start := time.Now()
	var sent int64
	var last time.Time
	buf := make([]byte, uploadChunk)
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			// The server may answer early (already stored); Send then
			// returns io.EOF and CloseAndRecv has the answer.
			if err := stream.Send(&outpostv1.UploadArtifactRequest{Payload: &outpostv1.UploadArtifactRequest_Chunk{Chunk: buf[:n]}}); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return c.explain("upload artifact", err)
			}
			sent += int64(n)
			if live && time.Since(last) >= 100*time.Millisecond {
				last = time.Now()
				fmt.Fprintf(progress, "\r\x1b[Kuploading %s  %s / %s  %d%%", name, byteSize(sent), byteSize(size), percent(sent, size))
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			return fmt.Errorf("artifact: read: %w", rerr)
		}
	}
	resp, err := stream.CloseAndRecv()
	if live {
		fmt.Fprint(progress, "\r\x1b[K")
	}
	if err != nil {
		return c.explain("upload artifact", err)
	}
	if resp.GetAlreadyPresent() {
		fmt.Fprintf(progress, "artifact %s (%s) is already stored\n", name, byteSize(size))
		return nil
	}
	fmt.Fprintf(progress, "uploaded %s (%s) in %s\n", name, byteSize(size), durationText(time.Since(start)))
	return nil
}

func percent(n, total int64) int64 {
	if total <= 0 {
		return 100
	}
	return n * 100 / total
}

var unsafeNameChars = regexp.MustCompile(`[^A-Za-z0-9._-]`)

// artifactName is the file's base name made acceptable to the artifact
// store (letters, digits, '.', '_', '-').
func artifactName(path string) string {
	name := unsafeNameChars.ReplaceAllString(filepath.Base(path), "_")
	if name == "" || name == "." || name == ".." {
		return "artifact"
	}
	return name
}
