"""Who may do what, and what stays secret: REST API keys, NATS users per role and runtime
credentials per account, account secrets sealed under the master key, the data directory
kept to its owner, and the destination policy that keeps tools off private addresses."""
