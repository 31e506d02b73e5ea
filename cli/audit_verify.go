package cli

import (
	"bufio"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/outposthq/outpost/internal/auditchain"
	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// maxExportLine bounds one line of an export file; an entry is at most
// a few tens of KiB (see controlplane/audit's field bounds).
const maxExportLine = 1 << 20

func auditVerifyCommand() *command {
	return &command{
		name:  "verify",
		short: "check the audit log's hash chain and signed checkpoints; name the first entry edited, removed or reordered",
		usage: "outpost audit verify [--since DURATION|TIME] [--ca FILE] | outpost audit verify --file EXPORT.jsonl --ca FILE",
		long: `Checks that nobody edited, removed or reordered audit entries.

Each entry carries the hash of the one before it and its own hash over
its fields; the control plane signs a checkpoint (entry sequence and
hash) with its CA key every few minutes and at every retention prune.
verify recomputes every hash, follows every link, and checks the
checkpoints' signatures with the CA certificate, here on this machine: a
control plane that lies cannot make a broken log pass. It prints the
first entry that does not hold and exits 1; 0 when the whole log holds.

Without --since the whole log kept is checked, from its first entry (or
the checkpoint the last retention prune signed); with --since, from that
time. Entries newer than the last checkpoint are chained but not yet
signed (the next checkpoint follows within minutes): verify says how many.

--file checks an export (outpost audit export) offline; it needs --ca.
Without --file the CA certificates of your credential are used unless
--ca names others.

Examples:
  outpost audit verify
  outpost audit verify --since 24h
  outpost audit verify --file audit-2026-03-01.jsonl --ca /etc/outpost/ca.crt`,
		flags: func(fs *flag.FlagSet, env *Env) func(context.Context, []string) error {
			addr := controlPlaneFlag(fs, env)
			since := fs.String("since", "0", "check entries from this long ago (`DURATION`) or this RFC 3339 time; 0 means all kept")
			file := fs.String("file", "", "check this export `FILE` (JSON Lines from outpost audit export) offline; - is standard input")
			caFile := fs.String("ca", "", "CA certificate `FILE` (PEM) whose key signs the checkpoints; default: the credential's")
			return func(ctx context.Context, args []string) error {
				if len(args) > 0 {
					return usagef("audit verify takes no arguments")
				}
				sinceSet := false
				fs.Visit(func(f *flag.Flag) { sinceSet = sinceSet || f.Name == "since" })
				var keys []crypto.PublicKey
				if *caFile != "" {
					var err error
					if keys, err = readCAKeys(*caFile); err != nil {
						return err
					}
				}
				if *file != "" {
					if sinceSet {
						return usagef("--since and --file cannot be combined: an export is checked whole")
					}
					if keys == nil {
						return usagef("--file needs --ca: the CA certificate that signs the checkpoints")
					}
					return verifyExport(env, *file, keys)
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
				if keys == nil {
					if keys, err = caKeys(c.cred.CAPEM, "the credential"); err != nil {
						return err
					}
				}
				a := auditClient{c: c, ac: outpostv1.NewAuditServiceClient(c.cc)}
				// Checkpoints first: one signed after the entries were read
				// would name an entry this walk did not see.
				cps, err := a.checkpoints(ctx)
				if err != nil {
					return err
				}
				v, err := newChainVerifier(keys, cps, !from.IsZero())
				if err != nil {
					return chainBroken(err)
				}
				if err := a.eachEntry(ctx, from, v.Add); err != nil {
					var brk *auditchain.Break
					if errors.As(err, &brk) {
						return chainBroken(err)
					}
					return err
				}
				return reportChain(env.Stdout, v)
			}
		},
	}
}

// verifyExport checks an export file: its checkpoint lines, then its
// entry lines.
func verifyExport(env *Env, path string, keys []crypto.PublicKey) error {
	var r io.Reader = env.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxExportLine)
	var (
		cps  []*outpostv1.AuditCheckpoint
		v    *auditchain.Verifier
		line int
	)
	for sc.Scan() {
		line++
		b := sc.Bytes()
		if len(b) == 0 {
			continue
		}
		var probe map[string]json.RawMessage
		if err := json.Unmarshal(b, &probe); err != nil {
			return chainBroken(fmt.Errorf("%s line %d: not a JSON object: %v", path, line, err))
		}
		if raw, ok := probe[checkpointLineKey]; ok {
			if v != nil {
				return chainBroken(fmt.Errorf("%s line %d: a checkpoint after entries (an export lists its checkpoints first)", path, line))
			}
			cp := &outpostv1.AuditCheckpoint{}
			if err := protojson.Unmarshal(raw, cp); err != nil {
				return chainBroken(fmt.Errorf("%s line %d: not a checkpoint: %v", path, line, err))
			}
			cps = append(cps, cp)
			continue
		}
		if v == nil {
			var err error
			// An export may start anywhere (--since): its first entry is
			// anchored only when it links to a checkpoint.
			if v, err = newChainVerifier(keys, cps, true); err != nil {
				return chainBroken(fmt.Errorf("%s: %w", path, err))
			}
		}
		e := &outpostv1.AuditEntry{}
		if err := protojson.Unmarshal(b, e); err != nil {
			return chainBroken(fmt.Errorf("%s line %d: not an audit entry: %v", path, line, err))
		}
		if err := v.Add(e); err != nil {
			return chainBroken(fmt.Errorf("%s line %d: %w", path, line, err))
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s line %d: %w", path, line+1, err)
	}
	if v == nil {
		var err error
		if v, err = newChainVerifier(keys, cps, true); err != nil {
			return chainBroken(fmt.Errorf("%s: %w", path, err))
		}
	}
	return reportChain(env.Stdout, v)
}

// newChainVerifier picks, among keys, the one that signed the
// checkpoints (the first when none matches: verification then says
// whose key signed them) and starts a walk.
func newChainVerifier(keys []crypto.PublicKey, cps []*outpostv1.AuditCheckpoint, window bool) (*auditchain.Verifier, error) {
	key := keys[0]
	if len(cps) > 0 {
		for _, k := range keys {
			if id, err := auditchain.KeyID(k); err == nil && id == cps[0].GetKeyId() {
				key = k
				break
			}
		}
	}
	return auditchain.NewVerifier(auditchain.Options{Key: key, Window: window}, cps)
}

// reportChain finishes the walk and says what it proved.
func reportChain(w io.Writer, v *auditchain.Verifier) error {
	sum, err := v.Finish()
	if err != nil {
		return chainBroken(err)
	}
	if sum.Entries == 0 {
		fmt.Fprintf(w, "no audit entries to verify (%d checkpoints verified)\n", sum.Checkpoints)
		return nil
	}
	fmt.Fprintf(w, "audit log verified: %d entries, sequence %d to %d, %d checkpoints\n", sum.Entries-sum.Legacy, sum.First, sum.Last, sum.Checkpoints)
	switch {
	case sum.SignedThrough == 0:
		fmt.Fprintf(w, "no checkpoint covers these entries yet: they are chained but not signed\n")
	case sum.SignedThrough < sum.Last:
		fmt.Fprintf(w, "signed through entry %d; the %d entries after it are chained but not yet signed\n", sum.SignedThrough, sum.Last-sum.SignedThrough)
	default:
		fmt.Fprintf(w, "signed through the last entry, %d\n", sum.SignedThrough)
	}
	if !sum.Anchored {
		fmt.Fprintf(w, "the first entry, %d, starts a window (--since or a partial export): entries before it are not checked\n", sum.First)
	}
	if sum.Legacy > 0 {
		fmt.Fprintf(w, "%d older entries were written before the hash chain existed and cannot be verified\n", sum.Legacy)
	}
	return nil
}

// chainBroken is verify's failure: exit status 1 with the break named.
func chainBroken(err error) error {
	return &exitError{code: 1, err: fmt.Errorf("audit log does not verify: %w", err)}
}

// readCAKeys reads the public keys of the CA certificates in a PEM file.
func readCAKeys(path string) ([]crypto.PublicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return caKeys(data, path)
}

// caKeys returns the public keys of the certificates in data (PEM).
func caKeys(data []byte, from string) ([]crypto.PublicKey, error) {
	var keys []crypto.PublicKey
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", from, err)
		}
		keys = append(keys, cert.PublicKey)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no PEM certificate", from)
	}
	return keys, nil
}
