package cli

// root is the verb tree. Each verb lives in its own file.
func root() *command {
	return &command{
		name:  "outpost",
		usage: "outpost COMMAND [flags]",
		long: `Outpost deploys artifacts to fleets of Linux servers over SSH and SFTP,
installing nothing on them.

Daemons:   outpost controlplane | outpost gateway | outpost dev
Clients:   outpost node ... | outpost rollout ... | outpost audit | outpost console
Admin:     outpost token ... | outpost user ...

New here? 'outpost dev' runs everything on this machine with a simulated
fleet and prints what to try next. Client verbs find the control plane
with --controlplane or $OUTPOST_CONTROLPLANE (default: the credential's,
else 127.0.0.1:7443), and call it with the credential of --credential or
$OUTPOST_CREDENTIAL (default: ~/.config/outpost/credential.pem, else the
admin.pem of ./.outpost/controlplane or ./.outpost/dev).`,
		sub: []*command{
			auditCommand(),
			consoleCommand(),
			controlplaneCommand(),
			devCommand(),
			gatewayCommand(),
			nodeCommand(),
			rolloutCommand(),
			tokenCommand(),
			userCommand(),
			versionCommand(),
			genManCommand(),
		},
	}
}
