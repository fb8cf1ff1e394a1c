"""Operating a federation without a cloud: what a board says about itself (`health`), what the server knows about
the run (`status.StatusStore`), and the read-only status page and Prometheus metrics that show it (`http`).
Imports nothing of FedIoT but the ground floor (`fediot`)."""
