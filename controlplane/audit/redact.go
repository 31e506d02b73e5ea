package audit

import (
	"net/url"
	"regexp"
	"strings"
	"unicode/utf8"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

// Redacted replaces detail values whose name looks secret.
const Redacted = "REDACTED"

// Bounds on entry fields, so one entry stays small in etcd and a batch
// of them fits one transaction.
const (
	maxShort      = 256  // actor, action, ids, peer address, result
	maxResource   = 512  // resource
	maxMessage    = 2048 // message
	maxDetail     = 1024 // one detail value
	maxDetailKeys = 32
)

// secretWords mark detail names whose values are never stored.
var secretWords = []string{"password", "passwd", "token", "secret", "key", "credential"}

// SecretName reports whether a detail named name would be redacted.
func SecretName(name string) bool {
	n := strings.ToLower(name)
	for _, w := range secretWords {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

var (
	// urlPattern finds URLs in free text.
	urlPattern = regexp.MustCompile(`[a-zA-Z][a-zA-Z0-9+.-]*://[^\s"'<>]+`)
	// assignPattern finds "password=..." and "token: ..." in free text.
	assignPattern = regexp.MustCompile(`(?i)\b([a-z_-]*(?:password|passwd|secret|token)[a-z_-]*)(\s*[=:]\s*)("[^"]*"|'[^']*'|\S+)`)
)

// Scrub removes what may be secret from free text: a URL is cut to its
// scheme and host (webhook URLs carry their token in the path or query;
// any URL may carry a password), and "password=x" / "token: x" lose the
// value.
func Scrub(s string) string {
	s = urlPattern.ReplaceAllStringFunc(s, func(raw string) string {
		// Punctuation ending a sentence is not part of the URL.
		trimmed := strings.TrimRight(raw, ".,;:!?)]}")
		tail := raw[len(trimmed):]
		u, err := url.Parse(trimmed)
		if err != nil || u.Host == "" {
			return "[url]" + tail
		}
		if u.Path == "" && u.RawQuery == "" && u.Fragment == "" && u.User == nil {
			return raw
		}
		return u.Scheme + "://" + u.Host + "/…" + tail
	})
	return assignPattern.ReplaceAllString(s, "${1}${2}"+Redacted)
}

// sanitize redacts and bounds an entry before it is stored.
func sanitize(e *outpostv1.AuditEntry) {
	e.Actor = truncate(e.GetActor(), maxShort)
	e.Action = truncate(e.GetAction(), maxShort)
	e.Resource = truncate(Scrub(e.GetResource()), maxResource)
	e.RolloutId = truncate(e.GetRolloutId(), maxShort)
	e.NodeId = truncate(e.GetNodeId(), maxShort)
	e.RequestId = truncate(e.GetRequestId(), maxShort)
	e.PeerAddress = truncate(e.GetPeerAddress(), maxShort)
	e.Result = truncate(e.GetResult(), maxShort)
	e.Message = truncate(Scrub(e.GetMessage()), maxMessage)
	if len(e.GetDetails()) == 0 {
		return
	}
	out := make(map[string]string, min(len(e.GetDetails()), maxDetailKeys))
	for k, v := range e.GetDetails() {
		if len(out) == maxDetailKeys {
			break
		}
		k = truncate(k, maxShort)
		if SecretName(k) {
			out[k] = Redacted
			continue
		}
		out[k] = truncate(Scrub(v), maxDetail)
	}
	e.Details = out
}

// truncate cuts s to at most n bytes of valid UTF-8, marking the cut.
func truncate(s string, n int) string {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if len(s) <= n {
		return s
	}
	cut := n - len("…")
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
