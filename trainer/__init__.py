"""FedML adapters, in one place: FedML's comm classes without its package initialisers (`fedml_glue`), the transports
our nodes need, the server/client nodes (FedMLCommManager) that both run paths use, the MPI simulation run, and the
runtime's config sections (`settings`)."""
