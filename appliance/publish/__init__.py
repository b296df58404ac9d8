"""Publishing downstream: the wire record and subjects (``records``), the consumer's side (``client``) and the
publisher process (``publisher``), a cold-side consumer of the row rings that sends to NATS JetStream."""
