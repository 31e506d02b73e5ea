// Package console serves `outpost console`: a web UI on loopback for the
// person who runs it. Every page calls the control plane through this
// package's JSON layer, which makes the gRPC call with that person's
// credential; the control plane still decides what they may do.
//
// The UI is reachable by one browser session only: the URL printed at
// start carries a one-time token, exchanged on first use for an HttpOnly,
// SameSite=Strict session cookie. Every request must carry the cookie and
// a Host naming the console; every mutating request must also come with a
// same-origin Origin header and a JSON body (DNS rebinding, CSRF).
package console

import (
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"

	outpostv1 "github.com/outposthq/outpost/proto/outpost/v1"
)

//go:embed assets
var assets embed.FS

// CookieName is the session cookie.
const CookieName = "outpost_console"

// Config is what a console serves with.
type Config struct {
	// CP and Audit are clients of the control plane, dialled with the
	// credential of the person running the console.
	CP    outpostv1.ControlPlaneServiceClient
	Audit outpostv1.AuditServiceClient
	// User and Role are that person (from the credential), shown in the UI
	// and used only to explain why a button is disabled.
	User, Role string
	// ControlPlane is the control plane's address, shown in the UI.
	ControlPlane string
	Logger       *slog.Logger
}

// Server is one console: its token, its session and its handlers.
type Server struct {
	cfg Config

	mu      sync.Mutex // guards token, session and live
	token   string     // one-time login token; "" once used
	session string     // session cookie value; "" until the token is used
	// live holds the node records of the rollout watches open now.
	live map[*liveNodes]bool

	// hosts are the Host header values accepted; nil accepts any (a
	// console listening on an unspecified address, by explicit choice).
	hosts map[string]bool
}

// New returns a console for cfg that will serve on addr (the listener's
// address, host:port), with a fresh one-time token.
func New(cfg Config, addr string) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	tok, err := randomHex(32)
	if err != nil {
		return nil, err
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("console address %q: %w", addr, err)
	}
	s := &Server{cfg: cfg, token: tok}
	ip := net.ParseIP(host)
	switch {
	case ip != nil && ip.IsUnspecified():
		// Any Host: the operator chose to serve on every address.
	case ip != nil && ip.IsLoopback():
		s.hosts = map[string]bool{net.JoinHostPort(host, port): true, net.JoinHostPort("localhost", port): true}
	default:
		s.hosts = map[string]bool{net.JoinHostPort(host, port): true}
	}
	return s, nil
}

// Token is the one-time login token of the URL to print.
func (s *Server) Token() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.token
}

// LoginPath is the path and query that exchange the token for a session.
func (s *Server) LoginPath() string { return "/login?token=" + s.Token() }

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("console token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// Handler serves the console.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(assets, "assets")
	files := http.FileServerFS(static)
	mux.HandleFunc("GET /login", s.login)
	mux.Handle("/", s.authed(files))
	api := s.api()
	mux.Handle("/api/", s.authed(api))
	return s.guard(mux)
}

// guard sets the headers every answer carries and refuses a Host that
// does not name the console (a DNS rebinding page gets here with its own
// name as Host).
func (s *Server) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-store")
		if s.hosts != nil && !s.hosts[strings.ToLower(r.Host)] {
			http.Error(w, "outpost console: wrong Host header "+fmt.Sprintf("%q", r.Host)+"; open the URL the console printed", http.StatusMisdirectedRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// login exchanges the one-time token for the session cookie, once.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	got := r.URL.Query().Get("token")
	s.mu.Lock()
	ok := s.token != "" && got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(s.token)) == 1
	var session string
	if ok {
		var err error
		if session, err = randomHex(32); err != nil {
			s.mu.Unlock()
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		s.token, s.session = "", session
	}
	s.mu.Unlock()
	if !ok {
		s.cfg.Logger.Warn("console: refused a login with a wrong or used token", "remote", r.RemoteAddr)
		http.Error(w, "outpost console: this login link is not valid (each link works once); restart outpost console for a new one", http.StatusForbidden)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: CookieName, Value: session, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// authed lets through only requests with the session cookie; mutating
// requests must moreover be same-origin JSON.
func (s *Server) authed(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := s.check(r); err != nil {
			s.cfg.Logger.Warn("console: refused a request", "method", r.Method, "path", r.URL.Path, "reason", err.Error())
			writeError(w, http.StatusForbidden, err.Error())
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) check(r *http.Request) error {
	c, err := r.Cookie(CookieName)
	s.mu.Lock()
	session := s.session
	s.mu.Unlock()
	if err != nil || session == "" || subtle.ConstantTimeCompare([]byte(c.Value), []byte(session)) != 1 {
		return errors.New("no console session: open the URL that outpost console printed")
	}
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		return nil
	}
	if origin := r.Header.Get("Origin"); origin != "http://"+r.Host {
		return fmt.Errorf("cross-origin request refused (Origin %q)", origin)
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return fmt.Errorf("cross-site request refused (Sec-Fetch-Site %q)", site)
	}
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return errors.New("a console request must be JSON")
	}
	return nil
}
