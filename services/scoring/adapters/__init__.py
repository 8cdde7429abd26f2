"""The scorer's edges: how faust talks to Kafka."""
