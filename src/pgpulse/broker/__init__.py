"""Scale-out over NATS JetStream: one relay per database publishes the log."""
