"""Thin FedML adapters around the framework-free detector in model/."""
