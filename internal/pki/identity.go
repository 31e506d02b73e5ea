package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Kind says whether an identity is a person (or tool) or a gateway.
type Kind int

// Kinds. The zero Kind is invalid.
const (
	KindUnspecified Kind = iota
	KindUser
	KindGateway
)

var kindNames = map[Kind]string{KindUser: "user", KindGateway: "gateway"}

// String returns "user", "gateway" or "Kind(n)".
func (k Kind) String() string {
	if s, ok := kindNames[k]; ok {
		return s
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// ParseKind parses "user" or "gateway".
func ParseKind(s string) (Kind, error) {
	for k, name := range kindNames {
		if s == name {
			return k, nil
		}
	}
	return KindUnspecified, fmt.Errorf("unknown kind %q (want user or gateway)", s)
}

// Role is what a user may do; see package controlplane/auth for what each
// role allows. The zero Role is invalid.
type Role int

// Roles, in the order they are usually listed. Only viewer is contained in
// the others: deployer and approver are separate duties, admin has both.
const (
	RoleUnspecified Role = iota
	RoleViewer
	RoleDeployer
	RoleApprover
	RoleAdmin
)

var roleNames = map[Role]string{
	RoleViewer:   "viewer",
	RoleDeployer: "deployer",
	RoleApprover: "approver",
	RoleAdmin:    "admin",
}

// String returns "viewer", "deployer", "approver", "admin" or "Role(n)".
func (r Role) String() string {
	if s, ok := roleNames[r]; ok {
		return s
	}
	return fmt.Sprintf("Role(%d)", int(r))
}

// ParseRole parses a role name.
func ParseRole(s string) (Role, error) {
	for r, name := range roleNames {
		if s == name {
			return r, nil
		}
	}
	return RoleUnspecified, fmt.Errorf("unknown role %q (want viewer, deployer, approver or admin)", s)
}

// Identity is who a client certificate speaks for.
type Identity struct {
	// Name of the user or gateway; see CheckName.
	Name string
	// Kind is KindUser or KindGateway.
	Kind Kind
	// Role of a user; RoleUnspecified for a gateway.
	Role Role
	// Datacenter of a gateway; empty for a user.
	Datacenter string
}

// String returns "user/alice (admin)" or "gateway/gw1 (dc seoul-1)", for
// logs and errors.
func (id Identity) String() string {
	switch id.Kind {
	case KindUser:
		return fmt.Sprintf("user/%s (%s)", id.Name, id.Role)
	case KindGateway:
		return fmt.Sprintf("gateway/%s (dc %s)", id.Name, id.Datacenter)
	}
	return fmt.Sprintf("%s/%s", id.Kind, id.Name)
}

// Subject returns "<kind>/<name>", a stable string naming the principal
// (for audit records and four-eyes comparisons).
func (id Identity) Subject() string { return id.Kind.String() + "/" + id.Name }

// Validate reports whether id is well formed: a valid name, and a role for
// a user or a datacenter for a gateway (not both).
func (id Identity) Validate() error {
	if err := CheckName(id.Name); err != nil {
		return err
	}
	switch id.Kind {
	case KindUser:
		if _, ok := roleNames[id.Role]; !ok {
			return fmt.Errorf("user %q: invalid role %v", id.Name, id.Role)
		}
		if id.Datacenter != "" {
			return fmt.Errorf("user %q: a user has no datacenter", id.Name)
		}
	case KindGateway:
		if err := CheckDatacenter(id.Datacenter); err != nil {
			return fmt.Errorf("gateway %q: %w", id.Name, err)
		}
		if id.Role != RoleUnspecified {
			return fmt.Errorf("gateway %q: a gateway has no role", id.Name)
		}
	default:
		return fmt.Errorf("identity %q: invalid kind %v", id.Name, id.Kind)
	}
	return nil
}

// uriScheme is the scheme of the identity URI SAN.
const uriScheme = "outpost"

// URI returns the identity's URI SAN, for example
// outpost://user/alice?role=admin. id must be valid.
func (id Identity) URI() *url.URL {
	u := &url.URL{Scheme: uriScheme, Host: id.Kind.String(), Path: "/" + id.Name}
	switch id.Kind {
	case KindUser:
		u.RawQuery = "role=" + id.Role.String()
	case KindGateway:
		u.RawQuery = "dc=" + id.Datacenter
	}
	return u
}

// ParseIdentityURI parses an identity URI strictly: it must be exactly
// what Identity.URI produces for a valid identity.
func ParseIdentityURI(s string) (Identity, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Identity{}, fmt.Errorf("identity URI: %w", err)
	}
	if u.Scheme != uriScheme {
		return Identity{}, fmt.Errorf("identity URI %q: scheme is not %s", s, uriScheme)
	}
	kind, err := ParseKind(u.Host)
	if err != nil {
		return Identity{}, fmt.Errorf("identity URI %q: %w", s, err)
	}
	id := Identity{Kind: kind, Name: strings.TrimPrefix(u.Path, "/")}
	q, err := url.ParseQuery(u.RawQuery)
	if err != nil {
		return Identity{}, fmt.Errorf("identity URI %q: %w", s, err)
	}
	switch kind {
	case KindUser:
		if id.Role, err = ParseRole(q.Get("role")); err != nil {
			return Identity{}, fmt.Errorf("identity URI %q: %w", s, err)
		}
	case KindGateway:
		id.Datacenter = q.Get("dc")
	}
	if err := id.Validate(); err != nil {
		return Identity{}, fmt.Errorf("identity URI %q: %w", s, err)
	}
	// Canonical form only: no user info, port, fragment, escapes, extra or
	// repeated parameters, or a second spelling of the same identity.
	if id.URI().String() != s {
		return Identity{}, fmt.Errorf("identity URI %q is not in canonical form", s)
	}
	return id, nil
}

// IdentityFromCert returns the identity a client certificate carries. It
// checks the form only — exactly one URI SAN, an outpost identity that
// matches the common name, client-auth usage — not the signature or
// validity period: the TLS handshake verifies the chain.
func IdentityFromCert(cert *x509.Certificate) (Identity, error) {
	if cert == nil {
		return Identity{}, errors.New("no certificate")
	}
	if len(cert.URIs) != 1 {
		return Identity{}, fmt.Errorf("certificate %s: want exactly one URI SAN, have %d", serialString(cert), len(cert.URIs))
	}
	if cert.IsCA {
		return Identity{}, fmt.Errorf("certificate %s: a CA certificate is not a client identity", serialString(cert))
	}
	if !hasClientAuth(cert) {
		return Identity{}, fmt.Errorf("certificate %s: not for client authentication", serialString(cert))
	}
	id, err := ParseIdentityURI(cert.URIs[0].String())
	if err != nil {
		return Identity{}, fmt.Errorf("certificate %s: %w", serialString(cert), err)
	}
	if cert.Subject.CommonName != id.Name {
		return Identity{}, fmt.Errorf("certificate %s: common name %q does not match identity %q", serialString(cert), cert.Subject.CommonName, id.Name)
	}
	return id, nil
}

func hasClientAuth(cert *x509.Certificate) bool {
	for _, u := range cert.ExtKeyUsage {
		if u == x509.ExtKeyUsageClientAuth {
			return true
		}
	}
	return false
}

// SerialString returns a certificate's serial number in lower-case hex, the
// form used in revocation records and on the command line.
func SerialString(cert *x509.Certificate) string { return serialString(cert) }

func serialString(cert *x509.Certificate) string {
	if cert.SerialNumber == nil {
		return "(no serial)"
	}
	return cert.SerialNumber.Text(16)
}

// maxNameLen bounds user, gateway and datacenter names.
const maxNameLen = 64

// CheckName reports whether name can name a user or gateway: 1 to 64
// bytes of letters, digits, '.', '_', '-' and '@', starting and ending with a
// letter or digit. Names become etcd key segments and URI path segments,
// so the alphabet is closed.
func CheckName(name string) error { return checkWord("name", name, "._-@") }

// CheckDatacenter reports whether dc can name a datacenter: like CheckName
// without '@'.
func CheckDatacenter(dc string) error { return checkWord("datacenter", dc, "._-") }

func checkWord(what, s, punct string) error {
	switch {
	case s == "":
		return fmt.Errorf("empty %s", what)
	case len(s) > maxNameLen:
		return fmt.Errorf("%s longer than %d bytes", what, maxNameLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if alnum {
			continue
		}
		if (i == 0 || i == len(s)-1) || !strings.ContainsRune(punct, rune(c)) {
			return fmt.Errorf("%s %q: only letters, digits and %q allowed, starting and ending with a letter or digit", what, s, punct)
		}
	}
	return nil
}
