"""From results to a decision: per-configuration aggregates, intervals and anytime-valid tests, the decision
rule with its guarantee, slices and the recommendation for a production mix."""
