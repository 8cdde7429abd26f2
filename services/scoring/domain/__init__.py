"""Pure scoring rules: no faust, no Kafka, no I/O."""
