"""The framework-free federated round: the server's round core (core), one client's side (client),
per-round tracking. Used by both run paths through trainer.nodes."""
