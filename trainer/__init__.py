"""FedML adapters, in one place: fedml.init() and its containment, the transports our nodes need,
and the server/client nodes (FedMLCommManager) that both run paths use; the MPI simulation run."""
