"""The framework-free federated round: the round order (driver), the pure round state (state), what a run writes and
says (outputs), typed messages (messages) in their wire format (wire), the aggregation and robustness rules
(aggregation, defenses), one client's side (client) and a grid of clients in one process (inprocess). Every run path
(MPI, gRPC, in process, Flower) runs `driver.run_federation`."""
