"""The scorer's edges: faust (every faust line), the cohort-stats follower, in-memory fakes."""
