package cli

// root is the verb tree. Each verb lives in its own file.
func root() *command {
	return &command{
		name:  "outpost",
		usage: "outpost COMMAND [flags]",
		long: `Outpost deploys artifacts to fleets of Linux servers over SSH and SFTP,
installing nothing on them.

Daemons:   outpost controlplane | outpost gateway | outpost dev
Clients:   outpost node ... | outpost rollout ... | outpost audit

New here? 'outpost dev' runs everything on this machine with a simulated
fleet and prints what to try next. Client verbs find the control plane
with --controlplane or $OUTPOST_CONTROLPLANE (default 127.0.0.1:7443).`,
		sub: []*command{
			auditCommand(),
			controlplaneCommand(),
			devCommand(),
			gatewayCommand(),
			nodeCommand(),
			rolloutCommand(),
			versionCommand(),
		},
	}
}
