package cli

// rolloutCommand groups the verbs that deploy and follow rollouts.
func rolloutCommand() *command {
	return &command{
		name:  "rollout",
		short: "deploy a plan and follow its progress",
		usage: "outpost rollout COMMAND [flags]",
		long: `A rollout is one execution of a plan: the artifact is deployed to the
plan's nodes stage by stage, batch by batch, each node step by step
(connect, lock, precheck, upload, verify, unpack, stop, switch, start,
health, ...). A node that fails after the switch is rolled back to its
previous release; a stage whose failures exceed max_fail_percent aborts
the rollout.

Typical use:
  outpost rollout create -f plan.yaml --watch
  outpost rollout list --app billing-api
  outpost rollout get ROLLOUT_ID`,
		sub: []*command{
			rolloutCreateCommand(),
			rolloutWatchCommand(),
			rolloutGetCommand(),
			rolloutListCommand(),
		},
	}
}
