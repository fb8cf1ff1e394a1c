"""FedIoT glue that is not FedML-specific: config, errors, metrics, evaluation, run directories."""
