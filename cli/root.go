package cli

// root is the verb tree. Each verb lives in its own file.
func root() *command {
	return &command{
		name:  "outpost",
		usage: "outpost COMMAND [flags]",
		long: `Outpost deploys artifacts to fleets of Linux servers over SSH and SFTP,
installing nothing on them.

Daemons:   outpost controlplane | outpost gateway | outpost dev
Clients:   outpost node ... | outpost rollout ...`,
		sub: []*command{
			controlplaneCommand(),
			devCommand(),
			gatewayCommand(),
			nodeCommand(),
			rolloutCommand(),
			versionCommand(),
		},
	}
}
