"""Evaluation: row-level scoring (scoring), the client-report counts protocol (counts), metrics,
ROC curves, and the report.md writer. No FedML here."""
