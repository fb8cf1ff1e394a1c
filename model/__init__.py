"""The detector: normalisation -> autoencoder -> per-row score -> threshold. No FedML here."""
