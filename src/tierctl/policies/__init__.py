"""The policy file: its model, its loader (with file:line:column errors) and rule evaluation."""
