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

Strategies (plan strategy.type): rolling, tiered (by the node label tier),
canary (a few nodes, a bake, then the rest), blue_green (by the node label
color, with a traffic switch hook), or explicit stages. A rollout can be
paused, resumed, aborted, promoted past a stage that waits, retried for
its failed nodes, and undone to an earlier revision. Protected
environments need an approval by someone else; validation asks for a
person's acceptance after success.

Typical use:
  outpost rollout create -f plan.yaml --dry-run
  outpost rollout create -f plan.yaml --watch
  outpost rollout list --app billing-api
  outpost rollout get ROLLOUT_ID
  outpost rollout promote ROLLOUT_ID
  outpost rollout history billing-api
  outpost rollout undo billing-api`,
		sub: completeWith(completeWith([]*command{
			rolloutCreateCommand(),
			rolloutWatchCommand(),
			rolloutGetCommand(),
			rolloutListCommand(),
			rolloutPauseCommand(),
			rolloutResumeCommand(),
			rolloutAbortCommand(),
			rolloutPromoteCommand(),
			rolloutRetryCommand(),
			rolloutApproveCommand(),
			rolloutRejectCommand(),
			rolloutValidateCommand(),
			rolloutHistoryCommand(),
			rolloutUndoCommand(),
		}, completeRolloutIDs, "watch", "get", "pause", "resume", "abort", "promote", "retry", "approve", "reject", "validate"),
			completeApps, "history", "undo"),
	}
}
