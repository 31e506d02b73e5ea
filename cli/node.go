package cli

// nodeCommand groups the inventory verbs.
func nodeCommand() *command {
	return &command{
		name:  "node",
		short: "manage the node inventory (the servers Outpost deploys to)",
		usage: "outpost node COMMAND [flags]",
		long: `A node is one target server: an immutable id, an SSH address, the
datacenter whose gateway reaches it, labels that plans select on, and the
SSH user. The inventory lives in the control plane; keep it in a YAML file
under version control and apply it.`,
		sub: completeWith([]*command{
			nodeApplyCommand(),
			nodeDeleteCommand(),
			nodeGetCommand(),
			nodeListCommand(),
			nodeScanCommand(),
			nodeTrustCommand(),
			nodeVerifyCommand(),
		}, completeNodeIDs, "delete", "get", "scan", "trust"),
	}
}
