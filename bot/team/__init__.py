"""The support team's controls: roles per tenant, the audit trail, quotas and
model cost, ratings, and agents' answers turned into FAQ entries."""
